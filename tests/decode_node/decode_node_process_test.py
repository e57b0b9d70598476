#!/usr/bin/env python3
"""`crescent decode-node` as a real process beside a real `crescent kvstore master`.

  decode_node_process_test.py --crescent build/bin/crescent --model PATH

Checks: bad flags exit 2 with a message naming the flag; the node prints its ready line with
the bound gRPC and metrics addresses; /health answers and /metrics carries the decode metrics;
SIGTERM drains and exits 0 promptly. No Conductor runs: the node keeps retrying its
registration meanwhile, which must not stop it from serving. Exit 77 (CTest skip) when the
model file is absent.
"""
import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))
from cluster_common import read_line  # noqa: E402  (fails by raising AssertionError)


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def stop(proc, timeout=20):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        fail(f"{proc.args[1]} did not exit within {timeout} s of SIGTERM")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crescent", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    if not os.path.exists(a.model):
        print("SKIP: model not found at", a.model)
        return 77
    c = a.crescent

    # Bad flags: exit 2, the message names the flag.
    for args, flag in [
        (["--conductor", "127.0.0.1:1", "--kv-master", "127.0.0.1:2"], "--node-id"),
        (["--node-id", "d", "--conductor", "127.0.0.1:1", "--kv-master", "127.0.0.1:2",
          "--transport", "pigeon"], "--transport"),
        (["--node-id", "d", "--conductor", "nowhere", "--kv-master", "127.0.0.1:2"],
         "--conductor"),
        (["--node-id", "d", "--conductor", "127.0.0.1:1", "--kv-master", "127.0.0.1:2",
          "--kv-cache-mb", "0"], "--kv-cache-mb"),
        # So large that its bytes would overflow: refused, not wrapped.
        (["--node-id", "d", "--conductor", "127.0.0.1:1", "--kv-master", "127.0.0.1:2",
          "--kv-cache-mb", "9000000000000"], "--kv-cache-mb"),
    ]:
        r = subprocess.run([c, "decode-node", "--model", a.model, *args], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 2:
            fail(f"decode-node {args} exited {r.returncode}, want 2; stderr: {r.stderr}")
        if flag not in r.stderr:
            fail(f"decode-node {args}: the error does not name {flag}: {r.stderr}")

    master = subprocess.Popen([c, "kvstore", "master", "--listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, text=True)
    node = None
    try:
        m = read_line(master, r"listening on (\S+)", 30)
        master_addr = m.group(1)
        node = subprocess.Popen(
            [c, "decode-node", "--model", a.model, "--node-id", "decode-7", "--conductor",
             "127.0.0.1:1", "--kv-master", master_addr, "--threads", "1", "--kv-cache-mb", "16"],
            stdout=subprocess.PIPE, text=True)
        m = read_line(node, r"crescent: decode decode-7 ready grpc=(\S+):(\d+) http=(\S+)$", 60)
        if int(m.group(2)) == 0:
            fail("the ready line shows port 0, not the bound gRPC port")
        http = m.group(3)
        with urllib.request.urlopen(f"http://{http}/health", timeout=10) as resp:
            if resp.status != 200:
                fail(f"/health answered {resp.status}")
        with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        for name in ["crescent:decode_kv_wait_seconds", "crescent:decode_seconds",
                     "crescent:time_per_output_token_seconds",
                     "crescent:reservations_expired_total", "crescent:num_requests_running"]:
            if name not in metrics:
                fail(f"/metrics lacks {name}")
        start = time.time()
        rc = stop(node)
        node = None
        if rc != 0:
            fail(f"decode-node exited {rc} after SIGTERM, want 0")
        print(f"decode-node drained and stopped in {time.time() - start:.2f} s")
    finally:
        if node is not None:
            node.kill()
            node.wait()
        stop(master)
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())

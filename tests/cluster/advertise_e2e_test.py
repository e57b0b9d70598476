#!/usr/bin/env python3
"""Every role bound to 0.0.0.0, each node advertising its own address: the way pods run.

  advertise_e2e_test.py --crescent build/bin/crescent --model PATH

The KV master, the conductor's gRPC registry, a prefill node and a decode node listen on
0.0.0.0. The nodes pass --advertise-host 127.0.0.2 and 127.0.0.3 (two loopback addresses stand
in for two pod IPs) and --metrics-host 0.0.0.0, and use the TCP transport. Checks: each ready
line shows the advertised host for its gRPC and metrics endpoints; the conductor registers each
node at that address; /health answers there; a chat completion through the conductor (openai
client) comes back, with its KV pushed over TCP; an unroutable --advertise-host exits 2. Exit 77
(CTest skip) without the model or the openai package.
"""
import os
import signal
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_common import (check, fail, free_ports, get_metrics, main_wrapper,  # noqa: E402
                            metric_sum, read_line)


def run(crescent, model):
    import openai

    # An address nobody can dial is refused before anything loads.
    r = subprocess.run([crescent, "decode-node", "--model", model, "--node-id", "d",
                        "--conductor", "127.0.0.1:1", "--kv-master", "127.0.0.1:2",
                        "--advertise-host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "--advertise-host" in r.stderr,
          f"--advertise-host 0.0.0.0: rc={r.returncode} {r.stderr!r}")

    master_port, grpc_port, http_port = free_ports(3)
    procs = []
    conductor_log = open(os.devnull, "w")
    try:
        master = subprocess.Popen([crescent, "kvstore", "master", "--listen",
                                   f"0.0.0.0:{master_port}"], stdout=subprocess.PIPE, text=True)
        procs.append(master)
        read_line(master, r"listening on (\S+)", 30)
        log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                f"advertise_e2e_conductor_{os.getpid()}.log")
        conductor_log = open(log_path, "w+")
        conductor = subprocess.Popen(
            [crescent, "conductor", "--model", model, "--host", "127.0.0.1", "--port",
             str(http_port), "--grpc-listen", f"0.0.0.0:{grpc_port}", "--kv-master",
             f"127.0.0.2:{master_port}"], stdout=subprocess.DEVNULL, stderr=conductor_log)
        procs.append(conductor)
        nodes = {}
        for role, node_id, host in (("prefill-node", "p0", "127.0.0.2"),
                                    ("decode-node", "d0", "127.0.0.3")):
            p = subprocess.Popen(
                [crescent, role, "--model", model, "--node-id", node_id, "--conductor",
                 f"127.0.0.2:{grpc_port}", "--kv-master", f"127.0.0.3:{master_port}",
                 "--grpc-listen", "0.0.0.0:0", "--data-listen", "0.0.0.0:0", "--metrics-host",
                 "0.0.0.0", "--advertise-host", host, "--transport", "tcp", "--threads", "1",
                 "--kv-cache-mb", "64"], stdout=subprocess.PIPE, text=True)
            procs.append(p)
            word = "prefill" if role == "prefill-node" else "decode"
            m = read_line(p, rf"crescent: {word} {node_id} ready grpc=(\S+):(\d+) .*http=(\S+)$",
                          180)
            check(m.group(1) == host, f"{node_id} advertises gRPC at {m.group(1)}, want {host}")
            check(m.group(3).startswith(host + ":"),
                  f"{node_id} advertises metrics at {m.group(3)}, want {host}")
            with urllib.request.urlopen(f"http://{m.group(3)}/health", timeout=10) as resp:
                check(resp.status == 200, f"{node_id} /health answered {resp.status}")
            nodes[node_id] = (host, m.group(2), m.group(3))

        # The conductor registered each node at its advertised address.
        deadline = time.time() + 60
        while time.time() < deadline:
            conductor_log.seek(0)
            text = conductor_log.read()
            if all(f"node {n} at {h}:{port}" in text for n, (h, port, _) in nodes.items()):
                break
            time.sleep(0.5)
        else:
            fail(f"the conductor did not register both nodes at their advertised addresses:\n"
                 f"{text[-3000:]}")

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="none",
                               timeout=120, max_retries=0)
        answer = None
        deadline = time.time() + 60
        while answer is None:
            try:
                answer = client.chat.completions.create(
                    model=os.path.basename(model)[:-len(".gguf")],
                    messages=[{"role": "user", "content": "What is the capital of France?"}],
                    max_tokens=16, temperature=0)
            except openai.APIStatusError as e:  # nodes not yet schedulable
                if time.time() > deadline:
                    fail(f"no answer through the conductor: {e}")
                time.sleep(1)
        text = answer.choices[0].message.content
        check(text and text.strip(), "empty answer")
        print("answer:", text.strip())
        pushed = metric_sum(get_metrics(nodes["p0"][2]), "crescent:kv_transfer_bytes_total")
        check(pushed > 0, "the prefill node pushed no KV bytes")
        print("prefill node pushed", int(pushed), "KV bytes over tcp")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        conductor_log.close()
        if conductor_log.name != os.devnull:
            os.unlink(conductor_log.name)


if __name__ == "__main__":
    sys.exit(main_wrapper(run))

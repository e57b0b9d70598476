#!/usr/bin/env python3
"""End to end: `crescent-bench replay` against a real `crescent serve` on the reference model.

  replay_e2e_test.py --crescent build/release/bin/crescent \
      --bench build/release/bin/crescent-bench --model PATH [--trace PATH]

Replays 40 consecutive requests of the shared synthetic (Mooncake) trace, scaled down to what a
135M model on two loaded CPU cores serves in well under a minute (512-token blocks -> 8 tokens,
prompt + output <= 64 tokens, outputs <= 8 tokens: about 2,200 prompt tokens in all), open-loop
at the trace's own arrival times (10.4 s), and checks that every request was answered and that
the measured prefix-cache hit ratio is consistent with the trace's ideal one: > 0 and not above
it.
The window (requests 3950-3989) is one whose ideal hit ratio is high (54% as scaled).
Exit 77 (CTest skip) when the model, the trace or `crescent serve` is absent.
"""
import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

DEFAULT_TRACE = "/work/shared/traces/synthetic_trace.jsonl"


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src",
                                "serve"))
from serve_common import free_port  # noqa: E402


def wait_ready(proc, port, log_path, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            with open(log_path) as f:
                fail(f"crescent serve exited {proc.returncode} while starting:\n{f.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.5)
    fail("crescent serve did not become ready in time")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crescent", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--trace", default=os.environ.get("CRESCENT_TRACE", DEFAULT_TRACE))
    a = ap.parse_args()
    if not os.path.exists(a.model):
        print("SKIP: model not found at", a.model)
        return 77
    if not os.path.exists(a.trace):
        print("SKIP: trace not found at", a.trace)
        return 77
    help_run = subprocess.run([a.crescent, "serve", "--help"], capture_output=True, text=True)
    if help_run.returncode != 0 or "--port" not in help_run.stdout:
        print("SKIP: this build has no `crescent serve`")
        return 77
    serve_help = help_run.stdout

    tmp = tempfile.mkdtemp(prefix="replay_e2e_")
    port = free_port()
    args = [a.crescent, "serve", "--model", a.model, "--host", "127.0.0.1", "--port", str(port),
            "--threads", "2"]
    if "--block-tokens" in serve_help:
        args += ["--block-tokens", "8"]  # The replay's block size: hits can reach the ideal.
    if "--kv-cache-mb" in serve_help:
        args += ["--kv-cache-mb", "1024"]  # Room for every block of the 40 prompts.
    if "--max-waiting" in serve_help:
        args += ["--max-waiting", "256"]  # No early rejections: every request must be answered.
    log_path = os.path.join(tmp, "serve.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, port, log_path)
        out = os.path.join(tmp, "run")
        replay = [a.bench, "replay", "--trace", a.trace, "--strict", "--start", "3950",
                  "--limit", "40", "--block-tokens", "8", "--max-context", "64",
                  "--max-output-tokens", "8", "--endpoint", f"http://127.0.0.1:{port}",
                  "--timeout", "240", "--no-progress", "--slo-ttft-ms", "5000",
                  "--slo-tbt-ms", "1000", "--out", out, "--label", "serve"]
        r = subprocess.run(replay, capture_output=True, text=True, timeout=280)
        print(r.stdout)
        print(r.stderr)
        if r.returncode != 0:
            fail(f"crescent-bench replay exited {r.returncode}")
        with open(os.path.join(out, "report.json")) as f:
            report = json.load(f)
        s = report["summary"]
        if s["requests"] != 40:
            fail(f"expected 40 requests, report has {s['requests']}")
        if s["ok"] != 40:
            fail(f"not every request was answered: {s['ok']} ok, {s['rejected']} rejected, "
                 f"{s['failed']} failed")
        with open(os.path.join(out, "requests.csv")) as f:
            rows = list(csv.DictReader(f))
        if len(rows) != 40:
            fail(f"requests.csv has {len(rows)} rows")
        for row in rows:
            if int(row["output_tokens"]) < 1 or float(row["ttft_s"]) < 0:
                fail(f"request {row['index']} has no output: {row}")
            # ignore_eos is sent: every output has the trace's (scaled, capped) length.
            if int(row["output_tokens"]) != int(row["max_tokens"]):
                fail(f"request {row['index']}: {row['output_tokens']} output tokens, "
                     f"{row['max_tokens']} asked for with ignore_eos: {row}")
            if int(row["cached_tokens"]) > int(row["prompt_tokens"]):
                fail(f"request {row['index']} reports more cached than prompt tokens: {row}")
        ideal, measured = s["ideal_hit_ratio"], s["hit_ratio"]
        print(f"hit ratio {measured:.3f}, ideal {ideal:.3f}")
        if not ideal > 0.3:
            fail(f"the chosen window should have a high ideal hit ratio, got {ideal}")
        if not 0 < measured <= ideal + 1e-9:
            fail(f"measured hit ratio {measured} is not in (0, ideal={ideal}]")
        for svg in ("ttft_cdf.svg", "tbt_cdf.svg", "latency_over_time.svg",
                    "throughput_over_time.svg"):
            if not os.path.getsize(os.path.join(out, svg)) > 0:
                fail(f"{svg} is empty")
        cmp = subprocess.run([a.bench, "replay", "compare", os.path.join(out, "report.json"),
                              os.path.join(out, "report.json")], capture_output=True, text=True)
        if cmp.returncode != 0 or "cache hit ratio" not in cmp.stdout:
            fail(f"replay compare failed: {cmp.stdout} {cmp.stderr}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())

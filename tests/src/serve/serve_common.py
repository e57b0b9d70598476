"""Shared helpers of the `crescent serve` end-to-end tests: start the real server on a free port,
wait until it is ready, talk raw HTTP, and always stop it."""
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time


def fail(msg):
    raise AssertionError(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def free_ports(n):
    """n different free ports on 127.0.0.1, outside the kernel's ephemeral range where there is
    room (as `crescent up` picks them): a port in that range could be taken by a port-0 bind or an
    outgoing connection of a process started before the one it is meant for listens."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first, last = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        first, last = 32768, 60999
    candidates = [p for p in range(20000, 65536) if p < first or p > last]
    random.shuffle(candidates)
    held = []
    try:
        while len(held) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            port = candidates.pop() if candidates else 0
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                if port == 0:
                    raise  # The kernel has no port left to give: retrying would spin forever.
                continue
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def free_port():
    return free_ports(1)[0]


class Server:
    """A `crescent serve` process. Use as a context manager: the process is killed on exit
    whatever happened (stop() first for a graceful SIGTERM stop)."""

    def __init__(self, crescent, model, extra=(), env=None, threads=2):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="crescent-serve-", suffix=".log",
                                               delete=False)
        full_env = dict(os.environ)
        full_env.pop("CRESCENT_API_KEY", None)
        full_env.update(env or {})
        self.args = [crescent, "serve", "--model", model, "--host", "127.0.0.1",
                     "--port", str(self.port), "--threads", str(threads), *extra]
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=full_env)
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc):
        self.kill()
        if exc[0] is not None:
            print("---- server log (tail) ----")
            print(self.log_text()[-4000:])
        return False

    def log_text(self):
        with open(self.log.name, "r", errors="replace") as f:
            return f.read()

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail(f"server exited with {self.proc.returncode}: {self.log_text()}")
            try:
                status, _, _ = self.request("GET", "/ready", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        fail("server not ready in time")

    def request(self, method, path, body=None, headers=None, timeout=120):
        """One raw HTTP request; returns (status, headers dict (lower-case), body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode()
            h = {"Content-Type": "application/json"}
            h.update(headers or {})
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def metrics(self):
        status, _, body = self.request("GET", "/metrics")
        check(status == 200, f"/metrics gave {status}")
        values = {}
        for line in body.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
        return values

    def wait_idle(self, timeout=20):
        """Waits until /metrics shows no running or waiting request and no KV block in use;
        returns the last metrics seen."""
        deadline = time.time() + timeout
        while True:
            m = self.metrics()
            if (m.get("crescent:num_requests_running") == 0
                    and m.get("crescent:num_requests_waiting") == 0
                    and m.get("crescent:kv_cache_usage_perc") == 0):
                return m
            if time.time() > deadline:
                fail("server not idle: running={} waiting={} kv_cache_usage_perc={}".format(
                    m.get("crescent:num_requests_running"),
                    m.get("crescent:num_requests_waiting"),
                    m.get("crescent:kv_cache_usage_perc")))
            time.sleep(0.1)

    def stop(self, timeout=30):
        """SIGTERM; returns the exit status."""
        self.proc.terminate()
        return self.proc.wait(timeout=timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main_wrapper(run):
    """Parses --crescent/--model, skips (77) without the model, runs run(crescent, model) and
    turns an AssertionError into exit 1."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--crescent", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    if not os.path.exists(a.model):
        print("SKIP: model not found at", a.model)
        sys.exit(77)
    try:
        import openai  # noqa: F401
    except ImportError:
        print("SKIP: the openai package is not installed (pip install -r tests/requirements.txt)")
        sys.exit(77)
    start = time.time()
    try:
        run(a.crescent, a.model)
    except AssertionError as e:
        print("FAIL:", e)
        sys.exit(1)
    print(f"PASS ({time.time() - start:.1f} s)")
    sys.exit(0)

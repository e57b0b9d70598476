"""Shared helpers of the cluster end-to-end tests: start the real `crescent up` (and, for
comparison, `crescent serve` through tests/src/serve/serve_common.py), wait until it serves,
read each role's /metrics, and always stop every process."""
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "serve"))
from serve_common import Server, check, fail, free_port, free_ports, main_wrapper  # noqa: E402,F401


def parse_metrics(text):
    """Prometheus text -> {series (name with labels, as exposed): value}."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            values[name] = float(value)
        except ValueError:
            pass
    return values


def metric_sum(metrics, name):
    """Sum of every series of `name` (all label sets)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def get_metrics(host_port, timeout=10):
    with urllib.request.urlopen(f"http://{host_port}/metrics", timeout=timeout) as r:
        return parse_metrics(r.read().decode())


def read_line(proc, pattern, timeout):
    """Reads proc's stdout (a text pipe) until a stripped line matches `pattern`; returns the
    match. Fails naming what was seen when the process ends or `timeout` seconds pass."""
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line.rstrip())
            m = re.match(pattern, line.strip())
            if m:
                return m
        elif proc.poll() is not None:
            break
    fail(f"no line matching {pattern!r} within {timeout} s; stdout: {seen}; exit {proc.poll()}")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by `up`) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid, timeout_s=10.0):
    """Whether `pid` is gone (or a zombie) within `timeout_s`. A process killed with SIGKILL is not
    gone at once: its sockets can already be closed (peers see it) while a thread of it still
    tears down its address space."""
    deadline = time.time() + timeout_s
    while pid_alive(pid):
        if time.time() >= deadline:
            return False
        time.sleep(0.05)
    return True


class Up:
    """A `crescent up` cluster. Use as a context manager: on exit it is stopped with SIGTERM
    (checked: exit 0 and no process of the cluster left), or killed if that fails."""

    def __init__(self, crescent, model, prefill=1, decode=1, extra=(), kv_cache_mb=64):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="crescent-up-")
        self.ports_file = os.path.join(self.dir, "ports.json")
        self.log_path = os.path.join(self.dir, "up.log")
        self.log = open(self.log_path, "w")
        env = dict(os.environ)
        env.pop("CRESCENT_API_KEY", None)
        self.args = [crescent, "up", "--model", model, "--port", str(self.port),
                     "--prefill", str(prefill), "--decode", str(decode),
                     "--threads-per-node", "1", "--kv-cache-mb", str(kv_cache_mb),
                     "--ports-file", self.ports_file, "--stop-timeout-s", "15", *extra]
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env)
        self.base = f"http://127.0.0.1:{self.port}"
        self.info = None
        self.stopped = False

    def __enter__(self):
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            print("---- crescent up log (tail) ----")
            print(self.log_text()[-6000:])
            raise
        return self

    def __exit__(self, *exc):
        failed = exc[0] is not None
        try:
            if not self.stopped:
                self.stop()
        except BaseException:
            failed = True
            raise
        finally:
            self.kill()
            if failed:
                print("---- crescent up log (tail) ----")
                print(self.log_text()[-8000:])
        return False

    def log_text(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def wait_ready(self, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                fail(f"crescent up exited with {self.proc.returncode} before it was ready")
            if "Crescent is up: " in self.log_text() and os.path.exists(self.ports_file):
                with open(self.ports_file) as f:
                    self.info = json.load(f)
                check(self.info["http_port"] == self.port, str(self.info))
                return
            time.sleep(0.2)
        fail("crescent up not ready in time")

    def processes(self, role=None):
        return [p for p in self.info["processes"] if role is None or p["role"] == role]

    def process(self, name):
        for p in self.info["processes"]:
            if p["name"] == name:
                return p
        fail(f"no process {name} in {self.info}")

    def metrics(self, name="conductor"):
        """The /metrics of the conductor (default) or of the node called `name`."""
        if name == "conductor":
            return get_metrics(f"127.0.0.1:{self.port}")
        return get_metrics(self.process(name)["http"])

    def stop(self, timeout=90):
        """SIGTERM to `up`; checks exit 0 and that every process of the cluster is gone."""
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        check(code == 0, f"crescent up exited with {code} after SIGTERM")
        for p in (self.info or {}).get("processes", []):
            check(not pid_alive(p["pid"]), f"{p['name']} (pid {p['pid']}) outlived crescent up")
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

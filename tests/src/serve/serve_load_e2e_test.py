#!/usr/bin/env python3
"""Load test of `crescent serve` on the reference model (bounded, loopback).

  serve_load_e2e_test.py --crescent build/release/bin/crescent --model PATH

64 concurrent streaming chat clients with mixed prompt and output lengths, plus a batch of
malformed requests and clients that disconnect mid-stream, all at once. Every request must be
answered (200 with a complete stream, or the right 4xx with an OpenAI error body), the server
must stay alive, and afterwards /metrics must show no running or waiting request and no KV block
in use (no leak). Finally SIGTERM during a stream stops the server with exit 0.
Exit 77 (CTest skip) without the model.
"""
import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai

from serve_common import Server, check, main_wrapper

KEY = "load-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
NUM_STREAMS = 64
NUM_DISCONNECTS = 8
WORDS = ["apple", "river", "stone", "cloud", "music", "garden", "window", "silver", "forest",
         "candle", "ocean", "paper"]


def stream_client(client, i):
    words = [2, 6, 12, 24, 60][i % 5]
    max_tokens = 2 + (i * 5) % 11
    text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words))
    stream = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": f"Client {i}: summarize: {text}"}],
        max_tokens=max_tokens, temperature=0.7, seed=i, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    with_choices = [c for c in chunks if c.choices]
    check(with_choices, f"client {i}: no choice chunks")
    check(with_choices[0].choices[0].delta.role == "assistant", f"client {i}: no role first")
    for c in with_choices[:-1]:
        check(c.choices[0].finish_reason is None, f"client {i}: early finish_reason")
    reason = with_choices[-1].choices[0].finish_reason
    check(reason in ("stop", "length"), f"client {i}: finish_reason {reason}")
    usage = chunks[-1].usage
    check(chunks[-1].choices == [] and usage is not None, f"client {i}: no usage chunk")
    check(1 <= usage.completion_tokens <= max_tokens, f"client {i}: usage {usage}")
    if reason == "length":
        check(usage.completion_tokens == max_tokens, f"client {i}: length but {usage}")
    return usage.completion_tokens


def malformed_requests():
    chat = "/v1/chat/completions"
    hi = [{"role": "user", "content": "hi"}]
    return [
        ("invalid json", "POST", chat, "{not json", AUTH, 400),
        ("empty messages", "POST", chat, {"messages": []}, AUTH, 400),
        ("string temperature", "POST", chat, {"messages": hi, "temperature": "hot"}, AUTH, 400),
        ("n too large", "POST", chat, {"messages": hi, "n": 100}, AUTH, 400),
        ("unknown model", "POST", chat, {"model": "nope", "messages": hi}, AUTH, 404),
        ("context overflow", "POST", chat, {"messages": hi, "max_tokens": 100000}, AUTH, 400),
        ("huge body", "POST", chat, {"messages": [{"role": "user", "content": "x" * 100000}]},
         AUTH, 413),
        ("no api key", "POST", chat, {"messages": hi}, {}, 401),
        ("wrong method", "GET", chat, None, AUTH, 405),
        ("unknown path", "POST", "/v1/nothing", {"messages": hi}, AUTH, 404),
        ("token out of vocabulary", "POST", "/v1/completions",
         {"prompt": [1, 99999999], "max_tokens": 2}, AUTH, 400),
        ("image part", "POST", chat,
         {"messages": [{"role": "user", "content": [{"type": "image_url",
                                                      "image_url": {"url": "x"}}]}]}, AUTH, 400),
        ("bad role", "POST", chat, {"messages": [{"role": "wizard", "content": "x"}]}, AUTH, 400),
        ("negative max_tokens", "POST", "/v1/completions", {"prompt": "a", "max_tokens": -1},
         AUTH, 400),
    ]


def malformed_client(server, case):
    name, method, path, body, headers, want = case
    status, _, data = server.request(method, path, body=body, headers=headers)
    check(status == want, f"{name}: status {status}, want {want}: {data[:200]!r}")
    err = json.loads(data)["error"]
    check(isinstance(err.get("message"), str) and err["message"], f"{name}: no error message")
    return name


def disconnect_client(server, i):
    """Starts a long stream, reads the first bytes, and goes away."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    body = json.dumps({"messages": [{"role": "user", "content": f"Tell a long story {i}."}],
                       "max_tokens": 400, "stream": True})
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Content-Type": "application/json", **AUTH})
    resp = conn.getresponse()
    check(resp.status == 200, f"disconnect client {i}: status {resp.status}")
    first = resp.read1(64)
    check(first.startswith(b"data: "), f"disconnect client {i}: {first!r}")
    conn.sock.close()
    conn.close()


def run(crescent, model):
    with Server(crescent, model, extra=["--served-model-name", "smol", "--api-key", KEY,
                                        "--max-body-bytes", "65536"]) as server:
        client = openai.OpenAI(base_url=server.base + "/v1", api_key=KEY, max_retries=0,
                               timeout=180)
        start = time.time()
        with ThreadPoolExecutor(max_workers=NUM_STREAMS + 24) as pool:
            streams = [pool.submit(stream_client, client, i) for i in range(NUM_STREAMS)]
            drops = [pool.submit(disconnect_client, server, i) for i in range(NUM_DISCONNECTS)]
            bad = [pool.submit(malformed_client, server, c) for c in malformed_requests()]
            tokens = sum(f.result() for f in streams)
            for f in drops + bad:
                f.result()
        elapsed = time.time() - start
        print(f"{NUM_STREAMS} streams ({tokens} tokens), {NUM_DISCONNECTS} disconnects, "
              f"{len(bad)} malformed requests answered in {elapsed:.1f} s")

        check(server.proc.poll() is None, "server died")
        check(server.request("GET", "/health")[0] == 200, "not healthy")
        m = server.wait_idle()
        print("after load: running={} waiting={} kv_cache_usage_perc={} aborted={}".format(
            m["crescent:num_requests_running"], m["crescent:num_requests_waiting"],
            m["crescent:kv_cache_usage_perc"],
            m.get('crescent:request_success_total{finished_reason="abort"}', 0)))
        check(m.get("crescent:generation_tokens_total", 0) >= tokens, "generation tokens metric")
        # Still serves.
        r = client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4,
            temperature=0)
        check(r.choices[0].message.content, "no answer after the load")

        # SIGTERM while a stream is in flight: graceful stop, exit 0.
        got_first = threading.Event()

        def long_stream():
            try:
                s = client.chat.completions.create(
                    model="smol", messages=[{"role": "user", "content": "Write an essay."}],
                    max_tokens=2000, stream=True)
                for _ in s:
                    got_first.set()
            except Exception:  # The server goes away mid-stream: expected.
                pass
            got_first.set()

        t = threading.Thread(target=long_stream)
        t.start()
        check(got_first.wait(60), "long stream never started")
        rc = server.stop(timeout=30)
        t.join(30)
        check(rc == 0, f"SIGTERM with a stream in flight: exit {rc}")
        check(not t.is_alive(), "the client stream did not end after the server stopped")
        log = server.log_text()
        check("stopped" in log, "no 'stopped' line in the log")


if __name__ == "__main__":
    main_wrapper(run)

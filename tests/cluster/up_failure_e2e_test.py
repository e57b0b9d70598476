#!/usr/bin/env python3
"""Node failures never leave a client hanging. With `crescent up --prefill 2 --decode 2` and
streams of requests running:
  1. kill -9 of a prefill node: requests keep succeeding (the conductor retries on the other);
  2. kill -9 of a decode node mid-stream (the one running the most streams, per its
     crescent:num_requests_running): the streams it carried end with an error (APIError /
     an SSE error event, or at least without a finish_reason) within a bounded time, none hangs;
  3. later requests succeed on the survivors; `up` keeps serving and still stops cleanly.

  up_failure_e2e_test.py --crescent build/release/bin/crescent --model PATH
"""
import concurrent.futures
import os
import signal
import threading
import time

import openai

from cluster_common import Up, check, fail, main_wrapper, metric_sum, wait_gone

STREAM_DEADLINE_S = 45  # A stream that has not ended by then after the kill counts as hung.


def stream(client, model, max_tokens, started=None):
    """One streamed completion. Returns ("ok", text) / ("error", why) / ("truncated", text).
    `started` is set once 8 chunks have arrived (the request is then decoding on a decode node:
    the first token alone comes from the prefill node)."""
    text, finish, chunks = "", None, 0
    try:
        for chunk in client.completions.create(model=model, prompt="Count: 1, 2, 3, 4, 5,",
                                               temperature=0, max_tokens=max_tokens,
                                               stream=True):
            chunks += 1
            for c in chunk.choices:
                text += c.text or ""
                finish = c.finish_reason or finish
            if started is not None and chunks >= 8:
                started.set()
    except (openai.APIError, openai.APIConnectionError) as e:
        return "error", f"{type(e).__name__} after {chunks} chunks: {e}"
    return ("ok" if finish in ("stop", "length") else "truncated"), f"{chunks} chunks: {text}"


def run(crescent, model):
    with Up(crescent, model, prefill=2, decode=2) as up:
        client = openai.OpenAI(base_url=up.base + "/v1", api_key="none",
                               timeout=STREAM_DEADLINE_S, max_retries=0)
        model_id = client.models.list().data[0].id
        for _ in range(2):
            status, text = stream(client, model_id, 8)
            check(status == "ok", f"warm-up request failed: {status} {text}")

        # 1. A prefill node dies while requests keep coming.
        victim = up.process("prefill-0")
        results = []
        lock = threading.Lock()
        stop = threading.Event()

        def loop():
            while not stop.is_set():
                r = stream(client, model_id, 8)
                with lock:
                    results.append(r)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(loop) for _ in range(2)]
            time.sleep(1.0)
            os.kill(victim["pid"], signal.SIGKILL)
            print(f"killed {victim['name']} (pid {victim['pid']})")
            t_kill = time.time()
            while time.time() - t_kill < 8:
                time.sleep(0.2)
            stop.set()
            for f in futures:
                f.result(timeout=STREAM_DEADLINE_S + 10)
        print("requests around the prefill kill:", [r[0] for r in results])
        bad = [r for r in results if r[0] != "ok"]
        check(len(results) >= 4, f"too few requests completed: {results}")
        check(not bad, f"requests failed although another prefill node was alive: {bad}")
        m = up.metrics()
        print("prefill retries:", metric_sum(m, "crescent:prefill_retries_total"))

        # 2. A decode node dies mid-stream: the one carrying the most of the running streams.
        outcomes = [None] * 4
        started = [threading.Event() for _ in outcomes]

        def long_stream(i):
            outcomes[i] = stream(client, model_id, 400, started[i])
            outcomes[i] = (*outcomes[i], time.time())

        threads = [threading.Thread(target=long_stream, args=(i,), daemon=True)
                   for i in range(len(outcomes))]
        for t in threads:
            t.start()
        for e in started:
            check(e.wait(60), "a long stream did not start")
        # The first token comes from the prefill node, before the stream reaches a decode node,
        # and the nodes' gauges refresh periodically: wait until a decode node shows the streams.
        running = {}
        deadline = time.time() + 30
        while time.time() < deadline:
            running = {p["name"]: metric_sum(up.metrics(p["name"]), "crescent:num_requests_running")
                       for p in up.processes("decode")}
            if max(running.values()) > 0:
                break
            time.sleep(0.2)
        victim = up.process(max(running, key=running.get))
        check(running[victim["name"]] > 0, f"no decode node runs the streams: {running}")
        os.kill(victim["pid"], signal.SIGKILL)
        t_kill = time.time()
        print(f"killed {victim['name']} (pid {victim['pid']}) running "
              f"{running[victim['name']]:.0f} of the 4 streams ({running})")
        for t in threads:
            t.join(timeout=max(0.0, t_kill + STREAM_DEADLINE_S + 5 - time.time()))
            if t.is_alive():
                fail(f"a stream was still open {STREAM_DEADLINE_S + 5} s after the decode node "
                     "died")
        for o in outcomes:
            print(f"  stream: {o[0]} after {o[2] - t_kill:.1f} s: {str(o[1])[:100]!r}")
        broken = [o for o in outcomes if o[0] != "ok"]
        check(len(broken) >= running[victim["name"]],
              f"{running[victim['name']]:.0f} streams ran on {victim['name']} but only "
              f"{len(broken)} noticed its death")
        for o in broken:
            check(o[2] - t_kill < STREAM_DEADLINE_S,
                  f"a broken stream took {o[2] - t_kill:.1f} s to end")
        check(wait_gone(victim["pid"]), "the killed decode node is still alive 10 s after SIGKILL")

        # 3. The survivors serve new requests (after the conductor has noticed the death).
        time.sleep(4)
        for i in range(4):
            status, text = stream(client, model_id, 8)
            check(status == "ok", f"request {i} after the decode kill failed: {status} {text}")
        r = client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "Say hello."}], temperature=0,
            max_tokens=8)
        check(r.choices[0].message.content, "no chat answer after the failures")
        check(up.proc.poll() is None, "crescent up exited after a node died")
        check("died unexpectedly" in up.log_text(), "crescent up did not report the node deaths")


if __name__ == "__main__":
    main_wrapper(run)

#!/usr/bin/env python3
"""An overloaded cluster rejects early instead of queueing forever: `crescent up` with a tight
TTFT SLO gets a burst of concurrent long-ish requests; some are answered 429 with a Retry-After
header (the openai client raises RateLimitError on them), every other one completes, nothing
hangs, and the conductor counts the rejections in crescent:requests_rejected_total.

  up_overload_e2e_test.py --crescent build/release/bin/crescent --model PATH
"""
import concurrent.futures
import time

import openai
import requests

from cluster_common import Up, check, main_wrapper, metric_sum

BURST = 24
TEXT = ("A river starts as rain on the mountains, gathers in streams, and runs through valleys "
        "and towns to the sea, carrying silt that builds fertile plains. ") * 6


def one(base, model, i):
    body = {"model": model, "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "user", "content": f"Request {i}. {TEXT} Summarize."}]}
    t0 = time.time()
    try:
        r = requests.post(base + "/v1/chat/completions", json=body, timeout=(5, 120))
    except requests.RequestException as e:  # A hang ends here: status 0.
        return 0, {}, {"exception": repr(e)}, time.time() - t0
    return r.status_code, r.headers, r.json() if r.content else None, time.time() - t0


def run(crescent, model):
    with Up(crescent, model, prefill=1, decode=1, kv_cache_mb=256,
            extra=("--slo-ttft-ms", "2000", "--slo-tbt-ms", "1000")) as up:
        client = openai.OpenAI(base_url=up.base + "/v1", api_key="none", timeout=120,
                               max_retries=0)
        model_id = client.models.list().data[0].id
        start = time.time()
        with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
            results = list(pool.map(lambda i: one(up.base, model_id, i), range(BURST)))
        print(f"burst of {BURST} done in {time.time() - start:.1f} s")
        codes = [r[0] for r in results]
        print("status codes:", sorted(codes))
        for code, _, body, seconds in results:
            print(f"  {code} after {seconds:.1f} s: {str(body)[:160]}")
        rejected = [r for r in results if r[0] == 429]
        served = [r for r in results if r[0] == 200]
        check(len(rejected) + len(served) == BURST, f"unexpected status codes: {codes}")
        check(rejected, "nothing was rejected: the burst was admitted whole")
        check(served, "everything was rejected: even the first request")
        for code, headers, body, _ in rejected:
            retry = headers.get("Retry-After")
            check(retry is not None and retry.isdigit() and int(retry) >= 1,
                  f"429 without a valid Retry-After: {dict(headers)}")
            check(body and "error" in body, f"429 body is not an OpenAI error: {body}")
        for code, headers, body, _ in served:
            choice = body["choices"][0]
            check(choice["finish_reason"] in ("stop", "length") and choice["message"]["content"],
                  f"bad answer {body}")
        m = up.metrics()
        total = metric_sum(m, "crescent:requests_rejected_total")
        print("crescent:requests_rejected_total =", total,
              {k: v for k, v in m.items() if k.startswith("crescent:requests_rejected_total")})
        check(total >= len(rejected), f"requests_rejected_total {total} < {len(rejected)} 429s")

        # Once the burst has drained the cluster serves again, and through the openai client.
        r = client.chat.completions.create(
            model=model_id, messages=[{"role": "user", "content": "Say hello."}], temperature=0,
            max_tokens=8)
        check(r.choices[0].message.content, "no answer after the burst")

        # The openai client surfaces a rejection as RateLimitError.
        saw_rate_limit = False
        with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
            def call(i):
                try:
                    client.chat.completions.create(
                        model=model_id, temperature=0, max_tokens=24,
                        messages=[{"role": "user", "content": f"Again {i}. {TEXT} Summarize."}])
                    return False
                except openai.RateLimitError:
                    return True
            saw_rate_limit = any(pool.map(call, range(BURST)))
        check(saw_rate_limit, "the openai client saw no RateLimitError in a second burst")


if __name__ == "__main__":
    main_wrapper(run)

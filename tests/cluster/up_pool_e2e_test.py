#!/usr/bin/env python3
"""KV reuse across prefill nodes through the pool: with `crescent up --prefill 2 --decode 1
--prefill-policy round-robin`, turn 2 of a conversation (turn 1's messages + answer + a new user
message) runs on the other prefill node, which fetches turn 1's blocks from the KV pool instead
of recomputing them: usage.prompt_tokens_details.cached_tokens > 0 and that node's
crescent:pool_fetched_tokens_total > 0.

  up_pool_e2e_test.py --crescent build/release/bin/crescent --model PATH
"""
import time

import openai

from cluster_common import Up, check, fail, main_wrapper, metric_sum

# Long enough (> 100 tokens) that turn 1 leaves several full KV blocks behind.
CONTEXT = ("Our team keeps a garden with tomatoes, beans, squash, peppers, lettuce and herbs. "
           "Every morning one person waters the beds, another checks for pests, and a third "
           "writes down what was harvested. In spring we plant seedlings; in summer we pick "
           "vegetables daily; in autumn we compost the old plants and cover the soil with straw. ")


def node_counts(up, names):
    """{node: (requests handled (prefill_compute_seconds count), pool fetched, pool put)}."""
    out = {}
    for n in names:
        m = up.metrics(n)
        handled = metric_sum(m, "crescent:prefill_compute_seconds_count")
        if handled == 0:
            handled = metric_sum(m, "crescent:prefill_requests_total")
        out[n] = (handled, metric_sum(m, "crescent:pool_fetched_tokens_total"),
                  metric_sum(m, "crescent:pool_put_blocks_total"))
    return out


def which_node(before, after):
    moved = [n for n in after if after[n][0] > before[n][0]]
    check(len(moved) == 1, f"expected exactly one prefill node to handle the turn: "
                           f"{before} -> {after}")
    return moved[0]


def run(crescent, model):
    with Up(crescent, model, prefill=2, decode=1,
            extra=("--prefill-policy", "round-robin")) as up:
        names = [p["name"] for p in up.processes("prefill")]
        check(len(names) == 2, str(names))
        client = openai.OpenAI(base_url=up.base + "/v1", api_key="none", timeout=120,
                               max_retries=0)
        model_id = client.models.list().data[0].id

        messages = [{"role": "system", "content": "You are a helpful gardening assistant."},
                    {"role": "user", "content": CONTEXT * 2 + "What do we do in autumn?"}]
        c0 = node_counts(up, names)
        r1 = client.chat.completions.create(model=model_id, messages=messages, temperature=0,
                                            max_tokens=16)
        c1 = node_counts(up, names)
        first = which_node(c0, c1)
        print(f"turn 1 on {first}: prompt_tokens={r1.usage.prompt_tokens}")
        check(r1.usage.prompt_tokens > 100, f"turn 1 prompt too short: {r1.usage}")

        # Turn 1's blocks must be in the pool before turn 2 can find them there.
        deadline = time.time() + 20
        while node_counts(up, names)[first][2] == 0:
            if time.time() > deadline:
                fail(f"{first} put no block into the pool: {node_counts(up, names)}")
            time.sleep(0.1)

        messages += [{"role": "assistant", "content": r1.choices[0].message.content},
                     {"role": "user", "content": "And what do we do in spring?"}]
        c2 = node_counts(up, names)
        r2 = client.chat.completions.create(model=model_id, messages=messages, temperature=0,
                                            max_tokens=16)
        c3 = node_counts(up, names)
        second = which_node(c2, c3)
        details = r2.usage.prompt_tokens_details
        cached = details.cached_tokens if details is not None else 0
        print(f"turn 2 on {second}: prompt_tokens={r2.usage.prompt_tokens} cached_tokens={cached}"
              f" pool_fetched_tokens {c2[second][1]} -> {c3[second][1]}")
        check(second != first, f"round-robin sent both turns to {first}")
        check(cached and cached > 0, f"turn 2 reused nothing: usage={r2.usage}")
        check(cached < r2.usage.prompt_tokens, f"cached_tokens {cached} >= prompt_tokens")
        check(c3[second][1] > c2[second][1],
              f"{second} fetched nothing from the pool: {c2[second]} -> {c3[second]}")
        check(c3[second][1] - c2[second][1] <= r2.usage.prompt_tokens,
              f"{second} fetched more tokens than the prompt has: {c2} -> {c3}")
        check(r2.choices[0].finish_reason in ("stop", "length"), str(r2.choices[0]))


if __name__ == "__main__":
    main_wrapper(run)

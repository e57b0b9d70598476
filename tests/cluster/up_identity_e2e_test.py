#!/usr/bin/env python3
"""Colocated and disaggregated serving give the same greedy output: the same requests through
`crescent serve`, `crescent up` with 1 prefill + 1 decode node and with 2 + 2 give token-for-token
identical text, finish_reason and token counts (JSON mode, a tool call, a batch of prompts and
echoed prompts with their logprobs included). Then a cluster whose decode node speculates
(--speculative-tokens) confirms drafts of a copying answer.

  up_identity_e2e_test.py --crescent build/release/bin/crescent --model PATH

Exit 77 (CTest skip) without the model or the openai package.
"""
import json
import time
import urllib.request

import openai

from cluster_common import Server, Up, check, main_wrapper

# ~300 tokens of prose, so that the prompt spans many KV blocks and several prefill chunks.
LONG = " ".join([
    "The history of the lighthouse begins with fires lit on hilltops to guide ships home.",
    "Later, towers of stone carried lamps of oil behind polished mirrors, and keepers lived",
    "beside them through storms and long winters, trimming wicks and winding clockwork.",
] * 6)


OWNER_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                   "pets": {"type": "array", "items": {
                       "type": "object", "properties": {
                           "kind": {"enum": ["cat", "dog", "bird"]}, "name": {"type": "string"}},
                       "required": ["kind", "name"]}}},
    "required": ["name", "age", "pets"]}


TOOLS = [{"type": "function", "function": {
              "name": "get_weather", "description": "The current weather in a city.",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                             "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {
              "type": "object", "properties": {"timezone": {"type": "string"}}}}}]


def requests():
    """(kind, kwargs) pairs; all greedy, short outputs."""
    return [
        ("chat", dict(messages=[{"role": "user", "content": "What is the capital of France?"}])),
        ("chat", dict(messages=[
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": LONG + "\n\nSummarize the text above in one sentence."}])),
        ("completion", dict(prompt="The three primary colors are")),
        # vLLM's extensions through the cluster: the prefill node samples the first token
        # under them, the decode node the rest.
        ("chat", dict(messages=[{"role": "user", "content": "Say hi."}],
                      extra_body={"min_tokens": 12, "repetition_penalty": 1.2,
                                  "stop_token_ids": [30]})),
        ("completion", dict(prompt=LONG + " In the end,")),
        ("completion_batch", dict(prompt=["The sky is", "Water boils at", [504, 3458, 314]])),
        ("chat_stream", dict(messages=[{"role": "user", "content": "Name three animals."}])),
        ("completion_stream", dict(prompt="Count: 1, 2, 3, 4, 5,")),
        # echo with prompt logprobs: the prefill node returns them with the first token.
        ("completion_echo", dict(prompt="The capital of France is", echo=True, logprobs=2,
                                 max_tokens=4)),
        ("completion_echo", dict(prompt=LONG[:400], echo=True, logprobs=0, max_tokens=0)),
        # JSON mode: the prefill node samples the first token under the constraint, the decode
        # node the rest.
        ("chat", dict(messages=[{"role": "user", "content": "Give me a JSON object with the "
                                 "keys city and country for Paris."}],
                      response_format={"type": "json_object"})),
        ("chat", dict(messages=[{"role": "user", "content": "Tom is 40 and owns a dog called "
                                 "Rex. Give this as JSON."}],
                      response_format={"type": "json_schema", "json_schema": {
                          "name": "owner", "schema": OWNER_SCHEMA}}, max_tokens=96)),
        # A tool call: the front writes the tools into the prompt and the constraint, the
        # cluster serves an ordinary constrained request.
        ("chat_tools", dict(messages=[{"role": "user", "content": "What is the weather in "
                                       "Oslo?"}], tools=TOOLS, tool_choice="required",
                            max_tokens=64)),
    ]


def run_all(base):
    client = openai.OpenAI(base_url=base + "/v1", api_key="none", timeout=120, max_retries=0)
    model = client.models.list().data[0].id
    out = []
    for kind, kw in requests():
        common = dict(model=model, temperature=0, max_tokens=24)
        common.update(kw)
        if kind == "chat":
            r = client.chat.completions.create(**common)
            out.append((r.choices[0].message.content, r.choices[0].finish_reason,
                        r.usage.prompt_tokens, r.usage.completion_tokens))
        elif kind == "chat_tools":
            r = client.chat.completions.create(**common)
            m = r.choices[0].message
            calls = [(c.function.name, c.function.arguments) for c in m.tool_calls or []]
            check(len(calls) == 1 and m.content is None, f"tool call: {m!r}")
            json.loads(calls[0][1])
            out.append((calls, r.choices[0].finish_reason, r.usage.prompt_tokens,
                        r.usage.completion_tokens))
        elif kind == "completion":
            r = client.completions.create(**common)
            out.append((r.choices[0].text, r.choices[0].finish_reason, r.usage.prompt_tokens,
                        r.usage.completion_tokens))
        elif kind == "completion_echo":
            r = client.completions.create(**common)
            c = r.choices[0]
            lp = c.logprobs
            check(c.text.startswith(kw["prompt"]) and lp.token_logprobs[0] is None and
                  len(lp.tokens) == r.usage.prompt_tokens + r.usage.completion_tokens,
                  f"echo: {c}")
            out.append(((c.text, lp.tokens, lp.token_logprobs, lp.top_logprobs), c.finish_reason,
                        r.usage.prompt_tokens, r.usage.completion_tokens))
        elif kind == "completion_batch":
            r = client.completions.create(**common)
            check(sorted(c.index for c in r.choices) == list(range(len(kw["prompt"]))),
                  f"batch choice indices {[c.index for c in r.choices]}")
            ordered = sorted(r.choices, key=lambda c: c.index)
            out.append(([c.text for c in ordered], [c.finish_reason for c in ordered][0],
                        r.usage.prompt_tokens, r.usage.completion_tokens))
        else:
            create = (client.chat.completions.create if kind == "chat_stream"
                      else client.completions.create)
            text, finish, usage = "", None, None
            for chunk in create(stream=True, stream_options={"include_usage": True}, **common):
                if chunk.usage is not None:
                    usage = chunk.usage
                for c in chunk.choices:
                    text += (c.delta.content or "") if kind == "chat_stream" else (c.text or "")
                    finish = c.finish_reason or finish
            check(usage is not None, f"{kind}: no usage chunk")
            out.append((text, finish, usage.prompt_tokens, usage.completion_tokens))
    for (kind, kw), o in zip(requests(), out):
        finishes = ("tool_calls",) if kind == "chat_tools" else ("stop", "length")
        check((o[3] > 0 or kw.get("max_tokens") == 0) and o[1] in finishes,
              f"{kind}: bad answer {o}")
        if "response_format" in kw:
            check(o[1] == "stop" and isinstance(json.loads(o[0]), dict),
                  f"JSON mode did not answer with one object: {o}")
    return out


def tokenize(base):
    """POST /tokenize of a chat with tools: the conductor renders as `crescent serve` does."""
    body = {"messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
            "tools": TOOLS}
    req = urllib.request.Request(base + "/tokenize", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        out = json.load(r)
    check(out["count"] == len(out["tokens"]) > 100, f"/tokenize: {out}")
    return out["tokens"]


def compare(name, want, got):
    for (kind, _), w, g in zip(requests(), want, got):
        print(f"  {name} {kind}: {repr(g[0])[:200]} ({g[1]}, {g[2]}+{g[3]} tokens)")
        check(w == g, f"{name} differs from crescent serve on a {kind} request:\n"
                      f"  serve: {w}\n  {name}: {g}")


def run(crescent, model):
    with Server(crescent, model) as serve:
        want = run_all(serve.base)
        want_tokens = tokenize(serve.base)
        check(serve.stop() == 0, "crescent serve did not stop cleanly")
    for name, p, d in (("up 1P+1D", 1, 1), ("up 2P+2D", 2, 2)):
        with Up(crescent, model, prefill=p, decode=d) as up:
            got = run_all(up.base)
            compare(name, want, got)
            check(tokenize(up.base) == want_tokens, f"{name}: /tokenize differs from serve's")
            if p == 2:
                # Each request went through the cluster: the conductor timed every phase.
                m = up.metrics()
                check(any(k.startswith("crescent:phase_seconds") for k in m),
                      "no crescent:phase_seconds on the conductor's /metrics")
    check_speculative(crescent, model)


PARAGRAPH = ("The lighthouse stood on a rock at the mouth of the bay. Every evening the keeper "
             "climbed the steps, trimmed the wick and lit the lamp.")


def check_speculative(crescent, model):
    """`crescent up --speculative-tokens 4`: the decode node drafts by prompt lookup and
    confirms drafts of a copying answer; the heartbeats bring its counters to the conductor."""
    with Up(crescent, model, extra=["--speculative-tokens", "4"]) as up:
        client = openai.OpenAI(base_url=up.base + "/v1", api_key="none", timeout=120,
                               max_retries=0)
        r = client.chat.completions.create(
            model=client.models.list().data[0].id, temperature=0, max_tokens=48,
            messages=[{"role": "user", "content": "Repeat the following text exactly, word for "
                       "word:\n\n" + PARAGRAPH}])
        text = r.choices[0].message.content
        check(PARAGRAPH[:40] in text, f"the copy did not copy: {text!r}")
        deadline = time.time() + 10
        while True:  # the counters come with the next heartbeat
            m = up.metrics()
            accepted = m.get("crescent:spec_decode_num_accepted_tokens_total", 0)
            drafts = m.get("crescent:spec_decode_num_draft_tokens_total", 0)
            if accepted > 0 or time.time() > deadline:
                break
            time.sleep(0.2)
        print(f"  up --speculative-tokens 4: {accepted:.0f} of {drafts:.0f} drafts confirmed")
        check(0 < accepted <= drafts, f"drafts {drafts}, accepted {accepted}")


if __name__ == "__main__":
    main_wrapper(run)

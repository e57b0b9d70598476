#!/usr/bin/env python3
"""End-to-end checks of `crescent serve` on the reference model with the official `openai`
client and with curl.

  serve_api_e2e_test.py --crescent build/release/bin/crescent --model PATH

Checks: chat, streaming with include_usage (role in the first delta, finish_reason only in the
last, a final usage chunk with empty choices), stop strings, n=2, seed reproducibility,
logprobs/top_logprobs, echo with prompt logprobs (max_tokens 0 too), JSON mode (response_format json_object) and structured outputs
(json_schema, through the client's Pydantic `.parse()`), tool calls (a named function,
"required" streamed, the conversation going on with a tool result, a Pydantic function tool through
`.parse()`, Llama 3.1's tool layout under --chat-template llama3.1), max_tokens -> "length", the completions endpoint (also streamed, and
with a batch of prompts),
/v1/models, errors (400 bad parameter and context overflow, 401 API key, 404 model, 413 body),
cached_tokens on a shared long prefix, speculative decoding (a second server with
--speculative-tokens), raw SSE framing through curl, bad flags (exit 2) and a
graceful SIGTERM stop (exit 0). Exit 77 (CTest skip) without the model.
"""
import json
import subprocess
import typing

import openai
import pydantic

from serve_common import Server, check, fail, main_wrapper

KEY = "test-secret-key"
MODEL = "smol"


def greedy_chat(client, content, **kw):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], temperature=0, **kw)


def check_chat(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "What is the capital of France?"}],
        temperature=0, max_tokens=40)
    text = r.choices[0].message.content
    print("chat:", repr(text))
    check(r.choices[0].message.role == "assistant", "role is not assistant")
    check("Paris" in text, f"greedy answer lacks 'Paris': {text!r}")
    check(r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason)
    check(r.id.startswith("chatcmpl-"), r.id)
    check(r.model == MODEL, r.model)
    check(r.usage.prompt_tokens > 10 and r.usage.completion_tokens > 0, str(r.usage))
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens,
          str(r.usage))


def check_stream(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name three colors."}],
        temperature=0, max_tokens=30, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    check(len(chunks) >= 3, f"only {len(chunks)} chunks")
    with_choices = [c for c in chunks if c.choices]
    check(with_choices[0].choices[0].delta.role == "assistant", "no role in the first delta")
    for c in with_choices[1:]:
        check(c.choices[0].delta.role in (None, "assistant"), "role in a later delta")
    for c in with_choices[:-1]:
        check(c.choices[0].finish_reason is None, "finish_reason before the last chunk")
    check(with_choices[-1].choices[0].finish_reason in ("stop", "length"),
          "no finish_reason in the last chunk")
    last = chunks[-1]
    check(last.choices == [], "the usage chunk has choices")
    check(last.usage is not None and last.usage.completion_tokens > 0, "no usage chunk")
    for c in chunks[:-1]:
        check(c.usage is None, "usage before the final chunk")
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    print("stream:", repr(text))
    check(len(text) > 0, "empty streamed text")
    check(len({c.id for c in chunks}) == 1, "chunk ids differ")


def check_stop_and_length(client):
    prompt = "Count from one to twenty: one, two, three,"
    greedy = dict(model=MODEL, prompt=prompt, temperature=0, max_tokens=24)
    client.completions.create(**greedy)  # Warm the prefix cache: later runs compute alike.
    free = client.completions.create(**greedy)
    full = free.choices[0].text
    print("completion:", repr(full))
    check(free.object == "text_completion" and free.id.startswith("cmpl-"), free.id)
    check(free.choices[0].finish_reason == "length", free.choices[0].finish_reason)
    check(free.usage.completion_tokens == 24, str(free.usage))
    check(len(full) > 12, f"short completion {full!r}")
    stop = full[6:9]
    at = full.find(stop)
    r = client.completions.create(**greedy, stop=[stop, "\u00a7\u00a7"])
    check(r.choices[0].finish_reason == "stop", f"stop: {r.choices[0].finish_reason}")
    check(r.choices[0].text == full[:at], f"stop text {r.choices[0].text!r} != {full[:at]!r}")
    # Streamed with a stop string: the same text, finish_reason "stop" in the last chunk.
    s = list(client.completions.create(**greedy, stop=[stop], stream=True))
    streamed = "".join(c.choices[0].text for c in s if c.choices)
    check(streamed == full[:at], f"streamed stop text {streamed!r} != {full[:at]!r}")
    check(s[-1].choices[0].finish_reason == "stop", "streamed stop finish_reason")
    # Chat, max_tokens -> length.
    r = greedy_chat(client, "Write a long story about a dragon.", max_tokens=5)
    check(r.choices[0].finish_reason == "length", r.choices[0].finish_reason)
    check(r.usage.completion_tokens == 5, str(r.usage))


def check_batched_prompts(client):
    prompts = ["The capital of France is", "One, two, three,", [504, 3458, 314]]
    alone = [client.completions.create(model=MODEL, prompt=p, temperature=0, max_tokens=8)
             for p in prompts]
    r = client.completions.create(model=MODEL, prompt=prompts, temperature=0, max_tokens=8, n=2)
    check(len(r.choices) == 6, f"{len(r.choices)} choices for 3 prompts x 2")
    for c in r.choices:
        want = alone[c.index // 2].choices[0].text
        check(c.text == want, f"batched choice {c.index}: {c.text!r} != alone {want!r}")
    check(r.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone), str(r.usage))
    check(r.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone) * 2,
          str(r.usage))
    print("batched:", [c.text for c in r.choices])
    # Streamed: each chunk names its choice; the texts add up to the same.
    texts = {}
    for chunk in client.completions.create(model=MODEL, prompt=prompts[:2], temperature=0,
                                           max_tokens=8, stream=True):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
    check(texts == {0: alone[0].choices[0].text, 1: alone[1].choices[0].text},
          f"streamed batch {texts}")


def check_vllm_extensions(server, client):
    """ignore_eos runs to max_tokens (as the replay bench asks); repetition_penalty is taken."""
    plain = greedy_chat(client, "Say hi.", max_tokens=64)
    check(plain.choices[0].finish_reason == "stop" and plain.usage.completion_tokens < 48,
          f"a short answer was expected: {plain.usage} {plain.choices[0].message.content!r}")
    r = greedy_chat(client, "Say hi.", max_tokens=48, extra_body={"ignore_eos": True})
    print(f"ignore_eos: {r.usage.completion_tokens} tokens, {r.choices[0].finish_reason}")
    check(r.usage.completion_tokens == 48 and r.choices[0].finish_reason == "length",
          f"ignore_eos: {r.usage} {r.choices[0].finish_reason}")
    # min_tokens holds the end token back; stop_token_ids ends on a chosen token (here the
    # model's end-of-turn token, so the answer is the plain one).
    r = greedy_chat(client, "Say hi.", max_tokens=64, extra_body={"min_tokens": 30})
    print(f"min_tokens 30: {r.usage.completion_tokens} tokens, {r.choices[0].finish_reason}")
    check(r.usage.completion_tokens >= 30, f"min_tokens: {r.usage}")
    status, _, data = server.request("POST", "/tokenize", {"prompt": "<|im_end|>"},
                                     {"Authorization": f"Bearer {KEY}"})
    check(status == 200, f"/tokenize: {status} {data}")
    end_of_turn = json.loads(data)["tokens"][-1:]
    r = greedy_chat(client, "Say hi.", max_tokens=64,
                    extra_body={"ignore_eos": True, "stop_token_ids": end_of_turn})
    check(r.choices[0].finish_reason == "stop" and
          r.choices[0].message.content == plain.choices[0].message.content,
          f"stop_token_ids {end_of_turn}: {r.choices[0].finish_reason} {r.choices[0].message.content!r}")
    r = greedy_chat(client, "Count from one to twenty in words.", max_tokens=40,
                    extra_body={"repetition_penalty": 1.3})
    base = greedy_chat(client, "Count from one to twenty in words.", max_tokens=40)
    check(r.choices[0].message.content != base.choices[0].message.content,
          "repetition_penalty 1.3 changed nothing")


def check_tokenize(server, client):
    """/tokenize gives the ids a request would start from; /detokenize gives the text back."""
    def post(path, body):
        status, _, data = server.request("POST", path, json.dumps(body),
                                         {"Authorization": f"Bearer {KEY}",
                                          "Content-Type": "application/json"})
        return status, json.loads(data)
    status, out = post("/tokenize", {"model": MODEL, "prompt": "Hello world, 123!"})
    check(status == 200 and out["count"] == len(out["tokens"]) > 3, f"tokenize: {status} {out}")
    check(out["max_model_len"] == 8192, f"tokenize max_model_len {out}")
    status, back = post("/detokenize", {"tokens": out["tokens"]})
    check(status == 200 and back["prompt"].endswith("Hello world, 123!"), f"detokenize {back}")
    # A chat: the rendered conversation's tokens are the prompt_tokens a completion reports.
    messages = [{"role": "user", "content": "What is 2+2?"}]
    status, chat = post("/tokenize", {"model": MODEL, "messages": messages})
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
    check(status == 200 and chat["count"] == r.usage.prompt_tokens,
          f"tokenize chat {chat['count']} vs prompt_tokens {r.usage.prompt_tokens}")
    status, text = post("/detokenize", {"tokens": chat["tokens"]})
    check("<|im_start|>user\nWhat is 2+2?<|im_end|>" in text["prompt"], f"chat text {text}")
    print(f"tokenize: {out['count']} tokens; chat {chat['count']}")
    status, err = post("/detokenize", {"tokens": [10**6]})
    check(status == 400 and err["error"]["param"] == "tokens[0]", f"detokenize bad id {err}")


def check_n_and_seed(client):
    args = dict(model=MODEL, messages=[{"role": "user", "content": "Tell me a short joke."}],
                temperature=0.8, max_tokens=20)
    client.chat.completions.create(**args, seed=1)  # Warm the prefix cache.
    a = client.chat.completions.create(**args, seed=1234)
    b = client.chat.completions.create(**args, seed=1234)
    print("seeded:", repr(a.choices[0].message.content))
    check(a.choices[0].message.content == b.choices[0].message.content,
          "same seed, different text")
    two = client.chat.completions.create(**args, seed=1234, n=2)
    check(len(two.choices) == 2, f"{len(two.choices)} choices")
    check(sorted(c.index for c in two.choices) == [0, 1], "choice indices")
    for c in two.choices:
        check(c.finish_reason in ("stop", "length"), "choice without finish_reason")
    # (Choice 0 of n=2 is not compared with the n=1 text: the two choices run as a batch of two,
    # and the CPU kernels do not promise bit-identical logits across batch shapes.)
    check(all(c.message.content for c in two.choices), "an empty choice")
    check(two.usage.completion_tokens >= 2, str(two.usage))
    # Streamed n=2: both indices, each with exactly one finish_reason.
    chunks = list(client.chat.completions.create(**args, seed=9, n=2, stream=True))
    finishes = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    check(sorted(finishes) == [0, 1], f"finish chunks per index: {finishes}")


def check_logprobs(client):
    r = greedy_chat(client, "Say hello.", max_tokens=8, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    check(content is not None and len(content) > 0, "no logprobs")
    check(len(content) <= r.usage.completion_tokens, "more logprobs than tokens")
    for t in content:
        check(t.logprob <= 0, f"logprob {t.logprob} > 0")
        check(len(t.top_logprobs) == 3, f"{len(t.top_logprobs)} top_logprobs")
        tops = [x.logprob for x in t.top_logprobs]
        check(tops == sorted(tops, reverse=True), "top_logprobs not sorted")
        # Greedy: the chosen token is the most likely one.
        check(abs(t.logprob - tops[0]) < 1e-4, f"greedy token not the top one: {t}")
    if r.choices[0].finish_reason == "length":
        check("".join(t.token for t in content) == r.choices[0].message.content,
              "logprob tokens do not spell the text")
    c = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=4, temperature=0,
                                  logprobs=2)
    lp = c.choices[0].logprobs
    check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) > 0,
          "completions logprobs")


def check_echo(server, client):
    """echo: the prompt comes back first, with its tokens' logprobs (the first null), and
    max_tokens 0 gives the prompt alone: what lm-eval's loglikelihood requests use."""
    prompt = "The capital of France is"
    r = client.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=2,
                                  max_tokens=3, temperature=0)
    c = r.choices[0]
    lp = c.logprobs
    n = r.usage.prompt_tokens + r.usage.completion_tokens
    check(c.text.startswith(prompt) and len(c.text) > len(prompt), f"echo text {c.text!r}")
    check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n,
          f"echo logprobs cover {len(lp.tokens)} tokens, not {n}")
    check(lp.token_logprobs[0] is None and lp.top_logprobs[0] is None, "first token's logprob")
    check(all(x <= 0 for x in lp.token_logprobs[1:]), f"logprobs {lp.token_logprobs}")
    check("".join(lp.tokens) == c.text, f"tokens {lp.tokens} do not spell {c.text!r}")
    offsets = [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    check(lp.text_offset == offsets, f"text_offset {lp.text_offset}")
    for i in range(1, n):
        tops = lp.top_logprobs[i]
        check(len(tops) == 2 and lp.token_logprobs[i] <= max(tops.values()) + 1e-6,
              f"position {i}: {lp.tokens[i]!r} {lp.token_logprobs[i]} above its top {tops}")

    # The generated tokens' logprobs are the prompt logprobs of the same text echoed back.
    k = r.usage.prompt_tokens
    status, _, data = server.request("POST", "/tokenize", json.dumps({"model": MODEL,
                                                                      "prompt": c.text}),
                                     {"Authorization": f"Bearer {KEY}",
                                      "Content-Type": "application/json"})
    ids = json.loads(data)["tokens"]
    check(status == 200 and len(ids) == n, f"{c.text!r} re-tokenizes to {len(ids)} tokens")
    again = client.completions.create(model=MODEL, prompt=ids, echo=True, logprobs=0,
                                      max_tokens=0)
    a = again.choices[0]
    check(a.text == c.text and a.finish_reason == "length", f"max_tokens 0 echo: {a}")
    check(again.usage.completion_tokens == 0 and again.usage.prompt_tokens == n,
          f"max_tokens 0 usage {again.usage}")
    for i in range(k, n):
        check(abs(a.logprobs.token_logprobs[i] - lp.token_logprobs[i]) < 1e-3,
              f"token {i}: prompt logprob {a.logprobs.token_logprobs[i]} vs sampled "
              f"{lp.token_logprobs[i]}")

    # Streamed: the echo is the first text; without logprobs nothing waits for the engine.
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, echo=True, max_tokens=2,
                                            temperature=0, stream=True))
    check(chunks[0].choices[0].text == prompt, f"first streamed chunk {chunks[0]}")
    check("".join(ch.choices[0].text for ch in chunks) == c.text[:len(
        "".join(ch.choices[0].text for ch in chunks))], "streamed echo text")
    try:
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=0)
        fail("max_tokens 0 without echo was accepted")
    except openai.BadRequestError as e:
        check(e.body.get("param") == "max_tokens", f"max_tokens 0: {e.body}")
    print(f"echo: {n} tokens, first logprobs {lp.token_logprobs[1:4]}")


def check_json_mode(client):
    r = greedy_chat(client, "Give me a JSON object with the keys city and country for Paris.",
                    max_tokens=40, response_format={"type": "json_object"})
    text = r.choices[0].message.content
    print("json mode:", repr(text))
    check(r.choices[0].finish_reason == "stop", f"JSON mode: {r.choices[0].finish_reason}")
    obj = json.loads(text)
    check(isinstance(obj, dict) and obj, f"JSON mode: not a non-empty object: {text!r}")
    # Sampled and streamed: each request's text is one object, or cut short by max_tokens.
    for seed in range(3):
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "List three colors."}],
            temperature=1.0, seed=seed, max_tokens=64, stream=True,
            response_format={"type": "json_object"})
        text, finish = "", None
        for chunk in stream:
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
        print(f"json mode, seed {seed}: {finish} {text!r}")
        if finish == "stop":
            check(isinstance(json.loads(text), dict), f"JSON mode: not an object: {text!r}")
        else:
            check(finish == "length", f"JSON mode: finish_reason {finish}")
            check(text.lstrip().startswith("{"), f"JSON mode: {text!r}")
    unsupported = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}}}
    for fmt, param in (({"type": "json_schema"}, "response_format.json_schema"),
                       ({"type": "grammar"}, "response_format.type"),
                       (unsupported, "response_format.json_schema.schema"),
                       ("json", "response_format")):
        try:
            greedy_chat(client, "hi", max_tokens=2, response_format=fmt)
            fail(f"response_format {fmt!r}: no error")
        except openai.BadRequestError as e:
            check(e.status_code == 400 and param in str(e.body), f"{fmt!r}: {e}")
            print(f"response_format {str(fmt)[:40]}: 400 {e.body.get('message', '')[:90]}")


class Pet(pydantic.BaseModel):
    kind: typing.Literal["cat", "dog", "bird"]
    name: str


class Owner(pydantic.BaseModel):
    name: str
    age: int
    pets: list[Pet]


class Answer(pydantic.BaseModel):
    answer: str
    confidence: typing.Literal["low", "medium", "high"]
    source: typing.Optional[str]


def check_structured_outputs(client):
    """The openai client's structured outputs: a Pydantic model sent as response_format
    json_schema, the answer parsed back into it."""
    for model, prompt in ((Owner, "Tom is 40 and owns a dog called Rex. Give this as JSON."),
                          (Answer, "What is the capital of France? Answer as JSON.")):
        r = client.beta.chat.completions.parse(
            model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0,
            max_tokens=200, response_format=model)
        m = r.choices[0].message
        print(f"structured {model.__name__}: {m.content!r} -> {m.parsed!r}")
        check(r.choices[0].finish_reason == "stop", f"{model.__name__}: not finished")
        check(isinstance(m.parsed, model), f"{model.__name__}: parsed {m.parsed!r}")
        keys = list(json.loads(m.content).keys())
        check(keys == list(model.model_fields), f"{model.__name__}: keys {keys}")


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city's name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"]}}}
TIME_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "The time now in a timezone.",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}},
                   "required": ["timezone"]}}}


class GetWeather(pydantic.BaseModel):
    """The current weather in a city."""
    city: str
    unit: typing.Literal["celsius", "fahrenheit"]


def check_call(call, names, what):
    check(call.type == "function" and call.id.startswith("call_"), f"{what}: {call!r}")
    check(call.function.name in names, f"{what}: called {call.function.name}")
    args = json.loads(call.function.arguments)
    want = {"get_weather": ["city", "unit"], "get_time": ["timezone"]}[call.function.name]
    check(list(args) == want, f"{what}: arguments {args}")
    if "unit" in args:
        check(args["unit"] in ("celsius", "fahrenheit"), f"{what}: unit {args['unit']!r}")
    return args


def check_tool_calls(client):
    question = [{"role": "user", "content": "What is the weather like in Paris right now?"}]
    tools = [WEATHER_TOOL, TIME_TOOL]
    # A named function: one call to it, with the arguments its parameters schema admits.
    r = client.chat.completions.create(
        model=MODEL, messages=question, temperature=0, max_tokens=80, tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    c = r.choices[0]
    print("tool call (named):", c.message.tool_calls)
    check(c.finish_reason == "tool_calls", f"named: finish_reason {c.finish_reason}")
    check(c.message.content is None, f"named: content {c.message.content!r}")
    check(len(c.message.tool_calls) == 1, f"named: {c.message.tool_calls}")
    call = c.message.tool_calls[0]
    check_call(call, {"get_weather"}, "named")

    # "required", streamed, sampled: the client puts the call together from the deltas.
    for seed in range(2):
        stream = client.chat.completions.create(
            model=MODEL, messages=question, temperature=0.8, seed=seed, max_tokens=80,
            tools=tools, tool_choice="required", stream=True)
        calls, finish, content = {}, None, ""
        for chunk in stream:
            for ch in chunk.choices:
                content += ch.delta.content or ""
                finish = ch.finish_reason or finish
                for tc in ch.delta.tool_calls or []:
                    entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                    entry["id"] += tc.id or ""
                    entry["name"] += tc.function.name or ""
                    entry["arguments"] += tc.function.arguments or ""
        print(f"tool call (required, seed {seed}): {finish} {calls}")
        check(finish == "tool_calls" and len(calls) == 1 and not content,
              f"required: {finish} {calls} {content!r}")
        streamed = calls[0]
        check(streamed["name"] in ("get_weather", "get_time") and
              streamed["id"].startswith("call_"), f"required: {streamed}")
        json.loads(streamed["arguments"])

    # The conversation goes on with the tool's result; tool_choice "none" answers in text.
    followup = question + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "22 degrees celsius, sunny"}]
    r = client.chat.completions.create(model=MODEL, messages=followup, temperature=0,
                                       max_tokens=40, tools=tools, tool_choice="none")
    c = r.choices[0]
    print("after the tool result:", repr(c.message.content))
    check(c.message.tool_calls is None and c.message.content, f"none: {c.message!r}")
    check(c.finish_reason in ("stop", "length"), f"none: {c.finish_reason}")
    # "auto": whatever the model chooses is either text or well-formed calls.
    r = client.chat.completions.create(model=MODEL, messages=followup, temperature=0,
                                       max_tokens=60, tools=tools)
    c = r.choices[0]
    print("auto:", c.finish_reason, repr(c.message.content), c.message.tool_calls)
    if c.finish_reason == "tool_calls":
        for tc in c.message.tool_calls:
            json.loads(tc.function.arguments)
    else:
        check(c.message.tool_calls is None and c.message.content is not None, f"auto: {c!r}")

    # A Pydantic model as a strict function tool, its arguments parsed back by the client.
    r = client.beta.chat.completions.parse(
        model=MODEL, messages=question, temperature=0, max_tokens=80,
        tools=[openai.pydantic_function_tool(GetWeather)], tool_choice="required")
    tc = r.choices[0].message.tool_calls[0]
    print("pydantic tool:", tc.function.parsed_arguments)
    check(isinstance(tc.function.parsed_arguments, GetWeather),
          f"pydantic tool: {tc.function!r}")

    # Errors name the field.
    bad = [({"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name"),
           ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
               "type": "object", "properties": {"s": {"type": "string", "pattern": "^a"}}}}}],
             "tool_choice": "required"}, "tools[0].function.parameters"),
           ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type")]
    for extra, param in bad:
        kw = {"tools": tools, **extra}
        try:
            client.chat.completions.create(model=MODEL, messages=question, max_tokens=2, **kw)
            fail(f"{extra}: no error")
        except openai.BadRequestError as e:
            check(param in str(e.body), f"{extra}: {e}")
            print(f"tools error: 400 {param}: {e.body.get('message', '')[:100]}")


def check_models_and_errors(server, client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    check(ids == [MODEL], f"models {ids}")
    check(client.models.retrieve(MODEL).id == MODEL, "models.retrieve")

    def expect(exc_type, status, fn, what):
        try:
            fn()
        except exc_type as e:
            check(e.status_code == status, f"{what}: status {e.status_code}")
            print(f"{what}: {status} {str(e)[:120]}")
            return e
        fail(f"{what}: no error")

    expect(openai.BadRequestError, 400,
           lambda: greedy_chat(client, "hi", max_tokens=4, extra_body={"temperature": 5}),
           "bad temperature")
    e = expect(openai.BadRequestError, 400, lambda: greedy_chat(client, "hi", max_tokens=100000),
               "context overflow")
    check("8192" in str(e), "overflow message does not give the context length")
    expect(openai.BadRequestError, 400,
           lambda: greedy_chat(client, "word " * 9000, max_tokens=4), "prompt beyond the context")
    expect(openai.NotFoundError, 404, lambda: client.models.retrieve("gpt-4"),
           "unknown model retrieved")
    expect(openai.NotFoundError, 404,
           lambda: client.chat.completions.create(
               model="gpt-4", messages=[{"role": "user", "content": "hi"}], max_tokens=2),
           "unknown model")
    bad_key = openai.OpenAI(base_url=server.base + "/v1", api_key="wrong", max_retries=0)
    expect(openai.AuthenticationError, 401, lambda: greedy_chat(bad_key, "hi", max_tokens=2),
           "wrong API key")
    status, _, _ = server.request("GET", "/v1/models")
    check(status == 401, f"no API key: {status}")
    expect(openai.APIStatusError, 413,
           lambda: greedy_chat(client, "x" * 300000, max_tokens=2), "huge body")
    # A schema nested 30000 deep (within this server's body limit): a 400 before anything walks
    # it (a million levels overflowed the stack of the thread that dumped it and took the
    # server down: openai_protocol_test).
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                       "response_format": {"type": "json_schema",
                                           "json_schema": {"name": "x", "schema": {}}}})
    body = body.replace('"schema": {}', '"schema": ' + '{"a": ' * 30000 + "1" + "}" * 30000)
    status, _, data = server.request("POST", "/v1/chat/completions", body,
                                     {"Authorization": f"Bearer {KEY}"})
    check(status == 400 and b"levels deep" in data, f"deep schema: {status} {data[:200]}")
    print(f"schema nested 30000 deep: {status} {data[:110].decode()}")
    # Bad requests leave the server healthy.
    check(server.request("GET", "/health")[0] == 200, "not healthy after errors")


def check_cached_prefix(client):
    system = " ".join(f"Rule {i}: always answer politely and with care." for i in range(80))
    def ask(q):
        return client.chat.completions.create(
            model=MODEL, messages=[{"role": "system", "content": system},
                                   {"role": "user", "content": q}],
            temperature=0, max_tokens=2)
    first = ask("What is two plus two?")
    second = ask("What colour is the sky?")
    cached = second.usage.prompt_tokens_details.cached_tokens
    print(f"prompt {second.usage.prompt_tokens} tokens, cached {cached}")
    check(first.usage.prompt_tokens > 500, str(first.usage))
    check(cached > 0, "no cached tokens on a shared long prefix")
    check(cached < second.usage.prompt_tokens, "all tokens cached")


PARAGRAPH = ("The lighthouse stood on a rock at the mouth of the bay. Every evening the keeper "
             "climbed the steps, trimmed the wick and lit the lamp.")


def check_speculative(crescent, model, plain):
    """--speculative-tokens: a greedy answer that copies its prompt is drafted by prompt lookup
    and confirmed (the counters in /metrics), and is the plain server's answer. The two can
    differ only where a verification pass's numerics turn a near-tie (docs/runtime.md)."""
    messages = [{"role": "user", "content": "Repeat the following text exactly, word for word:"
                 "\n\n" + PARAGRAPH}]
    want = plain.chat.completions.create(model=MODEL, messages=messages, temperature=0,
                                         max_tokens=48)
    with Server(crescent, model, extra=["--served-model-name", MODEL,
                                        "--speculative-tokens", "4"]) as server:
        client = openai.OpenAI(base_url=server.base + "/v1", api_key="none", max_retries=0,
                               timeout=120)
        got = client.chat.completions.create(model=MODEL, messages=messages, temperature=0,
                                             max_tokens=48)
        text = got.choices[0].message.content
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=MODEL, messages=messages, temperature=0, max_tokens=48, stream=True)
            if c.choices)
        m = server.wait_idle()
    drafts = m.get("crescent:spec_decode_num_draft_tokens_total", 0)
    accepted = m.get("crescent:spec_decode_num_accepted_tokens_total", 0)
    print(f"speculative: {accepted:.0f} of {drafts:.0f} drafts confirmed; "
          f"same as plain: {text == want.choices[0].message.content}")
    check(0 < accepted <= drafts, f"drafts {drafts}, accepted {accepted}")
    check(got.usage.completion_tokens == want.usage.completion_tokens > 0 and
          got.choices[0].finish_reason == want.choices[0].finish_reason,
          f"speculative {got.usage} {got.choices[0].finish_reason} vs plain {want.usage}")
    check(streamed == text, f"streamed {streamed!r} vs {text!r}")
    check(PARAGRAPH[:40] in text, f"the copy did not copy: {text!r}")


def check_llama31_tools(crescent, model):
    """A model with Llama 3.1's chat template (here --chat-template llama3.1) gets tools in its
    own layout: the functions before the first user message, past calls as bare JSON with
    "parameters", results as ipython turns; a required call is generated in that form and read
    back as tool_calls."""
    with Server(crescent, model, extra=["--served-model-name", MODEL,
                                        "--chat-template", "llama3.1"]) as server:
        def post(path, body):
            status, _, data = server.request("POST", path, json.dumps(body),
                                             {"Content-Type": "application/json"})
            return status, json.loads(data)
        messages = [{"role": "user", "content": "Weather in Oslo?"},
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {
                            "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
                    {"role": "user", "content": "And in Bergen?"}]
        status, tok = post("/tokenize", {"model": MODEL, "messages": messages,
                                         "tools": [WEATHER_TOOL]})
        check(status == 200, f"tokenize: {status} {tok}")
        status, text = post("/detokenize", {"tokens": tok["tokens"]})
        prompt = text["prompt"]
        check("<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions" in prompt,
              f"tools not in the first user turn: {prompt[:400]!r}")
        check('"name": "get_weather"' in prompt and "\n\nWeather in Oslo?<|eot_id|>" in prompt,
              "the functions (indented JSON) and then the user's text")
        check('<|start_header_id|>assistant<|end_header_id|>\n\n{"name":"get_weather",'
              '"parameters":{"city":"Oslo"}}<|eot_id|>' in prompt, f"past call: {prompt!r}")
        check('<|start_header_id|>ipython<|end_header_id|>\n\n"12 C"<|eot_id|>' in prompt,
              "tool result as an ipython turn")
        client = openai.OpenAI(base_url=server.base + "/v1", api_key="none", max_retries=0,
                               timeout=120)
        r = client.chat.completions.create(model=MODEL, messages=messages[:1], temperature=0,
                                           max_tokens=64, tools=[WEATHER_TOOL],
                                           tool_choice="required")
        calls = r.choices[0].message.tool_calls or []
        check(r.choices[0].finish_reason == "tool_calls" and len(calls) == 1 and
              calls[0].function.name == "get_weather" and
              isinstance(json.loads(calls[0].function.arguments), dict),
              f"llama3.1 required call: {r.choices[0]}")
        status, err = post("/v1/chat/completions", {
            "model": MODEL, "tools": [WEATHER_TOOL],
            "messages": [{"role": "system", "content": "Hi."}]})
        check(status == 400 and err["error"]["param"] == "messages", f"no user message: {err}")
        print(f"llama3.1 tools: {calls[0].function.arguments}")


def check_curl_sse(server):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi!"}],
                       "max_tokens": 8, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    r = subprocess.run(["curl", "-sS", "-N", "--max-time", "60", "-D", "-",
                        "-H", "Content-Type: application/json",
                        "-H", f"Authorization: Bearer {KEY}", "-d", body,
                        server.base + "/v1/chat/completions"],
                       capture_output=True, timeout=90)
    check(r.returncode == 0, f"curl failed: {r.stderr}")
    head, _, events = r.stdout.decode().partition("\r\n\r\n")
    check(head.startswith("HTTP/1.1 200"), head.splitlines()[0])
    check("text/event-stream" in head.lower(), "no text/event-stream content type")
    check(events.endswith("data: [DONE]\n\n"), f"stream does not end with [DONE]: {events[-60:]!r}")
    blocks = events.split("\n\n")
    check(blocks[-1] == "", "trailing bytes after the last event")
    payloads = []
    for block in blocks[:-1]:
        for line in block.split("\n"):
            if line.startswith(":"):
                continue  # keep-alive comment
            check(line.startswith("data: "), f"not an SSE data line: {line!r}")
            payloads.append(line[len("data: "):])
    check(payloads[-1] == "[DONE]", "last payload is not [DONE]")
    objs = [json.loads(p) for p in payloads[:-1]]
    check(all(o["object"] == "chat.completion.chunk" for o in objs), "chunk objects")
    check(objs[-1]["choices"] == [] and objs[-1]["usage"]["completion_tokens"] > 0,
          "no final usage chunk")
    print(f"curl: {len(payloads)} SSE events")


def check_bad_flags(crescent, model):
    r = subprocess.run([crescent, "serve", "--model", model, "--port", "70000"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "--port" in r.stderr, f"--port 70000: rc={r.returncode} {r.stderr}")
    r = subprocess.run([crescent, "serve", "--model", model, "--max-running", "0"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "--max-running" in r.stderr, f"--max-running 0: {r.stderr}")
    r = subprocess.run([crescent, "serve", "--model", model, "--speculative-draft-cost", "1"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 2 and "--speculative-draft-cost" in r.stderr,
          f"--speculative-draft-cost 1: rc={r.returncode} {r.stderr}")
    r = subprocess.run([crescent, "serve", "--model", "/nonexistent/model.gguf", "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode != 0 and "/nonexistent/model.gguf" in r.stderr,
          f"missing model: rc={r.returncode} {r.stderr}")
    r = subprocess.run([crescent, "serve", "--port", "notaport"], capture_output=True, text=True,
                       timeout=60)
    check(r.returncode != 0 and "port" in (r.stderr + r.stdout), f"--port notaport: {r.stderr}")


def run(crescent, model):
    check_bad_flags(crescent, model)
    with Server(crescent, model, extra=["--served-model-name", MODEL, "--max-body-bytes",
                                        "262144"],
                env={"CRESCENT_API_KEY": KEY}) as server:
        client = openai.OpenAI(base_url=server.base + "/v1", api_key=KEY, max_retries=0,
                               timeout=120)
        check_chat(client)
        check_stream(client)
        check_stop_and_length(client)
        check_n_and_seed(client)
        check_vllm_extensions(server, client)
        check_tokenize(server, client)
        check_batched_prompts(client)
        check_logprobs(client)
        check_echo(server, client)
        check_json_mode(client)
        check_structured_outputs(client)
        check_tool_calls(client)
        check_models_and_errors(server, client)
        check_cached_prefix(client)
        check_speculative(crescent, model, client)
        check_llama31_tools(crescent, model)
        check_curl_sse(server)
        m = server.wait_idle()
        check(m.get("crescent:prefix_cache_hits_total", 0) > 0,
              "no prefix cache hits in /metrics")
        rc = server.stop()
        check(rc == 0, f"SIGTERM: exit {rc}")
        check("listening on http://127.0.0.1:" in server.log_text(), "no 'listening on' line")


if __name__ == "__main__":
    main_wrapper(run)

#!/usr/bin/env python3
"""Golden renderings of real chat templates, for tests/src/model/chat_template_test.cc.

Renders a fixed set of conversations through the Jinja chat templates in
tests/reference/templates/*.jinja exactly the way Hugging Face transformers' apply_chat_template
does (jinja2 ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the loopcontrols
extension, a raise_exception() global and transformers' own tojson filter), and writes what each
renders (or the exception it raises) to tests/reference/chat_template_golden.json. The C++ test
feeds the same template sources to ChatTemplate::FromJinja and compares its output byte for byte.

Crescent treats the "developer" role as "system"; the reference applies the same mapping before
rendering, so that the golden file records what the template makes of the mapped conversation.

  chat_template_reference.py           regenerate the golden file
  chat_template_reference.py --check   exit 1 when the golden file differs from a fresh rendering,
                                       or when templates/smollm2.jinja differs from the chat
                                       template in the reference model ($CRESCENT_MODEL), if
                                       present; exit 77 (CTest's skip code) when jinja2 is missing
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE_DIR = os.path.join(HERE, "templates")
GOLDEN_PATH = os.path.join(HERE, "chat_template_golden.json")
DEFAULT_MODEL = os.path.expanduser(
    "~/.cache/crescent/models/SmolLM2-135M-Instruct.Q4_1.gguf")

# file, where it comes from, what ChatTemplate::FromJinja must report, bos/eos tokens.
TEMPLATES = [
    dict(file="smollm2.jinja", source="SmolLM2-135M-Instruct GGUF tokenizer.chat_template",
         name="chatml", default_system_prompt=
         "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
         bos_token="<|im_start|>", eos_token="<|im_end|>"),
    dict(file="qwen2.jinja", source="Qwen/Qwen2-7B-Instruct", name="chatml",
         default_system_prompt="You are a helpful assistant.",
         bos_token="", eos_token="<|im_end|>"),
    dict(file="qwen2_5.jinja", source="Qwen/Qwen2.5-7B-Instruct", name="chatml",
         default_system_prompt=
         "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
         bos_token="", eos_token="<|im_end|>"),
    dict(file="chatml.jinja", source="teknium/OpenHermes-2.5-Mistral-7B", name="chatml",
         default_system_prompt="", bos_token="<s>", eos_token="<|im_end|>"),
    dict(file="llama3.jinja", source="meta-llama/Meta-Llama-3-8B-Instruct", name="llama3",
         default_system_prompt="", bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"),
    dict(file="llama3_unconditional.jinja",
         source="Llama 3 template as some GGUF conversions embed it (assistant header always)",
         name="llama3", default_system_prompt="", bos_token="<|begin_of_text|>",
         eos_token="<|eot_id|>"),
    dict(file="llama3_eos_else.jinja",
         source="vLLM's Llama 3 example template (eos when there is no generation prompt)",
         name="llama3", default_system_prompt="", bos_token="<|begin_of_text|>",
         eos_token="<|eot_id|>"),
    dict(file="llama3_1.jinja", source="meta-llama/Llama-3.1-8B-Instruct", name="llama3.1",
         default_system_prompt="", bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"),
    dict(file="llama2.jinja", source="meta-llama/Llama-2-7b-chat-hf", name="llama2",
         default_system_prompt="", bos_token="<s>", eos_token="</s>"),
    dict(file="mistral.jinja",
         source="mistralai/Mistral-7B-Instruct-v0.2 (current; v0.1 and Mixtral-8x7B alike)",
         name="mistral", default_system_prompt="", bos_token="<s>", eos_token="</s>"),
    dict(file="mistral_v0_1_legacy.jinja",
         source="mistralai/Mistral-7B-Instruct-v0.1 (original release)", name="mistral",
         default_system_prompt="", bos_token="<s>", eos_token="</s>"),
    dict(file="mixtral_v0_1_legacy.jinja",
         source="mistralai/Mixtral-8x7B-Instruct-v0.1 (original release)", name="mistral",
         default_system_prompt="", bos_token="<s>", eos_token="</s>"),
]


def S(c): return {"role": "system", "content": c}
def D(c): return {"role": "developer", "content": c}
def U(c): return {"role": "user", "content": c}
def A(c): return {"role": "assistant", "content": c}
def T(c): return {"role": "tool", "content": c}


CONVERSATIONS = [
    ("user_only", [U("Hello")]),
    ("system_user", [S("You are a terse assistant."), U("What is 2+2?")]),
    ("multi_turn", [U("Hi"), A("Hello! How can I help?"), U("Tell me a joke.")]),
    ("system_multi_turn", [S("Be kind."), U("Hello"), A("Hi there"), U("Who are you"),
                           A("   I am an assistant   "), U("Another question")]),
    ("ends_with_assistant", [U("Finish this: The quick brown"), A("fox jumps")]),
    ("whitespace", [S("  \n sys with spaces \t\n"), U("\n\n  padded user  \n"),
                    A("\u00a0nbsp and ideographic space\u3000"),
                    U("\x1c\x0bseparators\x1f\x85")]),
    ("developer", [D("Answer in French."), U("Good morning")]),
    ("unicode", [U("Gr\u00fc\u00dfe, \u4f60\u597d, \U0001F30D \u2014 \"quotes\", 'apostrophes', "
                   "\\ backslash, {{ not_a_var }} {% raw %}")]),
    ("crlf", [U("line one\r\nline two\r\n")]),
    ("empty_contents", [S(""), U(""), A(""), U("x")]),
    ("tool_result", [U("Weather in Paris?"), A("Calling the weather tool."),
                     T("{\"temperature\": 21, \"unit\": \"C\"}"), A("It is 21 C."),
                     U("Thanks")]),
    ("two_tool_results", [S("Use tools."), U("q"), A("calling two tools"),
                          T("result one\nline two"), T("result \"two\"\t\x01\u00e9"), U("ok")]),
    ("system_only", [S("Only a system message.")]),
    ("user_user", [U("first"), U("second")]),
    ("starts_with_assistant", [A("I speak first."), U("ok")]),
    ("late_system", [U("Hi"), A("Hello"), S("New instructions."), U("Go on")]),
]


class TemplateError(Exception):
    pass


def make_environment():
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    # transformers' replacement for jinja2's HTML-escaping tojson.
    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


def render(template, messages, add_generation_prompt, bos_token, eos_token):
    mapped = [{"role": "system" if m["role"] == "developer" else m["role"],
               "content": m["content"]} for m in messages]
    return template.render(messages=mapped, tools=None, documents=None,
                           add_generation_prompt=add_generation_prompt,
                           bos_token=bos_token, eos_token=eos_token)


def read_template(name):
    with open(os.path.join(TEMPLATE_DIR, name), encoding="utf-8", newline="") as f:
        return f.read()


def build_golden():
    env = make_environment()
    out = {
        "comment": "Generated by tests/reference/chat_template_reference.py; do not edit.",
        "templates": [],
    }
    for t in TEMPLATES:
        template = env.from_string(read_template(t["file"]))
        entry = dict(t)
        entry["cases"] = []
        for conv_name, messages in CONVERSATIONS:
            for agp in (False, True):
                case = {"conversation": conv_name, "add_generation_prompt": agp,
                        "messages": messages}
                try:
                    case["expected"] = render(template, messages, agp, t["bos_token"],
                                              t["eos_token"])
                except TemplateError as e:
                    case["error"] = str(e)
                entry["cases"].append(case)
        out["templates"].append(entry)
    return json.dumps(out, ensure_ascii=False, indent=1) + "\n"


def gguf_chat_template(path):
    """tokenizer.chat_template of a GGUF file, or None; reads only the metadata it must skip."""
    import struct
    scalar_sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    with open(path, "rb") as f:
        def u32():
            return struct.unpack("<I", f.read(4))[0]

        def u64():
            return struct.unpack("<Q", f.read(8))[0]

        def skip(value_type):
            if value_type == 8:  # string
                f.seek(u64(), 1)
            elif value_type == 9:  # array
                element_type, count = u32(), u64()
                if element_type in scalar_sizes:
                    f.seek(scalar_sizes[element_type] * count, 1)
                else:
                    for _ in range(count):
                        skip(element_type)
            else:
                f.seek(scalar_sizes[value_type], 1)

        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        u32()  # version
        u64()  # tensor count
        for _ in range(u64()):
            key = f.read(u64()).decode("utf-8")
            value_type = u32()
            if key == "tokenizer.chat_template" and value_type == 8:
                return f.read(u64()).decode("utf-8")
            skip(value_type)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare instead of writing; exit 1 on any difference")
    args = parser.parse_args()
    try:
        import jinja2  # noqa: F401
    except ImportError:
        print("jinja2 is not installed; skipping", file=sys.stderr)
        return 77

    golden = build_golden()
    if not args.check:
        with open(GOLDEN_PATH, "w", encoding="utf-8", newline="") as f:
            f.write(golden)
        print(f"wrote {GOLDEN_PATH}")
        return 0

    ok = True
    with open(GOLDEN_PATH, encoding="utf-8", newline="") as f:
        current = f.read()
    if current != golden:
        ok = False
        old, new = json.loads(current), json.loads(golden)
        for ot, nt in zip(old["templates"], new["templates"]):
            if ot != nt:
                print(f"{GOLDEN_PATH}: entries for {nt['file']} differ from a fresh rendering",
                      file=sys.stderr)
        if len(old["templates"]) != len(new["templates"]):
            print("the list of templates changed", file=sys.stderr)

    model = os.environ.get("CRESCENT_MODEL") or DEFAULT_MODEL
    if os.path.exists(model):
        embedded = gguf_chat_template(model)
        if embedded is not None and embedded != read_template("smollm2.jinja"):
            ok = False
            print(f"templates/smollm2.jinja differs from tokenizer.chat_template in {model}",
                  file=sys.stderr)
    else:
        print(f"{model} absent: not comparing smollm2.jinja with the model", file=sys.stderr)

    if not ok:
        print("regenerate with: python3 tests/reference/chat_template_reference.py",
              file=sys.stderr)
        return 1
    print("chat template golden file is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

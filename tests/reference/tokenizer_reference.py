"""Golden token ids for Crescent's tokenizer, from an independent tokenizer.

Builds a HuggingFace `tokenizers` BPE tokenizer from the GGUF file's own vocabulary and merges
(read with the `gguf` package, not with Crescent), configured with the model family's real
HuggingFace pre-tokenizer, and encodes every line of a corpus (a JSONL file, one JSON string per
line). For SmolLM2 (tokenizer.ggml.pre = "smollm") that is its tokenizer.json's
    Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)]
with no normalizer.

Each output line i is the JSON object {"plain": [...], "special": [...]} for corpus line i:
  plain   - ids with special-token text tokenized as ordinary text
            (Crescent: Encode(text, add_special=false, parse_special=false));
  special - ids with control / user-defined tokens (token_type 3 / 4) matched first
            (Crescent: Encode(text, add_special=false, parse_special=true)).

    python3 tokenizer_reference.py --model M.gguf            # (re)writes the golden file
    python3 tokenizer_reference.py --model M.gguf --check    # exit 1 if it differs

Requires gguf and tokenizers (tests/requirements.txt pins the versions).
"""

import argparse
import difflib
import json
import os
import sys

SKIP_EXIT_CODE = 77  # CTest's SKIP_RETURN_CODE for tokenizer_reference_check.

try:
    import gguf
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers
except ImportError as e:  # pragma: no cover - depends on the environment
    print(f"tokenizer_reference: {e} (pip install -r tests/requirements.txt)")
    sys.exit(SKIP_EXIT_CODE)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CORPUS = os.path.join(HERE, "tokenizer_corpus.jsonl")
DEFAULT_GOLDEN = os.path.join(HERE, "tokenizer_golden.jsonl")
DEFAULT_MODEL = os.path.expanduser("~/.cache/crescent/models/SmolLM2-135M-Instruct.Q4_1.gguf")

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# The split regexes of the HF tokenizer.json files (llama-3 and qwen2 use a Split before a
# regex-less ByteLevel; GPT-2-style files use ByteLevel's own regex).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def make_pre_tokenizer(pre):
    """The HF pre-tokenizer of a GGUF tokenizer.ggml.pre name; ValueError when unknown."""
    if pre in ("smollm", "starcoder", "refact"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]), False
    if pre in ("default", "gpt2", "gpt-2"):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False
    if pre in ("llama3", "llama-bpe", "dbrx", "smaug-bpe"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]), pre in ("llama3", "llama-bpe")
    if pre in ("qwen2", "deepseek-r1-qwen"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]), False
    raise ValueError(f"tokenizer.ggml.pre = {pre!r} is not supported by this reference")


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is not None:
            return default
        raise KeyError(f"GGUF key {key!r} is missing")
    return f.contents()


def build_tokenizers(model_path):
    """Returns (plain, special) tokenizers built from the GGUF's vocabulary."""
    reader = gguf.GGUFReader(model_path)
    model = field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"tokenizer.ggml.model = {model!r}; this reference handles gpt2 only")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    merges = []
    for i, m in enumerate(field(reader, "tokenizer.ggml.merges")):
        left, sep, right = m.partition(" ")
        if not sep or not left or not right:
            raise ValueError(f"merge {i} {m!r} is not two tokens separated by a space")
        merges.append((left, right))
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)

    def make(with_specials):
        pre_tok, ignore_merges = make_pre_tokenizer(pre)
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False,
                                   ignore_merges=ignore_merges))
        tok.pre_tokenizer = pre_tok
        if with_specials:
            specials = [AddedToken(tokens[i], special=True, normalized=False)
                        for i, t in enumerate(types)
                        if t in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED) and tokens[i]]
            tok.add_special_tokens(specials)
            for s in specials:
                if tok.token_to_id(s.content) != vocab[s.content]:
                    raise ValueError(f"special token {s.content!r} was renumbered")
        return tok

    return make(False), make(True)


def golden_lines(model_path, corpus_path):
    plain, special = build_tokenizers(model_path)
    out = []
    with open(corpus_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            text = json.loads(line)
            if not isinstance(text, str):
                raise ValueError(f"{corpus_path}:{n}: not a JSON string")
            ids_plain = plain.encode(text, add_special_tokens=False).ids
            ids_special = special.encode(text, add_special_tokens=False).ids
            out.append(json.dumps({"plain": ids_plain, "special": ids_special},
                                  separators=(",", ":")) + "\n")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("CRESCENT_MODEL", DEFAULT_MODEL),
                        help="GGUF file (default: $CRESCENT_MODEL or the reference model)")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--golden", default=DEFAULT_GOLDEN)
    parser.add_argument("--check", action="store_true",
                        help="compare with the golden file instead of writing it")
    args = parser.parse_args(argv)

    if not os.path.exists(args.model):
        print(f"tokenizer_reference: model {args.model} not found")
        return SKIP_EXIT_CODE if args.check else 2
    lines = golden_lines(args.model, args.corpus)
    if not args.check:
        with open(args.golden, "w", encoding="utf-8") as f:
            f.writelines(lines)
        print(f"wrote {len(lines)} lines to {args.golden}")
        return 0
    with open(args.golden, encoding="utf-8") as f:
        have = f.readlines()
    if have == lines:
        print(f"{args.golden}: all {len(lines)} lines match the reference tokenizer")
        return 0
    sys.stdout.writelines(difflib.unified_diff(have, lines, args.golden, "reference", n=0))
    print(f"{args.golden} differs from the reference tokenizer (regenerate it without --check)")
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""A HuggingFace `tokenizers` tokenizer built from a GGUF file's own vocabulary.

Independent of Crescent's C++ tokenizer: it turns tokenizer.ggml.tokens / tokenizer.ggml.merges
(gpt2-style byte-level BPE) into a `tokenizers.Tokenizer`, so tests can produce token ids for a
text prompt and cross-check Crescent's tokenizer.

Supported: tokenizer.ggml.model == "gpt2" with tokenizer.ggml.pre in SUPPORTED_PRE. Control and
user-defined tokens (token_type 3 / 4) are registered as special tokens, so "<|im_start|>" in a
text is encoded as its single id.

    from hf_tokenizer import load_tokenizer
    tok = load_tokenizer("model.gguf")
    ids = tok.encode("<|im_start|>user\\nHi<|im_end|>\\n").ids
    text = tok.decode(ids, skip_special_tokens=False)

Command line: python3 hf_tokenizer.py --model PATH --text "..." prints the ids comma-separated.
"""

import argparse
import sys

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

# GGUF token types (llama.cpp's llama_token_type): 1 normal, 2 unknown, 3 control,
# 4 user-defined, 5 unused, 6 byte.
_TOKEN_TYPE_CONTROL = 3
_TOKEN_TYPE_USER_DEFINED = 4

# The GPT-2 / Llama-3 style split regex, used for pre-tokenizers that need an explicit pattern.
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _pre_tokenizer(pre):
    """Returns the pre-tokenizer the HF tokenizer.json of a model with GGUF `pre` uses."""
    if pre in ("smollm", "starcoder", "refact"):
        # SmolLM2's tokenizer.json: split every digit on its own, then GPT-2 ByteLevel.
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    if pre in ("gpt-2", "gpt2", "default"):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("llama-bpe", "llama3", "qwen2", "smaug-bpe"):
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    raise ValueError(f"hf_tokenizer: unsupported tokenizer.ggml.pre = {pre!r}")


SUPPORTED_PRE = ("smollm", "starcoder", "refact", "gpt-2", "gpt2", "default", "llama-bpe",
                 "llama3", "qwen2", "smaug-bpe")


def _field(reader, key, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is not None:
            return default
        raise KeyError(f"hf_tokenizer: GGUF metadata key {key!r} is missing")
    return field.contents()


def load_tokenizer(path):
    """Builds a tokenizers.Tokenizer from the GGUF file at `path`.

    Raises ValueError for a tokenizer model or pre-tokenizer it does not support, KeyError when
    a required metadata key is missing.
    """
    reader = gguf.GGUFReader(path)
    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"hf_tokenizer: tokenizer.ggml.model = {model!r}; only 'gpt2' (byte-level"
                         " BPE) is supported")
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    token_types = _field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    merges = _field(reader, "tokenizer.ggml.merges")

    vocab = {tok: i for i, tok in enumerate(tokens)}
    merge_pairs = []
    for i, merge in enumerate(merges):
        left, sep, right = merge.partition(" ")
        if not sep:
            raise ValueError(f"hf_tokenizer: tokenizer.ggml.merges[{i}] = {merge!r} has no space")
        merge_pairs.append((left, right))

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merge_pairs, fuse_unk=False,
                                     byte_fallback=False))
    tokenizer.pre_tokenizer = _pre_tokenizer(pre)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [AddedToken(tokens[i], special=True, normalized=False)
                for i, t in enumerate(token_types)
                if t in (_TOKEN_TYPE_CONTROL, _TOKEN_TYPE_USER_DEFINED)]
    tokenizer.add_special_tokens(specials)
    # add_special_tokens must not have renumbered anything: every special keeps its GGUF id.
    for i, t in enumerate(token_types):
        if t in (_TOKEN_TYPE_CONTROL, _TOKEN_TYPE_USER_DEFINED):
            got = tokenizer.token_to_id(tokens[i])
            if got != i:
                raise ValueError(f"hf_tokenizer: special token {tokens[i]!r} got id {got}, "
                                 f"want {i}")
    return tokenizer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--text", required=True, help="text to encode")
    parser.add_argument("--decode", action="store_true", help="also print the decoded ids")
    args = parser.parse_args(argv)
    tok = load_tokenizer(args.model)
    ids = tok.encode(args.text, add_special_tokens=False).ids
    print(",".join(str(i) for i in ids))
    if args.decode:
        print(tok.decode(ids, skip_special_tokens=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

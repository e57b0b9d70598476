"""An independent numpy reference of the llama-family forward pass, read from a GGUF file.

This is the yardstick Crescent's C++ model is checked against (see compare_model.py). It is
written for clarity, not speed: every weight is dequantized once at load (gguf.quants) to a
dense float matrix, and all math runs in float32 (default) or float64.

Supported architectures (general.architecture):
  llama  - RMSNorm, GQA attention, SwiGLU FFN. RoPE in GGUF llama files is the "normal" kind
           that rotates adjacent pairs (x[2i], x[2i+1]): the HF->GGUF converter permutes the
           rows of attn_q / attn_k so that this matches HF's rotate-half on the original weights.
  qwen2  - as llama, plus Q/K/V biases and NeoX RoPE (rotates x[i] with x[i + n_rot/2]).
Embeddings are tied when the file has no output.weight (the LM head reuses token_embd).

API:
    model = load(path, dtype=np.float32)
    model.logits(tokens)      -> np.ndarray [n_tokens, vocab], logits at every position
    model.greedy(tokens, n)   -> list of n generated token ids (argmax, KV-cached decoding)

Command line:
    python3 reference_model.py --model PATH --tokens 1,2,3 [--generate N] [--float64]
prints the last position's top-5 logits, and with --generate the greedy continuation.
"""

import argparse
import os
import sys
import time

# One BLAS thread: this runs beside Crescent and other tests on a few shared cores, where
# OpenBLAS's spinning worker threads made a forward pass 10x+ slower, not faster.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import gguf  # pylint: disable=wrong-import-position
import gguf.quants  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

SUPPORTED_ARCHS = ("llama", "qwen2")


class HParams:
    """Hyper-parameters read from the GGUF metadata of architecture `arch`."""

    def __init__(self, reader):
        self.arch = _meta(reader, "general.architecture")
        if self.arch not in SUPPORTED_ARCHS:
            raise ValueError(f"general.architecture = {self.arch!r}; supported: {SUPPORTED_ARCHS}")
        a = self.arch
        self.n_embd = int(_meta(reader, f"{a}.embedding_length"))
        self.n_layer = int(_meta(reader, f"{a}.block_count"))
        self.n_ff = int(_meta(reader, f"{a}.feed_forward_length"))
        self.n_head = int(_meta(reader, f"{a}.attention.head_count"))
        self.n_head_kv = int(_meta(reader, f"{a}.attention.head_count_kv", self.n_head))
        self.head_dim = int(_meta(reader, f"{a}.attention.key_length", self.n_embd // self.n_head))
        self.rms_eps = float(_meta(reader, f"{a}.attention.layer_norm_rms_epsilon"))
        self.rope_base = float(_meta(reader, f"{a}.rope.freq_base", 10000.0))
        self.n_rot = int(_meta(reader, f"{a}.rope.dimension_count", self.head_dim))
        scaling = _meta(reader, f"{a}.rope.scaling.type", "none")
        if scaling not in ("none", "linear"):
            raise ValueError(f"{a}.rope.scaling.type = {scaling!r}; only none/linear supported")
        factor = 1.0
        if scaling == "linear":
            factor = float(_meta(reader, f"{a}.rope.scaling.factor", 1.0)) or 1.0
        self.rope_pos_scale = 1.0 / factor
        # llama: adjacent pairs ("normal" rope); qwen2: NeoX halves.
        self.rope_neox = self.arch == "qwen2"
        if self.n_head % self.n_head_kv:
            raise ValueError(f"head_count {self.n_head} is not a multiple of head_count_kv "
                             f"{self.n_head_kv}")
        if self.n_rot % 2 or self.n_rot > self.head_dim:
            raise ValueError(f"rope.dimension_count {self.n_rot} must be even and <= head_dim "
                             f"{self.head_dim}")

    def __repr__(self):
        return (f"HParams(arch={self.arch}, n_embd={self.n_embd}, n_layer={self.n_layer}, "
                f"n_ff={self.n_ff}, n_head={self.n_head}, n_head_kv={self.n_head_kv}, "
                f"head_dim={self.head_dim}, n_rot={self.n_rot}, rope_base={self.rope_base}, "
                f"rms_eps={self.rms_eps})")


_MISSING = object()


def _meta(reader, key, default=_MISSING):
    field = reader.fields.get(key)
    if field is None:
        if default is _MISSING:
            raise KeyError(f"GGUF metadata key {key!r} is missing")
        return default
    return field.contents()


class Layer:
    """One transformer block's weights. Matrices are stored [in, out] so that y = x @ w."""

    def __init__(self, get, i):
        p = f"blk.{i}."
        self.attn_norm = get(p + "attn_norm.weight")
        self.wq = get(p + "attn_q.weight", transpose=True)
        self.wk = get(p + "attn_k.weight", transpose=True)
        self.wv = get(p + "attn_v.weight", transpose=True)
        self.wo = get(p + "attn_output.weight", transpose=True)
        self.bq = get(p + "attn_q.bias", optional=True)
        self.bk = get(p + "attn_k.bias", optional=True)
        self.bv = get(p + "attn_v.bias", optional=True)
        self.ffn_norm = get(p + "ffn_norm.weight")
        self.w_gate = get(p + "ffn_gate.weight", transpose=True)
        self.w_up = get(p + "ffn_up.weight", transpose=True)
        self.w_down = get(p + "ffn_down.weight", transpose=True)


class KVCache:
    """Per-layer K and V of all positions seen so far: [n_pos, n_head_kv, head_dim] each."""

    def __init__(self, n_layer):
        self.k = [None] * n_layer
        self.v = [None] * n_layer

    @property
    def n_pos(self):
        return 0 if self.k[0] is None else self.k[0].shape[0]

    def append(self, layer, k, v):
        if self.k[layer] is None:
            self.k[layer], self.v[layer] = k, v
        else:
            self.k[layer] = np.concatenate([self.k[layer], k])
            self.v[layer] = np.concatenate([self.v[layer], v])
        return self.k[layer], self.v[layer]


class Model:
    """A loaded model: dequantized weights, read-only after construction. logits() and greedy()
    keep their state in a per-call KVCache, so concurrent calls do not interfere."""

    def __init__(self, reader, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self.hp = HParams(reader)
        tensors = {t.name: t for t in reader.tensors}

        def get(name, transpose=False, optional=False):
            t = tensors.get(name)
            if t is None:
                if optional:
                    return None
                raise KeyError(f"tensor {name!r} is missing from the GGUF file")
            w = gguf.quants.dequantize(t.data, t.tensor_type)  # numpy shape = reversed ggml ne
            w = w.astype(self.dtype, copy=False)
            return w.T if transpose else w  # a view: BLAS reads it transposed, no copy

        hp = self.hp
        self.token_embd = get("token_embd.weight")  # [vocab, n_embd]
        self.vocab = self.token_embd.shape[0]
        self.layers = [Layer(get, i) for i in range(hp.n_layer)]
        self.output_norm = get("output_norm.weight")
        output = get("output.weight", optional=True)
        # Tied embeddings: with no output.weight the LM head is token_embd itself.
        self.output = (output if output is not None else self.token_embd).T  # [n_embd, vocab]
        rope_freqs = get("rope_freqs.weight", optional=True)  # llama3-style per-dim factors

        # RoPE angle for pair i: pos * base^(-2i / n_rot) (divided by a per-pair factor if given).
        inv_freq = hp.rope_base ** (-np.arange(0, hp.n_rot, 2, dtype=np.float64) / hp.n_rot)
        if rope_freqs is not None:
            inv_freq = inv_freq / rope_freqs.astype(np.float64)
        self.inv_freq = inv_freq

        # The shapes a llama-family file must have; a mismatch means we misread the metadata.
        d, dh = hp.n_embd, hp.head_dim
        expect = {"wq": (d, hp.n_head * dh), "wk": (d, hp.n_head_kv * dh),
                  "wv": (d, hp.n_head_kv * dh), "wo": (hp.n_head * dh, d),
                  "w_gate": (d, hp.n_ff), "w_up": (d, hp.n_ff), "w_down": (hp.n_ff, d)}
        for i, layer in enumerate(self.layers):
            for attr, shape in expect.items():
                if getattr(layer, attr).shape != shape:
                    raise ValueError(f"blk.{i} {attr} has shape [in,out]="
                                     f"{getattr(layer, attr).shape}, expected {shape}")

    # --- building blocks ---------------------------------------------------------------------

    def _matmul(self, x, w):
        """x @ w for activations x [n, in] and a weight w [in, out]. A hook for emulators."""
        return x @ w

    def _rms_norm(self, x, weight):
        var = np.mean(x * x, axis=-1, keepdims=True)
        return (x / np.sqrt(var + self.hp.rms_eps)).astype(self.dtype) * weight

    def _rope(self, x, positions):
        """Returns x [n, heads, head_dim] with RoPE applied for token positions [n]; dims past
        n_rot pass through unchanged."""
        hp = self.hp
        angles = (positions.astype(np.float64) * hp.rope_pos_scale)[:, None] * self.inv_freq
        cos = np.cos(angles).astype(self.dtype)[:, None, :]  # [n, 1, n_rot/2]
        sin = np.sin(angles).astype(self.dtype)[:, None, :]
        rot, rest = x[..., :hp.n_rot], x[..., hp.n_rot:]
        if hp.rope_neox:
            a, b = rot[..., :hp.n_rot // 2], rot[..., hp.n_rot // 2:]
            rotated = np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
        else:
            a, b = rot[..., 0::2], rot[..., 1::2]
            rotated = np.empty_like(rot)
            rotated[..., 0::2] = a * cos - b * sin
            rotated[..., 1::2] = a * sin + b * cos
        return np.concatenate([rotated, rest], axis=-1)

    def _attention(self, q, k, v, q_positions):
        """Causal GQA attention. q [n, n_head, dh]; k, v [n_kv_pos, n_head_kv, dh].

        Query head h reads KV head h // (n_head / n_head_kv)."""
        hp = self.hp
        group = hp.n_head // hp.n_head_kv
        n, m = q.shape[0], k.shape[0]
        q = q.reshape(n, hp.n_head_kv, group, hp.head_dim).transpose(1, 2, 0, 3)  # [kv,g,n,dh]
        kt = k.transpose(1, 2, 0)[:, None]  # [kv, 1, dh, m]
        vt = v.transpose(1, 0, 2)[:, None]  # [kv, 1, m, dh]
        scores = (q @ kt) * self.dtype.type(1.0 / np.sqrt(hp.head_dim))  # [kv, g, n, m]
        # Query at position p sees keys 0..p.
        masked = np.arange(m)[None, :] > q_positions[:, None]  # [n, m]
        scores = np.where(masked, -np.inf, scores)
        scores = scores - scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p /= p.sum(axis=-1, keepdims=True)
        out = p @ vt  # [kv, g, n, dh]
        return out.transpose(2, 0, 1, 3).reshape(n, hp.n_head * hp.head_dim)

    def _attn_inputs(self, x, layer):
        """Hook: Q/K/V projections of normalized x. Returns q, k, v flat [n, heads*dh]."""
        q = self._matmul(x, layer.wq)
        k = self._matmul(x, layer.wk)
        v = self._matmul(x, layer.wv)
        if layer.bq is not None:
            q = q + layer.bq
        if layer.bk is not None:
            k = k + layer.bk
        if layer.bv is not None:
            v = v + layer.bv
        return q, k, v

    def _store_kv(self, k, v):
        """Hook: what the cache keeps for k, v (identity here; emulators may round to f16)."""
        return k, v

    def forward(self, tokens, cache):
        """Runs `tokens` (continuing after cache.n_pos positions), appends their K/V to
        `cache` and returns the final hidden states [n, n_embd] (before output_norm)."""
        hp = self.hp
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or tokens.size == 0:
            raise ValueError("tokens must be a non-empty 1-D list of ids")
        if tokens.min() < 0 or tokens.max() >= self.vocab:
            raise ValueError(f"token id out of range [0, {self.vocab}): "
                             f"{tokens[(tokens < 0) | (tokens >= self.vocab)][0]}")
        n = tokens.size
        positions = np.arange(cache.n_pos, cache.n_pos + n)
        x = self.token_embd[tokens]  # [n, n_embd]
        for i, layer in enumerate(self.layers):
            h = self._rms_norm(x, layer.attn_norm)
            q, k, v = self._attn_inputs(h, layer)
            q = self._rope(q.reshape(n, hp.n_head, hp.head_dim), positions)
            k = self._rope(k.reshape(n, hp.n_head_kv, hp.head_dim), positions)
            v = v.reshape(n, hp.n_head_kv, hp.head_dim)
            k_all, v_all = cache.append(i, *self._store_kv(k, v))
            attn = self._attention(q, k_all, v_all, positions)
            x = x + self._matmul(attn, layer.wo)

            h = self._rms_norm(x, layer.ffn_norm)
            gate = self._matmul(h, layer.w_gate)
            up = self._matmul(h, layer.w_up)
            silu = gate * (0.5 * (1.0 + np.tanh(0.5 * gate)))  # gate * sigmoid(gate), no overflow
            x = x + self._matmul(silu * up, layer.w_down)
        return x

    def _head(self, x):
        return self._matmul(self._rms_norm(x, self.output_norm), self.output)

    # --- public API --------------------------------------------------------------------------

    def logits(self, tokens):
        """Logits [len(tokens), vocab] at every position of `tokens` run from position 0."""
        return self._head(self.forward(tokens, KVCache(self.hp.n_layer)))

    def greedy(self, tokens, n, stop_ids=()):
        """The next `n` token ids by argmax, decoding one token at a time with the KV cache.

        Stops early after emitting a token in `stop_ids` (none by default)."""
        cache = KVCache(self.hp.n_layer)
        last = self._head(self.forward(tokens, cache)[-1:])[0]
        out = []
        for step in range(n):
            nxt = int(np.argmax(last))
            out.append(nxt)
            if nxt in stop_ids or step == n - 1:
                break
            last = self._head(self.forward([nxt], cache))[0]
        return out


def load(path, dtype=np.float32):
    """Loads the GGUF model at `path`, dequantizing every weight once to `dtype`.

    Raises KeyError for a missing tensor or metadata key and ValueError for an unsupported
    architecture or inconsistent shapes."""
    return Model(gguf.GGUFReader(path), dtype)


def parse_tokens(text):
    """'1, 2,3' -> [1, 2, 3]."""
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad token list {text!r}: {e}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--tokens", required=True, type=parse_tokens, help="ids, e.g. 1,2,3")
    parser.add_argument("--generate", type=int, default=0, help="greedy-decode N tokens")
    parser.add_argument("--float64", action="store_true", help="compute in float64")
    parser.add_argument("--decode-text", action="store_true",
                        help="also print the continuation as text (uses hf_tokenizer.py)")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    model = load(args.model, np.float64 if args.float64 else np.float32)
    t1 = time.perf_counter()
    print(f"loaded {model.hp} in {t1 - t0:.2f} s", file=sys.stderr)
    logits = model.logits(args.tokens)
    t2 = time.perf_counter()
    print(f"forward of {len(args.tokens)} tokens: {t2 - t1:.2f} s", file=sys.stderr)
    last = logits[-1]
    top = np.argsort(-last)[:5]
    print("top5 at last position: " + ", ".join(f"{int(t)}:{last[t]:.4f}" for t in top))
    if args.generate > 0:
        ids = model.greedy(args.tokens, args.generate)
        t3 = time.perf_counter()
        print(f"greedy {len(ids)} tokens: {t3 - t2:.2f} s", file=sys.stderr)
        print("generated: " + ",".join(str(i) for i in ids))
        if args.decode_text:
            from hf_tokenizer import load_tokenizer  # pylint: disable=import-outside-toplevel
            text = load_tokenizer(args.model).decode(ids, skip_special_tokens=False)
            print("text: " + repr(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())

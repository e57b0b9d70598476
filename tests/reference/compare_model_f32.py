#!/usr/bin/env python3
"""Strict check of Crescent's forward pass against reference_model.py, without the 8-bit
activation noise of the quantized kernels.

The Q4_1 reference model is dequantized (with the `gguf` package) into an F32 GGUF in a temp
dir; Crescent runs it on its float FMA path (no activation quantization), the numpy reference
runs the same weights. Tolerances: relative RMS of all logits <= 0.5 %, top-1 equal at every
position, and 32-token greedy continuations identical.

  compare_model_f32.py --crescent build/release/bin/crescent --model Q4_1.gguf
Exit 77 (CTest skip) when the model or a Python module is missing.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from gguf import GGUFReader, GGUFValueType, GGUFWriter
except ImportError as e:  # pragma: no cover
    print("SKIP: missing Python module:", e)
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_model  # noqa: E402

PROMPTS = {
    # ChatML: system (SmolLM2 default) + user "What is the capital of France?" + assistant header.
    "chat_france": [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28,
                    7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282,
                    4649, 47, 2, 198, 1, 520, 9531, 198],
    "raw_ids": [0, 1, 17, 100, 1000, 12345, 30000, 49151, 2, 198, 1, 520, 9531, 198],
}
MAX_REL_RMS = 0.005
GREEDY_TOKENS = 32


def dequantize_to_f32(src, dst):
    r = GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = GGUFWriter(dst, arch)
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        t = f.types[0]
        if t == GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), t, sub_type=f.types[1])
        else:
            w.add_key_value(k, f.contents(), t)
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, a.reshape([int(x) for x in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crescent", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    if not os.path.exists(a.model):
        print("SKIP: model not found at", a.model)
        return 77
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "model_f32.gguf")
        dequantize_to_f32(a.model, f32)
        ref = reference_model.load(f32)
        for name, toks in PROMPTS.items():
            out = os.path.join(tmp, name + ".bin")
            subprocess.run([a.crescent, "logits", "--model", f32, "--tokens",
                            ",".join(map(str, toks)), "--out", out], check=True)
            got = np.fromfile(out, dtype=np.float32).reshape(len(toks), -1)
            want = ref.logits(toks)
            rel = float(np.sqrt(((got - want) ** 2).mean()) / np.sqrt((want ** 2).mean()))
            top1 = float((got.argmax(-1) == want.argmax(-1)).mean())
            print(f"{name}: {len(toks)} tokens, rel RMS {rel * 100:.3f}%, max|diff| "
                  f"{float(np.abs(got - want).max()):.4f}, top-1 agree {top1 * 100:.1f}%")
            if rel > MAX_REL_RMS:
                failures.append(f"{name}: rel RMS {rel * 100:.3f}% > {MAX_REL_RMS * 100}%")
            if top1 < 1.0:
                failures.append(f"{name}: top-1 differs at some position")
            r = subprocess.run([a.crescent, "generate", "--model", f32, "--prompt-tokens",
                                ",".join(map(str, toks)), "--max-tokens", str(GREEDY_TOKENS),
                                "--temperature", "0", "--ids"],
                               check=True, capture_output=True, text=True)
            got_ids = json.loads(r.stdout.strip().splitlines()[-1])
            want_ids = ref.greedy(toks, GREEDY_TOKENS)
            # Crescent stops at an end-of-generation token; compare up to it.
            want_cut = want_ids[:len(got_ids)]
            ok = got_ids == want_cut and (len(got_ids) == GREEDY_TOKENS or
                                          len(want_ids) > len(got_ids))
            print(f"  greedy crescent {got_ids}\n  greedy reference {want_ids}")
            if not ok:
                failures.append(f"{name}: greedy continuation differs")
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        return 1
    print("PASS: Crescent's F32 path matches the reference strictly")
    return 0


if __name__ == "__main__":
    sys.exit(main())

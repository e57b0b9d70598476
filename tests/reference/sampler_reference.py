#!/usr/bin/env python3
"""Independent model of Crescent's sampler draws, for the pinned sequences in
tests/src/engine/sampler_test.cc (SequenceIsPinnedAcrossPlatforms,
TopPSequenceIsPinnedAcrossPlatforms and BlockedSumsArePinnedOverALargerVocabulary).

It re-implements, from their published descriptions, splitmix64 seeding, xoshiro256**, the
53-bit uniform double, Crescent's IEEE-only exp (SamplingExp) and the draw: weights relative to
the most likely token, top_p over tokens ordered by (logit desc, id asc), then a cumulative scan;
sums over the whole vocabulary are taken in blocks of 64 ids (each in id order, then the blocks'
sums in order), and a whole-vocabulary draw scans the block sums, then the ids of its block.
Python floats are IEEE doubles without fused multiply-add, so this gives the same bits as the C++.
Prints the sequences; the test hard-codes them.
"""

import struct

M64 = (1 << 64) - 1


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class Xoshiro256ss:
    def __init__(self, seed):
        self.s = []
        for _ in range(4):
            seed, v = splitmix64(seed)
            self.s.append(v)

    def uniform(self):
        s = self.s
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return (result >> 11) * 2.0 ** -53


def sampling_exp(x):
    if not x > -708.0:
        return 0.0
    x = min(x, 0.0)
    kd = (x * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0
    r = (x - kd * 6.93147180369123816490e-01) - kd * 1.90821492927058770002e-10
    c2, c3, c4, c5 = 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0
    c6, c7, c8, c9 = 1.0 / 720.0, 1.0 / 5040.0, 1.0 / 40320.0, 1.0 / 362880.0
    c10, c11, c12 = 1.0 / 3628800.0, 1.0 / 39916800.0, 1.0 / 479001600.0
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    p03 = (1.0 + r) + r2 * (c2 + c3 * r)
    p47 = (c4 + c5 * r) + r2 * (c6 + c7 * r)
    p812 = ((c8 + c9 * r) + r2 * (c10 + c11 * r)) + r4 * c12
    p = (p03 + r4 * p47) + r8 * p812
    k = int(kd)
    return p * struct.unpack("<d", struct.pack("<Q", (k + 1023) << 52))[0]


BLOCK = 64  # kSumBlock in sampler.cc


def block_sums(w):
    """Each block of BLOCK consecutive weights summed in order, from 0.0."""
    sums = []
    for b in range(0, len(w), BLOCK):
        s = 0.0
        for x in w[b:b + BLOCK]:
            s += x
        sums.append(s)
    return sums


def pick_blocked(w, sums, target):
    """The whole-vocabulary draw: block sums up to the target's block, then id by id."""
    cum = 0.0
    for b, bs in enumerate(sums):
        nxt = cum + bs
        if target < nxt:
            c = cum
            for i in range(b * BLOCK, min(len(w), (b + 1) * BLOCK)):
                c += w[i]
                if w[i] != 0.0 and target < c:
                    return i
        cum = nxt
    for i in range(len(w) - 1, -1, -1):
        if w[i] != 0.0:
            return i
    return 0


def draws(logits, seed, n, temperature=1.0, top_p=1.0):
    logits = [f32(x) for x in logits]
    inv_t = 1.0 / f32(temperature)
    top_p = f32(top_p)
    m = max(logits)
    rng = Xoshiro256ss(seed)
    out = []
    for _ in range(n):
        w = [sampling_exp((l - m) * inv_t) for l in logits]
        if top_p >= 1.0:
            # The whole vocabulary in id order, summed in blocks (BlockSums and Pick).
            sums = block_sums(w)
            total = 0.0
            for x in sums:
                total += x
            out.append(pick_blocked(w, sums, rng.uniform() * total))
            continue
        else:
            z = 0.0
            for x in block_sums(w):
                z += x
            order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))
            cum, keep = 0.0, len(order)
            for j, i in enumerate(order):
                cum += w[i]
                if cum >= top_p * z:
                    keep = j + 1
                    break
        total = 0.0
        for j in range(keep):
            total += w[order[j]]
        target = rng.uniform() * total
        cum, pick = 0.0, order[keep - 1]
        for j in range(keep):
            cum += w[order[j]]
            if target < cum:
                pick = order[j]
                break
        out.append(pick)
    return out


def large_logits(n):
    """A deterministic vocabulary of n logits spread over [-2, 2]."""
    return [((i * 37) % 101) / 25.0 - 2.0 for i in range(n)]


if __name__ == "__main__":
    print("SequenceIsPinnedAcrossPlatforms",
          draws([0.0, 1.0, 2.0, 3.0, 0.5, -1.0], seed=1234, n=24))
    print("TopPSequenceIsPinnedAcrossPlatforms",
          draws([0.25, 1.5, -0.5, 1.25, 2.0, 0.75, 1.5, -2.0, 0.0, 1.0], seed=777, n=30,
                temperature=0.7, top_p=0.8))
    print("BlockedSumsArePinnedOverALargerVocabulary",
          draws(large_logits(300), seed=99, n=40, temperature=0.8))
    print("BlockedSumsArePinnedOverALargerVocabulary top_p",
          draws(large_logits(300), seed=5, n=40, temperature=1.3, top_p=0.5))

#!/usr/bin/env python3
"""A GGUF file with the shapes of a real 1B-8B model and random weights: for timing decode and
prefill at real sizes on the lent GPU without carrying gigabytes (it takes 64 MiB a call).

    synth_gguf.py MODEL VOCAB.gguf OUT.gguf [--layers N] [--tiny]
    synth_gguf.py --list
    synth_gguf.py --decode-bytes MODEL     # bytes of weights one decoded token reads (JSON)

MODEL is one of the models below (`--list` prints them with their sizes). The file has the
model's architecture metadata, tensor names, shapes and llama.cpp's quantization mix for its
type (`llama-quantize`'s choices for Q4_K_M: output (or a tied token embedding) Q6_K; attn_v
and ffn_down Q6_K in the layers `use_more_bits` picks — the first and last eighth and every
third between — Q4_K elsewhere; norms, biases and rope_freqs F32. Q8_0: every matrix Q8_0).
Llama 3.x files get the `rope_freqs` tensor of their RoPE scaling (factor, low/high frequency
factors, original context), computed as the Llama 3.1 reference does.

The vocabulary (tokens, types, merges, special ids, pre-tokenizer) is copied from VOCAB.gguf, a
small real file of the same family (llama.cpp's models/ggml-vocab-llama-bpe.gguf for Llama 3,
ggml-vocab-qwen2.gguf for Qwen2.5), padded with unused `[PADn]` tokens up to the model's
embedding rows as the Hugging Face converter pads Qwen's.

Weights: every quantized block is valid and finite — random quants under small fixed scales, as
bench/regrow_gguf.py makes them; F32 norms 1, biases 0. Speed does not depend on the values,
so both engines can be timed on it; the text it generates is noise. `--layers N` keeps the
first N layers; `--tiny` also shrinks the widths (embedding 256, FFN 512, 4 heads of 64, 2 KV
heads) for checking a file of each kind against llama.cpp's CPU build on a small machine.
Needs numpy; writes an 8B Q4_K_M file (4.9 GB) in about a minute.
"""
import json
import math
import struct
import sys

import regrow_gguf as rg

LLAMA3_ROPE = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_context": 8192}

MODELS = {
    "llama-3.2-1b-q4_k_m": dict(arch="llama", mix="Q4_K_M", layers=16, embd=2048, ff=8192, heads=32, kv=8,
                                head_dim=64, vocab=128256, ctx=131072, base=500000.0, eps=1e-5, tied=True,
                                rope=dict(LLAMA3_ROPE, factor=32.0), bias=False),
    "llama-3.1-8b-q4_k_m": dict(arch="llama", mix="Q4_K_M", layers=32, embd=4096, ff=14336, heads=32, kv=8,
                                head_dim=128, vocab=128256, ctx=131072, base=500000.0, eps=1e-5, tied=False,
                                rope=LLAMA3_ROPE, bias=False),
    "llama-3.1-8b-q8_0": dict(arch="llama", mix="Q8_0", layers=32, embd=4096, ff=14336, heads=32, kv=8,
                              head_dim=128, vocab=128256, ctx=131072, base=500000.0, eps=1e-5, tied=False,
                              rope=LLAMA3_ROPE, bias=False),
    "qwen2.5-7b-q4_k_m": dict(arch="qwen2", mix="Q4_K_M", layers=28, embd=3584, ff=18944, heads=28, kv=4,
                              head_dim=128, vocab=152064, ctx=32768, base=1000000.0, eps=1e-6, tied=False,
                              rope=None, bias=True),
}

# llama.cpp's file type ids (general.file_type) and the ggml type ids used here.
FILE_TYPE = {"Q4_K_M": 15, "Q8_0": 7}
F32, Q8_0, Q4_K, Q6_K = 0, 8, 12, 14


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensors(m):
    """(name, dims innermost first, ggml type) of every tensor, in llama.cpp's order."""
    q = m["mix"]
    base = Q8_0 if q == "Q8_0" else Q4_K
    big = Q8_0 if q == "Q8_0" else Q6_K
    e, f, n = m["embd"], m["ff"], m["layers"]
    qd, kvd = m["heads"] * m["head_dim"], m["kv"] * m["head_dim"]
    out = [("token_embd.weight", [e, m["vocab"]], big if m["tied"] else base)]
    if m["rope"]:
        out.append(("rope_freqs.weight", [m["head_dim"] // 2], F32))
    for i in range(n):
        more = big if use_more_bits(i, n) else base
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", [e], F32), (b + "attn_q.weight", [e, qd], base)]
        if m["bias"]:
            out.append((b + "attn_q.bias", [qd], F32))
        out.append((b + "attn_k.weight", [e, kvd], base))
        if m["bias"]:
            out.append((b + "attn_k.bias", [kvd], F32))
        out.append((b + "attn_v.weight", [e, kvd], more))
        if m["bias"]:
            out.append((b + "attn_v.bias", [kvd], F32))
        out += [
            (b + "attn_output.weight", [qd, e], base),
            (b + "ffn_norm.weight", [e], F32),
            (b + "ffn_gate.weight", [e, f], base),
            (b + "ffn_up.weight", [e, f], base),
            (b + "ffn_down.weight", [f, e], more),
        ]
    out.append(("output_norm.weight", [e], F32))
    if not m["tied"]:
        out.append(("output.weight", [e, m["vocab"]], big))
    return out


def rope_freqs(m):
    """Llama 3's per-frequency RoPE divisors: 1 above the high-frequency wavelength, the factor
    below the low one, a smooth blend between."""
    r, half = m["rope"], m["head_dim"] // 2
    low_wl = r["original_context"] / r["low_freq_factor"]
    high_wl = r["original_context"] / r["high_freq_factor"]
    out = []
    for i in range(half):
        wavelength = 2 * math.pi * m["base"] ** (2 * i / m["head_dim"])
        if wavelength < high_wl:
            out.append(1.0)
        elif wavelength > low_wl:
            out.append(r["factor"])
        else:
            smooth = (r["original_context"] / wavelength - r["low_freq_factor"]) / (
                r["high_freq_factor"] - r["low_freq_factor"])
            out.append(1.0 / ((1 - smooth) / r["factor"] + smooth))
    return out


def read_vocab(path):
    """The tokenizer.* entries of a GGUF file, as (key, type, value)."""
    with open(path, "rb") as f:
        r = rg.Reader(f)
        if r.take(4) != b"GGUF":
            sys.exit(f"{path}: not a GGUF file")
        _, _, n_kv = r.u("I"), r.u("Q"), r.u("Q")
        out = []
        for _ in range(n_kv):
            key, ty = r.string(), r.u("I")
            inner = None
            if ty == 9:
                inner, n = r.u("I"), r.u("Q")
                value = [r.value(inner) for _ in range(n)]
            else:
                value = r.value(ty)
            if key.startswith("tokenizer."):
                out.append((key, ty, inner, value))
        return out


class Writer:
    def __init__(self):
        self.parts = []

    def raw(self, b):
        self.parts.append(b)

    def u(self, fmt, v):
        self.raw(struct.pack("<" + fmt, v))

    def string(self, s):
        b = s.encode("utf-8")
        self.u("Q", len(b))
        self.raw(b)

    def value(self, ty, v, inner=None):
        if ty == 8:
            self.string(v)
        elif ty == 9:
            self.u("I", inner)
            self.u("Q", len(v))
            if inner == 8:
                for s in v:
                    self.string(s)
            else:
                self.raw(struct.pack(f"<{len(v)}{rg.GGUF_SCALARS[inner]}", *v))
        else:
            self.u(rg.GGUF_SCALARS[ty], v)

    def kv(self, key, ty, v, inner=None):
        self.string(key)
        self.u("I", ty)
        self.value(ty, v, inner)

    def bytes(self):
        return b"".join(self.parts)


def shrink(m, layers, tiny):
    m = dict(m)
    if layers:
        m["layers"] = layers
    if tiny:
        m.update(embd=256, ff=512, heads=4, kv=2, head_dim=64)
    return m


def synth(name, vocab_path, out_path, layers=None, tiny=False):
    import numpy as np

    m = shrink(MODELS[name], layers, tiny)
    arch = m["arch"]
    vocab = read_vocab(vocab_path)
    w = Writer()
    kvs = [
        ("general.architecture", 8, arch),
        ("general.name", 8, f"synthetic {name}"),
        ("general.file_type", 4, FILE_TYPE[m["mix"]]),
        ("general.quantization_version", 4, 2),
        (f"{arch}.block_count", 4, m["layers"]),
        (f"{arch}.context_length", 4, m["ctx"]),
        (f"{arch}.embedding_length", 4, m["embd"]),
        (f"{arch}.feed_forward_length", 4, m["ff"]),
        (f"{arch}.attention.head_count", 4, m["heads"]),
        (f"{arch}.attention.head_count_kv", 4, m["kv"]),
        (f"{arch}.attention.key_length", 4, m["head_dim"]),
        (f"{arch}.attention.value_length", 4, m["head_dim"]),
        (f"{arch}.rope.dimension_count", 4, m["head_dim"]),
        (f"{arch}.rope.freq_base", 6, m["base"]),
        (f"{arch}.attention.layer_norm_rms_epsilon", 6, m["eps"]),
        (f"{arch}.vocab_size", 4, m["vocab"]),
    ]
    entries = [(k, t, None, v) for k, t, v in kvs]
    for key, ty, inner, value in vocab:
        if key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
            if len(value) > m["vocab"]:
                sys.exit(f"{vocab_path}: {len(value)} tokens, more than {name}'s {m['vocab']} embedding rows")
            pad = range(len(value), m["vocab"])
            value = value + ([f"[PAD{i}]" for i in pad] if key.endswith("tokens") else [5] * len(pad))
        entries.append((key, ty, inner, value))

    infos = tensors(m)
    w.raw(b"GGUF")
    w.u("I", 3)
    w.u("Q", len(infos))
    w.u("Q", len(entries))
    for key, ty, inner, value in entries:
        w.kv(key, ty, value, inner)
    offset, placed = 0, []
    for tname, dims, ty in infos:
        w.string(tname)
        w.u("I", len(dims))
        for d in dims:
            w.u("Q", d)
        w.u("I", ty)
        w.u("Q", offset)
        placed.append((tname, dims, ty, offset))
        offset += (rg.tensor_bytes(dims, ty) + 31) // 32 * 32
    header = w.bytes()
    header += b"\0" * ((-len(header)) % 32)

    rng = np.random.default_rng(0)
    with open(out_path, "wb") as f:
        f.write(header)
        for tname, dims, ty, at in placed:
            f.seek(len(header) + at)
            if ty == F32:
                if tname == "rope_freqs.weight":
                    values = np.array(rope_freqs(m))
                elif tname.endswith(".bias"):
                    values = np.zeros(dims[0])
                else:
                    values = np.ones(dims[0])
                f.write(values.astype("<f4").tobytes())
                continue
            kind, _, block_bytes, scales = rg.TYPES[ty]
            blocks_left = rg.tensor_bytes(dims, ty) // block_bytes
            d = 1e-4 if kind.endswith("_K") else 1e-3
            scale = np.frombuffer(np.float16(d).tobytes(), dtype=np.uint8)
            while blocks_left:  # in pieces of at most 64 MiB
                n = min(blocks_left, (64 << 20) // block_bytes)
                blocks = rng.integers(0, 256, size=(n, block_bytes), dtype=np.uint8)
                for s in scales:
                    blocks[:, s : s + 2] = scale
                f.write(blocks.tobytes())
                blocks_left -= n
        f.truncate(len(header) + offset)


def decode_bytes(m):
    """The weight bytes one decoded token reads: every tensor once, but of the token embedding
    only one row (all of it when it is also the output projection)."""
    total = 0
    for tname, dims, ty in tensors(m):
        size = rg.tensor_bytes(dims, ty)
        if tname == "token_embd.weight":
            row = size // dims[1]
            total += size + row if m["tied"] else row
        else:
            total += size
    return total


def main(argv):
    if len(argv) == 2 and argv[0] == "--decode-bytes":
        if argv[1] not in MODELS:
            sys.exit(f"unknown model {argv[1]}; models: " + ", ".join(MODELS))
        print(json.dumps({"model": argv[1], "decode_weight_bytes": decode_bytes(MODELS[argv[1]])}))
        return
    if argv[:1] == ["--list"]:
        for name, m in MODELS.items():
            size = sum(rg.tensor_bytes(d, t) for _, d, t in tensors(m))
            print(f"{name}\t{size / 1e9:.2f} GB\t{m['layers']} layers\t{m['embd']} wide\tvocab {m['vocab']}")
        return
    layers, tiny, rest = None, False, []
    it = iter(argv)
    for a in it:
        if a == "--layers":
            layers = int(next(it))
        elif a == "--tiny":
            tiny = True
        else:
            rest.append(a)
    if len(rest) != 3 or rest[0] not in MODELS:
        sys.exit(__doc__ + "\nmodels: " + ", ".join(MODELS))
    synth(rest[0], rest[1], rest[2], layers, tiny)


if __name__ == "__main__":
    main(sys.argv[1:])

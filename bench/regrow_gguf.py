#!/usr/bin/env python3
"""A GGUF file's header alone, and a file regrown from it: for timing models on a machine that
the model file cannot reach whole (the lent GPU takes 64 MiB a call).

    regrow_gguf.py cut MODEL.gguf HEADER.gguf     # metadata + tensor infos, no tensor data
    regrow_gguf.py grow HEADER.gguf OUT.gguf      # the same file layout, weights regenerated

The regrown file has the original's metadata (architecture, tokenizer, chat template), tensor
names, shapes, types, offsets and size; only the weight values differ. Every block is valid and
finite: quantized blocks get random quants under small scales (|w| below about 0.4),
F16/BF16/F32 matrices random values in ±0.05, vectors (norms) 1 and biases 0. Decode and prefill speed do not
depend on the values, so both engines can be timed on it; the text it generates is noise.
Needs numpy.
"""
import struct
import sys

# ggml type id -> (name, elements per block, bytes per block, byte offsets of f16 scales)
TYPES = {
    0: ("F32", 1, 4, ()),
    1: ("F16", 1, 2, ()),
    2: ("Q4_0", 32, 18, (0,)),
    3: ("Q4_1", 32, 20, (0, 2)),
    6: ("Q5_0", 32, 22, (0,)),
    7: ("Q5_1", 32, 24, (0, 2)),
    8: ("Q8_0", 32, 34, (0,)),
    10: ("Q2_K", 256, 84, (80, 82)),
    11: ("Q3_K", 256, 110, (108,)),
    12: ("Q4_K", 256, 144, (0, 2)),
    13: ("Q5_K", 256, 176, (0, 2)),
    14: ("Q6_K", 256, 210, (208,)),
    20: ("IQ4_NL", 32, 18, (0,)),
    23: ("IQ4_XS", 256, 136, (0,)),
    30: ("BF16", 1, 2, ()),
}

GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class Reader:
    def __init__(self, f):
        self.f = f

    def take(self, n):
        b = self.f.read(n)
        if len(b) != n:
            sys.exit("truncated GGUF header")
        return b

    def u(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        return self.take(self.u("Q")).decode("utf-8", "replace")

    def value(self, ty):
        if ty in GGUF_SCALARS:
            return self.u(GGUF_SCALARS[ty])
        if ty == 8:
            return self.string()
        if ty == 9:
            inner, n = self.u("I"), self.u("Q")
            return [self.value(inner) for _ in range(n)]
        sys.exit(f"unknown GGUF value type {ty}")


def parse(path):
    """(header bytes up to the data section, alignment, tensors as (name, dims, type, offset))."""
    with open(path, "rb") as f:
        r = Reader(f)
        if r.take(4) != b"GGUF":
            sys.exit(f"{path}: not a GGUF file")
        version, n_tensors, n_kv = r.u("I"), r.u("Q"), r.u("Q")
        if version < 2:
            sys.exit(f"{path}: GGUF version {version} is too old")
        alignment = 32
        for _ in range(n_kv):
            key, ty = r.string(), r.u("I")
            v = r.value(ty)
            if key == "general.alignment":
                alignment = v
        tensors = []
        for _ in range(n_tensors):
            name, nd = r.string(), r.u("I")
            dims = [r.u("Q") for _ in range(nd)]
            tensors.append((name, dims, r.u("I"), r.u("Q")))
        end = f.tell()
        data_start = (end + alignment - 1) // alignment * alignment
        f.seek(0)
        return f.read(data_start), alignment, tensors


def tensor_bytes(dims, ty):
    if ty not in TYPES:
        sys.exit(f"tensor type {ty} is not handled by this script")
    _, per_block, block_bytes, _ = TYPES[ty]
    n = 1
    for d in dims:
        n *= d
    return n // per_block * block_bytes


def cut(src, dst):
    header, _, _ = parse(src)
    with open(dst, "wb") as f:
        f.write(header)


def grow(src, dst):
    import numpy as np

    header, alignment, tensors = parse(src)
    rng = np.random.default_rng(0)
    with open(dst, "wb") as f:
        f.write(header)
        base = len(header)
        for name, dims, ty, offset in sorted(tensors, key=lambda t: t[3]):
            f.seek(base + offset)
            kind, _, block_bytes, scales = TYPES[ty]
            size = tensor_bytes(dims, ty)
            rows = 1
            for d in dims[1:]:
                rows *= d
            if kind in ("F32", "F16", "BF16"):
                n = size // {"F32": 4, "F16": 2, "BF16": 2}[kind]
                if rows == 1:  # a vector: norm weights 1, biases 0
                    values = np.zeros(n) if name.endswith(".bias") else np.ones(n)
                else:
                    values = rng.uniform(-0.05, 0.05, n)
                if kind == "F32":
                    data = values.astype("<f4").tobytes()
                elif kind == "F16":
                    data = values.astype("<f2").tobytes()
                else:
                    data = (values.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
            else:
                blocks = rng.integers(0, 256, size=(size // block_bytes, block_bytes), dtype=np.uint8)
                # K-quants multiply by 6- or 8-bit sub-block scales as well.
                d = 1e-4 if kind.endswith("_K") else 1e-3
                scale = np.frombuffer(np.float16(d).tobytes(), dtype=np.uint8)
                for at in scales:
                    blocks[:, at : at + 2] = scale
                data = blocks.tobytes()
            f.write(data)
        end = base + max((o + tensor_bytes(d, t) for _, d, t, o in tensors), default=0)
        f.truncate(end)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("cut", "grow"):
        sys.exit(__doc__)
    (cut if sys.argv[1] == "cut" else grow)(sys.argv[2], sys.argv[3])

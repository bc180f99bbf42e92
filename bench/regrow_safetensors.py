#!/usr/bin/env python3
"""A safetensors file's header alone, and a file regrown from it: for timing an embedding model
on a machine that the weights cannot reach whole (the lent GPU takes 64 MiB a call).

    regrow_safetensors.py cut model.safetensors HEADER     # the 8-byte length and JSON header
    regrow_safetensors.py grow HEADER model.safetensors    # the same file, weights regenerated

The regrown file has the original's header (names, dtypes, shapes, offsets) and size; every
F32/F16/BF16 tensor holds uniform random values in +-0.05 (finite, so the engine's checks of
its outputs pass); other dtypes hold zeros. Speed does not depend on the values, so both
engines can be timed on it; the embeddings it gives are noise. Needs numpy to grow.
"""
import json
import struct
import sys


def cut(model, header):
    with open(model, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        data = f.read(n)
    json.loads(data)  # a header that does not parse is not cut
    with open(header, "wb") as f:
        f.write(struct.pack("<Q", n))
        f.write(data)


def grow(header, model):
    import numpy as np

    with open(header, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    entries = json.loads(raw[8 : 8 + n])
    tensors = sorted(
        (v["data_offsets"][0], v["data_offsets"][1], v["dtype"]) for k, v in entries.items() if k != "__metadata__"
    )
    rng = np.random.default_rng(0)
    with open(model, "wb") as f:
        f.write(raw[: 8 + n])
        at = 0
        for begin, end, dtype in tensors:
            if begin != at:
                raise SystemExit(f"tensor data not contiguous at byte {at}")
            size = end - begin
            if dtype == "F32":
                blob = rng.uniform(-0.05, 0.05, size // 4).astype("<f4").tobytes()
            elif dtype == "F16":
                blob = rng.uniform(-0.05, 0.05, size // 2).astype("<f2").tobytes()
            elif dtype == "BF16":
                bits = rng.uniform(-0.05, 0.05, size // 2).astype("<f4").view("<u4") >> 16
                blob = bits.astype("<u2").tobytes()
            else:
                blob = bytes(size)
            f.write(blob)
            at = end


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("cut", "grow"):
        raise SystemExit(__doc__)
    {"cut": cut, "grow": grow}[sys.argv[1]](sys.argv[2], sys.argv[3])

#!/usr/bin/env python3
"""sentence-transformers' throughput on the benchmark sentences: the peer of `metallic embed`.

    python3 bench/embed_bench.py --model DIR --texts bench/embed_texts.txt [--device cuda|cpu]

Times `model.encode(texts[:N], batch_size=B)` (tokenisation, the forward passes, pooling,
normalisation and the copy of the embeddings to a NumPy array: the whole call a user makes)
for B in --batches (1, 32, 256) with N = 256 texts for B = 1 and 1024 otherwise (--limit caps
N), in each of --dtypes: f32 (`model.float()`, TF32 off), f16 (`model.half()`) and, if asked,
tf32 (f32 with TF32 matrix products allowed). Each measurement is one untimed warm-up call,
then --repeats timed calls, each between torch.cuda.synchronize() calls; `seconds` is the
median, `best_seconds` the fastest. Prints one JSON object per line:

    {"engine": "sentence-transformers", "dtype": "f32", "batch": 32, "sentences": 1024,
     "seconds": ..., "sentences_per_s": ..., "device": "NVIDIA H100 80GB HBM3", ...}

Runs offline (HF_HUB_OFFLINE=1) on a local model directory. Note that encode() sorts the texts
by (character) length before batching, so each batch is padded only to its own longest text.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def set_tf32(torch, on):
    """TF32 for float32 matrix products: off (IEEE) unless `on`, through the fp32_precision API
    where this PyTorch has it (mixing it with the legacy allow_tf32 flags is an error there)."""
    m = torch.backends.cuda.matmul
    if hasattr(m, "fp32_precision"):
        m.fp32_precision = "tf32" if on else "ieee"
        return "matmul.fp32_precision=" + m.fp32_precision
    m.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    return "matmul.allow_tf32=" + str(m.allow_tf32)


def load(SentenceTransformer, path, device):
    try:
        return SentenceTransformer(path, device=device, local_files_only=True)
    except TypeError:  # sentence-transformers before local_files_only
        return SentenceTransformer(path, device=device)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="sentence-transformers model directory")
    ap.add_argument("--texts", required=True, help="one text per line (bench/embed_texts.txt)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--batches", default="1,32,256", help="comma-separated batch sizes (1,32,256)")
    ap.add_argument("--dtypes", default="f32,f16", help="comma-separated, of f32, f16, tf32 (f32,f16)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (5)")
    ap.add_argument("--limit", type=int, default=None, help="use at most this many texts (for a quick try)")
    a = ap.parse_args()

    batches = [int(b) for b in a.batches.split(",") if b]
    dtypes = [d for d in a.dtypes.split(",") if d]
    for d in dtypes:
        if d not in ("f32", "f16", "tf32"):
            ap.error(f"unknown dtype {d!r} (f32, f16, tf32)")
    if a.repeats < 1 or any(b < 1 for b in batches):
        ap.error("--repeats and every batch size must be at least 1")

    for need in ("config.json", "modules.json"):
        if not os.path.isfile(os.path.join(a.model, need)):
            sys.exit(f"embed_bench.py: {a.model} is not a sentence-transformers model directory "
                     f"(no {need}); ./scripts/fetch-model.sh fetches one")
    with open(a.texts, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]
    if not texts:
        sys.exit(f"embed_bench.py: {a.texts} has no texts")

    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("embed_bench.py: --device cuda but this PyTorch sees no CUDA device (try --device cpu)")
    device_name = torch.cuda.get_device_name(torch.device(a.device)) if cuda else (
        platform.processor() or platform.machine() or "cpu")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    base = {
        "engine": "sentence-transformers",
        "device": device_name,
        "versions": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}"
                    + (f", CUDA {torch.version.cuda}" if cuda else ""),
    }
    for dtype in dtypes:
        model = load(SentenceTransformer, a.model, a.device)
        model.eval()
        # Explicit either way: a directory holding f16 weights may load as f16.
        if dtype == "f16":
            model.half()
        else:
            model.float()
        param_dtype = str(next(model.parameters()).dtype).replace("torch.", "")
        setting = set_tf32(torch, dtype == "tf32") if cuda else None
        for b in batches:
            n = 256 if b == 1 else 1024
            if a.limit is not None:
                n = min(n, a.limit)
            n = min(n, len(texts))
            batch_texts = texts[:n]

            def call():
                return model.encode(batch_texts, batch_size=b, convert_to_numpy=True,
                                    show_progress_bar=False)

            with torch.inference_mode():
                out = call()  # warm-up: kernels chosen, memory pools grown
                sync()
                times = []
                for _ in range(a.repeats):
                    sync()
                    t0 = time.perf_counter()
                    out = call()
                    sync()
                    times.append(time.perf_counter() - t0)
            if out.shape != (n, 384):
                sys.exit(f"embed_bench.py: encode() returned shape {out.shape}, expected ({n}, 384)")
            med = statistics.median(times)
            row = {
                "engine": base["engine"],
                "dtype": dtype,
                "batch": b,
                "sentences": n,
                "seconds": round(med, 6),
                "sentences_per_s": round(n / med, 2),
                "device": base["device"],
                "best_seconds": round(min(times), 6),
                "repeats": a.repeats,
                "params": param_dtype,
                "versions": base["versions"],
            }
            if setting:
                row["note"] = setting
            print(json.dumps(row), flush=True)
        del model
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

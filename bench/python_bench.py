#!/usr/bin/env python3
"""What a call through the Python package costs against the CLI, on the same GPU in one run.

    python_bench.py METALLIC_BIN MODEL_DIR TEXTS LLM.gguf

Needs the `metallic` package installed (its wheel) and numpy. Prints JSON lines, then a table:

- embeddings: `metallic bench embed --batches 32` (the library's whole call, wall clock, median
  of 5 after a warm-up) against `Embedder(MODEL_DIR, dtype).encode(texts, batch_size=32)` timed
  the same way around the Python call (1024 texts), for f32 and f16;
- generation: `metallic bench generate` decode tokens/s (128 greedy tokens after a 16-token
  prompt, best of three after a warm-up) against `Llm.generate(...)` and a drained
  `Llm.stream(...)` on the same prompt ids' text, timed around the Python call: tokens over the
  wall clock less the prompt's pass (which the CLI's decode figure leaves out too), best of
  three after a warm-up.
"""
import json
import statistics
import subprocess
import sys
import time

import metallic

REPEATS = 5
GEN_TOKENS = 128


def cli_embed(binary, model, texts):
    out = subprocess.run(
        [binary, "bench", "embed", "--model", model, "--texts", texts, "--batches", "32",
         "--dtypes", "f32,f16", "--repeats", str(REPEATS)],
        check=True, capture_output=True, text=True).stdout
    return {r["dtype"]: r["sentences_per_s"] for r in map(json.loads, out.splitlines())}


def py_embed(model, lines, dtype):
    embedder = metallic.Embedder(model, dtype=dtype)
    texts = lines[:1024]
    embedder.encode(texts, batch_size=32)
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        vectors = embedder.encode(texts, batch_size=32)
        times.append(time.perf_counter() - start)
    assert vectors.shape[0] == len(texts)
    return len(texts) / statistics.median(times)


def cli_generate(binary, gguf):
    out = subprocess.run(
        [binary, "bench", "generate", "--model", gguf, "--prompt-tokens", "16",
         "--gen-tokens", str(GEN_TOKENS)],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])["decode_tokens_per_s"]


def py_generate(gguf):
    llm = metallic.Llm(gguf)
    prompt = "The history of the printing press begins"

    def generate():
        start = time.perf_counter()
        result = llm.generate(prompt, max_tokens=GEN_TOKENS, temperature=0.0)
        wall = time.perf_counter() - start
        return len(result.tokens) / (wall - result.prompt_time), result.tokens_per_second

    def stream():
        start = time.perf_counter()
        pieces = llm.stream(prompt, max_tokens=GEN_TOKENS, temperature=0.0)
        for _ in pieces:
            pass
        wall = time.perf_counter() - start
        result = pieces.result
        return len(result.tokens) / (wall - result.prompt_time)

    generate()
    stream()
    runs = [generate() for _ in range(3)]
    streams = [stream() for _ in range(3)]
    return max(r[0] for r in runs), max(r[1] for r in runs), max(streams)


def main():
    binary, model, texts_path, gguf = sys.argv[1:5]
    with open(texts_path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    rows = []
    cli = cli_embed(binary, model, texts_path)
    for dtype in ("f32", "f16"):
        ours = py_embed(model, lines, dtype)
        rows.append({"what": f"embed {dtype} batch 32 (sentences/s)", "cli": cli[dtype], "python": ours})
    cli_rate = cli_generate(binary, gguf)
    wall, internal, streamed = py_generate(gguf)
    rows.append({"what": "generate: decode tokens/s, wall clock", "cli": cli_rate, "python": wall})
    rows.append({"what": "generate: decode tokens/s, the result's own timing", "cli": cli_rate, "python": internal})
    rows.append({"what": "stream: decode tokens/s, wall clock", "cli": cli_rate, "python": streamed})
    info = metallic.info()
    for row in rows:
        row["device"] = info["name"]
        print(json.dumps(row))
    print("| measure | CLI | Python | Python / CLI |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['what']} | {row['cli']:.1f} | {row['python']:.1f} | {row['python'] / row['cli']:.3f} |")


if __name__ == "__main__":
    main()

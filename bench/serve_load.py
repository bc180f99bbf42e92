#!/usr/bin/env python3
"""Concurrent streaming load on an OpenAI-compatible server (metallic serve or llama-server):
N clients at once, each one /v1/completions request with its own prompt, streamed, a fixed
number of tokens at most (greedy; end-of-generation ignored where the server allows it). Reports
the aggregate generated tokens/s (tokens from each stream's usage / wall time from the first
request to the last token),
time-to-first-token p50/p99 and the median stream's decode rate after its first token, as
one JSON line. Python standard library only.

usage: serve_load.py URL STREAMS [TOKENS] [--label NAME]
"""
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

URL = urllib.parse.urlparse(sys.argv[1])
STREAMS = int(sys.argv[2])
TOKENS = int(sys.argv[3]) if len(sys.argv) > 3 and not sys.argv[3].startswith("--") else 128
LABEL = sys.argv[sys.argv.index("--label") + 1] if "--label" in sys.argv else URL.netloc
SUBJECTS = [
    "the history of the printing press", "how bridges are designed", "the life of honey bees",
    "a recipe for bread", "the rules of chess", "the water cycle", "volcanoes", "the moon landing",
    "how compilers work", "the French revolution", "photosynthesis", "jazz music", "the Roman roads",
    "deep sea fish", "the invention of the telephone", "glaciers", "the Silk Road", "black holes",
    "coffee farming", "the Olympic games", "bird migration", "paper making", "the human heart",
    "wind turbines", "ancient Egypt", "coral reefs", "the steam engine", "tea ceremonies",
    "mountain climbing", "the periodic table", "lighthouses", "the first computers",
]


def one(i, out):
    prompt = f"Write a long, detailed essay about {SUBJECTS[i % len(SUBJECTS)]} (part {i}).\n\n"
    body = {
        "prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "stream": True,
        # llama-server: generate exactly TOKENS; metallic ignores unknown fields.
        "ignore_eos": True, "cache_prompt": False, "stream_options": {"include_usage": True},
    }
    conn = http.client.HTTPConnection(URL.hostname, URL.port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        out[i] = {"error": f"{resp.status} {resp.read()[:200]!r}"}
        return
    first, pieces, last, used = None, 0, start, None
    for line in resp:
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("usage"):
            used = chunk["usage"].get("completion_tokens")
        if chunk.get("choices") and chunk["choices"][0].get("text"):
            now = time.perf_counter()
            first = first or now
            pieces += 1
            last = now
    conn.close()
    out[i] = {"start": start, "first": first, "last": last, "tokens": used if used is not None else pieces}


def main():
    out = [None] * STREAMS
    threads = [threading.Thread(target=one, args=(i, out)) for i in range(STREAMS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [o["error"] for o in out if o and "error" in o]
    done = [o for o in out if o and "error" not in o and o["first"]]
    end = max((o["last"] for o in done), default=t0)
    ttft = sorted((o["first"] - o["start"]) * 1000 for o in done)
    pct = lambda p: ttft[min(len(ttft) - 1, int(round(p / 100 * (len(ttft) - 1))))] if ttft else None
    # Each stream's own decode rate after its first token (what `bench generate` reports).
    rates = [(o["tokens"] - 1) / (o["last"] - o["first"]) for o in done if o["tokens"] > 1 and o["last"] > o["first"]]
    print(json.dumps({
        "server": LABEL, "streams": STREAMS, "tokens_per_stream": TOKENS,
        # Generated tokens from each stream's usage (its chunk count where a server sends none).
        "generated_tokens": sum(o["tokens"] for o in done),
        "aggregate_tokens_per_s": round(sum(o["tokens"] for o in done) / (end - t0), 1) if done else 0,
        "ttft_ms_p50": round(pct(50), 1) if ttft else None,
        "ttft_ms_p99": round(pct(99), 1) if ttft else None,
        "stream_decode_tokens_per_s_p50": round(statistics.median(rates), 1) if rates else None,
        "wall_s": round(end - t0, 3), "errors": errors[:3],
    }))


main()

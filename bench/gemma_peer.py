#!/usr/bin/env python3
"""llama.cpp's numbers for `metallic bench generate`: prefill and decode tokens/s of a GGUF model
through a running llama-server (`/completion` timings), after a warm-up request; the best of
three runs of each, all three listed.

usage: gemma_peer.py URL [PREFILL_TOKENS] [GEN_TOKENS] [DECODE_PROMPT_TOKENS]   (one JSON line)

DECODE_PROMPT_TOKENS (default 16) is the prompt before the decode measurement, as
`metallic bench generate --decode-prompt-tokens` takes it.
"""
import json
import sys
import time
import urllib.request

URL = sys.argv[1].rstrip("/")
PREFILL = int(sys.argv[2]) if len(sys.argv) > 2 else 512
GEN = int(sys.argv[3]) if len(sys.argv) > 3 else 128
DECODE_PROMPT = int(sys.argv[4]) if len(sys.argv) > 4 else 16
TEXT = "The quick brown fox jumps over the lazy dog while the river runs past the old mill. "


def post(path, body):
    req = urllib.request.Request(URL + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def wait_healthy():
    for _ in range(600):
        try:
            with urllib.request.urlopen(URL + "/health", timeout=5) as r:
                if json.loads(r.read()).get("status") == "ok":
                    return
        except Exception:
            pass
        time.sleep(1)
    sys.exit("llama-server never became healthy")


def prompt_ids(n):
    ids = post("/tokenize", {"content": TEXT * 64, "add_special": False})["tokens"]
    bos = post("/tokenize", {"content": "", "add_special": True})["tokens"]
    return bos + (ids * (n // max(len(ids), 1) + 1))[: n - len(bos)]


def completion(ids, n_predict):
    body = {"prompt": ids, "n_predict": n_predict, "temperature": 0, "ignore_eos": True, "cache_prompt": False}
    return post("/completion", body)["timings"]


wait_healthy()
decode_prompt = prompt_ids(DECODE_PROMPT)
warm = completion(decode_prompt, GEN)  # first request compiles pipelines
pre = [completion(prompt_ids(PREFILL), 1) for _ in range(3)]
dec = [completion(decode_prompt, GEN) for _ in range(3)]
print(json.dumps({
    "engine": "llama.cpp",
    "prompt_tokens": pre[0]["prompt_n"],
    "prefill_tokens_per_s": max(p["prompt_per_second"] for p in pre),
    "prefill_runs": [p["prompt_per_second"] for p in pre],
    "decode_prompt_tokens": dec[0]["prompt_n"],
    "gen_tokens": dec[0]["predicted_n"],
    "decode_tokens_per_s": max(d["predicted_per_second"] for d in dec),
    "decode_runs": [d["predicted_per_second"] for d in dec],
    "warmup_decode_tokens_per_s": warm["predicted_per_second"],
}))

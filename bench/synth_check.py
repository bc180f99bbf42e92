#!/usr/bin/env python3
"""Checks synthetic GGUF files (bench/synth_gguf.py) against llama.cpp: both engines load each
file and agree on its logits.

    synth_check.py METALLIC_BIN LLAMA_SERVER FILE.gguf...

For each file it starts llama-server (CPU build, f32 K/V cache) and `metallic serve`, sends the
same token ids to both (greedy, 8 tokens, the top 5 log-probabilities of every step: llama.cpp's
`/completion` with `n_probs`, ours `/v1/completions` with `logprobs`) and prints, per file, the
largest difference between the two engines' log-probabilities of the same top token after the
prompt, and the greedy tokens up to the first step where llama.cpp's two best are within 0.05
in log-probability (a near-tie, where rounding may pick either). Exits 1 if a file fails to
load, our first token is not llama.cpp's (or within its near-tie), fewer than 3 of the top 5
are shared, or their log-probabilities differ by more than 0.1 (llama.cpp's CPU matmuls round
activations to 8 bits for quantized weights; ours are f32).

On the tiny variants (`synth_gguf.py MODEL VOCAB OUT --tiny --layers 4`) of the four models,
with the CPU build of the llama.cpp that llama-cpp-python 0.3.36 vendors: worst first-step
difference 0.011 (Llama 3.1 8B Q4_K_M), 0.038 (8B Q8_0, whose random weights give a flat distribution: a near-tie at the first step),
0.014 (Llama 3.2 1B), 0.018 (Qwen2.5 7B).
"""
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request

PROMPT = [9906, 1917, 11, 279, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13]
STEPS = 8
TOL = 0.1
NEAR_TIE = 0.05


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def serve(cmd, url):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except Exception:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{cmd[0]} did not become healthy")


def llama(server, model):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve([server, "-m", model, "-c", "256", "--parallel", "1", "--port", str(port), "-fa", "off"], url)
    try:
        out = post(url + "/completion", {"prompt": PROMPT, "n_predict": STEPS, "temperature": 0, "top_k": 1,
                                         "ignore_eos": True, "cache_prompt": False, "n_probs": 5,
                                         "post_sampling_probs": False})
    finally:
        proc.kill()
        proc.wait()
    steps = out["completion_probabilities"]
    return [s["token"] for s in steps], [{t["token"]: t["logprob"] for t in s["top_logprobs"]} for s in steps]


def ours(binary, model):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve([binary, "serve", "--model", model, "--port", str(port), "--ctx-size", "256"], url)
    try:
        out = post(url + "/v1/completions", {"prompt": PROMPT, "max_tokens": STEPS, "temperature": 0,
                                             "logprobs": 5, "ignore_eos": True})
    finally:
        proc.kill()
        proc.wait()
    lp = out["choices"][0]["logprobs"]
    return lp["tokens"], lp["top_logprobs"]


def main(binary, server, files):
    ok = True
    for model in files:
        name = os.path.basename(model)
        try:
            l_ids, l_steps = llama(server, model)
            o_tokens, o_steps = ours(binary, model)
        except Exception as e:  # a file one engine cannot load
            print(f"{name}: FAILED: {e}")
            ok = False
            continue
        # The greedy tokens up to llama.cpp's first near-tie.
        agree = 0
        for step, token in enumerate(l_ids):
            if step >= len(o_tokens) or o_tokens[step] != token:
                break
            agree += 1
            best = sorted(l_steps[step].values(), reverse=True)
            if len(best) > 1 and best[0] - best[1] < NEAR_TIE:
                break
        tie = agree < len(l_ids) and agree > 0
        shared = [t for t in l_steps[0] if t in o_steps[0]]
        worst = max((abs(l_steps[0][t] - o_steps[0][t]) for t in shared), default=math.inf)
        # Our first token is llama.cpp's, or within a near-tie of it in llama.cpp's own numbers.
        first_ok = bool(o_tokens) and (o_tokens[0] == l_ids[0] or (
            o_tokens[0] in l_steps[0] and max(l_steps[0].values()) - l_steps[0][o_tokens[0]] < NEAR_TIE))
        good = first_ok and worst <= TOL and len(shared) >= 3
        ok &= good
        print(json.dumps({"file": name, "ok": good, "first_step_worst_logprob_diff": round(worst, 4),
                          "top5_shared": len(shared), "greedy_agree": agree, "stopped_at_near_tie": tie,
                          "llama": l_ids, "ours": o_tokens}, ensure_ascii=False))
    return ok


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    sys.exit(0 if main(sys.argv[1], sys.argv[2], sys.argv[3:]) else 1)

#!/usr/bin/env python3
"""Seconds from T0 (a Unix time: when the server process was started) to the first streamed
token of one completion on a starting llama-server at URL: waits for /health, then streams
`/completion` for one token. Prints one JSON line. Python standard library only.

usage: first_token.py URL T0 ENGINE RUN
"""
import json
import sys
import time
import urllib.request

url, t0, engine, run = sys.argv[1].rstrip("/"), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
deadline = time.time() + 300
while True:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit(f"{url} never became healthy")
    time.sleep(0.02)
healthy = time.time()
body = json.dumps({"prompt": "The capital of France is", "n_predict": 1, "stream": True, "cache_prompt": False})
req = urllib.request.Request(url + "/completion", body.encode(), {"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=300) as r:
    for line in r:
        if line.startswith(b"data:"):
            break
first = time.time()
print(json.dumps({"engine": engine, "run": run, "first_token_s": round(first - t0, 3),
                  "healthy_s": round(healthy - t0, 3)}))

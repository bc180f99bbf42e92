#!/bin/sh
# Call 26 (session 18): call25.sh, then the one-stream question on its own: a fresh metallic
# serve, warm-up rounds, five one-stream rounds of 128 tokens with the server's /metrics
# (steps, inter-token latency) after them, and `bench generate` of the same length twice
# around them (the second with --batch 1: the slot step path at one sequence). Carry .gl
# .dev .peer.
set -u
sh bench/results/2026-12-07e/call25.sh
R=$OUT/re; M=/tmp/smollm2-135m-instruct-q4_1.gguf
mkdir -p $R/one
{
/tmp/b bench generate --model $M --prompt-tokens 32 --gen-tokens 128
/tmp/b serve --model $M --port 8092 --parallel 32 --ctx-size 1024 > $R/one/serve.log 2>&1 &
S=$!
get() { python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:8092$1', timeout=5).read().decode())"; }
for _ in $(seq 600); do get /health >/dev/null 2>&1 && break; sleep 0.5; done
for n in 1 8 32; do python3 bench/serve_load.py http://127.0.0.1:8092 $n 8 --label warm-up > /dev/null; done
get /metrics > $R/one/metrics-before.txt
for i in 1 2 3 4 5; do python3 bench/serve_load.py http://127.0.0.1:8092 1 128 --label metallic-one; done
get /metrics > $R/one/metrics-after.txt
kill $S; wait $S
/tmp/b bench generate --model $M --prompt-tokens 32 --gen-tokens 128 --batch 1
} > $R/one/one.jsonl 2> $R/one/one.err
echo done26

#!/bin/sh
# Serving under load on the lent GPU: metallic serve against llama.cpp's Vulkan llama-server on
# the same GGUF file, in one call. Each server runs with 32 slots of CTX positions; the load is
# 1, 8 and 32 concurrent streaming clients (bench/serve_load.py: different prompts, TOKENS
# tokens each, greedy) after unreported warm-up rounds, then metallic's single-stream `bench
# generate` for the same length. MODES="default exact" runs metallic serve twice, the second
# time with --exact-batches; "split" runs it with the experimental --coop-split-k.
# usage: [TOKENS=128] [CTX=1024] [MODES=default] bench/serve_on_device.sh METALLIC_BIN PEER_DIR MODEL OUT_DIR
set -eu
bin=$1 peer=$2 model=$3 out=$4
tokens=${TOKENS:-128}
ctx=${CTX:-1024}
here=$(dirname "$0")
# A wheel unpacked without file modes leaves the server not executable.
chmod +x "$peer/llama-server" 2>/dev/null || true
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
wait_healthy() {
    for _ in $(seq 600); do
        if python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('$1/health', timeout=2).status == 200 else 1)" 2>/dev/null; then
            return 0
        fi
        sleep 0.5
    done
    echo "never healthy: $1" >&2
    return 1
}
load() {
    # Rounds of 1, 8 and 32 short streams first, not reported: both servers compile pipelines
    # on first use of a batch shape (llama-server's first 8-stream round after a 32-stream
    # warm-up still took 1 s to its first tokens, session 17), which is not what the rounds
    # measure.
    for n in 1 8 32; do
        python3 "$here/serve_load.py" "$1" "$n" 8 --label warm-up > /dev/null
    done
    for n in 1 8 32; do
        python3 "$here/serve_load.py" "$1" "$n" "$tokens" --label "$2"
    done
}
{
    for mode in ${MODES:-default}; do
        # MODES="default exact": metallic serve as is, then with --exact-batches.
        flag=""
        label=metallic
        if [ "$mode" = exact ]; then flag=--exact-batches label=metallic-exact; fi
        if [ "$mode" = split ]; then flag=--coop-split-k label=metallic-split; fi
        "$bin" serve --model "$model" --port 8090 --parallel 32 --ctx-size "$ctx" $flag > "$out/metallic-serve-$mode.log" 2>&1 &
        server=$!
        wait_healthy http://127.0.0.1:8090 && load http://127.0.0.1:8090 "$label"
        kill "$server" || true
        wait "$server" 2>/dev/null || true
    done

    LD_LIBRARY_PATH="$peer" "$peer/llama-server" -m "$model" -ngl 99 -c $((32 * ctx)) --parallel 32 --port 8091 \
        > "$out/llama-server.log" 2>&1 &
    server=$!
    wait_healthy http://127.0.0.1:8091 && load http://127.0.0.1:8091 llama.cpp
    kill "$server" || true
    wait "$server" 2>/dev/null || true

    "$bin" bench generate --model "$model" --prompt-tokens 32 --gen-tokens "$tokens"
} | tee "$out/serve.jsonl"

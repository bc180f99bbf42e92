#!/bin/sh
# Decode/prefill of several GGUF models on the lent GPU, metallic against llama.cpp's Vulkan
# llama-server, each model in the same call (bench/gemma_on_device.sh does one model).
# usage: [PROMPT_TOKENS=N] bench/llm_on_device.sh METALLIC_BIN PEER_DIR OUT_DIR MODEL...
# A MODEL ending in `.hdr` is a header cut by `bench/regrow_gguf.py cut`: the file is regrown
# here (same metadata, tensor types, shapes and layout; regenerated weights) before timing.
# OUT_DIR gets one NAME.txt per model: metallic (with its per-kernel profile), llama.cpp,
# metallic again, and the tail of the server's log.
set -eu
bin=$1 peer=$2 out=$3
shift 3
here=$(dirname "$0")
for model in "$@"; do
    name=$(basename "$model" .hdr)
    name=${name%.gguf}
    file=$model
    case $model in
    *.hdr)
        file=/tmp/$name.gguf
        python3 "$here/regrow_gguf.py" grow "$model" "$file"
        ;;
    esac
    dir=$(mktemp -d)
    echo "== $name" >&2
    sh "$here/gemma_on_device.sh" "$bin" "$peer" "$file" "$dir" > /dev/null 2> "$dir/stderr" || echo "failed: $name" >&2
    {
        echo "== $name ($(basename "$file"), $(stat -c %s "$file") bytes)"
        for part in metallic.json llama.json metallic2.json; do
            [ -f "$dir/$part" ] && cat "$dir/$part"
        done
        echo "-- stderr"
        tail -n 20 "$dir/stderr"
        echo "-- llama-server log"
        grep -E "ggml_vulkan|offloaded|model type|flash|n_ctx" "$dir/llama-server.log" | head -n 20 || true
    } > "$out/$name.txt"
    cat "$out/$name.txt"
done

#!/bin/sh
# Two metallic builds against each other on the lent GPU, in one call: the quantized GEMV at
# 1B-8B shapes (`bench qmatmul --path gemv`, GPU timestamps) and decode/prefill of each model
# (`bench generate`), the two binaries alternating, each case twice, so that both see the
# same card, clocks and temperature. For kernel changes whose gain must be shown before they
# are trusted.
# usage: bench/ab_on_device.sh BIN_A BIN_B OUT_DIR MODEL...
# A MODEL ending in `.hdr` is regrown first (bench/regrow_gguf.py); a MODEL naming a
# `synth_gguf.py --list` entry is written with the vocabulary in $LLAMA_VOCAB.
# OUT_DIR gets gemv.jsonl and generate.jsonl (each result preceded by {"bin": "a"|"b"}) and
# summary.md (the medians of each side).
set -eu
a=$1 b=$2 out=$3
shift 3
here=$(dirname "$0")
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$out/gpu.txt" 2>/dev/null || true
"$a" bench copy --mb 1024 --json > "$out/copy.json"
both() {
    for round in 1 2; do
        for side in a b; do
            if [ "$side" = a ]; then bin=$a; else bin=$b; fi
            echo "{\"bin\": \"$side\"}"
            timeout 120 "$bin" "$@" || echo "{\"failed\": \"$side\"}"
        done
    done
}
gemv_case() {
    both bench qmatmul --type "$1" --n "$2" --k "$3" --path gemv --json
}
# 8B gate+up, down (Q4_K and Q6_K), wo, qkv, output; 1B gate+up; Gemma 3's output; SmolLM2's up.
for c in "q4-k 28672 4096" "q4-k 4096 14336" "q6-k 4096 14336" "q4-k 4096 4096" "q4-k 6144 4096" \
    "q6-k 128256 4096" "q4-k 16384 2048" "q8-0 262144 640" "q4-1 1536 576"; do
    # shellcheck disable=SC2086 # the case's three words
    gemv_case $c
done > "$out/gemv.jsonl"
for model in "$@"; do
    case $model in
    *.hdr)
        file=/tmp/$(basename "$model" .hdr).gguf
        [ -f "$file" ] || python3 "$here/regrow_gguf.py" grow "$model" "$file"
        ;;
    *.gguf) file=$model ;;
    *)
        file=/tmp/$model.gguf
        [ -f "$file" ] || python3 "$here/synth_gguf.py" "$model" "${LLAMA_VOCAB:?set LLAMA_VOCAB}" "$file"
        ;;
    esac
    both bench generate --model "$file" --prompt-tokens 512 --gen-tokens 128
done > "$out/generate.jsonl"
python3 - "$out" <<'PY' | tee "$out/summary.md"
import json, statistics, sys
out = sys.argv[1]
def rows(name, key, value):
    side, seen = None, {}
    for line in open(f"{out}/{name}"):
        d = json.loads(line)
        if "bin" in d:
            side = d["bin"]
        elif "failed" not in d:
            seen.setdefault(key(d), {}).setdefault(side, []).append(value(d))
    return seen
print("| case | A | B | B / A |")
print("|---|---:|---:|---:|")
for name, key, value, unit in [
    ("gemv.jsonl", lambda d: d["shape"], lambda d: d["ms"] * 1000, "us"),
    ("generate.jsonl", lambda d: d["model"].split("/")[-1] + " decode", lambda d: d["decode_tokens_per_s"], "tok/s"),
    ("generate.jsonl", lambda d: d["model"].split("/")[-1] + " prefill", lambda d: d["prefill_tokens_per_s"], "tok/s"),
]:
    for case, sides in rows(name, key, value).items():
        ma, mb = (statistics.median(sides.get(s, [float("nan")])) for s in "ab")
        print(f"| {case} ({unit}) | {ma:.1f} | {mb:.1f} | {mb / ma:.3f} |")
PY

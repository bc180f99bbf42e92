#!/bin/sh
# Runs every fuzz target at once from prebuilt binaries (`cargo fuzz build -O`, stripped), for a
# machine with many cores and no cargo: each target with WORKERS libFuzzer fork-mode workers for
# SECONDS, its corpus kept in CORPUS/<target> (so a second call continues the first), starting
# from fuzz/seeds/<target>. Prints each target's last status line and any crash found.
# usage: fuzz/run_parallel.sh BIN_DIR SECONDS WORKERS CORPUS
# The tokenizer target reads Gemma 3's vocabulary from METALLIC_GEMMA (a GGUF with the
# tokenizer metadata is enough).
set -u
bin=$1 seconds=$2 workers=$3 corpus=$4
seeds=$(dirname "$0")/seeds
mkdir -p "$corpus/artifacts"
for t in gguf tokenizer chat_template safetensors special_tokens outfile; do
    mkdir -p "$corpus/$t" "$seeds/$t"
    "$bin/$t" -fork="$workers" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -artifact_prefix="$corpus/artifacts/$t-" "$corpus/$t" "$seeds/$t" > "$corpus/$t.log" 2>&1 &
done
wait
for t in gguf tokenizer chat_template safetensors special_tokens outfile; do
    echo "$t: $(grep -E '^#[0-9]+' "$corpus/$t.log" | tail -n 1)"
    grep -E 'ERROR|SUMMARY|panicked' "$corpus/$t.log" | head -n 5
done
ls -la "$corpus/artifacts"

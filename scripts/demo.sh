#!/usr/bin/env bash
# Sets up a GPU adapter if none is installed, builds metallic, fetches all-MiniLM-L6-v2 and runs
# the main job: sentence embeddings (a similarity matrix of a few texts, then JSON lines), after
# `metallic info` (adapters, features, limits) and `metallic demo` (a graph checked on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
ensure_cargo
ensure_adapter
cargo build --release --locked -p metallic-cli
./target/release/metallic info
./target/release/metallic demo
model=$(./scripts/fetch-model.sh)
./target/release/metallic similarity --model "$model" \
    "The cat sat on the mat." "A feline rested on a rug." "Stock markets fell sharply today."
printf '%s\n' "Hello world" "metallic runs transformers on your GPU" |
    ./target/release/metallic embed --model "$model" | cut -c1-100

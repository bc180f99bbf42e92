#!/usr/bin/env bash
# Sets up a GPU adapter if none is installed, builds metallic, and runs the main job:
# `metallic info` (adapters, features, limits) and `metallic demo` (a graph checked on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
ensure_cargo
ensure_adapter
cargo build --release --locked -p metallic-cli
./target/release/metallic info
./target/release/metallic demo "$@"

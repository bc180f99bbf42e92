#!/usr/bin/env bash
# Sets up a GPU adapter if none is installed, then checks formatting, lints with warnings as
# errors, fetches all-MiniLM-L6-v2, Gemma 3 270M, SmolLM2 135M, Qwen2.5-Coder 0.5B and
# llama.cpp's tokenizer test data (the model tests compare them with sentence-transformers'
# and llama.cpp's output), and runs every test (unit, integration, doc) on the GPU adapter.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
ensure_cargo
ensure_adapter
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
./scripts/fetch-model.sh >/dev/null
./scripts/fetch-gemma.sh >/dev/null
./scripts/fetch-smollm2.sh >/dev/null
./scripts/fetch-qwen25-coder.sh >/dev/null
./scripts/fetch-llama-vocab.sh >/dev/null
cargo test --locked --workspace
# `metallic serve` through the official `openai` Python package (a venv under target/), on the
# debug binary `cargo test` built.
./scripts/test-serve-openai.sh
# The chat page at `/` in headless Chromium through Selenium (installs chromium and
# chromium-driver when missing); screenshots under target/webui-artifacts/.
./scripts/test-webui.sh
# The Python package (crates/metallic-py): a wheel built with maturin into a venv, then pytest.
./scripts/test-python.sh

#!/usr/bin/env bash
# Tests `metallic serve` with the official `openai` Python package as the client
# (crates/metallic-serve/tests/openai/test_openai.py): models, chat and completions plain and
# streamed against `metallic generate`, embeddings against `metallic embed`, stop strings,
# log-probabilities, usage, the API key, error statuses, 32 concurrent streams, a client that
# hangs up, the queue limit and a graceful SIGTERM.
#
#   ./scripts/test-serve-openai.sh [PYTEST ARGS...]
#
# Builds the debug `metallic` binary (which `cargo test` has built already; set METALLIC_BIN to
# use another), fetches the two models, and installs the pinned packages of
# crates/metallic-serve/tests/openai/requirements.txt into a venv under target/ (Debian needs
# python3-venv, installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
ensure_cargo
ensure_adapter

requirements=crates/metallic-serve/tests/openai/requirements.txt
venv=target/openai-venv
ensure_venv "$venv" "$requirements"

if [ -z "${METALLIC_BIN:-}" ]; then
    cargo build --locked -p metallic-cli >&2
    METALLIC_BIN="$PWD/target/debug/metallic"
fi
METALLIC_SMOLLM2="$(./scripts/fetch-smollm2.sh)"
METALLIC_MINILM="$(./scripts/fetch-model.sh)"
export METALLIC_BIN METALLIC_SMOLLM2 METALLIC_MINILM

exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" crates/metallic-serve/tests/openai/test_openai.py

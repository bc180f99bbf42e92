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

if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "metallic: python3 cannot make a venv; installing python3-venv" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2
fi

requirements=crates/metallic-serve/tests/openai/requirements.txt
venv=target/openai-venv
# A venv made from other pins (or half made) is made again.
if ! cmp -s "$requirements" "$venv/requirements.txt"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    cp "$requirements" "$venv/requirements.txt"
fi

if [ -z "${METALLIC_BIN:-}" ]; then
    cargo build --locked -p metallic-cli >&2
    METALLIC_BIN="$PWD/target/debug/metallic"
fi
METALLIC_SMOLLM2="$(./scripts/fetch-smollm2.sh)"
METALLIC_MINILM="$(./scripts/fetch-model.sh)"
export METALLIC_BIN METALLIC_SMOLLM2 METALLIC_MINILM

exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" crates/metallic-serve/tests/openai/test_openai.py

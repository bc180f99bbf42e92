#!/usr/bin/env bash
# Tests the Python package (crates/metallic-py, `import metallic`): builds its wheel, installs it
# into a venv with the pinned tools of crates/metallic-py/requirements-test.txt, and runs its
# pytest suite (crates/metallic-py/tests) against sentence-transformers' reference vectors,
# llama.cpp's tokenizer fixtures and the `metallic` CLI's output.
#
#   ./scripts/test-python.sh [PYTEST ARGS...]
#
# The wheel is built with the dev profile, which reuses what `cargo build`/`cargo test` compiled
# (dependencies at opt-level 2); `pip install ./crates/metallic-py` makes the release build
# users get. Builds the debug `metallic` binary (set METALLIC_BIN to use another), fetches
# all-MiniLM-L6-v2 and SmolLM2 135M, and installs python3-venv on Debian when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
ensure_cargo
ensure_adapter

requirements=crates/metallic-py/requirements-test.txt
venv=target/python-venv
ensure_venv "$venv" "$requirements"

# The wheel, as pip would install it (type stubs and py.typed included), replacing any earlier.
wheels=target/python-wheels
rm -rf "$wheels"
"$venv/bin/maturin" build --locked --profile dev --strip --quiet -m crates/metallic-py/Cargo.toml \
    --interpreter "$venv/bin/python" --out "$wheels" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/*.whl >&2

if [ -z "${METALLIC_BIN:-}" ]; then
    cargo build --locked -p metallic-cli >&2
    METALLIC_BIN="$PWD/target/debug/metallic"
fi
METALLIC_SMOLLM2="$(./scripts/fetch-smollm2.sh)"
METALLIC_MINILM="$(./scripts/fetch-model.sh)"
export METALLIC_BIN METALLIC_SMOLLM2 METALLIC_MINILM
# No __pycache__ folders in the source tree.
export PYTHONDONTWRITEBYTECODE=1

exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" crates/metallic-py/tests

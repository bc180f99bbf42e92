#!/usr/bin/env bash
# Tests the chat page of `metallic serve` in a real browser
# (crates/metallic-serve/tests/webui/test_webui.py): headless Chromium driven by Selenium loads
# the page, enters the API key the server asks for, chats, compares a streamed reply with the
# API's greedy answer, stops a long reply and checks on /metrics that the server freed the
# sequence, checks that markup in replies is shown as text, and saves screenshots at desktop
# (1280x800) and phone (390x844) widths under target/webui-artifacts/.
#
#   ./scripts/test-webui.sh [PYTEST ARGS...]
#
# Installs what a fresh Debian needs (chromium, chromium-driver, python3-venv; with sudo
# unless root), the pinned packages of crates/metallic-serve/tests/webui/requirements.txt into
# a venv under target/, builds the debug `metallic` binary (set METALLIC_BIN to use another)
# and fetches SmolLM2. Set METALLIC_CHROMIUM / METALLIC_CHROMEDRIVER to use another browser.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
ensure_cargo
ensure_adapter

missing=()
if [ -z "${METALLIC_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
    missing+=(chromium)
fi
if [ -z "${METALLIC_CHROMEDRIVER:-}" ] && ! command -v chromedriver >/dev/null 2>&1; then
    missing+=(chromium-driver)
fi
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
apt_install "${missing[@]}"

requirements=crates/metallic-serve/tests/webui/requirements.txt
venv=target/webui-venv
ensure_venv "$venv" "$requirements"

if [ -z "${METALLIC_BIN:-}" ]; then
    ensure_cargo
    cargo build --locked -p metallic-cli >&2
    METALLIC_BIN="$PWD/target/debug/metallic"
fi
METALLIC_SMOLLM2="$(./scripts/fetch-smollm2.sh)"
METALLIC_WEBUI_ARTIFACTS="${METALLIC_WEBUI_ARTIFACTS:-$PWD/target/webui-artifacts}"
rm -rf "$METALLIC_WEBUI_ARTIFACTS"
mkdir -p "$METALLIC_WEBUI_ARTIFACTS"
# Selenium is given the driver; it must not look for (or download) one of its own.
export SE_OFFLINE=true
export METALLIC_BIN METALLIC_SMOLLM2 METALLIC_WEBUI_ARTIFACTS

"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" crates/metallic-serve/tests/webui/test_webui.py
echo "metallic: screenshots in $METALLIC_WEBUI_ARTIFACTS" >&2

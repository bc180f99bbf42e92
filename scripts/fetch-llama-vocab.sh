#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vocabularies (`models/ggml-vocab-*.gguf` with their
# `.gguf.inp` / `.gguf.out` cases) for the tokenizer tests, and prints the folder they are in.
#
#   ./scripts/fetch-llama-vocab.sh
#
# They come from the llama.cpp tree vendored in the llama-cpp-python 0.3.36 sdist on PyPI
# (76 MB, checked against its known sha256). Only `vendor/llama.cpp/models/ggml-vocab-*` is
# extracted, into ${METALLIC_MODELS_PARENT:-$HOME/.cache/metallic}/llama-vocab (75 MB). The
# tests read that folder, or the one named by LLAMA_VOCAB_DIR.
#
# Needs only python3 and its standard library. If the folder is already complete it prints it
# and touches no network. Files are extracted into a temporary folder next to it that is
# renamed into place only when complete; the download goes to a temporary file that is
# removed in every case.
#
# Environment:
#   METALLIC_MODELS_PARENT  parent of the llama-vocab folder (default: $HOME/.cache/metallic)
#   METALLIC_PYPI_URL       PyPI's JSON API base (default: https://pypi.org/pypi)
set -euo pipefail

usage() {
    sed -n '2,20s/^# \{0,1\}//p' "$0"
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
"") ;;
*)
    echo "fetch-llama-vocab.sh: no arguments expected, got '$1'" >&2
    usage >&2
    exit 2
    ;;
esac

dest="${METALLIC_MODELS_PARENT:-$HOME/.cache/metallic}/llama-vocab"

if ! command -v python3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "fetch-llama-vocab.sh: python3 not found; installing python3" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3 ca-certificates
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "fetch-llama-vocab.sh: python3 is needed (its standard library only); install it and run this again" >&2
    exit 1
fi

# exec: python3 gets the signals sent to this script, and removes its temporary files.
exec python3 - "$dest" <<'PY'
import hashlib
import json
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
PREFIX = "vendor/llama.cpp/models/ggml-vocab-"
# Written last into a complete folder: its presence (with this content) means nothing to do.
MARKER = ".complete"
MARKER_TEXT = f"{PACKAGE} {VERSION} sha256 {SHA256}\n"


def fail(msg):
    print(f"fetch-llama-vocab.sh: {msg}", file=sys.stderr)
    sys.exit(1)


def on_signal(signum, _frame):
    # Turn the signal into an exception so that the `finally` blocks remove temporary files.
    print(f"fetch-llama-vocab.sh: interrupted ({signal.Signals(signum).name}); nothing kept", file=sys.stderr)
    raise SystemExit(128 + signum)


for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, on_signal)

dest = os.path.abspath(sys.argv[1])
parent = os.path.dirname(dest)
base = os.environ.get("METALLIC_PYPI_URL", "https://pypi.org/pypi").rstrip("/")

marker = os.path.join(dest, MARKER)
if os.path.lexists(dest):
    if not os.path.isdir(dest):
        fail(f"{dest} exists and is not a folder")
    try:
        with open(marker) as f:
            done = f.read() == MARKER_TEXT
    except OSError:
        done = False
    if done:
        print(dest)
        sys.exit(0)
    fail(f"{dest} exists but is not a complete extraction of {PACKAGE} {VERSION}; remove it and run this again")

try:
    os.makedirs(parent, exist_ok=True)
except OSError as e:
    fail(f"cannot create {parent}: {e}")

def pypi_json(api):
    try:
        with urllib.request.urlopen(api, timeout=60) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        fail(f"{api}: HTTP {e.code} {e.reason}")
    except (urllib.error.URLError, OSError) as e:
        fail(f"cannot reach {api}: {getattr(e, 'reason', e)}")
    except ValueError as e:
        fail(f"{api}: not JSON ({e})")


api = f"{base}/{PACKAGE}/json"
releases = pypi_json(api).get("releases")
if isinstance(releases, dict):
    if VERSION not in releases:
        fail(f"{api}: no release {VERSION}")
    files = releases[VERSION]
else:
    # An index without the `releases` map: ask for the release itself.
    api = f"{base}/{PACKAGE}/{VERSION}/json"
    files = pypi_json(api).get("urls", [])
sdists = [u for u in files if u.get("packagetype") == "sdist"]
if not sdists:
    fail(f"{api}: no sdist for {PACKAGE} {VERSION}")
sdist = sdists[0]
# Mirrors of PyPI's JSON API may give file URLs relative to the API URL.
url, name, size = urllib.parse.urljoin(api, sdist["url"]), sdist["filename"], sdist.get("size") or 0

fd, archive = tempfile.mkstemp(prefix=".llama-cpp-python.partial-", suffix=".tar.gz", dir=parent)
staging = tempfile.mkdtemp(prefix=".llama-vocab.partial-", dir=parent)
try:
    print(f"fetch-llama-vocab.sh: downloading {name} ({size / 1e6:.0f} MB)", file=sys.stderr)
    h = hashlib.sha256()
    got = 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as r:
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                h.update(chunk)
                got += len(chunk)
    except urllib.error.HTTPError as e:
        fail(f"{url}: HTTP {e.code} {e.reason}")
    except (urllib.error.URLError, OSError) as e:
        fail(f"download of {url} failed: {getattr(e, 'reason', e)}")
    if h.hexdigest() != SHA256:
        fail(f"{name}: sha256 {h.hexdigest()} ({got} bytes), expected {SHA256}")

    count = 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                # Members are `llama_cpp_python-0.3.36/vendor/...`: the first component dropped.
                inner = member.name.split("/", 1)[-1]
                if not inner.startswith(PREFIX) or not member.isfile():
                    continue
                leaf = os.path.basename(inner)
                if "/" in inner[len("vendor/llama.cpp/models/"):] or leaf in ("", ".", ".."):
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                with src, open(os.path.join(staging, leaf), "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                count += 1
    except (tarfile.TarError, OSError, EOFError) as e:
        fail(f"{name}: cannot extract ({e})")
    if count == 0:
        fail(f"{name}: holds no {PREFIX}* files")
    with open(os.path.join(staging, MARKER), "w") as f:
        f.write(MARKER_TEXT)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would otherwise carry over
    os.rename(staging, dest)
    print(f"fetch-llama-vocab.sh: {count} files from {name} in {dest}", file=sys.stderr)
finally:
    if os.path.exists(archive):
        os.unlink(archive)
    if os.path.isdir(staging):
        shutil.rmtree(staging, ignore_errors=True)
print(dest)
PY

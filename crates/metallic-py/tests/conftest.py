"""Shared fixtures of the `metallic` Python tests.

scripts/test-python.sh builds the wheel into a venv and sets:
  METALLIC_MINILM   all-MiniLM-L6-v2 (scripts/fetch-model.sh)
  METALLIC_SMOLLM2  SmolLM2 135M Instruct Q4_1 (scripts/fetch-smollm2.sh)
  METALLIC_BIN      the `metallic` CLI, whose output the bindings must reproduce

Without them the fetch scripts are asked for the model paths and target/debug/metallic is used.
The tests run on whatever adapter metallic picks; in CI that is Mesa's lavapipe, so token counts
stay small.
"""
import json
import os
import pathlib
import subprocess

import pytest

import metallic

REPO = pathlib.Path(__file__).resolve().parents[3]
FIXTURES = REPO / "crates" / "metallic-models" / "tests" / "fixtures"
# A 300 KB llama with a 320-token byte-level vocabulary (see fixtures/synthetic/README.md):
# fast to load and to run, for tests that need many models or many generations.
TINY_GGUF = FIXTURES / "synthetic" / "llama3.gguf"


def _model(variable, script):
    path = os.environ.get(variable)
    if not path:
        path = subprocess.run([str(REPO / "scripts" / script)], check=True, capture_output=True,
                              text=True).stdout.strip()
    return pathlib.Path(path)


MINILM = _model("METALLIC_MINILM", "fetch-model.sh")
SMOLLM2 = _model("METALLIC_SMOLLM2", "fetch-smollm2.sh")
BIN = pathlib.Path(os.environ.get("METALLIC_BIN") or REPO / "target" / "debug" / "metallic")


def fixture(*parts):
    with open(FIXTURES.joinpath(*parts), encoding="utf-8") as f:
        return json.load(f)


def cli(*args, stdin=None):
    """Runs the `metallic` CLI and returns its standard output."""
    assert BIN.exists(), f"{BIN} not found: build it with `cargo build -p metallic-cli` or set METALLIC_BIN"
    done = subprocess.run([str(BIN), *map(str, args)], input=stdin, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"metallic {' '.join(map(str, args))} failed: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def embedder():
    return metallic.Embedder(MINILM)


@pytest.fixture(scope="session")
def llm():
    return metallic.Llm(SMOLLM2)


@pytest.fixture(scope="session")
def tiny():
    return metallic.Llm(TINY_GGUF)

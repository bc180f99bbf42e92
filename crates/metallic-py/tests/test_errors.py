"""Every exception class from a real trigger, with the engine's message."""
import os
import subprocess
import sys

import pytest

import metallic
from conftest import MINILM, SMOLLM2, TINY_GGUF

PROMPT = "The capital of France is"


def test_the_hierarchy_derives_from_the_builtins():
    assert issubclass(metallic.Error, Exception)
    expected = {
        metallic.InvalidArgumentError: (ValueError,),
        metallic.ArgumentTypeError: (metallic.InvalidArgumentError, TypeError, ValueError),
        metallic.ModelFileError: (OSError,),
        metallic.ModelNotFoundError: (metallic.ModelFileError, FileNotFoundError, OSError),
        metallic.ModelFormatError: (ValueError,),
        metallic.DeviceError: (RuntimeError,),
    }
    for cls, bases in expected.items():
        assert issubclass(cls, metallic.Error), cls
        for base in bases:
            assert issubclass(cls, base), (cls, base)
        assert cls.__module__ == "metallic" and cls.__doc__


def test_a_missing_model_file(tmp_path):
    missing = tmp_path / "nowhere.gguf"
    with pytest.raises(metallic.ModelNotFoundError) as caught:
        metallic.Llm(missing)
    assert isinstance(caught.value, FileNotFoundError) and isinstance(caught.value, metallic.Error)
    assert str(missing) in str(caught.value) and "No such file" in str(caught.value)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        metallic.Embedder(tmp_path / "nowhere")


def test_a_truncated_gguf(tmp_path):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(TINY_GGUF.read_bytes()[:5000])
    with pytest.raises(metallic.ModelFormatError) as caught:
        metallic.Llm(truncated)
    assert isinstance(caught.value, ValueError)
    assert str(truncated) in str(caught.value)


def test_files_of_the_wrong_kind(tmp_path):
    with pytest.raises(metallic.ModelFormatError, match="GGUF language model"):
        metallic.Embedder(TINY_GGUF)
    not_gguf = tmp_path / "text.gguf"
    not_gguf.write_text("hello, this is not a model file at all\n" * 10)
    with pytest.raises(metallic.ModelFormatError):
        metallic.Llm(not_gguf)
    with pytest.raises(metallic.ModelFormatError, match="is a directory; expected a GGUF file"):
        metallic.Llm(MINILM)
    # A path through a file: it exists as nothing, but not because it is missing.
    with pytest.raises(metallic.ModelFileError) as caught:
        metallic.Llm(TINY_GGUF / "inside")
    assert isinstance(caught.value, OSError) and not isinstance(caught.value, FileNotFoundError)
    assert "Not a directory" in str(caught.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -1.0}, "temperature must be finite and >= 0"),
    ({"temperature": float("nan")}, "temperature must be finite"),
    ({"top_p": 1.5}, "top-p must be in"),
    ({"min_p": -0.1}, "min-p must be in"),
    ({"repeat_penalty": 0.0}, "repeat penalty must be finite and > 0"),
    ({"presence_penalty": 3.0}, "presence penalty must be in"),
    ({"top_k": -1}, "top_k must be >= 0"),
    ({"max_tokens": -1}, "max_tokens must be >= 0"),
    ({"seed": -1}, "seed must be in"),
    ({"max_tokens": 100000}, "exceed the context"),
])
def test_bad_sampling_values(tiny, kwargs, message):
    with pytest.raises(metallic.InvalidArgumentError, match=message) as caught:
        tiny.generate([5, 6], **kwargs)
    assert isinstance(caught.value, ValueError)
    # A stream raises them when it starts or at its first piece.
    with pytest.raises(metallic.InvalidArgumentError, match=message):
        list(tiny.stream([5, 6], **kwargs))


def test_bad_arguments(tiny, embedder):
    with pytest.raises(metallic.InvalidArgumentError, match="the prompt has no tokens"):
        tiny.generate("")
    with pytest.raises(metallic.InvalidArgumentError, match="not a token id of this model"):
        tiny.generate([5, 320])
    with pytest.raises(metallic.InvalidArgumentError, match="not a token id"):
        tiny.detokenize([-1])
    with pytest.raises(metallic.InvalidArgumentError, match="dtype"):
        metallic.Embedder(MINILM, dtype="f64")
    with pytest.raises(metallic.InvalidArgumentError, match="context of 0 positions"):
        metallic.Llm(TINY_GGUF, context_size=0)
    with pytest.raises(metallic.InvalidArgumentError, match="cache_type must be"):
        metallic.Llm(TINY_GGUF, cache_type="q8_0")
    with pytest.raises(metallic.InvalidArgumentError, match="has no \"content\""):
        tiny.apply_chat_template([{"role": "user"}])
    with pytest.raises(metallic.InvalidArgumentError, match="no chat template"):
        tiny.apply_chat_template([{"role": "user", "content": "hi"}])


def test_non_string_input(tiny, embedder):
    cases = [
        lambda: embedder.encode([1, 2]),
        lambda: embedder.encode(42),
        lambda: embedder.encode(["fine", None]),
        lambda: embedder.tokenize(b"bytes"),
        lambda: tiny.generate(3.5),
        lambda: tiny.generate(["a", "b"]),
        lambda: tiny.tokenize(None),
        lambda: tiny.detokenize("not ids"),
        lambda: tiny.generate([5, 6], stop=[7]),
        lambda: tiny.apply_chat_template("hi"),
        lambda: tiny.apply_chat_template([("user", "hi")]),
        lambda: tiny.apply_chat_template([{"role": "user", "content": 3}]),
        lambda: metallic.Llm(42),
    ]
    for i, call in enumerate(cases):
        with pytest.raises(metallic.ArgumentTypeError) as caught:
            call()
        assert isinstance(caught.value, TypeError), i
        assert "must be" in str(caught.value), (i, str(caught.value))


def test_no_adapter_is_a_device_error():
    # A fresh interpreter: the device is made once per process.
    code = (
        "import metallic\n"
        "try:\n"
        "    metallic.info()\n"
        "except metallic.DeviceError as e:\n"
        "    assert isinstance(e, RuntimeError)\n"
        "    print('DeviceError:', e)\n"
    )
    env = dict(os.environ, METALLIC_ADAPTER="no-such-adapter")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "DeviceError: no GPU adapter found matching" in done.stdout, done.stdout


def test_info_and_adapters():
    info = metallic.info()
    assert info["name"] and info["backend"] and isinstance(info["features"], list)
    assert info["limits"]["max_buffer_size"] > 0
    names = [a["name"] for a in metallic.adapters()]
    assert info["name"] in names

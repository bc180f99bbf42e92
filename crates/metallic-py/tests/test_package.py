"""The installed package: type stubs, docstrings, help()."""
import inspect
import pathlib
import pydoc

import metallic

PUBLIC = ["Embedder", "Llm", "GenerationResult", "TextStream", "info", "adapters", "Error",
          "InvalidArgumentError", "ArgumentTypeError", "ModelFileError", "ModelNotFoundError",
          "ModelFormatError", "DeviceError"]


def test_the_wheel_ships_type_stubs():
    package = pathlib.Path(metallic.__file__).parent
    assert (package / "py.typed").is_file()
    stubs = (package / "__init__.pyi").read_text(encoding="utf-8")
    for name in PUBLIC:
        assert f"class {name}" in stubs or f"def {name}(" in stubs, name


def test_everything_public_has_a_docstring():
    assert metallic.__doc__ and metallic.__version__
    for name in PUBLIC:
        obj = getattr(metallic, name)
        assert obj.__doc__ and len(obj.__doc__) > 20, name
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, member in vars(obj).items():
                if not attr.startswith("_"):
                    assert member.__doc__, f"{name}.{attr}"


def test_help_of_llm_is_useful():
    text = pydoc.render_doc(metallic.Llm, renderer=pydoc.plaintext)
    for expected in ["GGUF", "generate(self, /, prompt, max_tokens=128, *, temperature=0.8",
                     "stream(", "chat(", "apply_chat_template(", "tokenize(self, /, text, add_bos=True",
                     "GIL", "stop"]:
        assert expected in text, expected
    assert "(path, dtype=" in pydoc.render_doc(metallic.Embedder, renderer=pydoc.plaintext)

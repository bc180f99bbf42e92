"""Type stubs of ``metallic`` (the ``metallic-engine`` distribution): GPU inference on wgpu.

``Embedder`` gives sentence embeddings with sentence-transformers' call shape; ``Llm`` runs a
GGUF language model (generation, streaming, chat). The GIL is released while the GPU works;
every object may be used from several threads. Errors are ``metallic.Error`` subclasses that
also derive from the matching built-in exception.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Optional, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

_Path = Union[str, PathLike[str]]
_Message = Mapping[str, str]
_Prompt = Union[str, Sequence[int]]

class Error(Exception):
    """Base class of every error metallic raises; the message is the engine's."""

class InvalidArgumentError(Error, ValueError):
    """An argument is out of range or otherwise invalid (also a ValueError)."""

class ArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument has the wrong type, e.g. a number where text is expected (also a TypeError)."""

class ModelFileError(Error, OSError):
    """A model file could not be read (also an OSError)."""

class ModelNotFoundError(ModelFileError, FileNotFoundError):
    """A model file or directory does not exist (also a FileNotFoundError)."""

class ModelFormatError(Error, ValueError):
    """A model file or its tokenizer is malformed, truncated or unsupported (also a ValueError)."""

class DeviceError(Error, RuntimeError):
    """The GPU or the engine failed while working (also a RuntimeError)."""

def info() -> dict[str, Any]:
    """The adapter metallic runs on and its capabilities.

    Keys: ``name``, ``backend``, ``device_type``, ``driver``, ``driver_info``, ``vendor``,
    ``device``, ``subgroups``, ``subgroup_min_size``, ``subgroup_max_size``, ``shader_f16``,
    ``timestamps``, ``cooperative_matrix``, ``unified_memory``, ``cpu``, ``params``,
    ``features`` (list of names), ``limits`` (dict). Creates the process's GPU device if no
    model has yet; raises ``DeviceError`` when there is no adapter.
    """

def adapters() -> list[dict[str, Any]]:
    """Every GPU adapter wgpu finds: ``name``, ``backend``, ``device_type``, ``driver``,
    ``driver_info``, ``vendor``, ``device``. Creates no device."""

class Embedder:
    """A sentence-embedding model (sentence-transformers or Hugging Face BERT directory).

    ``dtype`` is the storage precision of weights and activations: ``"f32"`` or ``"f16"``.
    Raises ``ModelNotFoundError`` for a missing directory, ``ModelFormatError`` for one that is
    not a model metallic reads.
    """

    def __init__(self, path: _Path, dtype: Literal["f32", "f16", "float32", "float16"] = "f32") -> None: ...
    @overload
    def encode(
        self,
        sentences: str,
        batch_size: int = 32,
        normalize_embeddings: Optional[bool] = None,
        show_progress_bar: bool = False,
        convert_to_numpy: Literal[True] = True,
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def encode(
        self,
        sentences: Iterable[str],
        batch_size: int = 32,
        normalize_embeddings: Optional[bool] = None,
        show_progress_bar: bool = False,
        convert_to_numpy: Literal[True] = True,
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def encode(
        self,
        sentences: str,
        batch_size: int = 32,
        normalize_embeddings: Optional[bool] = None,
        show_progress_bar: bool = False,
        *,
        convert_to_numpy: Literal[False],
    ) -> list[float]: ...
    @overload
    def encode(
        self,
        sentences: Iterable[str],
        batch_size: int = 32,
        normalize_embeddings: Optional[bool] = None,
        show_progress_bar: bool = False,
        *,
        convert_to_numpy: Literal[False],
    ) -> list[list[float]]: ...
    def similarity(self, a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Cosine similarity ``[len(a), len(b)]`` (a single vector counts as one row)."""
    @overload
    def tokenize(self, text: str) -> list[int]: ...
    @overload
    def tokenize(self, text: Iterable[str]) -> list[list[int]]: ...
    def get_sentence_embedding_dimension(self) -> int: ...
    @property
    def max_seq_length(self) -> int:
        """Longest input in tokens (special tokens included); longer texts are truncated."""
    @property
    def dimension(self) -> int:
        """Width of an embedding."""
    @property
    def normalizes(self) -> bool:
        """Whether the model's pipeline makes unit-length vectors."""
    @property
    def pooling(self) -> Literal["mean", "mean_sqrt_len", "cls"]: ...
    @property
    def dtype(self) -> Literal["f32", "f16"]: ...
    @property
    def path(self) -> Path: ...

class GenerationResult:
    """What ``Llm.generate`` / ``Llm.chat`` (or a finished ``TextStream``) produced."""

    @property
    def text(self) -> str:
        """The generated text, cut before a stop string."""
    @property
    def tokens(self) -> list[int]:
        """The generated token ids (an end-of-generation token excluded)."""
    @property
    def prompt_tokens(self) -> list[int]:
        """The prompt's token ids."""
    @property
    def finish_reason(self) -> Literal["stop", "length", "cancelled"]:
        """``stop``: an end-of-generation token or a stop string; ``length``: ``max_tokens``;
        ``cancelled``: a stream closed early."""
    @property
    def prompt_time(self) -> float:
        """Seconds the prompt's pass through the model took."""
    @property
    def generation_time(self) -> float:
        """Seconds the generated tokens took."""
    @property
    def tokens_per_second(self) -> float: ...
    @property
    def prompt_tokens_per_second(self) -> float: ...

class TextStream(Iterator[str]):
    """The text of a generation, piece by piece. Closing or dropping it cancels the
    generation and waits for its thread to end."""

    def __iter__(self) -> TextStream: ...
    def __next__(self) -> str: ...
    def close(self) -> None:
        """Stops the generation if it still runs and waits for its thread to end."""
    @property
    def result(self) -> Optional[GenerationResult]:
        """The result once the generation has ended, else ``None``."""
    def __enter__(self) -> TextStream: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

class Llm:
    """A language model from one GGUF file.

    Sampling defaults are ``metallic generate``'s: temperature 0.8 (0 is greedy), top_k 40,
    top_p 0.95, min_p 0.05, repeat_penalty 1.0 over the last 64 tokens, a fixed default seed.
    ``stop`` strings end the generation where they appear in the text.
    """

    def __init__(
        self, path: _Path, context_size: Optional[int] = None, cache_type: Optional[str] = None
    ) -> None: ...
    def tokenize(self, text: str, add_bos: bool = True, parse_special: bool = True) -> list[int]: ...
    def detokenize(self, ids: Iterable[int], special: bool = False) -> str: ...
    def generate(
        self,
        prompt: _Prompt,
        max_tokens: int = 128,
        *,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: Optional[int] = None,
        stop: Union[str, Iterable[str], None] = None,
    ) -> GenerationResult: ...
    def stream(
        self,
        prompt: _Prompt,
        max_tokens: int = 128,
        *,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: Optional[int] = None,
        stop: Union[str, Iterable[str], None] = None,
    ) -> TextStream: ...
    def chat(
        self,
        messages: Iterable[_Message],
        max_tokens: int = 128,
        *,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: Optional[int] = None,
        stop: Union[str, Iterable[str], None] = None,
    ) -> GenerationResult: ...
    def stream_chat(
        self,
        messages: Iterable[_Message],
        max_tokens: int = 128,
        *,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        seed: Optional[int] = None,
        stop: Union[str, Iterable[str], None] = None,
    ) -> TextStream: ...
    def apply_chat_template(self, messages: Iterable[_Message]) -> str: ...
    @property
    def context_size(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def bos_token_id(self) -> Optional[int]: ...
    @property
    def eos_token_id(self) -> Optional[int]: ...
    @property
    def end_token_ids(self) -> list[int]: ...
    @property
    def path(self) -> Path: ...

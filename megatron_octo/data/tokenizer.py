"""Hugging Face tokenizers for preprocessing: loading from a local directory, and document encoding.

Contract of ``DocumentEncoder.encode``: a document's tokens are what ``AutoTokenizer.from_pretrained(DIR)(text)``
returns (its own special tokens, e.g. a leading BOS, included), with two fixes: a doubled BOS at the start (the
text began with the BOS string and the tokenizer added another) becomes one, and the end-of-document token (the
tokenizer's EOS) follows, exactly once.

Workers encode with the tokenizer's Rust backend (``tokenizers.Tokenizer``, serialized from the loaded
``AutoTokenizer`` so it is the same pipeline); tokenizers without one fall back to calling the HF tokenizer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

import numpy

from megatron_octo.data.errors import DataError

if TYPE_CHECKING:
    import transformers


def load_tokenizer(path) -> "transformers.PreTrainedTokenizerBase":
    """``AutoTokenizer`` from a local directory, or a Hub model ID through the Hugging Face cache
    (``utils.hub.resolve_model_path``: tokenizer files only); ``DataError`` when it is not there."""
    from megatron_octo.utils.hub import TOKENIZER_FILES, resolve_model_path

    path = resolve_model_path(path, what="tokenizer", allow_patterns=TOKENIZER_FILES)
    if not path.is_dir():
        raise DataError(
            f"tokenizer directory {path} does not exist: pass --tokenizer DIR with tokenizer.json "
            f"or tokenizer_config.json"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot load a tokenizer from {path}: {first}") from None


def vocab_size(tokenizer) -> int:
    """Token ids the tokenizer can produce: base vocabulary plus added tokens."""
    return max(len(tokenizer), int(tokenizer.vocab_size or 0))


def token_dtype(size: int):
    """The indexed dataset's token dtype: Megatron-Core's choice (uint16 below 65,500 ids, else int32)."""
    from megatron.core.datasets.indexed_dataset import DType

    return DType.optimal_dtype(size)


@dataclass
class DocumentEncoder:
    """Picklable text -> token ids (numpy) for worker processes; see the module docstring for the contract."""

    backend_json: Optional[str]
    """The Rust tokenizer serialized; None means use ``hf_tokenizer``."""
    hf_tokenizer: Any
    """The transformers tokenizer, used only without a backend."""
    bos_id: Optional[int]
    eod_id: int
    dtype: type

    def __post_init__(self) -> None:
        self._backend: Any = None  # tokenizers.Tokenizer, built on first use in each worker

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_backend"] = None  # rebuilt from backend_json in the worker
        if self.backend_json is not None:
            state["hf_tokenizer"] = None
        return state

    def _ids(self, texts: Sequence[str]) -> List[List[int]]:
        if self.backend_json is None:
            return list(self.hf_tokenizer(list(texts), add_special_tokens=True)["input_ids"])
        if self._backend is None:
            from tokenizers import Tokenizer

            self._backend = Tokenizer.from_str(self.backend_json)
        return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=True)]

    def encode(self, texts: Sequence[str]) -> List[numpy.ndarray]:
        """Token ids of each document, end-of-document token last."""
        out: List[numpy.ndarray] = []
        for ids in self._ids(texts):
            if self.bos_id is not None and len(ids) >= 2 and ids[0] == self.bos_id and ids[1] == self.bos_id:
                ids = ids[1:]
            if not ids or ids[-1] != self.eod_id:
                ids = ids + [self.eod_id]
            out.append(numpy.asarray(ids, dtype=self.dtype))
        return out


def make_encoder(tokenizer) -> DocumentEncoder:
    """A ``DocumentEncoder`` for a loaded HF tokenizer; ``DataError`` if it has no EOS to end documents with."""
    if tokenizer.eos_token_id is None:
        raise DataError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')} has no eos_token to end documents "
            f"with: set eos_token in its tokenizer_config.json"
        )
    backend = getattr(tokenizer, "backend_tokenizer", None)
    backend_json = backend.to_str() if backend is not None else None
    return DocumentEncoder(
        backend_json=backend_json,
        hf_tokenizer=tokenizer,
        bos_id=tokenizer.bos_token_id,
        eod_id=tokenizer.eos_token_id,
        dtype=token_dtype(vocab_size(tokenizer)),
    )


def single_threaded_tokenizers() -> None:
    """Keep the Rust tokenizer on one thread: each worker process is one core's worth of work."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"

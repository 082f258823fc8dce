"""Hugging Face Hub model IDs wherever an HF model directory is accepted, through huggingface_hub's cache.

``local_model_dir("meta-llama/Llama-3.2-1B")`` downloads (or finds in the cache) the files a conversion reads:
config.json, generation_config.json, safetensors weights and their index, tokenizer files. With ``HF_HUB_OFFLINE=1``
only the cache is used. An existing local path is always taken as it is; a spec that is neither an existing path
nor shaped like ``owner/name`` is returned unchanged (the caller's own error then names it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Union

from megatron_octo.convert.errors import ConvertError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
]


def is_repo_id(spec) -> bool:
    """``owner/name`` that is not an existing local path."""
    text = str(spec)
    return bool(_REPO_ID.match(text)) and not Path(text).exists()


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def local_model_dir(spec: Union[str, Path]) -> Path:
    """The local directory of ``spec``: itself when it exists, else the Hub snapshot of the model ID ``spec``."""
    if not is_repo_id(spec):
        return Path(spec)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id=str(spec), allow_patterns=PATTERNS, local_files_only=offline()))
    except LocalEntryNotFoundError:
        how = "HF_HUB_OFFLINE is set and it is not in the cache" if offline() else "it could not be downloaded"
        raise ConvertError(
            f"{spec}: no such local directory, and as a Hub model ID {how}: download it once "
            f"online (huggingface-cli download {spec}) or give a local directory"
        ) from None
    except RepositoryNotFoundError:
        raise ConvertError(
            f"{spec}: no such local directory or Hub model (gated models need `huggingface-cli login`)"
        ) from None
    except HfHubHTTPError as exc:
        raise ConvertError(f"{spec}: the Hub refused it ({str(exc).splitlines()[0][:160]})") from None

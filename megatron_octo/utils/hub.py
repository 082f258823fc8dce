"""Models and tokenizers by Hugging Face Hub ID: ``resolve_model_path`` turns what a user passes where an HF folder
is accepted (``octo eval --model``, ``octo convert --from hf --input``, ``model.from_hf``, ``checkpoint.load``,
``rl.init``, ``--tokenizer``, ``data.tokenizer``) into a local directory. The one place that talks to the Hub.

A path that exists is used as is. Otherwise a name shaped like a Hub repository ID (``org/name``, optionally
``@revision``) is fetched through ``huggingface_hub.snapshot_download`` into the Hub cache (``HF_HOME`` /
``HF_HUB_CACHE``); with ``HF_HUB_OFFLINE=1`` only the cache is read (also when it is set after huggingface_hub was
imported), so a pre-populated cache works without a network. Only the files a model or tokenizer directory needs are
fetched (configs, tokenizer files and chat templates, safetensors weights).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional, Sequence, Union

from megatron_octo.errors import OctoError

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_./-]+)?$")
"""``org/name`` or ``org/name@revision``: the repository IDs the Hub accepts (one slash, no leading dot)."""

MODEL_FILES = ("*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "merges.txt", "vocab.*", "*.jinja")
"""A model directory: config, generation config, safetensors weights and index, tokenizer files, chat template."""
TOKENIZER_FILES = ("*.json", "tokenizer.model", "*.tiktoken", "*.txt", "merges.txt", "vocab.*", "*.jinja")
"""A tokenizer directory: tokenizer.json, tokenizer_config.json, special_tokens_map.json, SentencePiece model,
chat template."""


class HubError(OctoError):
    """A model or tokenizer that is neither a local directory nor a Hub ID that can be fetched (one line)."""


def is_hub_id(name: Union[str, Path]) -> bool:
    """Whether ``name`` is shaped like a Hub repository ID and is no path here (not ``./``, ``/`` or ``~``, and
    nothing of that name exists: an existing local directory always wins)."""
    text = str(name)
    return bool(HUB_ID.match(text)) and not text.startswith((".", "/", "~")) and not Path(text).exists()


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub reads it, at call time."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_model_path(
    name_or_path: Union[str, Path], what: str = "model", allow_patterns: Optional[Sequence[str]] = None
) -> Path:
    """The local directory for ``name_or_path``: an existing path unchanged, else the cached snapshot of a Hub
    repository ``org/name[@revision]`` (downloaded unless ``HF_HUB_OFFLINE=1``). ``what`` names the thing in
    errors (``model``, ``tokenizer``); ``allow_patterns`` limits the files fetched (default MODEL_FILES).
    HubError (one line naming the fix) when it is neither."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not is_hub_id(text):
        return path  # the caller checks the directory and names what is missing
    repo, _, revision = text.partition("@")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        raise HubError(f"{what} {text} is not a local directory and huggingface_hub is not installed") from None
    try:
        local = snapshot_download(
            repo,
            revision=revision or None,
            allow_patterns=list(allow_patterns or MODEL_FILES),
            local_files_only=offline(),  # huggingface_hub itself reads HF_HUB_OFFLINE only once, at its import
        )
    except LocalEntryNotFoundError:
        raise HubError(
            f"{what} {text} is not a local directory and not in the Hugging Face cache (offline: "
            "HF_HUB_OFFLINE is set or the Hub is unreachable); download it once with network access, "
            "or pass a local directory"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        reason = type(exc).__name__.replace("NotFoundError", "").lower()
        raise HubError(
            f"{what} {text}: no such {reason} on the Hugging Face Hub (or it is gated: log in with "
            "`hf auth login`); pass a local directory or a valid ORG/NAME[@REVISION]"
        ) from None
    except OSError as exc:  # HfHubHTTPError too (a refused or failed request)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HubError(
            f"{what} {text}: cannot fetch it from the Hugging Face Hub ({first}); pass a local "
            "directory, or set HF_HUB_OFFLINE=1 to use the cache"
        ) from None
    return Path(local)

"""Hugging Face hub ids as checkpoint paths: `from_pretrained("facebook/wav2vec2-base-960h")`.

A path that is neither an existing local folder nor a URL, and is shaped like a hub repo id
(`name` or `org/name`), is resolved by `huggingface_hub` to a snapshot folder in its cache
(`HF_HOME`, `HF_HUB_CACHE`): downloaded when the hub is reachable, read from the cache when it is
not or when `HF_HUB_OFFLINE=1`. Only the files a checkpoint needs here are fetched (config,
safetensors or h5 weights, tokenizer and feature-extractor files, an LM), never
`pytorch_model.bin`.
"""

from __future__ import annotations

import functools
import os
import re

#: The checkpoint files this package reads (and the LM of a processor with one).
CHECKPOINT_FILES = [
    "config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "tf_model.h5",
    "flax_model.msgpack",
    "preprocessor_config.json",
    "processor_config.json",
    "vocab.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "alphabet.json",
    "language_model/*",
]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class HubError(FileNotFoundError):
    """A hub id that is neither cached nor reachable; the message is one line."""


def is_hub_id(path: str) -> bool:
    """Whether `path` names a hub repo rather than a folder or URL."""
    return "://" not in path and not os.path.exists(path) and bool(_REPO_ID.match(path))


def resolve(path: str, revision: str | None = None) -> str:
    """The folder to read a checkpoint from: `path` itself, or a hub id's cached snapshot."""
    path = str(path)
    if revision is None and not is_hub_id(path):
        return path
    if not is_hub_id(path):
        raise ValueError(f"{path}: revision={revision!r} is for hub ids, not folders or URLs")
    return _snapshot(path, revision)


def _cache_and_offline() -> tuple[str, bool]:
    """The cache folder and offline switch as the environment says now (huggingface_hub reads
    them once, at its import)."""
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"),
        "hub",
    )
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return cache, offline


def _snapshot(repo_id: str, revision: str | None) -> str:
    return _cached_snapshot(repo_id, revision, *_cache_and_offline())


@functools.lru_cache(maxsize=64)
def _cached_snapshot(repo_id: str, revision: str | None, cache: str, offline: bool) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache,
            local_files_only=offline,
            allow_patterns=CHECKPOINT_FILES,
        )
    except Exception as error:  # offline and not cached, unknown repo, no network, bad revision
        where = "and HF_HUB_OFFLINE is set" if offline else "nor reachable on the hub"
        at = f"@{revision}" if revision else ""
        raise HubError(
            f"{repo_id}{at}: no such folder, and not a Hugging Face model in the cache ({cache}) "
            f"{where} ({type(error).__name__})"
        ) from None

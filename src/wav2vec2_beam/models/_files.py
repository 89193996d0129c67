"""Read a checkpoint's files from a local folder, a remote URL (gs://, and anything fsspec knows),
or a Hugging Face hub id (`models.hub`).

Checkpoints live on local disk for tests and on GCS for Dataflow workers; the model, tokenizer and
feature extractor all read through these few helpers so that both work the same way and a missing
file is always reported with its full path.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from wav2vec2_beam.models import file_cache, hub

LOGGER = logging.getLogger(__name__)


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def join(folder: str, name: str) -> str:
    """`folder/name` for a local folder or a URL (a hub id's snapshot for reading: `source`)."""
    if _is_remote(folder):
        return folder.rstrip("/") + "/" + name
    return os.path.join(folder.removeprefix("file://"), name)


def source(folder: str, name: str) -> str:
    """The path or URL to read `folder/name` from; a hub id is resolved to its snapshot."""
    return join(hub.resolve(folder), name)


def exists(folder: str, name: str) -> bool:
    """Whether `name` is a file inside `folder`."""
    path = source(folder, name)
    if not _is_remote(path):
        return os.path.isfile(path)
    try:
        return remote_info(path) is not None
    except file_cache.StoreUnreachable:
        if file_cache.may_use_cache_when_unreachable():
            return file_cache.has_copy(path)
        raise


def read_bytes(folder: str, name: str) -> bytes:
    """The whole content of `folder/name`; FileNotFoundError naming the full path if absent."""
    with open(local_copy(folder, name), "rb") as handle:
        return handle.read()


def read_json(folder: str, name: str) -> Any:
    """Parse `folder/name` as JSON; the error names the file when it is not valid JSON."""
    data = read_bytes(folder, name)
    try:
        return json.loads(data)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source(folder, name)}: not valid JSON ({error})") from None


def local_copy(folder: str, name: str) -> str:
    """A local path holding `folder/name`: the file itself if local, else its cached copy.

    h5py, KenLM and memory-mapped readers need a real file. A remote file is kept once per
    machine, for every process and later run, in the version the store holds now
    (`models.file_cache`); a process asks the store once per file.
    """
    path = source(folder, name)
    if not _is_remote(path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        return path
    if path not in _fetched:
        try:
            info = remote_info(path)
        except file_cache.StoreUnreachable as error:
            if not (file_cache.may_use_cache_when_unreachable() and file_cache.has_copy(path)):
                raise
            LOGGER.warning("%s; using its cached copy", error)
            info = None
        else:
            if info is None:
                raise FileNotFoundError(f"{path}: no such file")
        _fetched[path] = file_cache.fetch(path, info)
    return _fetched[path]


#: Remote path -> its cached copy, as this process found it.
_fetched: dict[str, str] = {}


def remote_info(path: str) -> dict[str, Any] | None:
    """The store's description of the object at `path` (None when there is no such file).

    A store that cannot be asked raises `StoreUnreachable` with one line saying why (no network,
    no access, no such bucket), at once rather than after the client's minute of retries.
    """
    import fsspec

    file_cache.store_reachable(path)
    filesystem, inner = fsspec.core.url_to_fs(path)
    try:
        info = filesystem.info(inner)
    except FileNotFoundError:
        _check_bucket(filesystem, path)
        return None
    except Exception as error:
        raise file_cache.StoreUnreachable(f"{path}: access refused: {_one_line(error)}") from None
    return info if info.get("type", "file") == "file" else None


def _check_bucket(filesystem: Any, path: str) -> None:
    """A missing object in a missing bucket is the bucket's fault: say so."""
    protocol, _, rest = path.partition("://")
    bucket = rest.split("/", 1)[0]
    if protocol in file_cache.GCS_PROTOCOLS and bucket:
        try:
            found = filesystem.exists(bucket)
        except Exception:  # the object is missing either way; the plain message stands
            return
        if not found:
            raise file_cache.StoreUnreachable(f"{path}: no such bucket gs://{bucket}")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def list_names(folder: str, name: str) -> list[str]:
    """The entries of the folder `folder/name`, or [] when there is no such folder."""
    path = source(folder, name)
    if _is_remote(path):
        import fsspec

        file_cache.store_reachable(path)
        filesystem, inner = fsspec.core.url_to_fs(path)
        if not filesystem.isdir(inner):
            return []
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in filesystem.ls(inner))
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def write_json(folder: str, name: str, obj: Any) -> str:
    """Write `obj` to `folder/name` as indented, key-sorted UTF-8 JSON; returns the full path.

    This is the layout Hugging Face's `save_pretrained` writes, so saved folders diff cleanly
    against hub checkpoints. A local folder is created if needed (remote stores have no folders).
    """
    path = join(folder, name)
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if _is_remote(path):
        import fsspec

        with fsspec.open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    return path

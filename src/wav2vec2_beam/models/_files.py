"""Read a checkpoint's files from a local folder, a remote URL (gs://, and anything fsspec knows),
or a Hugging Face hub id (`models.hub`).

Checkpoints live on local disk for tests and on GCS for Dataflow workers; the model, tokenizer and
feature extractor all read through these few helpers so that both work the same way and a missing
file is always reported with its full path.
"""

from __future__ import annotations

import json
import os
from typing import Any

from wav2vec2_beam.models import hub


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
    if _is_remote(path):
        import fsspec

        filesystem, inner = fsspec.core.url_to_fs(path)
        return bool(filesystem.isfile(inner))
    return os.path.isfile(path)


def read_bytes(folder: str, name: str) -> bytes:
    """The whole content of `folder/name`; FileNotFoundError naming the full path if absent."""
    path = source(folder, name)
    if not exists(folder, name):
        raise FileNotFoundError(f"{path}: no such file")
    if _is_remote(path):
        import fsspec

        with fsspec.open(path, "rb") as handle:
            return handle.read()
    with open(path, "rb") as handle:
        return handle.read()


def read_json(folder: str, name: str) -> Any:
    """Parse `folder/name` as JSON; the error names the file when it is not valid JSON."""
    data = read_bytes(folder, name)
    try:
        return json.loads(data)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source(folder, name)}: not valid JSON ({error})") from None


def local_copy(folder: str, name: str) -> str:
    """A local path holding `folder/name`: the file itself if local, else a cached download.

    h5py, KenLM and memory-mapped readers need a real file; remote files are fetched once per
    process into a temporary folder that lives as long as the process.
    """
    path = source(folder, name)
    if not _is_remote(path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        return path
    if path not in _downloaded:
        _downloaded[path] = _download(path, name)
    return _downloaded[path]


#: Remote path -> its local copy, in this process.
_downloaded: dict[str, str] = {}


def _download(path: str, name: str) -> str:
    import shutil
    import tempfile

    import fsspec

    target = os.path.join(tempfile.mkdtemp(prefix="wav2vec2-ckpt-"), os.path.basename(name))
    with fsspec.open(path, "rb") as remote, open(target, "wb") as handle:
        shutil.copyfileobj(remote, handle, 1 << 24)  # streamed: LM files run to gigabytes
    return target


def list_names(folder: str, name: str) -> list[str]:
    """The entries of the folder `folder/name`, or [] when there is no such folder."""
    path = source(folder, name)
    if _is_remote(path):
        import fsspec

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

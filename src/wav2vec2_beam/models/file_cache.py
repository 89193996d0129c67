"""One local copy per machine of each remote checkpoint file (gs://, or anything fsspec reads).

Weights, KenLM models and unigram lists must be real local files (h5py, KenLM and memory-mapped
readers need one), and a Dataflow worker runs several processes, each loading the model, on a
small disk, job after job. A copy per process in a temporary folder that nobody deletes would
fill that disk with gigabytes per run (a multi-GB LM per process). So, as huggingface_hub keys
its blobs, each remote file is kept once, under

    <cache>/<sha256 of the URL>/<sha256 of its version>/<file name>

where the version is what the store says identifies the object's content (GCS's generation, or
an etag, or its size and modification time). A process reuses the copy of the version the store
names now; a newer version replaces the older one (which is then deleted), so the cache holds at
most one copy of each file. Downloads are streamed to a partial file and renamed into place under
an `flock` on the URL's folder, so processes that start together download once and never see a
half-written file.

The cache is `$WAV2VEC2_BEAM_CACHE`, else `$XDG_CACHE_HOME/wav2vec2-beam`, else
`~/.cache/wav2vec2-beam`.

Before any of that, `store_reachable` tells "no network" apart from "no such file" in well under
a second (the client would retry for a minute, then call the file missing).

A dry run may build a job with no network at all (`cached_when_unreachable`): then a store that
cannot be reached is answered from the cached copy, if there is one, with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from typing import Any

LOGGER = logging.getLogger(__name__)

#: Keys of fsspec's `info()` that name an object's content version, the most precise first.
_VERSION_KEYS = ("generation", "etag", "ETag", "md5Hash", "crc32c")
_COPY_BLOCK = 1 << 24  # streamed: LM files run to gigabytes

_unreachable_use_cache = False


class StoreUnreachable(OSError):
    """A remote store could not be asked at all (no network, no credentials, no such bucket);
    `str()` is one line that says which."""


def cache_root() -> str:
    """The folder that holds the cached copies (module doc)."""
    if os.environ.get("WAV2VEC2_BEAM_CACHE"):
        return os.environ["WAV2VEC2_BEAM_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "wav2vec2-beam")


@contextlib.contextmanager
def cached_when_unreachable() -> Iterator[None]:
    """Within the block, a store that cannot be reached is answered from the cache."""
    global _unreachable_use_cache
    before, _unreachable_use_cache = _unreachable_use_cache, True
    try:
        yield
    finally:
        _unreachable_use_cache = before


def version_of(info: Mapping[str, Any]) -> str:
    """What identifies the content of the object `info` (fsspec's) describes."""
    for key in _VERSION_KEYS:
        if info.get(key):
            return f"{key}={info[key]}"
    modified = info.get("mtime") or info.get("updated") or info.get("LastModified") or ""
    return f"size={info.get('size')};modified={modified}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def fetch(url: str, info: Mapping[str, Any] | None) -> str:
    """The local path of the cached copy of `url`, downloaded if the cache lacks its version.

    `info` is the store's description of the object (None when the store could not be reached,
    which only `cached_when_unreachable` accepts).
    """
    import fcntl

    folder = os.path.join(cache_root(), _digest(url))
    name = _name(url)
    if info is None:
        return _cached_any(url, folder, name)
    target_folder = os.path.join(folder, _digest(version_of(info)))
    target = os.path.join(target_folder, name)
    if os.path.isfile(target):
        return target
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if not os.path.isfile(target):  # another process may have fetched it meanwhile
            _download(url, target_folder, target)
            _remove_other_versions(folder, keep=os.path.basename(target_folder))
    return target


def _name(url: str) -> str:
    return os.path.basename(url.rstrip("/"))


def _download(url: str, target_folder: str, target: str) -> None:
    import fsspec

    os.makedirs(target_folder, exist_ok=True)
    partial = f"{target}.partial-{os.getpid()}"
    try:
        with fsspec.open(url, "rb") as remote, open(partial, "wb") as handle:
            shutil.copyfileobj(remote, handle, _COPY_BLOCK)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    LOGGER.info("cached %s in %s", url, target)


def _remove_other_versions(folder: str, keep: str) -> None:
    """Delete the copies of older versions (a process still reading one keeps its open file)."""
    for entry in os.listdir(folder):
        if entry != keep and not entry.startswith("."):
            shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)


def _cached_any(url: str, folder: str, name: str) -> str:
    """The newest cached copy of `url`, whatever its version (`StoreUnreachable` if none)."""
    copies = (
        [
            os.path.join(folder, entry, name)
            for entry in os.listdir(folder)
            if os.path.isfile(os.path.join(folder, entry, name))
        ]
        if os.path.isdir(folder)
        else []
    )
    if not copies:
        raise StoreUnreachable(f"{url}: the store cannot be reached and no copy is cached")
    return max(copies, key=os.path.getmtime)


def has_copy(url: str) -> bool:
    """Whether some version of `url` is cached."""
    try:
        _cached_any(url, os.path.join(cache_root(), _digest(url)), _name(url))
    except StoreUnreachable:
        return False
    return True


def may_use_cache_when_unreachable() -> bool:
    """Whether `cached_when_unreachable` is in effect."""
    return _unreachable_use_cache


GCS_PROTOCOLS = ("gs", "gcs")
#: Endpoints found reachable by this process (a failure is asked again next time).
_reachable: set[tuple[str, int]] = set()
_PROBE_TIMEOUT_S = 5.0


def store_reachable(path: str) -> None:
    """Raise `StoreUnreachable` when the Cloud Storage endpoint of `path` cannot be connected to.

    gcsfs retries a refused or unresolvable connection six times with backoff (about a minute)
    and then reports the file as missing; one TCP connection with a short timeout tells "no
    network" apart from "no such file" in well under a second. Behind an HTTP(S) proxy the
    proxy is what must answer, so it is the one connected to.
    """
    import socket
    import urllib.request

    protocol = path.partition("://")[0]
    if protocol not in GCS_PROTOCOLS:
        return
    endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"
    scheme, _, hostport = endpoint.rpartition("://")
    host = hostport.rstrip("/").partition(":")[0]
    proxy = urllib.request.getproxies().get(scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        endpoint = proxy if "://" in proxy else f"http://{proxy}"
        scheme, _, hostport = endpoint.rpartition("://")
    host, _, port = hostport.rstrip("/").partition(":")
    address = (host, int(port) if port else (80 if scheme == "http" else 443))
    if address in _reachable:
        return
    try:
        socket.create_connection(address, timeout=_PROBE_TIMEOUT_S).close()
    except OSError as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise StoreUnreachable(
            f"{path}: no network: cannot connect to {address[0]}:{address[1]} ({reason})"
        ) from None
    _reachable.add(address)

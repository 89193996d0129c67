"""The output folder between runs: one writer at a time, and the settings its tables were made with.

Two runs writing into one folder at once would each compute and write the ids the other has not
committed yet (both resume from the same pieces), and a resume with other settings would add rows
unlike the ones there (other hidden layers, another model). So a run, before anything is built:

- takes the folder's lock, `<output_dir>/.wav2vec2-beam.lock`. On a local disk it is an `flock`
  on that file, which the kernel drops when the process dies however it dies, so a killed run
  leaves nothing stuck. On an object store (gs://) it is that object, holding the run's id and a
  heartbeat the launcher rewrites every `HEARTBEAT_S`; a lock whose heartbeat is older than
  `STALE_S`, or whose process is gone from this very machine, is a killed run's and is taken
  over. A folder locked by a live run refuses the second run with `FolderBusy`.
- reads `<output_dir>/settings.json`, the settings that shape the tables (`table_settings`) of
  the first run that wrote the folder, and refuses a resume whose settings differ (`SettingsDiffer`,
  naming each difference); a first run writes it.

A folder that cannot be written (a regular file, a read-only place, a bucket without access) is
refused with `FolderUnwritable` when the lock is taken, before any model is loaded.

A plain run into a folder that holds an earlier run's tables would mix the two runs' rows (and a
table of two widths cannot be read at all), so it is refused (`EarlierTables`) unless it resumes
that run (`--skip_existing`) or replaces its tables (`--overwrite`, `remove_tables`).

The lock's content and settings.json are small JSON files; neither is a table piece.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems

from wav2vec2_beam.models.file_cache import store_reachable
from wav2vec2_beam.transforms.read.ids import literal

LOCK_NAME = ".wav2vec2-beam.lock"
SETTINGS_NAME = "settings.json"
#: How often a remote lock's heartbeat is rewritten, and after how long without one it is stale.
HEARTBEAT_S = 30.0
STALE_S = 120.0


class FolderBusy(Exception):
    """Another live run holds the folder's lock; `str()` is the one line shown."""


class SettingsDiffer(Exception):
    """A resume asks for tables unlike the folder's; `str()` is the one line shown."""


class FolderUnwritable(Exception):
    """The output folder cannot be made or written; `str()` is the one line shown."""


class EarlierTables(Exception):
    """A plain run into a folder with an earlier run's tables; `str()` is the one line shown."""


def _is_remote(path: str) -> bool:
    return "://" in path


@contextlib.contextmanager
def locked(output_dir: str, run_id: str) -> Iterator[None]:
    """Hold the folder's lock for the block; `FolderBusy` when a live run holds it."""
    holder = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid()}
    if _is_remote(output_dir):
        with _remote_lock(output_dir, holder):
            yield
    else:
        with _local_lock(output_dir, holder):
            yield


@contextlib.contextmanager
def _local_lock(output_dir: str, holder: dict[str, Any]) -> Iterator[None]:
    import fcntl

    created = not os.path.exists(output_dir)
    path = os.path.join(output_dir, LOCK_NAME)
    try:
        os.makedirs(output_dir, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise FolderUnwritable(_unwritable(output_dir, error)) from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(_busy(output_dir, _read_holder(path))) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps({**holder, "since": time.time()}).encode())
        yield
        if os.listdir(output_dir) == [LOCK_NAME]:  # refused before writing: leave no trace
            os.unlink(path)
            if created:
                os.rmdir(output_dir)
    finally:
        os.close(descriptor)  # releases the flock


def _unwritable(output_dir: str, error: BaseException) -> str:
    if isinstance(error, FileExistsError) or (
        not _is_remote(output_dir) and os.path.exists(output_dir) and not os.path.isdir(output_dir)
    ):
        return f"--output_dir {output_dir} is a file, not a folder"
    reason = (
        getattr(error, "strerror", None) or " ".join(str(error).split()) or type(error).__name__
    )
    return f"--output_dir {output_dir} cannot be written: {reason}"


def _read_holder(path: str) -> dict[str, Any]:
    try:
        with FileSystems.open(path) as handle:
            return json.loads(handle.read() or b"{}")
    except Exception:  # a lock being written, or unreadable: the refusal says less
        return {}


def _busy(output_dir: str, holder: Mapping[str, Any]) -> str:
    who = ""
    if holder.get("run_id"):
        who = f" (run {holder['run_id']}, pid {holder.get('pid')} on {holder.get('host')})"
    return (
        f"{output_dir} is being written by another run{who}; wait for it to end, or write to "
        "another --output_dir"
    )


@contextlib.contextmanager
def _remote_lock(output_dir: str, holder: dict[str, Any]) -> Iterator[None]:
    path = FileSystems.join(output_dir, LOCK_NAME)
    try:
        store_reachable(output_dir)  # at once, not after the client's two minutes of retries
        existing = _read_holder(path) if FileSystems.exists(path) else {}
    except Exception as error:  # no network, no bucket, no access: before anything is built
        raise FolderUnwritable(_unwritable(output_dir, error)) from None
    if existing and _alive(existing):
        raise FolderBusy(_busy(output_dir, existing))
    stop = threading.Event()

    def beat() -> None:
        while True:
            _write_json(path, {**holder, "heartbeat": time.time()})
            if stop.wait(HEARTBEAT_S):
                return

    try:
        _write_json(path, {**holder, "heartbeat": time.time()})
    except Exception as error:  # no bucket, no access, no network: before anything is built
        raise FolderUnwritable(_unwritable(output_dir, error)) from None
    thread = threading.Thread(target=beat, name="output-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        FileSystems.delete([path])


def _alive(holder: Mapping[str, Any]) -> bool:
    """Whether the run that wrote a remote lock may still be running: its heartbeat is recent,
    unless it ran on this machine and its process is gone (a launcher killed here, resumed here,
    need not wait for the heartbeat to age)."""
    if time.time() - float(holder.get("heartbeat", 0)) >= STALE_S:
        return False
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
    return True


def _write_json(path: str, content: Mapping[str, Any]) -> None:
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(content, indent=2, sort_keys=True).encode("utf-8") + b"\n")


def earlier_pieces(output_dir: str, tables: Sequence[str]) -> list[str]:
    """The Parquet pieces of `tables` in the folder (any run's)."""
    patterns = [FileSystems.join(literal(output_dir), table, "*.parquet") for table in tables]
    return [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]


def check_reuse(output_dir: str, tables: Sequence[str], resuming: bool, overwrite: bool) -> None:
    """Refuse a plain run into a folder that holds tables already (`EarlierTables`)."""
    if resuming or overwrite:
        return
    found = earlier_pieces(output_dir, tables)
    if found:
        folders = sorted({FileSystems.split(FileSystems.split(path)[0])[1] for path in found})
        raise EarlierTables(
            f"{output_dir} holds an earlier run's tables ({', '.join(folders)}); add "
            "--skip_existing to resume that run with the same settings, --overwrite to replace "
            "them, or write to another --output_dir"
        )


def remove_tables(output_dir: str, tables: Sequence[str]) -> int:
    """`--overwrite`: delete the folder's pieces of `tables` (scratch files included), its
    summaries and settings.json, leaving anything else in it; returns the pieces deleted."""
    pieces = earlier_pieces(output_dir, tables)
    patterns = [FileSystems.join(literal(output_dir), table, ".*.tmp") for table in tables]
    patterns += [
        FileSystems.join(literal(output_dir), name)
        for name in ("summary.json", "summary-*.json", SETTINGS_NAME)
    ]
    others = [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]
    if pieces or others:
        FileSystems.delete(pieces + others)
    return len(pieces)


def remove_scratch(output_dir: str, tables: Sequence[str]) -> int:
    """Delete the scratch files a killed run left in the folder's tables; returns how many.

    Only the run holding the folder's lock calls this, so no live writer's scratch is touched.
    """
    patterns = [FileSystems.join(literal(output_dir), table, ".*.tmp") for table in tables]
    found = [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]
    if found:
        FileSystems.delete(found)
    return len(found)


def check_settings(output_dir: str, settings: Mapping[str, Any], resuming: bool) -> None:
    """Record the run's table settings in a folder that has none; on a resume, refuse settings
    that differ from the recorded ones (`SettingsDiffer`)."""
    settings = json.loads(json.dumps(settings))  # as the file holds them: tuples are lists
    path = FileSystems.join(output_dir, SETTINGS_NAME)
    if FileSystems.exists(path):
        with FileSystems.open(path) as handle:
            recorded = json.loads(handle.read())
        if resuming:
            differences = [
                f"{name} {_shown(settings.get(name))} (the folder's: {_shown(recorded.get(name))})"
                for name in sorted(set(settings) | set(recorded))
                if settings.get(name) != recorded.get(name)
            ]
            if differences:
                raise SettingsDiffer(
                    f"--skip_existing resumes {output_dir} with other settings than its tables "
                    f"were made with: {'; '.join(differences)}; resume with the same settings, "
                    "or write to another --output_dir"
                )
            return
    _write_json(path, settings)


def _shown(value: Any) -> str:
    return json.dumps(value)

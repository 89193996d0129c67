"""The output folder between runs: one writer at a time, and the settings its tables were made with.

Two runs writing into one folder at once would each compute and write the ids the other has not
committed yet (both resume from the same pieces), and a resume with other settings would add rows
unlike the ones there (other hidden layers, another model). So a run, before anything is built:

- takes the folder's lock, `<output_dir>/.wav2vec2-beam.lock`. On a local disk it is an `flock`
  on that file, which the kernel drops when the process dies however it dies, so a killed run
  leaves nothing stuck. On an object store (gs://) it is that object, holding the run's id and a
  heartbeat the launcher rewrites every `HEARTBEAT_S`; a lock whose heartbeat is older than
  `STALE_S` is a killed run's and is taken over. A folder locked by a live run refuses the
  second run with `FolderBusy`.
- reads `<output_dir>/settings.json`, the settings that shape the tables (`table_settings`) of
  the first run that wrote the folder, and refuses a resume whose settings differ (`SettingsDiffer`,
  naming each difference); a first run writes it.

The lock's content and settings.json are small JSON files; neither is a table piece.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from apache_beam.io.filesystems import FileSystems

LOCK_NAME = ".wav2vec2-beam.lock"
SETTINGS_NAME = "settings.json"
#: How often a remote lock's heartbeat is rewritten, and after how long without one it is stale.
HEARTBEAT_S = 30.0
STALE_S = 120.0


class FolderBusy(Exception):
    """Another live run holds the folder's lock; `str()` is the one line shown."""


class SettingsDiffer(Exception):
    """A resume asks for tables unlike the folder's; `str()` is the one line shown."""


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
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_NAME)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
    existing = _read_holder(path) if FileSystems.exists(path) else {}
    if existing and time.time() - float(existing.get("heartbeat", 0)) < STALE_S:
        raise FolderBusy(_busy(output_dir, existing))
    stop = threading.Event()

    def beat() -> None:
        while True:
            _write_json(path, {**holder, "heartbeat": time.time()})
            if stop.wait(HEARTBEAT_S):
                return

    _write_json(path, {**holder, "heartbeat": time.time()})
    thread = threading.Thread(target=beat, name="output-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        FileSystems.delete([path])


def _write_json(path: str, content: Mapping[str, Any]) -> None:
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(content, indent=2, sort_keys=True).encode("utf-8") + b"\n")


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

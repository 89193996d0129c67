"""Progress: Beam counters for the record, per-process totals for the live display, a summary.

Counters (namespace `wav2vec2`) are the truth: `files_succeeded`, `files_failed` (and
`failed:<reason>` for each error reason), `audio_ms` (audio of the succeeded files), `batches`,
`chunks`, `model_loads`, `input_samples` and `computed_samples` (for the padding waste),
`items_skipped` (left out by a resume), and `items_written` and `pieces_written` (what the writers
committed); summary.json is made from them once the pipeline has finished (`summarize`).

Live progress needs more, because the DirectRunner reports counters only when the pipeline ends,
and with `--direct_running_mode=multi_processing` the work happens in other processes. So the
stages also add their counts to a per-process JSON file in a local progress folder
(`record_progress`, one small atomic write per batch or item), which the launcher's display
(`pipeline/console.py`) sums, also while nothing is finished yet (decoding runs before inference
on the DirectRunner). The folder exists only on the launcher's machine, so the launcher passes it
only to DirectRunner pipelines; on Dataflow the counters appear live in the job's monitoring page
instead.

After an interruption the launcher says how many items are on disk (`items_on_disk`), which has
to be exact although a signal can stop a writer between publishing a piece and recording it. So
a writer declares, before it writes a cut, the files that prove its items on disk and how many
each proves (`recorded_commit`), and records the count once they are published: a declared file
that exists counts, one that does not, does not. `halt_commits` lets no writer in
the launcher's own process start a commit after the count.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from wav2vec2_beam.transforms.records import TARGET_SAMPLE_RATE

METRICS_NAMESPACE = "wav2vec2"

#: Counter names of the error rows by reason: `failed:no_match`, `failed:not_audio`, ...
FAILED_PREFIX = "failed:"

LOGGER = logging.getLogger("wav2vec2")

#: Seconds `halt_commits` waits for the commits under way in this process to finish.
COMMIT_GRACE_S = 30.0

_changes = threading.Condition()
_totals: dict[str, dict[str, float]] = {}
#: Per progress folder: the files of the cuts being committed, and the items each proves.
_pending: dict[str, dict[str, int]] = {}
_in_flight: dict[str, int] = {}
#: The progress folders of the runs whose writers in this process may commit no more.
_halted: set[str] = set()


def record_progress(progress_dir: str | None, **increments: float) -> None:
    """Add `increments` to this process's totals for the run that owns `progress_dir`.

    A no-op without a progress folder. Totals are kept per folder, so that runs that follow each
    other in one process (tests) do not add up.
    """
    if progress_dir is None:
        return
    with _changes:
        _add(progress_dir, increments)
        _save(progress_dir)


def _add(progress_dir: str, increments: Mapping[str, float]) -> None:
    totals = _totals.setdefault(progress_dir, {})
    for name, value in increments.items():
        totals[name] = totals.get(name, 0.0) + value


def _save(progress_dir: str) -> None:
    """This process's file: one atomic replace, so that a reader (or a kill) sees each state
    whole, the totals and the pieces being committed together."""
    path = Path(progress_dir, f"{os.getpid()}.json")
    scratch = path.with_suffix(".tmp")
    state = {"totals": _totals.get(progress_dir, {}), "pending": _pending.get(progress_dir, {})}
    try:
        scratch.write_text(json.dumps(state))
        os.replace(scratch, path)
    except OSError:  # the launcher removed the folder: the run is over
        pass


@contextlib.contextmanager
def recorded_commit(
    progress_dir: str | None, proofs: Mapping[str, int], items: int
) -> Iterator[bool]:
    """Around the writing and publishing of one cut of `items` items, where each file of
    `proofs`, once published, proves its number of them on disk (an item with no new row, its
    rows all there from a resumed run, is in none). Yields False, and nothing is to be written,
    once `halt_commits` was called for `progress_dir` in this process. A commit that ends in an
    exception stays declared: which of its files exist decides what counts (module doc). Without
    a progress folder (a remote runner) there is nothing to record."""
    if progress_dir is None:
        yield True
        return
    with _changes:
        admitted = progress_dir not in _halted
        if admitted:
            _in_flight[progress_dir] = _in_flight.get(progress_dir, 0) + 1
            _pending.setdefault(progress_dir, {}).update(proofs)
            _save(progress_dir)
    if not admitted:
        yield False
        return
    try:
        yield True
        with _changes:
            for path in proofs:
                _pending[progress_dir].pop(path, None)
            _add(progress_dir, {"items_written": items})
            _save(progress_dir)
    finally:
        with _changes:
            _in_flight[progress_dir] -= 1
            _changes.notify_all()


def halt_commits(progress_dir: str, grace_s: float = COMMIT_GRACE_S) -> None:
    """From now on no writer of the run that owns `progress_dir` starts a commit in this
    process; returns once the commits under way have ended (or after `grace_s`), so that
    `items_on_disk` is not overtaken by one."""
    with _changes:
        _halted.add(progress_dir)
        _changes.wait_for(lambda: _in_flight.get(progress_dir, 0) == 0, timeout=grace_s)


def _states(progress_dir: str) -> Iterator[dict[str, Any]]:
    """Every process's last saved state in `progress_dir`."""
    for path in Path(progress_dir).glob("*.json"):
        try:
            yield json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced right now; next line will have it
            continue


def read_progress(progress_dir: str) -> dict[str, float]:
    """Sum of every process's totals in `progress_dir`."""
    summed: dict[str, float] = {}
    for state in _states(progress_dir):
        for name, value in state["totals"].items():
            summed[name] = summed.get(name, 0.0) + value
    return summed


def items_on_disk(progress_dir: str) -> int:
    """The items the run's writers committed, exactly, once every writer has stopped: those
    recorded, and those of each file a writer declared and was stopped before recording, if the
    file exists."""
    total = 0.0
    for state in _states(progress_dir):
        total += state["totals"].get("items_written", 0)
        for path, items in state["pending"].items():
            if FileSystems.exists(path):
                total += items
    return int(total)


def counters(result: Any) -> dict[str, int]:
    """This module's counters from a finished pipeline result, summed over steps."""
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + int(value or 0)
    return totals


def padding_waste(found: Mapping[str, int]) -> float:
    """Share of the samples the model computed that were padding (0 when nothing ran)."""
    computed = found.get("computed_samples", 0)
    if computed == 0:
        return 0.0
    return round(1 - found.get("input_samples", 0) / computed, 4)


def summarize(result: Any, wall_seconds: float, options: Mapping[str, Any]) -> dict[str, Any]:
    """The summary.json content of a finished run."""
    found = counters(result)
    succeeded = found.get("files_succeeded", 0)
    failed = found.get("files_failed", 0)
    return {
        "inputs": succeeded + failed,
        "succeeded": succeeded,
        "failed": failed,
        "audio_seconds": found.get("audio_ms", 0) / 1000,
        "wall_seconds": round(wall_seconds, 3),
        "model_loads": found.get("model_loads", 0),
        "batches": found.get("batches", 0),
        "padding_waste": padding_waste(found),
        # Audio the model was given (strides counted twice, silence left out by --segment vad).
        "model_input_seconds": found.get("input_samples", 0) / TARGET_SAMPLE_RATE,
        "items_written": found.get("items_written", 0),
        "pieces_written": found.get("pieces_written", 0),
        "skipped_existing": found.get("items_skipped", 0),
        "failures": failures(found),
        "options": dict(options),
    }


def failures(found: Mapping[str, int]) -> dict[str, int]:
    """The error rows by reason, the most frequent first."""
    by_reason = {
        name.removeprefix(FAILED_PREFIX): count
        for name, count in found.items()
        if name.startswith(FAILED_PREFIX) and count
    }
    return dict(sorted(by_reason.items(), key=lambda pair: (-pair[1], pair[0])))


def failures_line(summary: Mapping[str, Any]) -> str | None:
    """`failed: not_audio 3, no_match 1` (None when nothing failed)."""
    if not summary.get("failures"):
        return None
    return "failed: " + ", ".join(f"{reason} {n}" for reason, n in summary["failures"].items())


def summary_line(summary: Mapping[str, Any]) -> str:
    """The final line printed by the launcher."""
    wall = summary["wall_seconds"]
    speed = summary["audio_seconds"] / wall if wall > 0 else 0.0
    skipped = summary.get("skipped_existing", 0)
    skipped_text = f", {skipped} skipped (already in the tables)" if skipped else ""
    return (
        f"done: {summary['inputs']} files ({summary['succeeded']} succeeded, "
        f"{summary['failed']} failed{skipped_text}), {summary['audio_seconds'] / 3600:.3f} h of audio in "
        f"{wall:.1f} s ({speed:.1f}x real time), {summary['padding_waste']:.1%} of the "
        f"computed samples padding, model loaded {summary['model_loads']} time(s)"
    )

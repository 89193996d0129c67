"""Progress: Beam counters for the record, a log line every 30 s while running, a final summary.

Counters (namespace `wav2vec2`) are the truth: `files_succeeded`, `files_failed`, `audio_ms`
(audio of the succeeded files), `batches`, `chunks`, `model_loads`, `input_samples` and
`computed_samples` (for the padding waste), and `items_written` and `pieces_written` (what the
writers committed); summary.json is made from them once the pipeline has finished
(`summarize`).

Live progress needs more, because the DirectRunner reports counters only when the pipeline ends,
and with `--direct_running_mode=multi_processing` the work happens in other processes. So the
stages also add their counts to a per-process JSON file in a local progress folder
(`record_progress`, one small atomic write per batch or item), and the launcher's
`ProgressReporter` thread sums those files and logs a line every `interval_s` seconds, also while
nothing is finished yet (decoding runs before inference on the DirectRunner). The folder exists
only on the launcher's machine, so the launcher passes it only to DirectRunner pipelines; on
Dataflow the counters appear live in the job's monitoring page instead.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apache_beam.metrics.metric import MetricsFilter

METRICS_NAMESPACE = "wav2vec2"

#: How often the launcher logs progress, in seconds.
DEFAULT_INTERVAL_S = 30.0

LOGGER = logging.getLogger("wav2vec2")

_lock = threading.Lock()
_totals: dict[str, dict[str, float]] = {}


def record_progress(progress_dir: str | None, **increments: float) -> None:
    """Add `increments` to this process's totals for the run that owns `progress_dir`.

    A no-op without a progress folder. Totals are kept per folder, so that runs that follow each
    other in one process (tests) do not add up.
    """
    if progress_dir is None:
        return
    with _lock:
        totals = _totals.setdefault(progress_dir, {})
        for name, value in increments.items():
            totals[name] = totals.get(name, 0.0) + value
        path = Path(progress_dir, f"{os.getpid()}.json")
        scratch = path.with_suffix(".tmp")
        try:
            scratch.write_text(json.dumps(totals))
            os.replace(scratch, path)
        except OSError:  # the launcher removed the folder: the run is over
            pass


def read_progress(progress_dir: str) -> dict[str, float]:
    """Sum of every process's totals in `progress_dir`."""
    summed: dict[str, float] = {}
    for path in Path(progress_dir).glob("*.json"):
        try:
            totals = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced right now; next line will have it
            continue
        for name, value in totals.items():
            summed[name] = summed.get(name, 0.0) + value
    return summed


def progress_line(totals: Mapping[str, float], elapsed_s: float) -> str:
    """One log line: files and audio inferred, real-time factor, batches, files finished, and
    how many of them are committed to the tables."""
    audio_s = totals.get("audio_s", 0.0)
    speed = audio_s / elapsed_s if elapsed_s > 0 else 0.0
    return (
        f"progress: {int(totals.get('files_inferred', 0))} files inferred, "
        f"{audio_s / 3600:.3f} h of audio, {speed:.1f}x real time, "
        f"{int(totals.get('batches', 0))} batches; "
        f"{int(totals.get('files_succeeded', 0))} files done, "
        f"{int(totals.get('files_failed', 0))} failed, "
        f"{int(totals.get('items_written', 0))} on disk; {elapsed_s:.0f} s elapsed"
    )


class ProgressReporter:
    """A daemon thread in the launcher that logs `progress_line` every `interval_s` seconds."""

    def __init__(self, progress_dir: str, start_time: float, interval_s: float) -> None:
        self._dir = progress_dir
        self._start = start_time
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            LOGGER.info(progress_line(read_progress(self._dir), time.time() - self._start))


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
        "items_written": found.get("items_written", 0),
        "pieces_written": found.get("pieces_written", 0),
        "options": dict(options),
    }


def summary_line(summary: Mapping[str, Any]) -> str:
    """The final line printed by the launcher."""
    wall = summary["wall_seconds"]
    speed = summary["audio_seconds"] / wall if wall > 0 else 0.0
    return (
        f"done: {summary['inputs']} files ({summary['succeeded']} succeeded, "
        f"{summary['failed']} failed), {summary['audio_seconds'] / 3600:.3f} h of audio in "
        f"{wall:.1f} s ({speed:.1f}x real time), {summary['padding_waste']:.1%} of the "
        f"computed samples padding, model loaded {summary['model_loads']} time(s)"
    )

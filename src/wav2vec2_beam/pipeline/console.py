"""What the command shows while a local run goes: the inputs' counts first, live progress, and
the closing summary with the failures by reason.

Progress comes from the per-process totals the stages record (`transforms.write.progress`), and
its total from the launcher's count of the inputs (`transforms.read.census`). On a terminal
(stderr is a TTY) it is a live bar drawn by tqdm: items done of the expected total with the
percentage, audio hours, the speed against real time, rows on disk, failed and skipped items,
and the time left. Anywhere else (a log file, a pipe, CI) it is a log line every 30 s, the first
after 5 s, with the same numbers.

An item is done once its rows (or its error row) reach the writer, or when a resumed run leaves
it out because the folder holds it already.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from tqdm import tqdm

from wav2vec2_beam.transforms.read.census import Census
from wav2vec2_beam.transforms.write.progress import LOGGER, read_progress

#: Seconds between log lines when stderr is not a terminal, and before the first.
LOG_INTERVAL_S = 30.0
FIRST_LOG_S = 5.0
#: Seconds between redraws of the bar.
BAR_INTERVAL_S = 0.5


def census_lines(census: Census) -> list[str]:
    """One line per `--input` pattern: how many files it matched (or why it could not be
    listed); then what the run is expected to hold."""
    lines = []
    for count in census.patterns:
        noun = "file" if count.files == 1 else "files"
        line = f"input {count.pattern!r}: {count.files} {noun}"
        if count.error:
            line += f" (could not list: {count.error})"
        lines.append(line)
    expected = []
    if census.items is not None:
        expected.append(f"{census.items} items")
    if census.audio_s is not None:
        expected.append(f"{census.audio_s / 3600:.2f} h of audio")
    if expected:
        lines.append(f"to do: {', '.join(expected)}")
    return lines


def _done(totals: Mapping[str, float]) -> int:
    return int(
        totals.get("files_succeeded", 0)
        + totals.get("files_failed", 0)
        + totals.get("items_skipped", 0)
    )


def _eta(elapsed_s: float, done: int, total: int | None) -> float | None:
    """Seconds left at the rate so far; None before anything is done or without a total."""
    if not total or done <= 0:
        return None
    return elapsed_s / done * max(total - done, 0)


def _details(totals: Mapping[str, float], elapsed_s: float, census: Census | None) -> str:
    audio_s = totals.get("audio_s", 0.0)
    audio = f"{audio_s / 3600:.2f}"
    if census is not None and census.audio_s:
        audio += f"/{census.audio_s / 3600:.2f}"
    speed = audio_s / elapsed_s if elapsed_s > 0 else 0.0
    parts = [
        f"{audio} h of audio",
        f"{speed:.1f}x real time",
        f"{int(totals.get('items_written', 0))} on disk",
        f"{int(totals.get('files_failed', 0))} failed",
    ]
    if totals.get("items_skipped"):
        parts.append(f"{int(totals['items_skipped'])} skipped (already in the tables)")
    return ", ".join(parts)


def progress_line(totals: Mapping[str, float], elapsed_s: float, census: Census | None) -> str:
    """One log line: items done (of the total, with the percentage), the details, the time."""
    done = _done(totals)
    total = None if census is None else census.items
    if total:
        head = f"progress: {min(done / total, 1):.0%}, {done} of {total} items"
    else:
        head = f"progress: {done} items"
    tail = f"{elapsed_s:.0f} s elapsed"
    eta = _eta(elapsed_s, done, total)
    if eta is not None:
        tail += f", about {eta:.0f} s left"
    return f"{head} ({_details(totals, elapsed_s, census)}); {tail}"


class ProgressDisplay:
    """A daemon thread that shows the run's progress until the block ends (module docstring)."""

    def __init__(
        self,
        progress_dir: str,
        start_time: float,
        census: Census | None,
        stream: IO[str],
        interactive: bool,
    ) -> None:
        self._dir = progress_dir
        self._start = start_time
        self._census = census
        self._stream = stream
        self._interactive = interactive
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._bar: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> ProgressDisplay:
        if self._interactive:
            total = None if self._census is None else self._census.items
            self._bar = tqdm(
                total=total,
                unit="item",
                file=self._stream,
                dynamic_ncols=True,
                mininterval=0,
                bar_format=(
                    "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} items [{elapsed}<{remaining}]"
                    "{postfix}"
                    if total
                    else "{n_fmt} items [{elapsed}]{postfix}"
                ),
            )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._bar is not None:
            self._show()  # the final numbers
            self._bar.close()

    def write_line(self, line: str) -> None:
        """Show `line` (a log line, a worker's message) above the bar, or as it is."""
        with self._lock:
            if self._bar is not None:
                self._bar.clear()
                self._stream.write(line + "\n")
                self._bar.refresh()
            else:
                self._stream.write(line + "\n")
            self._stream.flush()

    def _loop(self) -> None:
        if self._interactive:
            while not self._stop.wait(BAR_INTERVAL_S):
                self._show()
            return
        wait = FIRST_LOG_S
        while not self._stop.wait(wait):
            elapsed = time.time() - self._start
            LOGGER.info(progress_line(read_progress(self._dir), elapsed, self._census))
            wait = LOG_INTERVAL_S

    def _show(self) -> None:
        totals = read_progress(self._dir)
        with self._lock:
            bar = self._bar
            done = _done(totals)
            if bar.total is not None and done > bar.total:  # the count was a forecast
                bar.total = done
            bar.n = done
            bar.set_postfix_str(_details(totals, time.time() - self._start, self._census), False)
            bar.refresh()

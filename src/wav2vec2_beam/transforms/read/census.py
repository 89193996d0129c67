"""What the inputs hold, counted by the launcher before a local run starts.

Each pattern's file count is printed first, so that a pattern that matches nothing, or far fewer
files than meant (an unquoted glob, a `**` that skipped a level), shows at once rather than in
the errors table at the end. The same count gives the progress bar its total: the items the run
will end with (one per loose audio file, one per WebDataset sample, Parquet row or manifest
line, and one error row per pattern that matches nothing) and, where every item is a loose file
with a readable header, their audio duration.

Counting is cheap and bounded: patterns are matched exactly as `ReadCorpus` matches them, headers
are read only for local files, and once `budget_s` has passed the detail is given up (the totals
become unknown, and the bar counts without a percentage). For a remote runner (Dataflow) the
launcher lists the patterns only (`budget_s` 0): the counts are printed, nothing is read. The numbers are a forecast for the
display only; the tables and summary.json come from what the job itself read.
"""

from __future__ import annotations

import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow.parquet as pq
import soundfile

from wav2vec2_beam.transforms.read.decode_ffmpeg import stated_seconds
from wav2vec2_beam.transforms.read.ids import canonical_path, special_file
from wav2vec2_beam.transforms.read.inputs import expand_braces, infer_kind, match_pattern
from wav2vec2_beam.transforms.read.manifest import is_csv
from wav2vec2_beam.transforms.read.webdataset import split_member_name

#: Seconds the launcher spends at most on reading headers for the totals.
CENSUS_BUDGET_S = 5.0


@dataclass(frozen=True)
class PatternCount:
    """One `--input` pattern (before brace expansion) and the files it matched."""

    pattern: str
    files: int
    #: Why some of its patterns could not be listed, if any could not.
    error: str | None = None


@dataclass
class Census:
    patterns: list[PatternCount] = field(default_factory=list)
    #: Work units the run will end with (rows of the first table or of errors/); None: unknown.
    items: int | None = 0
    #: Audio seconds of those items; None: unknown.
    audio_s: float | None = 0.0


def take_census(
    patterns: Sequence[str], input_format: str, budget_s: float = CENSUS_BUDGET_S
) -> Census:
    """Count what `patterns` hold (see the module docstring)."""
    deadline = time.monotonic() + budget_s
    census = Census()
    seen: set[str] = set()
    expanded_seen: set[str] = set()
    for pattern in patterns:
        files, errors = 0, []
        for expanded in expand_braces(pattern):
            if expanded in expanded_seen:
                continue
            expanded_seen.add(expanded)
            try:
                matched = match_pattern(expanded)
            except Exception as error:  # the job reports it as this pattern's error row
                errors.append(f"{type(error).__name__}: {error}")
                _add(census, 1, 0.0)
                continue
            if not matched:
                _add(census, 1, 0.0)  # its no_match error row
            for metadata in matched:
                path = canonical_path(metadata.path)
                files += 1
                if path in seen:
                    continue
                seen.add(path)
                kind = infer_kind(path) if input_format == "auto" else input_format
                if time.monotonic() > deadline:
                    census.items = census.audio_s = None
                else:
                    _add(census, *_contents(path, kind))
        census.patterns.append(PatternCount(pattern, files, "; ".join(errors) or None))
    return census


def _add(census: Census, items: int | None, audio_s: float | None) -> None:
    census.items = None if census.items is None or items is None else census.items + items
    census.audio_s = None if census.audio_s is None or audio_s is None else census.audio_s + audio_s


def _contents(path: str, kind: str) -> tuple[int | None, float | None]:
    """(items, audio seconds) of one matched file, None where not cheaply known."""
    local = "://" not in path
    if local and special_file(path) is not None:  # a FIFO would block the open: one error row
        return 1, 0.0
    try:
        if kind == "audio":
            if not local:
                return 1, None
            return 1, _audio_seconds(path)
        if not local:
            return None, None
        if kind == "parquet":
            return pq.ParquetFile(path).metadata.num_rows, None
        if kind == "manifest":
            return _manifest_lines(path), None
        if kind == "webdataset":
            return _shard_samples(path), None
    except Exception:  # the job reads it and reports what is wrong; one error row
        return 1, 0.0
    return None, None


def _audio_seconds(path: str) -> float:
    """What the header states: libsndfile's, else FFmpeg's (the formats only it reads)."""
    try:
        info = soundfile.info(path)
    except soundfile.LibsndfileError:
        return stated_seconds(path)
    return info.frames / info.samplerate if info.samplerate else 0.0


def _manifest_lines(path: str) -> int:
    with open(path, "rb") as lines:
        count = sum(1 for line in lines if line.strip())
    return max(count - 1 if is_csv(path) else count, 1)  # a CSV's header is no item


def _shard_samples(path: str) -> int:
    keys, last = 0, None
    with tarfile.open(path, "r:*", ignore_zeros=True) as tar:
        for member in tar:
            split = split_member_name(member.name)
            if split is not None and split[0] != last:
                keys, last = keys + 1, split[0]
    return max(keys, 1)

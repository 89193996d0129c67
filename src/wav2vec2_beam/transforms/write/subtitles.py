"""Beam stage: the files users ask for beside the tables, one per input (`--formats`).

* `srt` and `vtt`: subtitles, a cue per voice segment that has words (`--segment vad`), with the
  segment's start and end from the `segments` table, to the millisecond, and its transcript
  wrapped at `LINE_CHARS` characters a line.
* `ctm`: NIST's word-time format, a line per word (`<name> 1 <start> <duration> <word>
  <confidence>`), as sclite and Kaldi read it; from the transcripts row, so with either
  `--segment`.

Files go to `<output_dir>/<format>/<name>.<format>`, where the name is the item's file name
(its last path or member part, characters other than letters, digits, `.`, `_` and `-` made
`_`) and 8 hex digits of the SHA-1 of its id: two inputs of the same name in different folders or
shards must not overwrite each other, and the id is in the tables to join on. Each file is
written whole as its item finishes (locally to a scratch name first, then renamed), so a
retried bundle rewrites the same files with the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from wav2vec2_beam.transforms.records import ErrorRecord, ItemResult

#: Longest subtitle line, as broadcasters' guidelines have it (BBC, Netflix: 42).
LINE_CHARS = 42

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(item_id: str) -> str:
    """`<name>-<8 hex digits>`: the id's last part, made safe, and a hash of the whole id."""
    last = re.split(r"[/#\\]", item_id.rstrip("/#"))[-1]
    stem = _UNSAFE.sub("_", last.rsplit(".", 1)[0] if "." in last else last).strip("_") or "item"
    return f"{stem[:80]}-{hashlib.sha1(item_id.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def _clock(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, milli = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{milli:03d}"


def _cues(segment_rows: Sequence[dict[str, Any]]) -> list[tuple[float, float, str]]:
    return [
        (row["start_s"], row["end_s"], "\n".join(textwrap.wrap(row["transcript"], LINE_CHARS)))
        for row in segment_rows
        if row["transcript"].strip()
    ]


def srt(item: ItemResult) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`."""
    blocks = [
        f"{number}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n"
        for number, (start, end, text) in enumerate(_cues(item.segment_rows or []), start=1)
    ]
    return "\n".join(blocks)


def vtt(item: ItemResult) -> str:
    """WebVTT: the header, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm`."""
    blocks = [
        f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n"
        for start, end, text in _cues(item.segment_rows or [])
    ]
    return "\n".join(["WEBVTT\n", *blocks])


def ctm(item: ItemResult) -> str:
    """CTM: a line per word of the transcript, times in seconds to the millisecond."""
    name = file_name(item.id)
    assert item.transcript is not None
    return "".join(
        f"{name} 1 {word['start_s']:.3f} {word['end_s'] - word['start_s']:.3f} {word['word']} "
        f"{word['confidence']:.4f}\n"
        for word in item.transcript["words"]
    )


WRITERS: dict[str, Callable[[ItemResult], str]] = {"srt": srt, "vtt": vtt, "ctm": ctm}


def write_text(path: str, text: str) -> None:
    """The whole file at once: locally through a scratch file of its own (two threads may write
    the same name: inputs that repeat an id), synced, then renamed, so a reader never sees half
    of it; on an object store an object is visible only once whole anyway."""
    data = text.encode("utf-8", "surrogateescape")
    if "://" in path:
        with FileSystems.create(path) as handle:
            handle.write(data)
        return
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, scratch = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(scratch, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
        raise


class _WriteFiles(beam.DoFn):
    def __init__(self, formats: Sequence[str], output_dir: str) -> None:
        self._formats = tuple(formats)
        self._output_dir = output_dir

    def process(self, element: ItemResult | ErrorRecord) -> Iterator[ItemResult | ErrorRecord]:
        if isinstance(element, ItemResult) and element.transcript is not None:
            name = file_name(element.id)
            for format_name in self._formats:
                path = FileSystems.join(self._output_dir, format_name, f"{name}.{format_name}")
                write_text(path, WRITERS[format_name](element))
        yield element


class WriteFiles(beam.PTransform):
    """Writes a file per item and format (module doc), and passes every element on to the
    tables' writer: an item's files are on disk before its rows are committed, so a resume,
    which skips the items the tables hold, never leaves one without its files."""

    def __init__(self, formats: Sequence[str], output_dir: str) -> None:
        super().__init__()
        self._fn = _WriteFiles(formats, output_dir)

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        return items | "Write" >> beam.ParDo(self._fn)

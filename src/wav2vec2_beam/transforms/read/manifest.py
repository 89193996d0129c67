"""Beam stage: manifests (NeMo's JSON lines, or CSV) in, one `AudioItem` per entry (or one
`ErrorRecord`) out.

A JSONL manifest (`.jsonl`, `.json`) holds one JSON object per non-blank line; a CSV manifest
(`.csv`) a header row naming its columns, then one entry per row, quoted as Python's `csv` module
reads it (a field may hold commas, quotes and line breaks), UTF-8 with or without a byte-order
mark. Both have the same fields:

* `audio_filepath` (required): the audio file, local or `gs://`; a relative path is read from the
  manifest's folder.
* `offset` (seconds, default 0) and `duration` (seconds; absent, empty, null or not positive: to
  the end of the file, as NeMo reads it): only that span of the file is read
  (`decode_audio.Span`).
* reference text: `--text_column`, else the first of `decode_items.TEXT_FIELDS` (NeMo's is `text`).
* `id` (`--id_column`; numbers are written in decimal): the item's id. An entry without one gets
  `<manifest uri>#<line>`, with the 1-based line number where it starts (as editors and `sed -n`
  count lines).

Ids must be unique across the inputs. Within a manifest the first entry of an id is its item, and
a later entry repeating it is an error row (`duplicate_id`) whose id is `<manifest uri>#<line>`,
so every id is in the tables once. A repeat across manifests is not detected: rows stream to
disk as they finish, with no grouping of the whole corpus by id, so both are written.
`source` is the audio file's path. An entry that is not JSON, not an object, or has no usable
`audio_filepath`, `offset` or `duration`, is an error row with the entry's id (`<manifest
uri>#<line>` when it has none). A manifest that cannot be opened, or fails part-way, gives one
error row `<manifest uri>#<unread>` for the entries it could not read.

The manifest is streamed in one pass, line by line, so its size does not matter. Strings that are
not valid text (a lone surrogate escaped in JSON) are escaped in ids and references
(`transforms.read.ids`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from wav2vec2_beam.transforms.read.decode_audio import Span
from wav2vec2_beam.transforms.read.decode_items import (
    METRICS_NAMESPACE,
    UNREAD,
    AudioItem,
    item_error,
    reference_text,
    resolve_path,
)
from wav2vec2_beam.transforms.read.ids import escape, file_id
from wav2vec2_beam.transforms.read.resume import SkipList


class ManifestLineError(ValueError):
    """A manifest entry that cannot be an item; `str()` is the error row's message."""


def parse_line(
    record: Any, manifest: str, line: int, id_field: str | None, text_field: str | None
) -> AudioItem:
    """The item a manifest entry describes (`manifest` is the path to resolve relative audio
    paths against); raises `ManifestLineError`."""
    if not isinstance(record, dict):
        raise ManifestLineError(f"not_an_object: line {line} holds {type(record).__name__}")
    audio = record.get("audio_filepath")
    if not isinstance(audio, str) or not audio:
        raise ManifestLineError(f"no_audio_filepath: line {line} has no audio_filepath string")
    offset = _seconds(record, "offset", line, default=0.0)
    duration = _seconds(record, "duration", line, default=None)
    if offset < 0:
        raise ManifestLineError(f"bad_offset: line {line} has offset {offset}")
    span = None
    if offset > 0 or (duration is not None and duration > 0):
        span = Span(offset, duration if duration is not None and duration > 0 else None)
    try:
        reference = reference_text(record, text_field)
    except ValueError as error:
        raise ManifestLineError(f"bad_reference: line {line}: {error}") from None
    path = resolve_path(manifest, audio)
    return AudioItem(
        id=line_id(record, manifest, line, id_field),
        source=file_id(path),
        path=path,
        span=span,
        reference=reference,
        origin=f"{file_id(manifest)}#{line}",
    )


def line_id(record: Any, manifest: str, line: int, id_field: str | None) -> str:
    """An entry's id: its id field when it has one, else `<manifest uri>#<line>`."""
    value = record.get(id_field or "id") if isinstance(record, dict) else None
    if value is None or value == "":
        return f"{file_id(manifest)}#{line}"
    return escape(str(value))


def _seconds(record: dict[str, Any], name: str, line: int, default: float | None) -> Any:
    value = record.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, str):  # CSV fields are text
        try:
            value = float(value)
        except ValueError:
            raise ManifestLineError(
                f"bad_{name}: line {line} has {name} {escape(value)!r}, not seconds"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ManifestLineError(f"bad_{name}: line {line} has {name} {value!r}, not seconds")
    return float(value)


def is_csv(manifest: str) -> bool:
    return manifest.lower().endswith(".csv")


def read_manifest(
    manifest: str, skip: SkipList, id_field: str | None, text_field: str | None
) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
    """The items and errors of one manifest, in order (see the module docstring)."""
    uri = file_id(manifest)
    entries = _csv_entries if is_csv(manifest) else _jsonl_entries
    line = 0
    seen: dict[str, int] = {}
    try:
        with FileSystems.open(manifest, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            for line, record in entries(raw, manifest):
                yield from _read_entry(record, manifest, line, id_field, text_field, skip, seen)
    except _NotAManifest as error:
        yield item_error(uri, uri, "read", str(error))
    except Exception as error:
        where = f"after line {line}" if line else "at all"
        yield item_error(
            f"{uri}#{UNREAD}",
            uri,
            "read",
            f"unreadable: the manifest could not be read {where}: {type(error).__name__}: {error}",
        )


class _NotAManifest(ValueError):
    """The whole file is not a manifest: one error row for it, not one per line."""


class _BadLine:
    """An entry that could not be parsed at all (its message)."""

    def __init__(self, message: str) -> None:
        self.message = message


def _jsonl_entries(raw: Any, manifest: str) -> Iterator[tuple[int, Any]]:
    """(line, parsed JSON or `_BadLine`) for each non-blank line; `_NotAManifest` when the file
    is one JSON document, told by its first line alone (so the file is read once)."""
    first = True
    for line, text in enumerate(raw, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as error:  # also bytes that are not UTF-8
            if first and _starts_a_json_document(text, manifest):
                raise _NotAManifest(
                    "not_jsonl: the file is one JSON document, not a manifest of one JSON object "
                    "per line (use --input_format audio or leave it out of --input)"
                ) from None
            record = _BadLine(f"not_json: line {line}: {error}")
        first = False
        yield line, record


def _starts_a_json_document(first_line: bytes, manifest: str) -> bool:
    """Whether a first line that is not JSON starts a file that is one JSON document.

    A pretty-printed JSON array or object (metadata beside the audio, say) is no manifest: it
    gets one error row for the file instead of one per line. Asked once, of the first line.
    """
    if first_line.strip()[:1] not in (b"[", b"{"):
        return False
    try:
        with FileSystems.open(manifest, compression_type=CompressionTypes.UNCOMPRESSED) as whole:
            json.loads(whole.read())
        return True
    except ValueError:
        return False


def _csv_entries(raw: Any, manifest: str) -> Iterator[tuple[int, Any]]:
    """(line where the row starts, row as a dict) for each data row of a CSV manifest."""
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
    rows = csv.reader(text)
    header = next(rows, None)
    if header is None:
        return
    if "audio_filepath" not in header:
        raise _NotAManifest(
            "not_a_manifest: the CSV file has no audio_filepath column "
            f"(its header: {escape(', '.join(header))})"
        )
    start = rows.line_num + 1
    for row in rows:
        if any(field.strip() for field in row):
            if len(row) != len(header):
                yield (
                    start,
                    _BadLine(
                        f"bad_row: line {start} has {len(row)} fields, the header {len(header)}"
                    ),
                )
            else:
                yield start, dict(zip(header, row, strict=True))
        start = rows.line_num + 1


def _read_entry(
    record: Any,
    manifest: str,
    line: int,
    id_field: str | None,
    text_field: str | None,
    skip: SkipList,
    seen: dict[str, int],
) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
    """One entry's item or error; `seen` maps the ids met so far in the manifest to their line."""
    uri = file_id(manifest)
    if isinstance(record, _BadLine):
        yield item_error(f"{uri}#{line}", uri, "read", record.message)
        return
    item_id = line_id(record, manifest, line, id_field)
    if item_id in skip:
        skip.skipped()
        return
    if item_id in seen:
        yield item_error(
            f"{uri}#{line}",
            uri,
            "read",
            f"duplicate_id: line {line} repeats id {item_id!r} of line {seen[item_id]}",
        )
        return
    seen[item_id] = line
    try:
        item = parse_line(record, manifest, line, id_field, text_field)
    except ManifestLineError as error:
        yield item_error(item_id, uri, "read", str(error))
        return
    Metrics.counter(METRICS_NAMESPACE, "manifest_lines_read").inc()
    yield item

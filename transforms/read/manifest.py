"""Beam stage: JSONL manifests (NeMo style) in, one `AudioItem` per line (or one `ErrorRecord`) out.

Each non-blank line is a JSON object:

* `audio_filepath` (required): the audio file, local or `gs://`; a relative path is read from the
  manifest's folder.
* `offset` (seconds, default 0) and `duration` (seconds; absent, null or not positive: to the end
  of the file, as NeMo reads it): only that span of the file is read (`decode_audio.Span`).
* reference text: `--text_column`, else the first of `decode_items.TEXT_FIELDS` (NeMo's is `text`).
* `id` (`--id_column`; numbers are written in decimal): the item's id. A line without one gets
  `<manifest uri>#<line>`, with the 1-based line number (as editors and `sed -n` count lines).

Ids must be unique across the inputs. Within a manifest the first line of an id is its item, and
a later line repeating it is an error row (`duplicate_id`) whose id is `<manifest uri>#<line>`,
so every id is in the tables once. A repeat across manifests is not detected: rows stream to
disk as they finish, with no grouping of the whole corpus by id, so both are written.
`source` is the audio file's path. A line that is not JSON, not an object, or has no usable
`audio_filepath`, `offset` or `duration`, is an error row with the line's id (`<manifest
uri>#<line>` when it has none). A manifest that cannot be opened, or fails part-way, gives one
error row `<manifest uri>#<unread>` for the lines it could not read.

The manifest is streamed line by line, so its size does not matter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.read.decode_audio import Span
from transforms.read.decode_items import (
    METRICS_NAMESPACE,
    UNREAD,
    AudioItem,
    item_error,
    reference_text,
    resolve_path,
)
from transforms.read.resume import skipped_counter


class ManifestLineError(ValueError):
    """A manifest line that cannot be an item; `str()` is the error row's message."""


def parse_line(
    record: Any, manifest: str, line: int, id_field: str | None, text_field: str | None
) -> AudioItem:
    """The item a manifest line's JSON value describes; raises `ManifestLineError`."""
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
        source=path,
        path=path,
        span=span,
        reference=reference,
        origin=f"{manifest}#{line}",
    )


def line_id(record: Any, manifest: str, line: int, id_field: str | None) -> str:
    """A line's id: its id field when it has one, else `<manifest uri>#<line>`."""
    value = record.get(id_field or "id") if isinstance(record, dict) else None
    return f"{manifest}#{line}" if value is None else str(value)


def _seconds(record: dict[str, Any], name: str, line: int, default: float | None) -> Any:
    value = record.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ManifestLineError(f"bad_{name}: line {line} has {name} {value!r}, not seconds")
    return float(value)


def read_manifest(
    manifest: str, skip: Collection[str], id_field: str | None, text_field: str | None
) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
    """The items and errors of one manifest, in line order (see the module docstring)."""
    line = 0
    seen: dict[str, int] = {}
    try:
        with FileSystems.open(manifest, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            for line, text in enumerate(raw, start=1):
                if not text.strip():
                    continue
                if not seen and _starts_a_json_document(text, manifest):
                    yield item_error(
                        manifest,
                        manifest,
                        "read",
                        "not_jsonl: the file is one JSON document, not a manifest of one JSON "
                        "object per line (use --input_format audio or leave it out of --input)",
                    )
                    return
                yield from _read_line(text, manifest, line, id_field, text_field, skip, seen)
    except Exception as error:
        where = f"after line {line}" if line else "at all"
        yield item_error(
            f"{manifest}#{UNREAD}",
            manifest,
            "read",
            f"unreadable: the manifest could not be read {where}: {type(error).__name__}: {error}",
        )


def _starts_a_json_document(first_line: bytes, manifest: str) -> bool:
    """Whether a first line that is not JSON starts a file that is one JSON document.

    A pretty-printed JSON array or object (metadata beside the audio, say) is no manifest: it
    gets one error row for the file instead of one per line.
    """
    try:
        json.loads(first_line)
        return False
    except ValueError:
        pass
    if first_line.strip()[:1] not in (b"[", b"{"):
        return False
    try:
        with FileSystems.open(manifest, compression_type=CompressionTypes.UNCOMPRESSED) as whole:
            json.loads(whole.read())
        return True
    except ValueError:
        return False


def _read_line(
    text: bytes,
    manifest: str,
    line: int,
    id_field: str | None,
    text_field: str | None,
    skip: Collection[str],
    seen: dict[str, int],
) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
    """One line's item or error; `seen` maps the ids met so far in the manifest to their line."""
    try:
        record = json.loads(text)
    except ValueError as error:  # also bytes that are not UTF-8
        yield item_error(f"{manifest}#{line}", manifest, "read", f"not_json: line {line}: {error}")
        return
    item_id = line_id(record, manifest, line, id_field)
    if item_id in skip:
        skipped_counter().inc()
        return
    if item_id in seen:
        yield item_error(
            f"{manifest}#{line}",
            manifest,
            "read",
            f"duplicate_id: line {line} repeats id {item_id!r} of line {seen[item_id]}",
        )
        return
    seen[item_id] = line
    try:
        item = parse_line(record, manifest, line, id_field, text_field)
    except ManifestLineError as error:
        yield item_error(item_id, manifest, "read", str(error))
        return
    Metrics.counter(METRICS_NAMESPACE, "manifest_lines_read").inc()
    yield item

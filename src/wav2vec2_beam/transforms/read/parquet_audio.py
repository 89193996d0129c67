"""Beam stage: Parquet audio datasets in, one `AudioItem` per row (or one `ErrorRecord`) out.

The layout is Hugging Face `datasets`' Audio feature as it is stored in Parquet: a column (default
`audio`, `--audio_column`) that is a struct of `bytes` (the encoded file) and `path` (its original
name). A plain binary column (the encoded file) or a string column (a path to the file) works too.
A row's audio is its bytes when present, else its path, read from the Parquet file's folder when
relative (local or `gs://`).

Ids: the value of the id column (`--id_column`, default `id` when the file has one; numbers are
written in decimal), else `<file uri>#<row>` with the row's 0-based position in the file (as
pyarrow and pandas number it). Ids from a column must be unique across the inputs. Within a file
the first row of an id is its item, and a later row repeating it is an error row
(`duplicate_id`) whose id is that row's `<file uri>#<row>`, so every id is in the tables once. A
repeat across files is not detected: rows stream to disk as they finish, with no grouping of the
whole corpus by id, so both are written (see docs/CORPORA.md, Ids and sources). `source` is `<file uri>#<row>` for
embedded audio, the audio file's path otherwise.

Reference text: `--text_column`, else the first of `decode_items.TEXT_FIELDS` the file has; a
null is no reference. A column named by a flag that a file does not have makes that file's one
error row `<file uri>#<unread>`, and so does a file that cannot be opened or read as Parquet.

The file is read one row group at a time, the id column first: a row group whose rows are all
done already (`--skip_existing`) is never read further, and only a group's needed rows are
turned into items. A worker holds about one row group's audio column (Hugging Face writes audio
datasets in row groups of 100 rows or so). A row group that cannot be read gives an error row per
row when its ids are known, else `<file uri>#<unread>`.

Metrics (namespace `read_corpus`): `rows_read`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from wav2vec2_beam.transforms.read.decode_items import (
    METRICS_NAMESPACE,
    TEXT_FIELDS,
    UNREAD,
    AudioItem,
    item_error,
    reference_text,
    resolve_path,
)
from wav2vec2_beam.transforms.read.ids import escape, file_id
from wav2vec2_beam.transforms.read.resume import SkipList

#: Rows converted to Python objects at a time, within a row group.
BATCH_ROWS = 32


@dataclass(frozen=True)
class ParquetColumns:
    """The columns flags named (None: the defaults described in the module docstring)."""

    audio: str | None = None
    text: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class _Resolved:
    audio: str
    text: str | None
    id: str | None


def _resolve_columns(schema: pa.Schema, columns: ParquetColumns) -> _Resolved:
    """The columns to read in a file; ValueError names a missing or unusable one."""
    names = set(schema.names)
    for flag, name in (("audio", columns.audio), ("text", columns.text), ("id", columns.id)):
        if name is not None and name not in names:
            raise ValueError(
                f"--{flag}_column {name!r} is not a column of this file "
                f"(it has {', '.join(schema.names)})"
            )
    audio = columns.audio or "audio"
    if audio not in names:
        raise ValueError(
            f"no audio column {audio!r} (it has {', '.join(schema.names)}); name it with "
            "--audio_column"
        )
    audio_type = schema.field(audio).type
    usable = (
        pa.types.is_struct(audio_type)
        and {"bytes", "path"} & {audio_type.field(i).name for i in range(audio_type.num_fields)}
    ) or any(
        check(audio_type)
        for check in (
            pa.types.is_binary,
            pa.types.is_large_binary,
            pa.types.is_string,
            pa.types.is_large_string,
        )
    )
    if not usable:
        raise ValueError(
            f"audio column {audio!r} is {audio_type}; expected struct<bytes, path>, binary "
            "or a path string"
        )
    text = columns.text or next((name for name in TEXT_FIELDS if name in names), None)
    identity = columns.id or ("id" if "id" in names else None)
    return _Resolved(audio, text, identity)


def read_parquet_file(
    path: str, skip: SkipList, columns: ParquetColumns
) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
    """The items and errors of one Parquet file, in row order (see the module docstring)."""
    uri = file_id(path)
    unread = f"{uri}#{UNREAD}"
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            parquet = pq.ParquetFile(raw)
            try:
                resolved = _resolve_columns(parquet.schema_arrow, columns)
            except ValueError as error:
                yield item_error(unread, uri, "read", f"bad_columns: {error}")
                return
            first_row = 0
            seen: dict[str, int] = {}
            for group in range(parquet.num_row_groups):
                yield from _read_group(parquet, group, first_row, path, skip, resolved, seen)
                first_row += parquet.metadata.row_group(group).num_rows
    except Exception as error:  # not Parquet, unreadable: what was not read is lost
        yield item_error(unread, uri, "read", f"unreadable: {type(error).__name__}: {error}")


def _read_group(
    parquet: pq.ParquetFile,
    group: int,
    first_row: int,
    path: str,
    skip: SkipList,
    columns: _Resolved,
    seen: dict[str, int],
) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
    """One row group's items and errors; `seen` maps ids met so far in the file to their row."""
    uri = file_id(path)
    count = parquet.metadata.row_group(group).num_rows
    rows = range(first_row, first_row + count)
    try:
        if columns.id is None:
            ids: list[Any] = [None] * count
        else:
            ids = parquet.read_row_group(group, columns=[columns.id]).column(0).to_pylist()
    except Exception as error:
        yield item_error(
            f"{uri}#{UNREAD}",
            uri,
            "read",
            f"unreadable: row group {group} (rows {rows.start}-{rows.stop - 1}): "
            f"{type(error).__name__}: {error}",
        )
        return
    wanted: dict[int, str] = {}
    for row, value in zip(rows, ids, strict=True):
        item_id = f"{uri}#{row}" if value is None else escape(str(value))
        if value is None and columns.id is not None:
            yield item_error(item_id, uri, "read", f"null_id: row {row} has no {columns.id}")
        elif item_id in skip:
            skip.skipped()
        elif item_id in seen:
            yield item_error(
                f"{uri}#{row}",
                uri,
                "read",
                f"duplicate_id: row {row} repeats id {item_id!r} of row {seen[item_id]}",
            )
        else:
            wanted[row] = item_id
        seen.setdefault(item_id, row)
    if not wanted:
        return
    done: set[int] = set()
    try:
        for row, result in _items(parquet, group, first_row, path, columns, wanted):
            done.add(row)
            yield result
    except Exception as error:  # the group itself failed part-way: only its unread rows are lost
        for row, item_id in wanted.items():
            if row not in done:
                yield item_error(
                    item_id,
                    uri,
                    "read",
                    f"unreadable: row {row} (row group {group}): {type(error).__name__}: {error}",
                )


def _items(
    parquet: pq.ParquetFile,
    group: int,
    first_row: int,
    path: str,
    columns: _Resolved,
    wanted: dict[int, str],
) -> Iterator[tuple[int, AudioItem | beam.pvalue.TaggedOutput]]:
    """(row, item or error) for the wanted rows of one row group: a row that cannot be an item
    is that row's error alone."""
    names = [columns.audio] + ([columns.text] if columns.text else [])
    row = first_row
    for batch in parquet.iter_batches(BATCH_ROWS, row_groups=[group], columns=names):
        for record in batch.to_pylist():
            if row in wanted:
                try:
                    yield row, _item(record, row, wanted[row], path, columns)
                except _BadRow as error:
                    yield row, item_error(wanted[row], f"{file_id(path)}#{row}", "read", str(error))
            row += 1


class _BadRow(ValueError):
    """A row whose values cannot make an item; `str()` is its error row's message."""


def _item(
    record: dict[str, Any], row: int, item_id: str, path: str, columns: _Resolved
) -> AudioItem | beam.pvalue.TaggedOutput:
    """One row's item, or why it has none (`_BadRow`)."""
    where = f"{file_id(path)}#{row}"
    audio = record[columns.audio]
    data, audio_path = None, None
    if isinstance(audio, dict):
        data, audio_path = audio.get("bytes"), audio.get("path")
    elif isinstance(audio, bytes):
        data = audio
    else:
        audio_path = audio
    if data is not None and not isinstance(data, bytes):
        raise _BadRow(f"bad_audio: row {row} has audio bytes of type {type(data).__name__}")
    if audio_path is not None and not isinstance(audio_path, str):
        raise _BadRow(
            f"bad_audio: row {row} has an audio path of type {type(audio_path).__name__}, not text"
        )
    try:
        reference = reference_text(record, columns.text) if columns.text else None
    except ValueError as error:
        raise _BadRow(f"bad_reference: {error}") from None
    if data is not None:
        Metrics.counter(METRICS_NAMESPACE, "rows_read").inc()
        return AudioItem(item_id, where, data=data, reference=reference, origin=where)
    if audio_path:
        Metrics.counter(METRICS_NAMESPACE, "rows_read").inc()
        resolved = resolve_path(path, audio_path)
        return AudioItem(
            item_id, file_id(resolved), path=resolved, reference=reference, origin=where
        )
    raise _BadRow(f"null_audio: row {row} has no audio bytes or path")

"""Beam stage: results in, Parquet tables out in pieces as the run goes, plus its summary.json.

Layout under `--output_dir`::

    transcripts/<run_id>-<bundle>-<sequence>.parquet
    logits/..., hidden_states/..., classifications/..., codes/..., pooled_hidden_states/...
    errors/<run_id>-<bundle>-<sequence>.parquet
    summary.json            (the latest run's; also summary-<run_id>.json)

A table is read whole by pointing pandas or pyarrow at its folder; the run id (UTC start time plus
a random suffix) in every name keeps runs that write into one folder apart.

Pieces, not a sink. Beam's file sinks write temporary files and make them visible only when the
whole job ends (a barrier after the last item), so a job that dies after 20 GPU-hours would leave
nothing. Here the writer sits in the same fused stage as inference, buffers the bundle's results
and commits them as it goes: a piece is cut when it holds `--piece_items` items, about
`--piece_mb` MB of rows, or when its oldest row has waited `--piece_seconds` as the next arrives,
and at the end of the bundle. One cut writes one file per table, each a complete Parquet file
(`write_piece`: on a local disk under a hidden scratch name, then renamed into place; on an
object store straight to its name, since an object is visible only once whole), so a reader sees
a piece whole or not at all. The first item table is published last (`_WritePieces._commit`): an
id in it has its rows in every table. Rows therefore reach disk while
the job runs, a run killed at any point leaves every committed item, and `--skip_existing`
resumes from there (`transforms.read.resume`).

Retries. A runner that retries a failed bundle (Dataflow does, up to four times) replays the same
elements in the same order. The decoder names its bundle after the bundle's first item (where it
was found: `AudioChunk.bundle`) and stamps that name on everything the bundle gives, so it does not
depend on which items happened to succeed. Each writer names its pieces
`<run_id>-<writer>-<bundle>-<sequence>` and, before writing anything, deletes the pieces and
scratch files that a failed attempt of the same bundle left. A retried bundle therefore leaves its
rows once, however its attempts cut their pieces. What this does not cover: two attempts of one
bundle running at the same time (Dataflow's batch mode runs no backup attempts), a retry that
starts from another item (a runner that re-splits the work it retries), and the readers' own error
rows (a shard that cannot be opened), whose writer names its bundle by its first error; in those
cases a duplicate is a whole row with the same `id`, and `--skip_existing` reads it as done.

Why Arrow tables from numpy: building rows from Python objects would make one Python float per
value of the logits and hidden states. Each table's rows are turned into a `pyarrow.Table`
straight from the numpy arrays. Frame matrices are `list<fixed_size_list<float>>` (frames x width;
int16 for codes): a nested list per row, whose inner width (vocabulary, hidden size or codevector
groups) is part of the schema and needs no offsets, so a very long item cannot overflow Arrow's
32-bit list offsets.

Metrics (namespace `wav2vec2`): `pieces_written`, `items_written`, and each item's outcome,
`files_succeeded` (with its `audio_ms`) or `files_failed`: every item ends here, whichever stage
failed it (the CTC decoder can fail an item the stitcher completed), so the writers count them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from wav2vec2_beam.transforms.read.ids import literal
from wav2vec2_beam.transforms.records import (
    CLASS_PROBABILITIES,
    CODES,
    LOGITS,
    ErrorRecord,
    ItemResult,
    hidden_state_key,
)
from wav2vec2_beam.transforms.write.progress import (
    FAILED_PREFIX,
    METRICS_NAMESPACE,
    record_progress,
    recorded_commit,
)

FEATURE_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}

_TIMED = [("start_s", pa.float64()), ("end_s", pa.float64()), ("confidence", pa.float32())]

TRANSCRIPTS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("transcript", pa.string(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("num_frames", pa.int32(), nullable=False),
        pa.field("words", pa.list_(pa.struct([("word", pa.string()), *_TIMED])), nullable=False),
        pa.field("chars", pa.list_(pa.struct([("char", pa.string()), *_TIMED])), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        # The item's reference text and its scores (transforms/write/score.py); null without one.
        pa.field("reference", pa.string()),
        pa.field("wer", pa.float64()),
        pa.field("cer", pa.float64()),
    ]
)

#: `--segment vad`: a row per voice segment of an item (an item without speech has none).
SEGMENTS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("segment", pa.int32(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("transcript", pa.string(), nullable=False),
        pa.field("words", pa.list_(pa.struct([("word", pa.string()), *_TIMED])), nullable=False),
        # The mean of its words' confidences; null for a segment the model heard no word in.
        pa.field("confidence", pa.float32()),
    ]
)

ERRORS_SCHEMA = pa.schema(
    [pa.field(name, pa.string(), nullable=False) for name in ("id", "source", "stage", "error")]
)


def frames_type(dtype: str, width: int) -> pa.DataType:
    """The Arrow type of a (frames x width) matrix column of numpy dtype `dtype`."""
    return pa.list_(pa.list_(pa.from_numpy_dtype(np.dtype(dtype)), width))


def logits_schema(dtype: str, vocab_size: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("num_frames", pa.int32(), nullable=False),
            pa.field("logits", frames_type(dtype, vocab_size), nullable=False),
        ]
    )


def hidden_states_schema(dtype: str, hidden_size: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("layer", pa.int32(), nullable=False),
            pa.field("num_frames", pa.int32(), nullable=False),
            pa.field("hidden_state", frames_type(dtype, hidden_size), nullable=False),
        ]
    )


def codes_schema(groups: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("num_frames", pa.int32(), nullable=False),
            pa.field("codes", frames_type("int16", groups), nullable=False),
        ]
    )


def classifications_schema(num_labels: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("score", pa.float32(), nullable=False),
            pa.field("probabilities", pa.list_(pa.float32(), num_labels), nullable=False),
            pa.field("duration_s", pa.float64(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
        ]
    )


def frames_column(matrices: Sequence[np.ndarray], dtype: str, width: int) -> pa.Array:
    """One list<fixed_size_list> array from (frames x width) numpy matrices, without Python floats."""
    numpy_dtype = np.dtype(dtype)
    flat = np.concatenate([m.astype(numpy_dtype, copy=False).reshape(-1) for m in matrices])
    rows = pa.FixedSizeListArray.from_arrays(pa.array(flat), width)
    offsets = np.zeros(len(matrices) + 1, np.int32)
    np.cumsum([len(m) for m in matrices], out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), rows)


@dataclass(frozen=True)
class TableSpec:
    """How one output table is built: its folder, schema, and rows from pipeline elements."""

    name: str
    schema: pa.Schema
    #: Elements (of one bundle) to one Arrow table in `schema`.
    to_table: Callable[[list[Any]], pa.Table]
    #: Rough bytes an element adds to its table, to bound a table's (row group's) size.
    size_of: Callable[[Any], int]


def transcripts_table() -> TableSpec:
    """Rows are the dicts `transforms.write.ctc_decode` attaches to items."""
    return TableSpec(
        "transcripts",
        TRANSCRIPTS_SCHEMA,
        lambda items: pa.Table.from_pylist([i.transcript for i in items], TRANSCRIPTS_SCHEMA),
        lambda item: 64 * (len(item.transcript["words"]) + len(item.transcript["chars"])) + 256,
    )


def segments_table() -> TableSpec:
    """Rows are the dicts `transforms.write.ctc_decode` attaches to items with voice segments."""
    return TableSpec(
        "segments",
        SEGMENTS_SCHEMA,
        lambda items: pa.Table.from_pylist(
            [row for item in items for row in item.segment_rows], SEGMENTS_SCHEMA
        ),
        lambda item: sum(64 * len(row["words"]) + 128 for row in item.segment_rows),
    )


def errors_table() -> TableSpec:
    return TableSpec(
        "errors",
        ERRORS_SCHEMA,
        lambda errors: pa.Table.from_pylist([asdict(e) for e in errors], ERRORS_SCHEMA),
        lambda error: 256,
    )


def logits_table(dtype: str, vocab_size: int) -> TableSpec:
    schema = logits_schema(dtype, vocab_size)

    def to_table(items: list[ItemResult]) -> pa.Table:
        return pa.Table.from_arrays(
            [
                pa.array([item.id for item in items], pa.string()),
                pa.array([item.num_frames for item in items], pa.int32()),
                frames_column([item.frames[LOGITS] for item in items], dtype, vocab_size),
            ],
            schema=schema,
        )

    return TableSpec("logits", schema, to_table, lambda item: item.frames[LOGITS].nbytes)


def hidden_states_table(dtype: str, hidden_size: int, layers: Sequence[int]) -> TableSpec:
    schema = hidden_states_schema(dtype, hidden_size)

    def to_table(items: list[ItemResult]) -> pa.Table:
        rows = [(item, layer) for item in items for layer in layers]
        return pa.Table.from_arrays(
            [
                pa.array([item.id for item, _ in rows], pa.string()),
                pa.array([layer for _, layer in rows], pa.int32()),
                pa.array([item.num_frames for item, _ in rows], pa.int32()),
                frames_column(
                    [item.frames[hidden_state_key(layer)] for item, layer in rows],
                    dtype,
                    hidden_size,
                ),
            ],
            schema=schema,
        )

    def size_of(item: ItemResult) -> int:
        return sum(item.frames[hidden_state_key(layer)].nbytes for layer in layers)

    return TableSpec("hidden_states", schema, to_table, size_of)


def codes_table(groups: int) -> TableSpec:
    """One row per item: its stitched codevector ids (frames x groups)."""
    schema = codes_schema(groups)

    def to_table(items: list[ItemResult]) -> pa.Table:
        return pa.Table.from_arrays(
            [
                pa.array([item.id for item in items], pa.string()),
                pa.array([item.num_frames for item in items], pa.int32()),
                frames_column([item.frames[CODES] for item in items], "int16", groups),
            ],
            schema=schema,
        )

    return TableSpec("codes", schema, to_table, lambda item: item.frames[CODES].nbytes)


def classifications_table(id2label: dict[int, str], model_dir: str) -> TableSpec:
    """One row per item: the label of its pooled probabilities' largest, and the whole vector.

    `probabilities[i]` is the probability of class `i` (`id2label[i]` in the checkpoint's
    config.json); `score` is the label's own probability.
    """
    num_labels = len(id2label)
    schema = classifications_schema(num_labels)

    def to_table(items: list[ItemResult]) -> pa.Table:
        probabilities = [item.pooled[CLASS_PROBABILITIES] for item in items]
        top = [int(p.argmax()) for p in probabilities]
        return pa.Table.from_arrays(
            [
                pa.array([item.id for item in items], pa.string()),
                pa.array([item.source for item in items], pa.string()),
                pa.array([id2label[index] for index in top], pa.string()),
                pa.array(
                    np.array([p[i] for p, i in zip(probabilities, top, strict=True)], np.float32)
                ),
                pa.FixedSizeListArray.from_arrays(
                    pa.array(np.concatenate(probabilities), pa.float32()), num_labels
                ),
                pa.array([item.duration_s for item in items], pa.float64()),
                pa.array([model_dir] * len(items), pa.string()),
            ],
            schema=schema,
        )

    return TableSpec("classifications", schema, to_table, lambda item: 4 * num_labels + 256)


@dataclass(frozen=True)
class PieceLimits:
    """When a writer cuts a piece: whichever limit its buffered rows reach first."""

    items: int = 1000
    megabytes: float = 64.0
    seconds: float = 60.0


DEFAULT_LIMITS = PieceLimits()


def piece_prefix(run_id: str, writer: str, bundle: str) -> str:
    """What every piece of one writer's bundle is named after: `<run_id>-<writer>-<bundle>`."""
    return f"{run_id}-{writer}-{bundle}"


def bundle_of(element: ItemResult | ErrorRecord) -> str:
    """The name of the bundle `element` came in: the decoder's stamp, or, for what never reached
    the decoder (a reader's error rows), a hash of the element itself."""
    if element.bundle:
        return element.bundle
    text = f"{element.id}\0{element.source}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def write_piece(table: pa.Table, final_path: str) -> Callable[[], None]:
    """Write `table` as one Parquet file that will be `final_path`; returns what publishes it.

    A reader must see a piece whole or not at all, and a run must leave nothing else behind.
    On a local disk the file is written under a hidden scratch name beside `final_path` (no
    `*.parquet` glob, pyarrow dataset or `--skip_existing` sees it), made durable, and renamed
    into place when published: a rename is atomic there. On an object store (gs://) an object
    becomes visible only when its upload completes, whole, while a "rename" is a copy and a
    delete that a kill can leave half done (a scratch object, or both); so the piece is written
    straight to its final name and publishing has nothing left to do.

    A table without rows is written without a row group (the schema alone): Hugging Face
    `datasets` cannot read a zero-row row group ("BatchSize must be greater than 0"), and reads a
    file with none as no rows, as pandas, pyarrow, polars and DuckDB do.
    """
    folder, name = FileSystems.split(final_path)
    direct = "://" in final_path
    path = final_path if direct else FileSystems.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        with pq.ParquetWriter(
            handle, table.schema, compression="snappy", use_compliant_nested_type=True
        ) as writer:
            if table.num_rows:
                writer.write_table(table)
        _sync(handle)
    if direct:
        return lambda: None
    return lambda: _rename_durably(path, final_path)


def _rename_durably(scratch: str, final_path: str) -> None:
    """Give a complete local scratch file its final name; the folder is synced after the
    rename, so a committed piece survives a power cut."""
    FileSystems.rename([scratch], [final_path])
    descriptor = os.open(FileSystems.split(final_path)[0], os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync(handle: Any) -> None:
    """Put a local file's bytes on disk before it is renamed into place (the rename must not
    reach the disk before the data it names). Object stores commit an object when it closes."""
    try:
        descriptor = handle.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return
    handle.flush()
    os.fsync(descriptor)


class _WritePieces(beam.DoFn):
    """Buffer a bundle's results and commit them, every table at once, piece by piece."""

    def __init__(
        self,
        item_tables: Sequence[TableSpec],
        output_dir: str,
        run_id: str,
        limits: PieceLimits,
        writer: str,
        progress_dir: str | None,
    ) -> None:
        self._tables = {spec.name: spec for spec in [*item_tables, errors_table()]}
        self._item_tables = [spec.name for spec in item_tables]
        self._output_dir = output_dir
        self._run_id = run_id
        self._limits = limits
        self._writer = writer
        self._progress_dir = progress_dir
        self._pieces = Metrics.counter(METRICS_NAMESPACE, "pieces_written")
        self._items = Metrics.counter(METRICS_NAMESPACE, "items_written")
        self._failed = Metrics.counter(METRICS_NAMESPACE, "files_failed")
        self._succeeded = Metrics.counter(METRICS_NAMESPACE, "files_succeeded")
        self._audio_ms = Metrics.counter(METRICS_NAMESPACE, "audio_ms")

    def start_bundle(self) -> None:
        self._prefix: str | None = None
        self._sequence = 0
        self._clear()

    def process(
        self,
        element: ItemResult | ErrorRecord,
        existing: Mapping[str, Collection[str]] = MappingProxyType({}),
    ) -> None:
        if self._prefix is None:
            self._prefix = piece_prefix(self._run_id, self._writer, bundle_of(element))
            self._remove_failed_attempt()
        if isinstance(element, ErrorRecord):
            tables = ["errors"]
            self._failures += 1
            self._failed.inc()
            Metrics.counter(METRICS_NAMESPACE, FAILED_PREFIX + element.reason).inc()
            record_progress(self._progress_dir, files_failed=1)
        else:
            tables = self._item_tables
            self._succeeded.inc()
            self._audio_ms.inc(round(1000 * element.duration_s))
            record_progress(self._progress_dir, files_succeeded=1)
        for table in tables:
            if element.id not in existing.get(table, ()):  # a resumed item's half-written rows
                self._rows[table].append(element)
                self._bytes += self._tables[table].size_of(element)
        self._count += 1
        if self._oldest is None:
            self._oldest = time.monotonic()
        limits = self._limits
        if (
            self._count >= limits.items
            or self._bytes >= limits.megabytes * 2**20
            or time.monotonic() - self._oldest >= limits.seconds
        ):
            self._commit()

    def finish_bundle(self) -> None:
        if self._count:
            self._commit()

    def _clear(self) -> None:
        self._rows: dict[str, list[Any]] = {name: [] for name in self._tables}
        self._bytes = 0
        self._count = 0
        self._failures = 0
        self._oldest: float | None = None

    def _path(self, table: str) -> str:
        name = f"{self._prefix}-{self._sequence:05d}.parquet"
        return FileSystems.join(self._output_dir, table, name)

    def _remove_failed_attempt(self) -> None:
        """Delete the pieces (and scratch files) an earlier attempt at this bundle left."""
        patterns = [
            FileSystems.join(literal(self._output_dir), table, name)
            for table in self._tables
            for name in (f"{self._prefix}-*.parquet", f".{self._prefix}-*.tmp")
        ]
        found = [m.path for r in FileSystems.match(patterns) for m in r.metadata_list]
        if found:
            FileSystems.delete(found)

    def _commit(self) -> None:
        """Write every table's file of this cut, then publish them, the first item table last.

        Publishing several files cannot be one atomic step, so they follow each other as closely
        as they can, in an order that makes the first item table (the first of `--outputs`, the
        one a user watches) the commit point: an id there has its rows in every other table. On
        an object store the files are written in that order, each visible once whole.
        """
        order = [*reversed(self._item_tables), "errors"]
        tables = {
            name: self._tables[name].to_table(self._rows[name])
            for name in order
            if self._rows[name]
        }
        # items without speech have no segments: no empty piece
        paths = {name: self._path(name) for name, table in tables.items() if table.num_rows}
        # The file whose presence proves each group of items on disk: the first item table's
        # piece, published after the other item tables', and the errors piece. (The writer of
        # the readers' error rows has no item tables.)
        groups = {"errors": self._failures}
        if self._item_tables:
            groups[self._item_tables[0]] = self._count - self._failures
        proofs = {paths[name]: items for name, items in groups.items() if items and name in paths}
        with recorded_commit(self._progress_dir, proofs, self._count) as admitted:
            if admitted:
                written = [write_piece(tables[name], path) for name, path in paths.items()]
                for publish in written:
                    publish()
                self._pieces.inc(len(written))
                self._items.inc(self._count)
        self._sequence += 1
        self._clear()


class WriteOutputs(beam.PTransform):
    """`ItemResult`s and `ErrorRecord`s to pieces of `item_tables` and of `errors/` (module doc).

    `writer` names this writer among the job's, in its pieces' names, so that each writer removes
    only its own failed attempts' pieces; `existing`, when given, is a singleton PCollection of
    the ids each table holds already (resume), whose rows are not written again.
    """

    def __init__(
        self,
        item_tables: Sequence[TableSpec],
        output_dir: str,
        run_id: str,
        limits: PieceLimits = DEFAULT_LIMITS,
        writer: str = "items",
        existing: beam.PCollection | None = None,
        progress_dir: str | None = None,
    ) -> None:
        super().__init__()
        self._fn = _WritePieces(item_tables, output_dir, run_id, limits, writer, progress_dir)
        self._existing = existing

    def expand(self, elements: beam.PCollection) -> beam.PCollection:
        side = (
            {} if self._existing is None else {"existing": beam.pvalue.AsSingleton(self._existing)}
        )
        return elements | "WritePieces" >> beam.ParDo(self._fn, **side)


def write_empty_pieces(specs: Sequence[TableSpec], output_dir: str, run_id: str) -> list[str]:
    """Give each table that got no row from this run an empty piece with its schema.

    So that every table a run was asked for exists, and `pyarrow.parquet.read_table` or pandas
    on its folder gives the columns even when, say, no file failed. Returns the pieces written.
    """
    written = []
    for spec in specs:
        pattern = FileSystems.join(literal(output_dir), spec.name, f"{run_id}-*.parquet")
        if not FileSystems.match([pattern])[0].metadata_list:
            path = FileSystems.join(output_dir, spec.name, f"{run_id}-empty.parquet")
            write_piece(spec.schema.empty_table(), path)()
            written.append(path)
    return written


def write_summary(output_dir: str, run_id: str, summary: dict[str, Any]) -> list[str]:
    """Write summary.json (the latest run's) and summary-<run_id>.json; returns their paths."""
    text = json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n"
    paths = [
        FileSystems.join(output_dir, "summary.json"),
        FileSystems.join(output_dir, f"summary-{run_id}.json"),
    ]
    for path in paths:
        with FileSystems.create(path) as handle:
            handle.write(text.encode("utf-8"))
    return paths

"""Beam stage: results in, Parquet tables out (one folder per table), plus the run's summary.json.

Layout under `--output_dir`::

    transcripts/<run_id>-SSSSS-of-NNNNN.parquet
    logits/<run_id>-...parquet
    hidden_states/<run_id>-...parquet
    classifications/<run_id>-...parquet
    codes/<run_id>-...parquet
    errors/<run_id>-...parquet
    summary.json            (the latest run's; also summary-<run_id>.json)

The run id (UTC start time plus a random suffix) is in every file name, so runs writing into the
same folder never overwrite each other's files, and a table is read whole by pointing pandas or
pyarrow at its folder.

Why `WriteToParquetBatched` rather than `WriteToParquet`: WriteToParquet takes one dict per row
and builds Arrow arrays from Python objects, which for logits and hidden states means one Python
float per value. Here each table's rows are buffered per bundle (up to `MAX_ROWS_PER_TABLE` rows
or `MAX_BYTES_PER_TABLE` bytes, one Parquet row group each) and turned into a `pyarrow.Table`
straight from the numpy arrays; the Beam sink then writes those tables as they are.

Frame matrices are `list<fixed_size_list<float>>` (frames x width; int16 for codes): a nested list
per row, whose inner width (vocabulary, hidden size or codevector groups) is part of the schema and
needs no offsets, so a very long item cannot overflow Arrow's 32-bit list offsets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquetBatched
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from transforms.records import CLASS_PROBABILITIES, CODES, LOGITS, ItemResult, hidden_state_key

MAX_ROWS_PER_TABLE = 1000
MAX_BYTES_PER_TABLE = 64 * 1024 * 1024

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
        # The item's reference text and its scores (transforms/score.py); null without one.
        pa.field("reference", pa.string()),
        pa.field("wer", pa.float64()),
        pa.field("cer", pa.float64()),
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
    """Rows are the dicts `transforms.ctc_decode` emits."""
    return TableSpec(
        "transcripts",
        TRANSCRIPTS_SCHEMA,
        lambda rows: pa.Table.from_pylist(rows, TRANSCRIPTS_SCHEMA),
        lambda row: 64 * (len(row["words"]) + len(row["chars"])) + 256,
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


class _ToArrowTables(beam.DoFn):
    """Buffer a bundle's elements and emit them as Arrow tables of bounded rows and bytes."""

    def __init__(self, spec: TableSpec) -> None:
        self._spec = spec

    def start_bundle(self) -> None:
        self._buffer: list[Any] = []
        self._bytes = 0

    def process(self, element: Any) -> Iterator[pa.Table]:
        self._buffer.append(element)
        self._bytes += self._spec.size_of(element)
        if len(self._buffer) >= MAX_ROWS_PER_TABLE or self._bytes >= MAX_BYTES_PER_TABLE:
            yield self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._buffer:
            yield GlobalWindows.windowed_value(self._flush())

    def _flush(self) -> pa.Table:
        table = self._spec.to_table(self._buffer)
        self._buffer, self._bytes = [], 0
        return table


def table_prefix(output_dir: str, table: str, run_id: str) -> str:
    """Path prefix of one run's files of one table: <output_dir>/<table>/<run_id>."""
    return FileSystems.join(output_dir, table, run_id)


class WriteTable(beam.PTransform):
    """Elements to Parquet files `<output_dir>/<spec.name>/<run_id>-*.parquet`."""

    def __init__(self, spec: TableSpec, output_dir: str, run_id: str) -> None:
        super().__init__()
        self._spec = spec
        self._prefix = table_prefix(output_dir, spec.name, run_id)

    def expand(self, elements: beam.PCollection) -> beam.pvalue.PDone:
        return (
            elements
            | "ToArrow" >> beam.ParDo(_ToArrowTables(self._spec))
            | "WriteParquet"
            >> WriteToParquetBatched(
                self._prefix,
                self._spec.schema,
                codec="snappy",
                use_compliant_nested_type=True,
                file_name_suffix=".parquet",
            )
        )


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

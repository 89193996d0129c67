"""Resuming a corpus run: the ids an output folder already holds, to leave out of the next run.

`--skip_existing` reads the `id` column of every Parquet piece of the run's tables (errors and the
tables it writes) under `--output_dir`. An item is done when it is in `errors/`, or in every table
the run writes; each reader drops a done item before any of its audio is decoded (a tar shard is
still streamed through, since its keys are only known by reading it). The writers get the ids of
each table too, and leave out a row the table holds already: an item whose rows reached some of
its tables but not all (a kill between two renames of one commit) is computed again, and only its
missing rows are written. The new run writes new pieces (their names hold its run id) and never
touches the old ones, so after an interrupted run and a resumed one every id is in each of its
tables exactly once.

What counts as done is what was committed: the writers commit pieces while the job runs
(`transforms.write.tables`), so a run killed at any moment is resumed from its last committed
piece. Scratch files of a piece being written when the run died are hidden (`.<name>.tmp`) and
are not read.

The ids are read inside the job rather than by the launcher, so that a folder of millions of rows
never has to fit into the job's description; each worker holds the sets (about 100 bytes an id
and table).
Metric (namespace `wav2vec2`): `items_skipped`, summary.json's `skipped_existing`; the readers
count each item they leave out through `SkipList.skipped`, which also tells the launcher's
progress display.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping, Sequence

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from wav2vec2_beam.transforms.read.ids import literal
from wav2vec2_beam.transforms.write.progress import METRICS_NAMESPACE, record_progress

_LOG = logging.getLogger(__name__)


def skipped_counter() -> Metrics.DelegatingCounter:
    """The counter of the items a resumed run leaves out."""
    return Metrics.counter(METRICS_NAMESPACE, "items_skipped")


class SkipList(Collection[str]):
    """The ids a resumed run leaves out, and the tally of those the readers left out."""

    def __init__(self, ids: Collection[str] = frozenset(), progress_dir: str | None = None):
        self._ids = ids
        self._progress_dir = progress_dir

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def skipped(self) -> None:
        """Count one item left out (summary.json and the live progress)."""
        skipped_counter().inc()
        record_progress(self._progress_dir, items_skipped=1)


def table_patterns(output_dir: str, tables: Sequence[str]) -> list[str]:
    """The Parquet pieces of `tables` under `output_dir` (every run's)."""
    return [FileSystems.join(literal(output_dir), table, "*.parquet") for table in tables]


def read_ids(path: str) -> Iterator[tuple[str, str]]:
    """(table, id) of each row of one piece; only the `id` column is loaded.

    A file there that is not one of our pieces (empty, not Parquet, no `id` column: something
    a user or another tool left) is passed over with a warning naming it, so that it cannot stop
    every resume.
    """
    table = FileSystems.split(FileSystems.split(path)[0])[1]
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            ids = pq.ParquetFile(handle).read(columns=["id"]).column("id").to_pylist()
    except Exception as error:  # a stray file; our pieces always read
        _LOG.warning("skipping %s in the output folder: not a piece of a run (%s)", path, error)
        return
    for item_id in ids:
        yield table, item_id


def done_ids(existing: Mapping[str, frozenset[str]], item_tables: Sequence[str]) -> frozenset[str]:
    """The ids to leave out: in `errors`, or in every one of `item_tables`."""
    complete = frozenset.intersection(*(existing.get(t, frozenset()) for t in item_tables))
    return existing.get("errors", frozenset()) | complete


class _IdsByTable(beam.CombineFn):
    """(table, id) pairs to {table: frozenset of ids}."""

    def create_accumulator(self) -> dict[str, set[str]]:
        return {}

    def add_input(self, accumulator: dict[str, set[str]], pair: tuple[str, str]) -> dict:
        accumulator.setdefault(pair[0], set()).add(pair[1])
        return accumulator

    def merge_accumulators(self, accumulators: Iterator[dict[str, set[str]]]) -> dict:
        merged: dict[str, set[str]] = {}
        for accumulator in accumulators:
            for table, ids in accumulator.items():
                merged.setdefault(table, set()).update(ids)
        return merged

    def extract_output(self, accumulator: dict[str, set[str]]) -> dict[str, frozenset[str]]:
        return {table: frozenset(ids) for table, ids in accumulator.items()}


class ReadExistingIds(beam.PTransform):
    """A one-element PCollection: {table: frozenset of the ids its pieces under `output_dir` hold}.

    A table with no pieces is missing from the mapping; use it as `beam.pvalue.AsSingleton`.
    """

    def __init__(self, output_dir: str, tables: Sequence[str]) -> None:
        super().__init__()
        self._patterns = table_patterns(output_dir, tables)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "Tables" >> beam.Create(self._patterns)
            | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
            | "ReadIds" >> beam.FlatMap(lambda metadata: read_ids(metadata.path))
            | "ByTable" >> beam.CombineGlobally(_IdsByTable())
        )

"""Resuming a corpus run: the ids an output folder already holds, to leave out of the next run.

`--skip_existing` reads the `id` column of every Parquet file of the run's tables (errors and the
tables it writes) under `--output_dir` and hands the set to the readers as a side input; each
reader drops an item whose id is in it before any of its audio is decoded (a tar shard is still
streamed through, since its keys are only known by reading it). The new run writes new files
(their names hold its run id) and never touches the old ones, so after an interrupted run and a
resumed one every id is in the folder exactly once.

What counts as done is what a finished run wrote: Beam writes a run's Parquet files when the run
ends, so a run killed part-way leaves no rows behind, and resuming it starts that run's work over.
Running a huge corpus in slices (`shard-{000000..000099}.tar`, then the next) keeps each finished
slice, and a final run over the whole corpus with `--skip_existing` does what is left.

The ids are read inside the job rather than by the launcher, so that a folder of millions of rows
never has to fit into the job's description; each worker holds the set (about 100 bytes an id).
Metric (namespace `wav2vec2`): `items_skipped`, summary.json's `skipped_existing`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.progress import METRICS_NAMESPACE


def skipped_counter() -> Metrics.DelegatingCounter:
    """The counter every reader increments for an item it leaves out."""
    return Metrics.counter(METRICS_NAMESPACE, "items_skipped")


def table_patterns(output_dir: str, tables: Sequence[str]) -> list[str]:
    """The Parquet files of `tables` under `output_dir` (every run's)."""
    return [FileSystems.join(output_dir, table, "*.parquet") for table in tables]


def read_ids(path: str) -> Iterator[str]:
    """The `id` column of one Parquet file, read alone (the other columns are never loaded)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        yield from pq.ParquetFile(handle).read(columns=["id"]).column("id").to_pylist()


class ReadExistingIds(beam.PTransform):
    """A one-element PCollection: the set of ids in `tables` under `output_dir`.

    An empty or missing folder gives an empty set; use it as `beam.pvalue.AsSingleton`.
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
            | "ToSet" >> beam.combiners.ToSet()
        )

"""Beam stage: `--input` patterns in, every item as a work unit (or its one `ErrorRecord`) out.

The corpus may be loose audio files, WebDataset tar shards, Parquet audio datasets or JSONL
manifests, mixed freely; after this stage they are all the same `AudioItem`s, not yet decoded, so
the rest of the pipeline does not know where audio came from. ::

    patterns -> ExpandBraces -> DistinctPatterns -> MatchInputs -> DistinctFiles -> ReadFiles:
        not a regular file (a FIFO, a directory, a device) -> one error row
        audio      -> one path item
        webdataset -> transforms/read/webdataset.py
        parquet    -> transforms/read/parquet_audio.py
        manifest   -> transforms/read/manifest.py
    -> items (-> Reshuffle -> DecodeItems, in pipeline/graph.py)

Items are what a cluster spreads over its workers: small (a path, or one utterance's encoded
bytes), so that the one shuffle of the job moves these rather than audio samples or model outputs.

Resume: given the ids already in the output folder (`transforms.read.resume.ReadExistingIds`), every
reader leaves those items out before decoding them, and the error rows of those ids (a damaged
shard's tail, a pattern that still matches nothing) are dropped too, so that a resumed run adds
rows only for ids the folder does not hold yet.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

import apache_beam as beam

from wav2vec2_beam.transforms.read.decode_items import AudioItem, item_error
from wav2vec2_beam.transforms.read.ids import file_id, path_text, special_file
from wav2vec2_beam.transforms.read.inputs import MatchInputs, expand_braces
from wav2vec2_beam.transforms.read.manifest import read_manifest
from wav2vec2_beam.transforms.read.parquet_audio import ParquetColumns, read_parquet_file
from wav2vec2_beam.transforms.read.resume import SkipList
from wav2vec2_beam.transforms.read.webdataset import read_shard
from wav2vec2_beam.transforms.records import ERRORS_TAG, ErrorRecord

#: Main output tag of `ReadCorpus`.
ITEMS_TAG = "items"


@dataclass(frozen=True)
class CorpusOptions:
    """How to read the inputs: `--input_format` and the column/field flags."""

    input_format: str = "auto"
    #: Parquet: the audio column (default `audio`).
    audio_column: str | None = None
    #: Parquet column, manifest or tar-JSON field of the reference text (default: the first of
    #: `decode_items.TEXT_FIELDS` present).
    text_column: str | None = None
    #: Parquet column or manifest field of the item id (default `id` when present).
    id_column: str | None = None


class _ReadFiles(beam.DoFn):
    """Each matched file to its items (and error rows), by its kind.

    One DoFn for every kind, rather than a reader per kind and a Flatten of their items: the local
    runner materializes a Flatten whole, which would hold every item of the corpus (the encoded
    audio of every tar member or Parquet cell) in memory before the first is decoded. A loose
    audio file is one path item, decoded by the same `DecodeItems` as container items.
    The ids to leave out come as the side input `skip` (see `transforms.read.resume`).
    """

    def __init__(self, corpus: CorpusOptions, progress_dir: str | None = None) -> None:
        self._corpus = corpus
        self._progress_dir = progress_dir

    def process(
        self, matched: tuple[str, bytes, int], skip: Collection[str] = frozenset()
    ) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
        skip = SkipList(skip, self._progress_dir)
        kind, path = matched[0], path_text(matched[1])
        corpus = self._corpus
        special = special_file(path)
        if special is not None:  # reading a FIFO would wait forever
            if file_id(path) in skip:
                return
            message = f"not_a_regular_file: {file_id(path)} is {special}, not a regular file"
            yield item_error(file_id(path), file_id(path), "read", message)
        elif kind == "webdataset":
            yield from read_shard(path, skip, corpus.text_column)
        elif kind == "parquet":
            columns = ParquetColumns(corpus.audio_column, corpus.text_column, corpus.id_column)
            yield from read_parquet_file(path, skip, columns)
        elif kind == "manifest":
            yield from read_manifest(path, skip, corpus.id_column, corpus.text_column)
        elif file_id(path) in skip:
            skip.skipped()
        else:
            yield AudioItem(id=file_id(path), source=file_id(path), path=path)


class _DropDoneErrors(beam.DoFn):
    """Error rows of ids the output folder holds already (they would be there twice)."""

    def __init__(self, progress_dir: str | None) -> None:
        self._progress_dir = progress_dir

    def process(
        self, error: ErrorRecord, skip: Collection[str] = frozenset()
    ) -> Iterator[ErrorRecord]:
        skip = SkipList(skip, self._progress_dir)
        if error.id in skip:
            skip.skipped()
            return
        yield error


class ReadCorpus(beam.PTransform):
    """Patterns to `{ITEMS_TAG: AudioItem, ERRORS_TAG: ErrorRecord}` (see module doc).

    `done`, when given, is a one-element PCollection holding the ids to leave out (resume);
    `progress_dir` is the launcher's progress folder (local runs), where skipped items are told.
    """

    def __init__(
        self,
        corpus: CorpusOptions,
        done: beam.PCollection | None = None,
        progress_dir: str | None = None,
    ) -> None:
        super().__init__()
        self._corpus = corpus
        self._match = MatchInputs(corpus.input_format)
        self._done = done
        self._progress_dir = progress_dir

    def expand(self, patterns: beam.PCollection) -> dict[str, beam.PCollection]:
        side = {} if self._done is None else {"skip": beam.pvalue.AsSingleton(self._done)}
        matched = (
            patterns
            | "ExpandBraces" >> beam.FlatMap(expand_braces)
            | "DistinctPatterns" >> beam.Distinct()  # a pattern given twice reports once
            | "MatchInputs" >> beam.ParDo(self._match).with_outputs(ERRORS_TAG, main="files")
        )
        read = (
            matched.files
            | "DistinctFiles" >> beam.Distinct()
            | "ReadFiles"
            >> beam.ParDo(_ReadFiles(self._corpus, self._progress_dir), **side).with_outputs(
                ERRORS_TAG, main="items"
            )
        )
        errors = (
            [matched[ERRORS_TAG], read[ERRORS_TAG]]
            | "Errors" >> beam.Flatten()
            | "DropDoneErrors" >> beam.ParDo(_DropDoneErrors(self._progress_dir), **side)
        )
        return {ITEMS_TAG: read.items, ERRORS_TAG: errors}

"""Beam stage: `--input` patterns in, every item's `AudioChunk`s (or its one `ErrorRecord`) out.

The corpus may be loose audio files, WebDataset tar shards, Parquet audio datasets or JSONL
manifests, mixed freely; after this stage they are all the same windows, so the rest of the
pipeline does not know where audio came from. ::

    patterns -> ExpandBraces -> MatchInputs -> DistinctFiles -> by kind:
        audio      -> SkipDone        \\
        webdataset -> ReadWebDataset  |
        parquet    -> ReadParquet      > AudioItems -> DecodeItems (transforms/decode_items.py)
        manifest   -> ReadManifests   /

Every item keeps the contract of `transforms/read_audio.py`: its windows with exactly one
`is_last`, or exactly one `ErrorRecord` and no `is_last` window.

Resume: given the ids already in the output folder (`transforms.resume.ReadExistingIds`), every
reader leaves those items out before decoding them, and the error rows of those ids (a damaged
shard's tail, a pattern that still matches nothing) are dropped too, so that a resumed run adds
rows only for ids the folder does not hold yet.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam

from transforms.chunk_audio import DEFAULT_ALIGN_TO, chunk_params
from transforms.corpus_inputs import KINDS, MatchInputs, expand_braces
from transforms.decode_audio import DEFAULT_BLOCK_S
from transforms.decode_items import AudioItem, DecodeItems
from transforms.read_audio import CHUNKS_TAG
from transforms.read_manifest import ReadManifestFile
from transforms.read_parquet_audio import ParquetColumns, ReadParquetAudioFile
from transforms.read_webdataset import ReadWebDatasetShard
from transforms.records import ERRORS_TAG, ErrorRecord
from transforms.resume import skipped_counter


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


class _SkipDoneFiles(beam.DoFn):
    """Matched audio files not done yet, as path `AudioItem`s for `DecodeItems`.

    Loose files are decoded by the same DoFn as container items, so that one stage produces
    every window: a Flatten of two window streams would make the local runner hold all of a
    file's windows at once (memory no longer flat in file length).
    """

    def process(
        self, matched: tuple[str, str, int], skip: Collection[str] = frozenset()
    ) -> Iterator[AudioItem]:
        _, path, _ = matched
        if path in skip:
            skipped_counter().inc()
            return
        yield AudioItem(id=path, source=path, path=path)


class _DropDoneErrors(beam.DoFn):
    """Error rows of ids the output folder holds already (they would be there twice)."""

    def process(
        self, error: ErrorRecord, skip: Collection[str] = frozenset()
    ) -> Iterator[ErrorRecord]:
        if error.id in skip:
            skipped_counter().inc()
            return
        yield error


class ReadCorpus(beam.PTransform):
    """Patterns to `{CHUNKS_TAG: AudioChunk, ERRORS_TAG: ErrorRecord}` (see module doc).

    `chunk_length_s`, `stride_length_s`, `align_to` and `block_s` are `ReadAudio`'s. `done`, when
    given, is a one-element PCollection holding the ids to leave out (resume).
    """

    def __init__(
        self,
        corpus: CorpusOptions,
        chunk_length_s: float | None,
        stride_length_s: float | Sequence[float] | None = None,
        align_to: int = DEFAULT_ALIGN_TO,
        block_s: float = DEFAULT_BLOCK_S,
        done: beam.PCollection | None = None,
    ) -> None:
        super().__init__()
        self._corpus = corpus
        self._decode = DecodeItems(chunk_params(chunk_length_s, stride_length_s, align_to), block_s)
        self._match = MatchInputs(corpus.input_format)
        self._done = done

    def expand(self, patterns: beam.PCollection) -> dict[str, beam.PCollection]:
        corpus = self._corpus
        side = {} if self._done is None else {"skip": beam.pvalue.AsSingleton(self._done)}
        matched = (
            patterns
            | "ExpandBraces" >> beam.FlatMap(expand_braces)
            | "MatchInputs" >> beam.ParDo(self._match).with_outputs(ERRORS_TAG, main="files")
        )
        by_kind = (
            matched.files
            | "DistinctFiles" >> beam.Distinct()
            | "ByKind" >> beam.Partition(lambda file, _: KINDS.index(file[0]), len(KINDS))
        )
        files = dict(zip(KINDS, by_kind, strict=True))
        audio_items = files["audio"] | "SkipDoneFiles" >> beam.ParDo(_SkipDoneFiles(), **side)
        readers = {
            "webdataset": ("ReadWebDataset", ReadWebDatasetShard(corpus.text_column)),
            "parquet": (
                "ReadParquet",
                ReadParquetAudioFile(
                    ParquetColumns(corpus.audio_column, corpus.text_column, corpus.id_column)
                ),
            ),
            "manifest": ("ReadManifests", ReadManifestFile(corpus.id_column, corpus.text_column)),
        }
        read = {
            kind: files[kind]
            | f"{name}Paths" >> beam.Map(lambda file: file[1])
            | name >> beam.ParDo(fn, **side).with_outputs(ERRORS_TAG, main="items")
            for kind, (name, fn) in readers.items()
        }
        decoded = [audio_items] + [out.items for out in read.values()] | "Items" >> beam.Flatten()
        decoded = decoded | "DecodeItems" >> self._decode
        errors = (
            [matched[ERRORS_TAG], decoded[ERRORS_TAG]] + [out[ERRORS_TAG] for out in read.values()]
            | "Errors" >> beam.Flatten()
            | "DropDoneErrors" >> beam.ParDo(_DropDoneErrors(), **side)
        )
        return {CHUNKS_TAG: decoded[CHUNKS_TAG], ERRORS_TAG: errors}

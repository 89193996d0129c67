"""Beam stage: file patterns in, streamed 16 kHz `AudioChunk` windows and `ErrorRecord`s out.

`ReadAudio` matches each pattern (or takes `fileio.ReadableFile`/`FileMetadata` elements as they
are), removes duplicate paths, then decodes and chunks each file in a streaming DoFn
(`transforms.decode_audio` + `transforms.chunk_audio`), so a worker holds about one window plus one
decode block of a file, however long the file is. An item's `id` and `source` are the file's
path/URI as matched.

Where every input ends (the contract later stages rely on)
----------------------------------------------------------
* A pattern that matches nothing, or cannot be matched, gives one `ErrorRecord(stage="read")`
  whose `id` and `source` are the pattern, so an empty glob never passes for an empty corpus.
* A file that decodes gives its windows, indices 0..k, exactly one of them (index k) with
  `is_last=True` and `total_samples` set, and no error.
* A file that fails gives exactly one `ErrorRecord` (stage "read": the bytes could not be read;
  "decode": they are not usable audio) and never a chunk with `is_last=True`. Failures found up
  front (missing, empty, not audio, truncated WAV, too short per header...) come before any chunk;
  failures only found while streaming (I/O error, corrupt or truncated FLAC/MP3, NaN samples, too
  short after decoding) may come after some of the file's first windows were emitted.

So the main output may hold a prefix of windows of a failed file, and consumers that group windows
by `id` (the stitcher) must treat a group as complete only if it holds an `is_last` window and
every index up to it; the ids of incomplete groups are always in the errors output. The guarantee
that a failed file has no `is_last` window holds because the chunker can only cut the last window
once the decoder's iterator has finished, after all of its checks, and this DoFn holds that last
window back until the file is closed without error. Beam discards the outputs of a failed bundle
before retrying it, so a retry cannot duplicate windows.

Why this design: dropping the prefix here would need either all of a file's windows in memory
(not streamed), a validating first pass (decodes everything twice, and the file can still change
between passes), or a group-by-id of all audio before inference (a full shuffle of the corpus);
the stitcher groups windows by id anyway, so the completeness check costs nothing there.

Duplicate paths (two patterns matching one file) are read once: ids must be unique for the
stitcher's grouping. The distinct step is also a shuffle, which spreads the decoding of a large
glob across workers, like `fileio.MatchAll`'s reshuffle. Files are opened as stored
(`CompressionTypes.UNCOMPRESSED`): audio containers are never .gz, and decompressing streams are
not seekable, which libsndfile needs.

Metrics (namespace `read_audio`): `files_read` (files fully decoded), `audio_ms_decoded` (their
16 kHz audio, in milliseconds because Beam counters are integers), `decode_failures` (files that
ended in an error), `unmatched_patterns`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.io.fileio import ReadableFile
from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.chunk_audio import DEFAULT_ALIGN_TO, ChunkParams, chunk_audio, chunk_params
from transforms.decode_audio import DEFAULT_BLOCK_S, AudioDecodeError, open_audio
from transforms.records import ERRORS_TAG, TARGET_SAMPLE_RATE, AudioChunk, ErrorRecord

#: Key of the chunks in the dict `ReadAudio` returns (the errors are under `ERRORS_TAG`).
CHUNKS_TAG = "chunks"

METRICS_NAMESPACE = "read_audio"

_LOG = logging.getLogger(__name__)


class _MatchFiles(beam.DoFn):
    """Turn each input into the paths it names; a pattern naming nothing becomes an error."""

    def __init__(self) -> None:
        self._unmatched = Metrics.counter(METRICS_NAMESPACE, "unmatched_patterns")

    def process(self, element: str | ReadableFile | FileMetadata) -> Iterator[object]:
        if isinstance(element, ReadableFile):
            yield element.metadata.path
            return
        if isinstance(element, FileMetadata):
            yield element.path
            return
        if not isinstance(element, str):
            raise TypeError(f"ReadAudio takes patterns, ReadableFile or FileMetadata: {element!r}")
        try:
            matched = FileSystems.match([element])[0].metadata_list
        except Exception as error:  # any filesystem's failure to match is this pattern's error
            self._unmatched.inc()
            yield _error(element, "read", f"match_failed: {type(error).__name__}: {error}")
            return
        if not matched:
            self._unmatched.inc()
            yield _error(element, "read", f"no_match: no file matches {element!r}")
            return
        for metadata in matched:
            yield metadata.path


class _DecodeAndChunk(beam.DoFn):
    """Decode one file as a stream and emit its windows, or one `ErrorRecord` (see module doc)."""

    def __init__(self, params: ChunkParams | None, block_s: float) -> None:
        self._params = params
        self._block_s = block_s
        self._files_read = Metrics.counter(METRICS_NAMESPACE, "files_read")
        self._audio_ms = Metrics.counter(METRICS_NAMESPACE, "audio_ms_decoded")
        self._failures = Metrics.counter(METRICS_NAMESPACE, "decode_failures")

    def process(self, path: str) -> Iterator[object]:
        last: AudioChunk | None = None
        try:
            with (
                FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw,
                open_audio(raw, self._block_s) as stream,
            ):
                info = stream.info
                metadata = {
                    "source_sample_rate": info.sample_rate,
                    "source_channels": info.channels,
                    "source_format": f"{info.format}/{info.subtype}",
                }
                for chunk in chunk_audio(stream.blocks(), path, path, self._params, metadata):
                    if chunk.is_last:
                        last = chunk  # held back until the file has closed cleanly
                    else:
                        yield chunk
                num_samples = stream.num_samples
        except AudioDecodeError as error:
            yield self._fail(path, error.stage, str(error))
            return
        except OSError as error:  # opening failed: missing, a directory, no permission...
            yield self._fail(path, "read", f"unreadable: {type(error).__name__}: {error}")
            return
        except Exception as error:  # one odd file must not fail the whole corpus's job
            _LOG.exception("unexpected failure decoding %s", path)
            yield self._fail(path, "decode", f"unexpected: {type(error).__name__}: {error}")
            return
        yield last
        self._files_read.inc()
        self._audio_ms.inc(round(1000 * num_samples / TARGET_SAMPLE_RATE))

    def _fail(self, path: str, stage: str, message: str) -> beam.pvalue.TaggedOutput:
        self._failures.inc()
        return _error(path, stage, message)


def _error(item: str, stage: str, message: str) -> beam.pvalue.TaggedOutput:
    """An `ErrorRecord` for one input on the errors output; read errors' id is their source."""
    return beam.pvalue.TaggedOutput(
        ERRORS_TAG, ErrorRecord(id=item, source=item, stage=stage, error=" ".join(message.split()))
    )


class ReadAudio(beam.PTransform):
    """Patterns (or matched files) to `{CHUNKS_TAG: AudioChunk, ERRORS_TAG: ErrorRecord}`.

    `chunk_length_s`, `stride_length_s` and `align_to` are those of the reference ASR pipeline
    (see `transforms.chunk_audio.chunk_params`); they are checked here, at construction, so a bad
    setting fails before the job starts. `block_s` is the decode block in seconds of source audio.
    """

    def __init__(
        self,
        chunk_length_s: float | None,
        stride_length_s: float | Sequence[float] | None = None,
        align_to: int = DEFAULT_ALIGN_TO,
        block_s: float = DEFAULT_BLOCK_S,
    ) -> None:
        super().__init__()
        self._params = chunk_params(chunk_length_s, stride_length_s, align_to)
        self._block_s = block_s

    def expand(self, inputs: beam.PCollection) -> dict[str, beam.PCollection]:
        matched = inputs | "MatchFiles" >> beam.ParDo(_MatchFiles()).with_outputs(
            ERRORS_TAG, main="paths"
        )
        paths = matched.paths | "DistinctPaths" >> beam.Distinct()
        decoded = paths | "DecodeAndChunk" >> beam.ParDo(
            _DecodeAndChunk(self._params, self._block_s)
        ).with_outputs(ERRORS_TAG, main=CHUNKS_TAG)
        errors = (matched[ERRORS_TAG], decoded[ERRORS_TAG]) | "Errors" >> beam.Flatten()
        return {CHUNKS_TAG: decoded[CHUNKS_TAG], ERRORS_TAG: errors}

"""Beam stage: `AudioItem`s (utterances found inside corpus containers) in, `AudioChunk`s out.

Tar shards, Parquet files and manifests hold many utterances each; their readers
(`transforms.read.webdataset`, `read_parquet_audio`, `read_manifest`) turn each utterance into an
`AudioItem`: its id, where it came from, its encoded bytes or the path of its file (with an
optional span), and its reference text; a loose file is one path item. This stage decodes and
chunks every item as a stream (`open_audio` + `chunk_audio`). An item gives its windows, the last
one marked `is_last` and held back until the decoder has finished cleanly; or, when it fails, the
windows it had given so far and then its failure marker (`records.failure_marker`: the
`ErrorRecord`, numbered after those windows and marked `is_last`). Every item therefore ends in
exactly one `is_last` chunk, and the stitcher downstream learns of a failure from the same stream
that carries the windows it must drop. Each chunk is stamped with its bundle's name and its item's
number in the bundle (`AudioChunk.bundle`, `serial`). An item's reference text travels in the
chunks' metadata under `REFERENCE` to the transcripts table, where it is scored
(`transforms.write.score`).

Why the readers emit items rather than chunks: the decode-and-account logic then lives once, the
readers stay about their container layout, and the resume filter (`--skip_existing`) drops an
item before any of its audio is decoded.

Metrics (namespace `read_corpus`): `items_read` (items fully decoded), `audio_ms_decoded`,
`decode_failures`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from wav2vec2_beam.transforms.infer.chunk import ChunkParams, chunk_audio
from wav2vec2_beam.transforms.read.decode_audio import (
    DEFAULT_BLOCK_S,
    AudioDecodeError,
    Span,
    open_audio,
)
from wav2vec2_beam.transforms.read.ids import canonical_path, escape, special_file
from wav2vec2_beam.transforms.read.voice_activity import segment_audio
from wav2vec2_beam.transforms.records import (
    ERRORS_TAG,
    TARGET_SAMPLE_RATE,
    AudioChunk,
    ErrorRecord,
    failure_marker,
)

METRICS_NAMESPACE = "read_corpus"

#: Key of an item's reference text in `AudioChunk.metadata` / `ItemResult.metadata`.
REFERENCE = "reference"

#: Fields (JSON keys, Parquet columns) searched for reference text when none is named, in order:
#: the names Hugging Face datasets, NeMo and WebDataset corpora use.
TEXT_FIELDS = ("text", "sentence", "transcription", "transcript")

#: What follows `#` in the id of a container's error row for what could not be attributed to an
#: item: `<container uri>#<unread>` (a tar shard's lost tail, a file that cannot be opened).
UNREAD = "<unread>"

_LOG = logging.getLogger(__name__)


@dataclass
class AudioItem:
    """One utterance of a container corpus, not yet decoded.

    Exactly one of `data` (the encoded file: a tar member, a Parquet cell) and `path` (a file to
    open, local or remote) is set.
    """

    id: str
    #: Where the audio is, for the tables' `source` column.
    source: str
    data: bytes | None = None
    path: str | None = None
    #: Only this part of the file (a manifest's offset/duration); None: all of it.
    span: Span | None = None
    reference: str | None = None
    #: Where exactly the item was found, unique in the run even when ids repeat: the file, or
    #: `<container uri>#<member, row or line>`. Empty: the item's id stands for it.
    origin: str = ""

    def __post_init__(self) -> None:
        """The strings that reach the tables are writable text (`ids.escape`); `path` stays
        the name to open."""
        self.id, self.source, self.origin = (
            escape(self.id),
            escape(self.source),
            escape(self.origin),
        )
        if self.reference is not None:
            self.reference = escape(self.reference)


def reference_text(record: Mapping[str, Any], field: str | None) -> str | None:
    """The reference text of a JSON object or row: `field`, else the first of `TEXT_FIELDS`.

    None when there is none; a non-string value is an error rather than a silently wrong
    reference, so it raises ValueError.
    """
    names = (field,) if field else TEXT_FIELDS
    for name in names:
        value = record.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"reference field {name!r} holds {type(value).__name__}, not text")
        return value
    return None


def resolve_path(container: str, path: str) -> str:
    """`path` as written in a container (Parquet file, manifest): relative to its folder, in its
    one spelling (`ids.canonical_path`)."""
    if "://" in path or path.startswith("/"):
        return canonical_path(path)
    folder, _ = FileSystems.split(container)
    return canonical_path(FileSystems.join(folder, path))


def item_error(item_id: str, source: str, stage: str, message: str) -> beam.pvalue.TaggedOutput:
    """An `ErrorRecord` on the errors output, its message on one line."""
    return beam.pvalue.TaggedOutput(
        ERRORS_TAG, ErrorRecord(item_id, source, stage, " ".join(message.split()))
    )


class NotARegularFile(OSError):
    """An item's path names a FIFO, a directory or a device (`ids.special_file`)."""


def _open_raw(item: AudioItem) -> contextlib.AbstractContextManager[BinaryIO]:
    if item.data is not None:
        return contextlib.nullcontext(io.BytesIO(item.data))
    if item.path is None:
        raise ValueError(f"item {item.id!r} has neither bytes nor a path")
    kind = special_file(item.path)
    if kind is not None:
        raise NotARegularFile(f"{escape(item.path)} is {kind}, not a regular file")
    return FileSystems.open(item.path, compression_type=CompressionTypes.UNCOMPRESSED)


def bundle_name(item: AudioItem) -> str:
    """The name of a bundle whose first item is `item` (see `AudioChunk.bundle`)."""
    origin = item.origin or f"{item.id}\0{item.source}"
    return hashlib.sha1(origin.encode("utf-8")).hexdigest()[:12]


class _DecodeItem(beam.DoFn):
    """Decode one item as a stream and emit its windows, ended by its last window or a marker."""

    def __init__(
        self, params: ChunkParams | None, block_s: float, max_segment_s: float | None = None
    ) -> None:
        self._params = params
        self._block_s = block_s
        self._max_segment_s = max_segment_s
        self._items_read = Metrics.counter(METRICS_NAMESPACE, "items_read")
        self._audio_ms = Metrics.counter(METRICS_NAMESPACE, "audio_ms_decoded")
        self._failures = Metrics.counter(METRICS_NAMESPACE, "decode_failures")

    def start_bundle(self) -> None:
        self._bundle: str | None = None
        self._serial = 0

    def process(self, item: AudioItem) -> Iterator[AudioChunk]:
        if self._bundle is None:
            self._bundle = bundle_name(item)
        self._serial += 1
        for chunk in self._chunks(item):
            chunk.bundle, chunk.serial = self._bundle, self._serial
            yield chunk

    def _chunks(self, item: AudioItem) -> Iterator[AudioChunk]:
        try:
            opened = _open_raw(item)
        except NotARegularFile as error:
            yield self._fail(item, 0, "read", f"not_a_regular_file: {error}")
            return
        except Exception as error:  # a missing file, a permission, a remote store's refusal
            yield self._fail(item, 0, "read", f"unreadable: {type(error).__name__}: {error}")
            return
        last: AudioChunk | None = None
        emitted = 0
        try:
            with opened as raw, open_audio(raw, self._block_s, item.span) as stream:
                info = stream.info
                metadata = {
                    "source_sample_rate": info.sample_rate,
                    "source_channels": info.channels,
                    "source_format": f"{info.format}/{info.subtype}",
                    REFERENCE: item.reference,
                }
                chunks = (
                    chunk_audio(stream.blocks(), item.id, item.source, self._params, metadata)
                    if self._max_segment_s is None
                    else segment_audio(
                        stream.blocks(), item.id, item.source, self._max_segment_s, metadata
                    )
                )
                for chunk in chunks:
                    if chunk.is_last:
                        last = chunk  # held back until the item has closed cleanly
                    else:
                        emitted += 1
                        yield chunk
                num_samples = stream.num_samples
        except AudioDecodeError as error:
            yield self._fail(item, emitted, error.stage, str(error))
            return
        except OSError as error:
            yield self._fail(item, emitted, "read", f"unreadable: {type(error).__name__}: {error}")
            return
        except Exception as error:  # one odd item must not fail the whole corpus's job
            _LOG.exception("unexpected failure decoding %s", item.id)
            yield self._fail(
                item, emitted, "decode", f"unexpected: {type(error).__name__}: {error}"
            )
            return
        yield last
        self._items_read.inc()
        self._audio_ms.inc(round(1000 * num_samples / TARGET_SAMPLE_RATE))

    def _fail(self, item: AudioItem, emitted: int, stage: str, message: str) -> AudioChunk:
        self._failures.inc()
        error = ErrorRecord(item.id, item.source, stage, " ".join(message.split()))
        return failure_marker(error, emitted)


class DecodeItems(beam.PTransform):
    """`AudioItem`s to `AudioChunk`s: each item's windows, or its failure marker (module doc).

    `max_segment_s` set: voice segments of at most that length instead of `params`' windows
    (`--segment vad`, `transforms.read.voice_activity`)."""

    def __init__(
        self,
        params: ChunkParams | None,
        block_s: float = DEFAULT_BLOCK_S,
        max_segment_s: float | None = None,
    ) -> None:
        super().__init__()
        self._fn = _DecodeItem(params, block_s, max_segment_s)

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        return items | "Decode" >> beam.ParDo(self._fn)

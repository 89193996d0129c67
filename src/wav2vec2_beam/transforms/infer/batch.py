"""Beam stage: `AudioChunk`s in, lists of similar-length chunks (one forward pass each) out.

Why length buckets: a batch is padded to its longest item, so mixing a 2 s clip with a 30 s window
wastes 28 s of compute. The model runner (`models.inference.Wav2Vec2Runner`) pads every batch to
one of a ladder of lengths, each 6.25% longer than the last, so that XLA or tf.function compiles a
handful of programs per run. Batching by the *same* ladder makes every batch hold items of one
rung only: padding in time is below 6.25% of the batch's length, and each batch is exactly one
compiled shape.

Why per bundle: after the graph's Reshuffle, a worker's bundle holds a random sample of the
corpus. Buffering per rung within the bundle and emitting a batch as soon as a rung is full needs
no further shuffle and no global sort, spreads inference over every worker the Reshuffle feeds,
and holds at most one unfinished batch per rung in memory. What is left at the end of the bundle
is emitted then.

Batch sizes are powers of two, because the runner pads the batch dimension to the next power of
two (again, to bound the number of compiled programs): a batch of 12 would cost the compute and
memory of 16. A rung's capacity is the largest power of two within `--batch_size` items and within
the audio-seconds budget (counted at the rung's padded length), and a bundle's leftovers are split
into descending powers of two (13 -> 8 + 4 + 1), so no batch carries padding rows.

An item's failure marker (`records.failure_marker`) is no audio: it goes on at once, alone, so
that the stitcher can drop the item's other windows as soon as they come.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from wav2vec2_beam.models.batching import bucket_for, bucket_ladder
from wav2vec2_beam.transforms.records import TARGET_SAMPLE_RATE, AudioChunk

#: The ladder always reaches at least this many seconds, so unchunked short files share rungs.
LADDER_MIN_S = 60.0


#: The rungs' growth with `--segment vad`. Voice segments have every length up to the bound, so a
#: long file's segments reach most rungs, and TensorFlow's oneDNN kernels keep primitives (and
#: their scratch memory) for each (rows, length) shape a batch takes: on a 30-minute file the
#: default ladder took 95 shapes, and 1.33x the peak memory of a 1-minute file with 40 s batches.
#: Rungs 25% apart (16 up to 30 s) took 1.17x, at the cost of padding (up to 25% of a batch).
VOICE_SEGMENT_GROWTH = 1.25


def ladder_for(
    chunk_length_s: float, align_to: int, voice_segments: bool = False
) -> tuple[int, ...]:
    """The bucket ladder for a run: up to its longest window, multiples of the frame size
    (`VOICE_SEGMENT_GROWTH` apart for voice segments, else `bucket_ladder`'s own steps).

    An unchunked item longer than the ladder is padded to its own length (models/batching.py).
    """
    longest = max(LADDER_MIN_S, chunk_length_s) * TARGET_SAMPLE_RATE
    steps = {"growth": VOICE_SEGMENT_GROWTH} if voice_segments else {}
    return tuple(bucket_ladder(math.ceil(longest), multiple=align_to, **steps))


def batch_capacity(bucket_length: int, batch_size: int, max_batch_samples: int) -> int:
    """Most items per batch for one rung: a power of two within both limits, and at least 1.

    An item longer than the whole budget still runs, alone.
    """
    limit = min(batch_size, max_batch_samples // bucket_length)
    return 1 << (max(limit, 1).bit_length() - 1)


def power_of_two_parts(count: int) -> list[int]:
    """`count` as descending powers of two (its binary digits): 13 -> [8, 4, 1]."""
    return [1 << bit for bit in reversed(range(count.bit_length())) if count >> bit & 1]


class _BatchByLength(beam.DoFn):
    """Buffer chunks per ladder rung within a bundle; emit a rung's batch when it is full."""

    def __init__(self, ladder: Sequence[int], batch_size: int, max_batch_samples: int) -> None:
        self._ladder = tuple(ladder)
        self._batch_size = batch_size
        self._max_batch_samples = max_batch_samples

    def start_bundle(self) -> None:
        self._pending: dict[int, list[AudioChunk]] = {}

    def process(self, chunk: AudioChunk) -> Iterator[list[AudioChunk]]:
        if not chunk.needs_model:  # a failure marker or no speech: nothing to compute
            yield [chunk]
            return
        bucket = bucket_for(len(chunk.samples), self._ladder)
        pending = self._pending.setdefault(bucket, [])
        pending.append(chunk)
        if len(pending) >= batch_capacity(bucket, self._batch_size, self._max_batch_samples):
            del self._pending[bucket]
            yield pending

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for pending in self._pending.values():
            start = 0
            for size in power_of_two_parts(len(pending)):
                yield GlobalWindows.windowed_value(pending[start : start + size])
                start += size
        self._pending = {}


class BatchAudio(beam.PTransform):
    """`AudioChunk`s to lists of chunks of one ladder rung, each list one forward pass.

    `ladder` must be the runner's bucket ladder (see module docstring); `batch_size` bounds the
    items per batch and `max_batch_samples` the padded 16 kHz samples per batch.
    """

    def __init__(self, ladder: Sequence[int], batch_size: int, max_batch_samples: int) -> None:
        super().__init__()
        if batch_size < 1 or max_batch_samples < 1:
            raise ValueError("batch_size and max_batch_samples must be positive")
        self._fn = _BatchByLength(ladder, batch_size, max_batch_samples)

    def expand(self, chunks: beam.PCollection) -> beam.PCollection:
        return chunks | "BatchByLength" >> beam.ParDo(self._fn)

"""Beam stage: inferred windows in, one `ItemResult` or one `ErrorRecord` per item out, as they complete.

This is where the accounting of every decoded item closes, and it is done without grouping: the
stage keeps, per bundle, only the items whose windows are still arriving, and lets each go the
moment its last window is in. Every window of an item reaches this stage in the bundle that
decoded the item, because decoding, batching, inference and stitching are fused (no shuffle
between them) and `BatchAudio` sends its unfinished batches on before its bundle ends. So nothing
the model computed waits for the rest of the corpus, and what is held is bounded by the batches in
flight, not by the corpus (a GroupByKey here would hold every window's outputs of the corpus on the
local runner, and send them all through the shuffle on a cluster).

An item's windows come in any order (batching regroups them by length). Exactly one of them is
marked `is_last`: the item's last window, or its failure marker from the decoder, numbered after
the windows the decoder had given before it failed. Its index tells how many chunks to expect, so:

* any error (a failure marker, or a window the model could not run) -> exactly one `ErrorRecord`,
  the earliest stage's, once all of the item's chunks are in; the outputs of its windows are
  dropped as they come, so a failed item holds no frames.
* windows 0..k with the last one marked `is_last` -> the windows' frame-aligned outputs are cut
  and joined as the reference ASR pipeline does (`transforms.infer.chunk.stitch_frames`), and
  their per-window outputs (a classifier's probabilities) are pooled (`pool_windows`).
* an item still incomplete when its bundle ends -> an error (stage `stitch`), so that no id
  vanishes even if that contract were broken.

Outputs are checked here to be writable as asked: with `--feature_dtype float16`, an item whose
logits or hidden states overflow float16 becomes an error rather than a table of Inf.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from wav2vec2_beam.transforms.infer.chunk import logit_stride, stitch_frames
from wav2vec2_beam.transforms.records import (
    TARGET_SAMPLE_RATE,
    ErrorRecord,
    InferredChunk,
    ItemResult,
    SegmentSpan,
)

#: When an item has several errors, the one reported is the earliest stage's.
_STAGE_ORDER = ("read", "decode", "infer", "stitch")


def first_error(errors: Iterable[ErrorRecord]) -> ErrorRecord:
    """The error to report for an item: the earliest stage's, then the first in text order."""
    return min(
        errors,
        key=lambda e: (
            _STAGE_ORDER.index(e.stage) if e.stage in _STAGE_ORDER else len(_STAGE_ORDER),
            e.error,
        ),
    )


def pool_windows(windows: list[InferredChunk]) -> dict[str, np.ndarray]:
    """Each per-window output averaged over the windows, weighted by the audio each one keeps.

    A window keeps its samples less its strides, the same span whose frames stitching keeps; the
    kept spans tile the item exactly, so every second of audio weighs the same however the item
    was cut, the overlaps count once, and an item of one window gets that window's output as the
    model gave it. Averaging probabilities (rather than logits) keeps a window the model is unsure
    of from swinging the item's label with a few large logits.
    """
    weights = np.array(
        [w.num_samples - w.stride_left - w.stride_right for w in windows], np.float64
    )
    pooled = {}
    for name in windows[-1].per_window:
        stacked = np.stack([w.per_window[name] for w in windows])
        pooled[name] = (np.tensordot(weights, stacked, axes=1) / weights.sum()).astype(np.float32)
    return pooled


def stitch_item(
    item_id: str, windows: list[InferredChunk], align_to: int, feature_dtype: str
) -> ItemResult | ErrorRecord:
    """Join one item's windows (any order), or say why they cannot be joined."""
    source = windows[0].source if windows else item_id
    errors = [ErrorRecord(item_id, w.source, w.error_stage, w.error) for w in windows if w.error]
    if errors:
        return first_error(errors)
    windows = sorted(windows, key=lambda w: w.index)
    indices = [w.index for w in windows]
    last = windows[-1] if windows else None
    if (
        last is None
        or not last.is_last
        or last.total_samples is None
        or indices != list(range(len(windows)))
    ):
        return ErrorRecord(
            item_id, source, "stitch", f"incomplete windows {indices} and no error to explain it"
        )
    computed = [w for w in windows if w.num_samples]  # not the no-speech closer
    frames: dict[str, np.ndarray] = {}
    for name in computed[-1].frames if computed else ():
        frames[name] = stitch_frames(
            [(w.frames[name], w.stride_left, w.stride_right, w.num_samples) for w in computed],
            align_to,
        )
        if frames[name].dtype.kind == "f" and feature_dtype != "float32":
            largest = float(np.abs(frames[name]).max(initial=0.0))
            if largest > float(np.finfo(feature_dtype).max):
                return ErrorRecord(
                    item_id,
                    source,
                    "stitch",
                    f"{name} reaches {largest:.4g}, beyond {feature_dtype}; "
                    "use --feature_dtype float32",
                )
    num_frames = len(next(iter(frames.values()))) if frames else 0
    return ItemResult(
        id=item_id,
        source=source,
        duration_s=last.total_samples / TARGET_SAMPLE_RATE,
        sample_rate=int(last.metadata.get("source_sample_rate", TARGET_SAMPLE_RATE)),
        num_frames=num_frames,
        frames=frames,
        metadata=last.metadata,
        pooled=pool_windows(computed) if computed else {},
        segments=None if last.segment_start is None else segment_spans(computed, align_to),
    )


def segment_spans(segments: list[InferredChunk], align_to: int) -> list[SegmentSpan]:
    """Where each voice segment's frames are in the stitched frames (`--segment vad`): a
    segment has no strides, so it keeps its first `token_n` frames, as `stitch_frames` does."""
    spans, first = [], 0
    for segment in segments:
        produced = len(next(iter(segment.frames.values())))
        count = min(produced, logit_stride(segment.num_samples, 0, 0, align_to)[0])
        assert segment.segment_start is not None
        spans.append(SegmentSpan(segment.segment_start, segment.num_samples, first, count))
        first += count
    return spans


@dataclass
class _Arriving:
    """What has come of one item so far."""

    windows: list[InferredChunk] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)
    #: Chunks seen (the failed ones included, whose outputs are not kept).
    seen: int = 0
    #: Chunks to expect: the `is_last` chunk's index + 1, once it has come.
    expected: int | None = None
    bundle: str = ""


class _Stitch(beam.DoFn):
    def __init__(self, align_to: int, feature_dtype: str) -> None:
        self._align_to = align_to
        self._feature_dtype = feature_dtype

    def start_bundle(self) -> None:
        #: By the decoder's serial (and id): two containers that repeat an id are two items.
        self._arriving: dict[tuple[int, str], _Arriving] = {}

    def process(self, window: InferredChunk) -> Iterator[object]:
        key = (window.serial, window.id)
        item = self._arriving.setdefault(key, _Arriving(bundle=window.bundle))
        item.seen += 1
        if window.is_last:
            item.expected = window.index + 1
        if window.error is not None:
            item.errors.append(
                ErrorRecord(window.id, window.source, window.error_stage, window.error)
            )
            item.windows = []  # the item has failed: its outputs are not needed any more
        elif not item.errors:
            item.windows.append(window)
        if item.seen == item.expected:
            del self._arriving[key]
            yield self._result(window.id, item)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for (_, item_id), item in self._arriving.items():
            yield GlobalWindows.windowed_value(self._result(item_id, item))
        self._arriving = {}

    def _result(self, item_id: str, item: _Arriving) -> ItemResult | ErrorRecord:
        """The item's one result, stamped with its bundle for the writers."""
        if item.errors:
            result: ItemResult | ErrorRecord = first_error(item.errors)
        else:
            result = stitch_item(item_id, item.windows, self._align_to, self._feature_dtype)
        return replace(result, bundle=item.bundle)


class StitchItems(beam.PTransform):
    """`InferredChunk`s to one `ItemResult` or one `ErrorRecord` per item, in one PCollection.

    One, not two tagged outputs: every result of a bundle then reaches the same writer, which
    names its pieces by the bundle and, on a retry, removes what a failed attempt of the bundle
    left, whichever of its items succeeded this time (see `transforms.write.tables`).

    `align_to` is the model's inputs-to-logits ratio (the reference's stride-to-frames factor);
    `feature_dtype` the dtype logits and hidden states will be written in. Items are counted
    (succeeded, failed, audio) by the writer, the one place every outcome reaches.
    """

    def __init__(self, align_to: int, feature_dtype: str) -> None:
        super().__init__()
        self._fn = _Stitch(align_to, feature_dtype)

    def expand(self, windows: beam.PCollection) -> beam.PCollection:
        return windows | "Stitch" >> beam.ParDo(self._fn)

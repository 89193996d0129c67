"""Beam stage: every item's inferred windows and errors in, one `ItemResult` or one error out.

This is where the accounting closes. Windows and error records are grouped by item id together
(CoGroupByKey), so each id is decided once, with everything known about it:

* any error (from reading/decoding, or a window the model could not run) -> exactly one
  `ErrorRecord`, the earliest stage's, and the item's windows are dropped. A file whose decode
  failed late has some windows but never its last one (see `transforms/read_audio.py`), and its
  decode error is in the same group, so it is dropped here.
* windows 0..k with the last one marked `is_last` -> the windows' frame-aligned outputs are cut
  and joined as the reference ASR pipeline does (`transforms.chunk_audio.stitch_frames`), and
  their per-window outputs (a classifier's probabilities) are pooled (`pool_windows`).
* anything else (a window missing with no error to say why) -> an error, so that no id vanishes.

Outputs are checked here to be writable as asked: with `--feature_dtype float16`, an item whose
logits or hidden states overflow float16 becomes an error rather than a table of Inf.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.chunk_audio import stitch_frames
from transforms.progress import METRICS_NAMESPACE, record_progress
from transforms.records import (
    ERRORS_TAG,
    TARGET_SAMPLE_RATE,
    ErrorRecord,
    InferredChunk,
    ItemResult,
)

#: Main output tag of `StitchItems`.
ITEMS_TAG = "items"

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
    errors = [ErrorRecord(item_id, w.source, "infer", w.error) for w in windows if w.error]
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
    frames: dict[str, np.ndarray] = {}
    for name in last.frames:
        frames[name] = stitch_frames(
            [(w.frames[name], w.stride_left, w.stride_right, w.num_samples) for w in windows],
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
        pooled=pool_windows(windows),
    )


class _Stitch(beam.DoFn):
    def __init__(self, align_to: int, feature_dtype: str, progress_dir: str | None) -> None:
        self._align_to = align_to
        self._feature_dtype = feature_dtype
        self._progress_dir = progress_dir
        self._succeeded = Metrics.counter(METRICS_NAMESPACE, "files_succeeded")
        self._failed = Metrics.counter(METRICS_NAMESPACE, "files_failed")
        self._audio_ms = Metrics.counter(METRICS_NAMESPACE, "audio_ms")

    def process(self, element: tuple[str, dict[str, list]]) -> Iterator[object]:
        item_id, grouped = element
        errors = list(grouped["errors"])
        if errors:
            result: ItemResult | ErrorRecord = first_error(errors)
        else:
            result = stitch_item(
                item_id, list(grouped["windows"]), self._align_to, self._feature_dtype
            )
        if isinstance(result, ErrorRecord):
            self._failed.inc()
            record_progress(self._progress_dir, files_failed=1)
            yield beam.pvalue.TaggedOutput(ERRORS_TAG, result)
        else:
            self._succeeded.inc()
            self._audio_ms.inc(round(1000 * result.duration_s))
            record_progress(self._progress_dir, files_succeeded=1)
            yield result


class StitchItems(beam.PTransform):
    """`(windows, errors)` to `{ITEMS_TAG: ItemResult, ERRORS_TAG: ErrorRecord}`, one per id.

    `align_to` is the model's inputs-to-logits ratio (the reference's stride-to-frames factor);
    `feature_dtype` the dtype logits and hidden states will be written in; `progress_dir` the
    launcher's live-progress folder, if any (see `transforms.progress`).
    """

    def __init__(self, align_to: int, feature_dtype: str, progress_dir: str | None = None) -> None:
        super().__init__()
        self._fn = _Stitch(align_to, feature_dtype, progress_dir)

    def expand(
        self, inputs: tuple[beam.PCollection, beam.PCollection]
    ) -> dict[str, beam.PCollection]:
        windows, errors = inputs
        grouped = {
            "windows": windows | "KeyWindows" >> beam.Map(lambda w: (w.id, w)),
            "errors": errors | "KeyErrors" >> beam.Map(lambda e: (e.id, e)),
        } | "GroupById" >> beam.CoGroupByKey()
        stitched = grouped | "Stitch" >> beam.ParDo(self._fn).with_outputs(
            ERRORS_TAG, main=ITEMS_TAG
        )
        return {ITEMS_TAG: stitched[ITEMS_TAG], ERRORS_TAG: stitched[ERRORS_TAG]}

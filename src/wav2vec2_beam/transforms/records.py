"""The records that flow between the pipeline's stages.

Each stage of the data's path (read, decode, chunk, batch, infer, stitch, decode CTC, write) takes
and gives these small dataclasses, so that a stage can be tested alone and the wiring in pipeline/
stays a list of named transforms. Every input item ends either in an output row or in exactly one
`ErrorRecord`; that accounting is why errors carry the item's id and the stage that failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wav2vec2_beam.transforms.read.ids import escape

#: The sampling rate every model input is resampled to.
TARGET_SAMPLE_RATE = 16_000

#: Tag of the side output that carries `ErrorRecord`s in every DoFn that can fail on an item.
ERRORS_TAG = "errors"

#: Names of the frame-aligned outputs in `InferredChunk.frames` and `ItemResult.frames`.
#: Greedy CTC token id per frame (argmax of the logits), int32.
CTC_IDS = "ctc_ids"
#: Top softmax probability per frame (the probability of that id), float32.
CTC_CONFIDENCE = "ctc_confidence"
#: CTC log-probabilities per frame (log-softmax of the logits), float32 [frames, vocab]; only
#: for beam-search decoding.
CTC_LOG_PROBS = "ctc_log_probs"
#: CTC logits per frame, float32 [frames, vocab].
LOGITS = "logits"
#: The pretraining head's codevector id per frame and codevector group, int16 [frames, groups].
CODES = "codes"

#: Names of the per-window outputs in `InferredChunk.per_window` and `ItemResult.pooled`.
#: Sequence-classification softmax probabilities, float32 [num_labels].
CLASS_PROBABILITIES = "class_probabilities"


def hidden_state_key(layer: int) -> str:
    """The `frames` name of hidden layer `layer` (an index into the reference's hidden_states)."""
    return f"hidden_state_{layer}"


def frame_time(frame: float, seconds_per_frame: float) -> float:
    """A frame boundary in seconds, rounded to the microsecond: frames are 20 ms (or another
    whole number of samples), so the rounding changes no time, and `6.56` is stored rather than
    the float product `6.5600000000000005`."""
    return round(frame * seconds_per_frame, 6)


_REASON = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class ErrorRecord:
    """One input item that could not be processed, and why (a row of the `errors/` table).

    Its strings are made writable on construction (`transforms.read.ids.escape`): an id read
    from a name that is not UTF-8, or an exception's message quoting one, must not stop the job.
    """

    id: str
    source: str
    stage: str
    error: str
    #: The bundle that decoded the item, when it got that far (see `AudioChunk.bundle`); not a
    #: column of the table.
    bundle: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("id", "source", "stage", "error"):
            object.__setattr__(self, name, escape(getattr(self, name)))

    @property
    def reason(self) -> str:
        """The error's short reason code (`no_match`, `not_audio`, ...: docs/OUTPUTS.md), the
        word before its first colon; `other` for a message without one."""
        code = self.error.split(":", 1)[0]
        return code if _REASON.fullmatch(code) else "other"


@dataclass
class AudioChunk:
    """A window of one item's audio, mono float32 at 16 kHz, not yet normalized.

    Windows follow Hugging Face's ASR-pipeline chunking: `stride_left`/`stride_right` samples at the
    window's edges overlap the neighbours and their logits are dropped when the item is stitched
    back together. An item that needs no chunking is one window with zero strides.
    """

    id: str
    source: str
    index: int
    is_last: bool
    samples: np.ndarray
    stride_left: int
    stride_right: int
    sample_rate: int
    #: Total 16 kHz samples of the whole item; set on the last window only (known once decoded).
    total_samples: int | None = None
    #: Extra per-item fields (reference text, metadata) carried to the output rows.
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Set on an item's failure marker only (see `failure_marker`).
    error: ErrorRecord | None = None
    #: Names the decoder's bundle: its first item's origin, hashed. A runner's retry of the
    #: bundle starts from the same item, so the writers name their pieces by it (see
    #: `transforms.write.tables`).
    bundle: str = ""
    #: The item's number among the items its bundle decoded: the stitcher's key, unique even when
    #: two containers repeat an id.
    serial: int = 0
    #: `--segment vad`: where this voice segment starts in the item (16 kHz samples); None for
    #: fixed windows. A segment has no strides, and an item without speech is one segment of no
    #: samples (`is_last`), which the model skips.
    segment_start: int | None = None

    @property
    def needs_model(self) -> bool:
        """False for a failure marker and for the no-speech closer: nothing to compute."""
        return self.error is None and len(self.samples) > 0


def failure_marker(error: ErrorRecord, windows_before: int) -> AudioChunk:
    """The chunk that ends a failed item in the window stream, in place of its last window.

    Why in the window stream and not on an errors output: the item's earlier windows have gone on
    to the model already, and the stitcher (which keeps no grouping of the whole corpus) must
    learn from the same stream that they will never be joined, and how many of them to expect
    before it can forget the item. So the marker is numbered after them and marked `is_last`.
    """
    return AudioChunk(
        id=error.id,
        source=error.source,
        index=windows_before,
        is_last=True,
        samples=np.zeros(0, np.float32),
        stride_left=0,
        stride_right=0,
        sample_rate=TARGET_SAMPLE_RATE,
        error=error,
    )


@dataclass
class InferredChunk:
    """The model's outputs for one `AudioChunk`: its frame-aligned arrays, or why there are none.

    The samples are dropped (only their count is kept) so that what the stitcher holds while an
    item's other windows are inferred stays small. `frames` maps an output name to an array whose first axis is the window's valid
    frames, so that the stitcher can cut every output at the same frames without knowing what it
    is (CTC ids, logits, one hidden layer, codevector ids). `per_window` holds outputs that
    describe the window as a whole (a classifier's probabilities): they have no frames to cut, so
    the stitcher pools them over the item's windows instead. An `error` marks a window the model
    could not run, or (with an `error_stage` other than `infer`) passes on the decoder's failure
    marker; the stitcher turns it into the item's one `ErrorRecord`.
    """

    id: str
    source: str
    index: int
    is_last: bool
    stride_left: int
    stride_right: int
    #: 16 kHz samples in this window (the stitcher converts the strides to frames with it).
    num_samples: int
    total_samples: int | None
    metadata: dict[str, Any]
    frames: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    per_window: dict[str, np.ndarray] = field(default_factory=dict)
    #: The stage `error` comes from: `infer`, or the decoder's stage for a failure marker.
    error_stage: str = "infer"
    #: Copied from the `AudioChunk`.
    bundle: str = ""
    serial: int = 0
    segment_start: int | None = None


@dataclass(frozen=True)
class SegmentSpan:
    """Where one voice segment of an item is: in its audio, and in its stitched frames."""

    #: First sample and sample count (16 kHz) in the item.
    start: int
    num_samples: int
    #: First frame and frame count in the item's stitched frames.
    first_frame: int
    num_frames: int


@dataclass
class ItemResult:
    """One input item after its windows were stitched: the outputs written for it."""

    id: str
    source: str
    #: Length of the 16 kHz audio the model saw, in seconds.
    duration_s: float
    #: Sampling rate of the source file (before resampling).
    sample_rate: int
    num_frames: int
    #: The stitched frame-aligned outputs, keyed as in `InferredChunk.frames`.
    frames: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The windows' `per_window` outputs pooled into one per item (see `transforms.infer.stitch`).
    pooled: dict[str, np.ndarray] = field(default_factory=dict)
    #: The item's `transcripts` row, once CTC decoding has made it (`transforms.write.ctc_decode`).
    transcript: dict[str, Any] | None = None
    #: The decoder's bundle (see `AudioChunk.bundle`).
    bundle: str = ""
    #: `--segment vad`: the voice segments whose frames were joined into `frames`, in order
    #: (None for fixed windows; empty for an item without speech).
    segments: list[SegmentSpan] | None = None
    #: Their `segments` table rows, once CTC decoding has made them.
    segment_rows: list[dict[str, Any]] | None = None

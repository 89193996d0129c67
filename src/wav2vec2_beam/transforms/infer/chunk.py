"""Cut a streamed 16 kHz signal into Hugging Face ASR-pipeline windows, and stitch their frames back.

Long items are transcribed window by window, and the reference (transformers'
`AutomaticSpeechRecognitionPipeline` with `chunk_length_s`) decides where the windows fall, how much
of each edge is context (stride) and which logit frames survive stitching. Matching its text means
matching that arithmetic to the sample and to the frame, so this module reproduces it exactly (see
`tests/fixtures/reference/chunking_windows.json`, recorded from the reference's own code):

Seconds to samples (`chunk_params`), with `sr` = 16000 and Python's round-half-to-even::

    chunk_len    = int(round(chunk_length_s * sr / align_to) * align_to)
    stride_left  = int(round(stride_length_s[0] * sr / align_to) * align_to)
    stride_right = int(round(stride_length_s[1] * sr / align_to) * align_to)
    step         = chunk_len - stride_left - stride_right

where `stride_length_s` defaults to `chunk_length_s / 6` and a single number means both sides.
`chunk_len < stride_left + stride_right` is an error, and so is `step == 0` (the reference's
`range(0, n, 0)` raises).

Windows (`iter_windows`) of an item of `n` samples: window `k` starts at `k * step` and holds
`samples[k * step : k * step + chunk_len]`; it is the last one iff `k * step + chunk_len >= n`, and no
window follows the last one. The first window has no left stride, the last no right stride. The
reference also skips a window no longer than its left stride; that cannot happen, because a window
exists only when its predecessor ended before `n`, so it holds more than `stride_left +
stride_right` samples. `chunk_length_s` 0 or None means one window with the whole item, no stride.

Streaming: whether a window is the last depends on `n`, which a stream learns only at its end. A
window is therefore emitted once a sample past its end has arrived (then it is not the last) or the
stream has ended (then it is). This holds at most one window plus one incoming block of samples,
and it means the last window is only ever emitted after the source finished without error; the
decoder's error contract (see `transforms/read/decode_items.py`) rests on that.

Stitching (`logit_stride`, `stitch_frames`): the reference converts a window's sample strides to
frames with `ratio = 1 / align_to`::

    token_n = round(num_samples * ratio)
    left    = round(stride_left / num_samples * token_n)
    right   = round(stride_right / num_samples * token_n)

and keeps frames `[left : token_n - right]` of the window's output, i.e. it counts from `token_n`,
not from the number of frames the model produced (a conv stack yields at most `token_n` frames,
often one fewer, and a padded batch may yield more).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wav2vec2_beam.transforms.records import TARGET_SAMPLE_RATE, AudioChunk

#: The inputs-to-logits ratio of the usual Wav2Vec2 conv stack: the product of its conv strides.
DEFAULT_ALIGN_TO = 320


@dataclass(frozen=True)
class ChunkParams:
    """Window geometry in 16 kHz samples, as the reference derives it from seconds."""

    chunk_len: int
    stride_left: int
    stride_right: int

    @property
    def step(self) -> int:
        """Distance between consecutive window starts."""
        return self.chunk_len - self.stride_left - self.stride_right


@dataclass(frozen=True)
class Window:
    """One window of an item: its samples, where it starts and which of its edges are stride."""

    start: int
    samples: np.ndarray
    stride_left: int
    stride_right: int
    is_last: bool
    #: Length of the whole item; known, and set, on the last window only.
    total_samples: int | None


def chunk_params(
    chunk_length_s: float | None,
    stride_length_s: float | Sequence[float] | None = None,
    align_to: int = DEFAULT_ALIGN_TO,
    sampling_rate: int = TARGET_SAMPLE_RATE,
) -> ChunkParams | None:
    """Convert the pipeline's seconds into sample counts exactly as the reference does.

    Returns None when `chunk_length_s` is 0 or None: the item is then one window. Raises ValueError
    when the strides leave no room for the window to advance.
    """
    if not chunk_length_s:
        return None
    if stride_length_s is None:
        stride_length_s = chunk_length_s / 6
    if isinstance(stride_length_s, (int, float)):
        stride_length_s = (stride_length_s, stride_length_s)
    left_s, right_s = stride_length_s

    def to_samples(seconds: float) -> int:
        return int(round(seconds * sampling_rate / align_to) * align_to)

    params = ChunkParams(to_samples(chunk_length_s), to_samples(left_s), to_samples(right_s))
    if params.step < 0:
        raise ValueError(
            f"chunk length {params.chunk_len} is shorter than its strides "
            f"{params.stride_left} + {params.stride_right} (samples)"
        )
    if params.step == 0:
        raise ValueError(
            f"chunk length {params.chunk_len} equals its strides {params.stride_left} + "
            f"{params.stride_right} (samples): the windows would never advance"
        )
    return params


def iter_windows(blocks: Iterable[np.ndarray], params: ChunkParams | None) -> Iterator[Window]:
    """Yield the reference's windows over a stream of 1-D float32 blocks, holding ~one window.

    `params` None yields the whole item as one window (which must then be held whole: the model
    sees it at once). Raises ValueError if the stream has no samples, so an empty item is never
    silently dropped; the decoder rejects those earlier anyway.
    """
    if params is None:
        parts = [np.asarray(block, dtype=np.float32) for block in blocks]
        whole = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if not len(whole):
            raise ValueError("no samples to chunk")
        yield Window(0, whole, 0, 0, True, len(whole))
        return

    pieces: list[np.ndarray] = []  # samples from `held_from` on, in order
    held_from = 0  # absolute index of the first held sample
    received = 0
    start = 0  # start of the next window
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 1:
            raise ValueError(f"blocks must be 1-D, got shape {block.shape}")
        if not len(block):
            continue
        pieces.append(block)
        received += len(block)
        # A sample past a window's end has arrived, so the item is longer: not the last window.
        if received <= start + params.chunk_len:
            continue
        held = _merge(pieces)
        pieces = []  # `held` has them all; let the blocks go
        while received > start + params.chunk_len:
            offset = start - held_from
            yield Window(
                start=start,
                samples=held[offset : offset + params.chunk_len].copy(),
                stride_left=params.stride_left if start else 0,
                stride_right=params.stride_right,
                is_last=False,
                total_samples=None,
            )
            start += params.step
        # Keep what later windows need as a copy, so the merged buffer is freed right away.
        pieces = [held[start - held_from :].copy()]
        held_from = start
        del held
    if not received:
        raise ValueError("no samples to chunk")
    held = _merge(pieces)
    yield Window(
        start=start,
        samples=held[start - held_from :].copy(),
        stride_left=params.stride_left if start else 0,
        stride_right=0,
        is_last=True,
        total_samples=received,
    )


def _merge(pieces: list[np.ndarray]) -> np.ndarray:
    """Concatenate held blocks only when a window is cut, so small blocks cost no repeated copies."""
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def chunk_audio(
    blocks: Iterable[np.ndarray],
    item_id: str,
    source: str,
    params: ChunkParams | None,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[AudioChunk]:
    """Wrap `iter_windows` into the pipeline's `AudioChunk` records of one item."""
    for index, window in enumerate(iter_windows(blocks, params)):
        yield AudioChunk(
            id=item_id,
            source=source,
            index=index,
            is_last=window.is_last,
            samples=window.samples,
            stride_left=window.stride_left,
            stride_right=window.stride_right,
            sample_rate=TARGET_SAMPLE_RATE,
            total_samples=window.total_samples,
            metadata=dict(metadata or {}),
        )


def logit_stride(
    num_samples: int, stride_left: int, stride_right: int, align_to: int = DEFAULT_ALIGN_TO
) -> tuple[int, int, int]:
    """The reference's (token_n, left, right) in frames for a window's sample strides."""
    ratio = 1 / align_to
    token_n = round(num_samples * ratio)
    left = round(stride_left / num_samples * token_n)
    right = round(stride_right / num_samples * token_n)
    return token_n, left, right


def stitch_frames(
    chunks: Sequence[tuple[np.ndarray, int, int, int]],
    align_to: int = DEFAULT_ALIGN_TO,
    axis: int = 0,
) -> np.ndarray:
    """Drop each window's stride frames as the reference does and concatenate the windows in order.

    `chunks` holds `(frames, stride_left, stride_right, num_samples)` per window, in window order,
    with the strides and sample count of the `AudioChunk`. `axis` is the frame axis of `frames`
    (0 for `[frames, ...]`, 1 for stacked hidden states `[layers, frames, hidden]`).
    """
    if not chunks:
        raise ValueError("no windows to stitch")
    kept = []
    for frames, stride_left, stride_right, num_samples in chunks:
        token_n, left, right = logit_stride(num_samples, stride_left, stride_right, align_to)
        index = [slice(None)] * frames.ndim
        index[axis] = slice(left, token_n - right)
        kept.append(frames[tuple(index)])
    return np.concatenate(kept, axis=axis)


def stitch_logits(
    chunks: Sequence[tuple[np.ndarray, int, int, int]], align_to: int = DEFAULT_ALIGN_TO
) -> np.ndarray:
    """Stitch per-window CTC logits `[frames, vocab]` into the item's logits, as the reference."""
    for logits, *_ in chunks:
        if logits.ndim != 2:
            raise ValueError(f"logits must be [frames, vocab], got shape {logits.shape}")
    return stitch_frames(chunks, align_to, axis=0)

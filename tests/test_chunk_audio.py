"""The streamed chunker and the stitcher against the reference's recorded windows and frames.

`tests/fixtures/reference/chunking_windows.json` was written by the reference's own pipeline code
(`tests/fixtures/reference_chunking.py`); every case is replayed here with several block sizes,
because a streamed chunker is only right if the block boundaries cannot move a window.
"""

from __future__ import annotations

import json
import pathlib
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest

from wav2vec2_beam.transforms.infer.chunk import (
    ChunkParams,
    chunk_audio,
    chunk_params,
    iter_windows,
    logit_stride,
    stitch_frames,
    stitch_logits,
)
from wav2vec2_beam.transforms.records import TARGET_SAMPLE_RATE

REFERENCE = json.loads(
    (pathlib.Path(__file__).parent / "fixtures/reference/chunking_windows.json").read_text()
)
CASES = REFERENCE["cases"]
FRAME_CODE_BASE = 10_000  # as in reference_chunking.py


def _case_id(case: dict) -> str:
    return (
        f"n{case['num_samples']}-c{case['chunk_length_s']}-s{case['stride_length_s']}"
        f"-a{case['align_to']}"
    )


def _params(case: dict) -> ChunkParams | None:
    stride = case["stride_length_s"]
    return chunk_params(
        case["chunk_length_s"],
        tuple(stride) if isinstance(stride, list) else stride,
        case["align_to"],
    )


def _blocks(signal: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(signal), size):
        yield signal[start : start + size]


def _random_blocks(signal: np.ndarray, seed: int) -> Iterator[np.ndarray]:
    """Blocks of random sizes, including empty ones, to move every boundary around."""
    rng = np.random.default_rng(seed)
    start = 0
    while start < len(signal):
        size = int(rng.integers(0, 5_000))
        yield signal[start : start + size]
        start += size


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("blocking", ["whole", "1000", "chunk", "random"])
def test_windows_match_reference(case: dict, blocking: str) -> None:
    if "error" in case:
        with pytest.raises(ValueError):
            _params(case)
        return
    params = _params(case)
    signal = np.arange(case["num_samples"], dtype=np.float32)
    if blocking == "whole":
        blocks = iter([signal])
    elif blocking == "1000":
        blocks = _blocks(signal, 1000)
    elif blocking == "chunk":
        blocks = _blocks(signal, params.chunk_len if params else 7)
    else:
        blocks = _random_blocks(signal, case["num_samples"])
    windows = list(iter_windows(blocks, params))

    got = [
        (w.start, len(w.samples), w.stride_left, w.stride_right, w.is_last, w.total_samples)
        for w in windows
    ]
    expected = [
        (
            w["start"],
            w["length"],
            w["stride_left"],
            w["stride_right"],
            w["is_last"],
            case["num_samples"] if w["is_last"] else None,
        )
        for w in case["windows"]
    ]
    assert got == expected
    for window in windows:
        assert window.samples.dtype == np.float32
        np.testing.assert_array_equal(
            window.samples, signal[window.start : window.start + len(window.samples)]
        )


@pytest.mark.parametrize("case", [c for c in CASES if "stitched_runs" in c], ids=_case_id)
def test_stitch_matches_reference(case: dict) -> None:
    chunks = []
    for index, window in enumerate(case["windows"]):
        if window["has_stride"]:
            assert (
                list(
                    logit_stride(
                        window["length"],
                        window["stride_left"],
                        window["stride_right"],
                        case["align_to"],
                    )
                )
                == window["logit_stride"]
            )
        codes = index * FRAME_CODE_BASE + np.arange(window["frames"], dtype=np.float32)
        chunks.append(
            (codes[:, None], window["stride_left"], window["stride_right"], window["length"])
        )
    stitched = stitch_logits(chunks, align_to=case["align_to"])
    expected = np.concatenate(
        [
            window * FRAME_CODE_BASE + np.arange(first, end, dtype=np.float32)
            for window, first, end in case["stitched_runs"]
        ]
    )
    np.testing.assert_array_equal(stitched[:, 0], expected)


def test_stitch_frames_along_another_axis() -> None:
    """Stacked hidden states [layers, frames, hidden] stitch per layer like logits."""
    rng = np.random.default_rng(0)
    params = chunk_params(1.0, 0.2)
    windows = list(iter_windows([np.zeros(70_000, np.float32)], params))
    per_window = [rng.standard_normal((3, (len(w.samples) - 80) // 320, 5)) for w in windows]
    stacked = stitch_frames(
        [
            (h, w.stride_left, w.stride_right, len(w.samples))
            for h, w in zip(per_window, windows, strict=True)
        ],
        axis=1,
    )
    for layer in range(3):
        alone = stitch_logits(
            [
                (h[layer], w.stride_left, w.stride_right, len(w.samples))
                for h, w in zip(per_window, windows, strict=True)
            ]
        )
        np.testing.assert_array_equal(stacked[layer], alone)


def test_stitch_rejects_nothing_and_bad_shapes() -> None:
    with pytest.raises(ValueError):
        stitch_frames([])
    with pytest.raises(ValueError):
        stitch_logits([(np.zeros((4, 2, 1)), 0, 0, 1280)])


def test_chunk_params_arithmetic() -> None:
    # Default stride is chunk / 6: 2 s -> 0.333 s -> 16.67 frames -> 17 * 320.
    assert chunk_params(2.0) == ChunkParams(32_000, 5_440, 5_440)
    assert chunk_params(30) == ChunkParams(480_000, 80_000, 80_000)
    assert chunk_params(2.0, [0.5, 0.1]) == ChunkParams(32_000, 8_000, 1_600)
    # Python rounds half to even: 12.5 frames -> 12, 17.5 -> 18.
    assert chunk_params(0.25, 0).chunk_len == 3_840
    assert chunk_params(0.35, 0).chunk_len == 5_760
    assert chunk_params(1.0, 0.1, align_to=1) == ChunkParams(16_000, 1_600, 1_600)
    assert chunk_params(0) is None
    assert chunk_params(None, 3.0) is None
    with pytest.raises(ValueError, match="never advance"):
        chunk_params(1.0, 0.5)
    with pytest.raises(ValueError, match="shorter than its strides"):
        chunk_params(1.0, (0.6, 0.5))


def test_every_window_is_longer_than_its_left_stride() -> None:
    """The reference's skip of an all-stride window never fires (see module docstring)."""
    for case in CASES:
        for window in case.get("windows", []):
            assert window["length"] > window["stride_left"] or window["start"] == 0


def test_unchunked_item_is_one_window() -> None:
    signal = np.arange(5_000, dtype=np.float32)
    (window,) = iter_windows(_blocks(signal, 999), None)
    assert (window.start, window.stride_left, window.stride_right, window.is_last) == (
        0,
        0,
        0,
        True,
    )
    assert window.total_samples == 5_000
    np.testing.assert_array_equal(window.samples, signal)


@pytest.mark.parametrize("params", [None, ChunkParams(16_000, 3_200, 3_200)])
def test_empty_stream_is_an_error(params: ChunkParams | None) -> None:
    with pytest.raises(ValueError, match="no samples"):
        list(iter_windows(iter([np.zeros(0, np.float32)]), params))


def test_blocks_must_be_mono() -> None:
    with pytest.raises(ValueError, match="1-D"):
        list(iter_windows([np.zeros((10, 2), np.float32)], ChunkParams(16_000, 0, 0)))


def test_chunk_audio_records() -> None:
    signal = np.arange(50_000, dtype=np.float32)
    chunks = list(
        chunk_audio(
            _blocks(signal, 4_000), "id-1", "gs://b/x.wav", chunk_params(1.0, 0.2), {"k": 1}
        )
    )
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.is_last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert [c.total_samples for c in chunks] == [None] * (len(chunks) - 1) + [50_000]
    assert {(c.id, c.source, c.sample_rate) for c in chunks} == {
        ("id-1", "gs://b/x.wav", TARGET_SAMPLE_RATE)
    }
    assert all(c.metadata == {"k": 1} for c in chunks)
    chunks[0].metadata["k"] = 2  # each record owns its metadata
    assert chunks[1].metadata == {"k": 1}


def test_memory_holds_about_one_window() -> None:
    """Streaming 10 minutes through 30 s windows holds a few windows' worth, not the item."""
    params = chunk_params(30)
    block = np.ones(TARGET_SAMPLE_RATE, np.float32)  # 1 s blocks, the same array each time
    item_bytes = 600 * TARGET_SAMPLE_RATE * 4
    tracemalloc.start()
    try:
        count = 0
        for window in iter_windows((block for _ in range(600)), params):
            count += 1
            del window
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30  # starts 0, 20, ..., 580 s: the first to reach 600 s is the last
    window_bytes = params.chunk_len * 4
    # Held samples (one window + one block) and the copy of the window being emitted.
    assert peak < 2.5 * window_bytes, (peak, window_bytes)
    assert peak < item_bytes / 8

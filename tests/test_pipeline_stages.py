"""The pipeline's own stages, one at a time: batching, inference failures, stitching, CTC decoding,
Parquet tables and progress."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that

from wav2vec2_beam.models import Wav2Vec2CTCTokenizer
from wav2vec2_beam.models.batching import bucket_for
from wav2vec2_beam.pipeline import console
from wav2vec2_beam.pipeline.console import ProgressDisplay, progress_line
from wav2vec2_beam.transforms.infer.batch import (
    BatchAudio,
    batch_capacity,
    ladder_for,
    power_of_two_parts,
)
from wav2vec2_beam.transforms.infer.model_handler import InferenceSpec, LoadedWav2Vec2, max_softmax
from wav2vec2_beam.transforms.infer.stitch import first_error, stitch_item
from wav2vec2_beam.transforms.read.census import Census
from wav2vec2_beam.transforms.records import (
    CLASS_PROBABILITIES,
    CODES,
    CTC_CONFIDENCE,
    CTC_IDS,
    LOGITS,
    AudioChunk,
    ErrorRecord,
    InferredChunk,
    ItemResult,
)
from wav2vec2_beam.transforms.write.ctc_decode import decode_ctc
from wav2vec2_beam.transforms.write.progress import (
    halt_commits,
    items_on_disk,
    read_progress,
    record_progress,
    recorded_commit,
)
from wav2vec2_beam.transforms.write.tables import (
    classifications_table,
    codes_table,
    frames_column,
    hidden_states_table,
    logits_table,
    write_summary,
)

CHECKPOINTS = Path(__file__).parent / "fixtures" / "checkpoints"


def chunk(item: str, index: int, samples: int, is_last: bool = True) -> AudioChunk:
    return AudioChunk(
        id=item,
        source=item,
        index=index,
        is_last=is_last,
        samples=np.linspace(-0.5, 0.5, samples, dtype=np.float32),
        stride_left=0,
        stride_right=0,
        sample_rate=16_000,
        total_samples=samples if is_last else None,
        metadata={"source_sample_rate": 44_100},
    )


# ---------------------------------------------------------------- batching


def test_capacity_is_a_power_of_two_within_both_limits() -> None:
    assert batch_capacity(16_000, batch_size=16, max_batch_samples=240 * 16_000) == 16
    assert batch_capacity(16_000, batch_size=12, max_batch_samples=240 * 16_000) == 8
    assert batch_capacity(480_000, batch_size=16, max_batch_samples=240 * 16_000) == 8
    assert batch_capacity(480_000, batch_size=16, max_batch_samples=100 * 16_000) == 2
    assert batch_capacity(480_000, batch_size=16, max_batch_samples=10 * 16_000) == 1


def test_leftovers_split_into_powers_of_two() -> None:
    assert power_of_two_parts(13) == [8, 4, 1]
    assert power_of_two_parts(8) == [8]
    assert power_of_two_parts(0) == []


def test_ladder_reaches_the_longest_window() -> None:
    assert ladder_for(30.0, 320)[-1] >= 60 * 16_000
    assert ladder_for(90.0, 320)[-1] >= 90 * 16_000
    assert all(length % 320 == 0 for length in ladder_for(30.0, 320))


def test_batches_hold_one_rung_and_respect_the_limits() -> None:
    ladder = ladder_for(30.0, 320)
    lengths = [400, 5_000, 16_000, 17_000, 30_000, 33_000, 160_000, 470_000] * 5
    ids = [f"f{i}" for i in range(len(lengths))]

    def check(batches: list[list[AudioChunk]]) -> None:
        assert sorted(c.id for batch in batches for c in batch) == sorted(ids)
        for batch in batches:
            rungs = {bucket_for(len(c.samples), ladder) for c in batch}
            assert len(rungs) == 1
            (rung,) = rungs
            assert len(batch) & (len(batch) - 1) == 0  # a power of two
            assert len(batch) <= 4
            assert len(batch) == 1 or len(batch) * rung <= 20 * 16_000

    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        batches = (
            pipeline
            | beam.Create(list(zip(ids, lengths, strict=True)), reshuffle=False)
            | beam.MapTuple(lambda item, n: chunk(item, 0, n))  # made here: cheap to pickle
            | BatchAudio(ladder, batch_size=4, max_batch_samples=20 * 16_000)
        )
        assert_that(batches | beam.combiners.ToList(), lambda got: check(got[0]))


# ---------------------------------------------------------------- inference


@pytest.fixture(scope="module")
def loaded() -> LoadedWav2Vec2:
    spec = InferenceSpec(
        model_dir=str(CHECKPOINTS / "base"),
        ctc=True,
        logits=True,
        hidden_layers=(2,),
        ladder=ladder_for(30.0, 320),
    )
    return LoadedWav2Vec2(spec)


def test_a_load_is_reported_once(loaded: LoadedWav2Vec2) -> None:
    first = loaded.take_unreported_load()
    assert first is True
    assert loaded.take_unreported_load() is False


def test_short_windows_fail_alone(loaded: LoadedWav2Vec2) -> None:
    results = loaded.infer([chunk("a", 0, 8_000), chunk("b", 0, 399), chunk("c", 0, 12_345)])
    assert [r.id for r in results] == ["a", "b", "c"]
    assert results[1].error is not None and "receptive field" in results[1].error
    assert results[0].error is None and results[2].error is None
    ids, confidence, logits = (results[2].frames[k] for k in (CTC_IDS, CTC_CONFIDENCE, LOGITS))
    assert (ids == logits.argmax(-1)).all()
    assert np.allclose(confidence, max_softmax(logits)) and (confidence <= 1).all()
    assert results[2].frames["hidden_state_2"].shape == (len(logits), 32)
    assert results[2].num_samples == 12_345


def test_a_batch_the_model_cannot_run_is_retried_item_by_item(
    loaded: LoadedWav2Vec2, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = loaded._runner.run

    def flaky(arrays: list[np.ndarray]):  # fails on any batch holding the 7777-sample item
        if any(len(a) == 7_777 for a in arrays):
            raise RuntimeError("boom\nwith a second line")
        return real_run(arrays)

    monkeypatch.setattr(loaded._runner, "run", flaky)
    results = loaded.infer([chunk("a", 0, 8_000), chunk("b", 0, 7_777), chunk("c", 0, 9_000)])
    assert results[0].error is None and results[2].error is None
    assert results[1].error == "RuntimeError: boom with a second line"


def test_max_softmax_is_the_top_probability() -> None:
    logits = np.array([[1000.0, 0.0, -5.0], [1.0, 2.0, 3.0]], np.float32)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected = expected.max(-1) / expected.sum(-1)
    assert np.allclose(max_softmax(logits), expected)


# ---------------------------------------------------------------- stitching


def window(index: int, is_last: bool, count: int, **kw) -> InferredChunk:
    values = np.arange(count, dtype=np.float32)[:, None] + 100 * index
    defaults = dict(
        id="x",
        source="src",
        index=index,
        is_last=is_last,
        stride_left=0,
        stride_right=0,
        num_samples=count * 320,
        total_samples=count * 320 if is_last else None,
        metadata={"source_sample_rate": 8_000},
        frames={LOGITS: values},
    )
    return InferredChunk(**{**defaults, **kw})


def test_windows_are_joined_in_index_order_without_their_strides() -> None:
    windows = [
        window(1, True, 10, stride_left=3 * 320, total_samples=22 * 320),
        window(0, False, 15, stride_right=3 * 320),
    ]
    result = stitch_item("x", windows, 320, "float32")
    assert isinstance(result, ItemResult)
    assert result.frames[LOGITS][:, 0].tolist() == [*range(12), *range(103, 110)]
    assert result.num_frames == 19
    assert result.duration_s == 22 * 320 / 16_000 and result.sample_rate == 8_000


def test_incomplete_windows_are_an_error_not_a_row() -> None:
    for windows in ([window(0, False, 5)], [window(1, True, 5)], []):
        result = stitch_item("x", windows, 320, "float32")
        assert isinstance(result, ErrorRecord) and result.stage == "stitch"


def test_a_failed_window_fails_its_item_once() -> None:
    windows = [window(0, False, 5, error="first"), window(1, True, 5, error="second")]
    result = stitch_item("x", windows, 320, "float32")
    assert result == ErrorRecord("x", "src", "infer", "first")


def test_float16_overflow_is_an_error() -> None:
    big = window(0, True, 4, frames={LOGITS: np.full((4, 2), 1e6, np.float32)})
    assert isinstance(stitch_item("x", [big], 320, "float32"), ItemResult)
    result = stitch_item("x", [big], 320, "float16")
    assert isinstance(result, ErrorRecord) and "--feature_dtype float32" in result.error


def test_per_window_outputs_are_pooled_by_the_audio_each_window_keeps() -> None:
    first, second = np.array([0.8, 0.2], np.float32), np.array([0.2, 0.8], np.float32)
    windows = [  # keeps 12 and 4 frames' worth of samples
        window(0, False, 15, stride_right=3 * 320, per_window={CLASS_PROBABILITIES: first}),
        window(
            1,
            True,
            7,
            stride_left=3 * 320,
            total_samples=16 * 320,
            per_window={CLASS_PROBABILITIES: second},
        ),
    ]
    result = stitch_item("x", windows, 320, "float32")
    assert isinstance(result, ItemResult)
    assert np.allclose(result.pooled[CLASS_PROBABILITIES], (12 * first + 4 * second) / 16)
    alone = stitch_item(
        "x", [window(0, True, 5, per_window={CLASS_PROBABILITIES: first})], 320, "float32"
    )
    assert np.array_equal(alone.pooled[CLASS_PROBABILITIES], first)


def test_the_earliest_stage_error_is_reported() -> None:
    errors = [
        ErrorRecord("x", "x", "infer", "a"),
        ErrorRecord("x", "x", "decode", "b"),
        ErrorRecord("x", "x", "read", "c"),
    ]
    assert first_error(errors).stage == "read"


# ---------------------------------------------------------------- CTC decoding


@pytest.fixture(scope="module")
def tokenizer() -> Wav2Vec2CTCTokenizer:
    return Wav2Vec2CTCTokenizer.from_pretrained(str(CHECKPOINTS / "base"))


def test_decode_gives_the_tokenizers_text_and_timed_words(tokenizer: Wav2Vec2CTCTokenizer) -> None:
    vocab = tokenizer.get_vocab()
    tokens = ["<pad>", "H", "H", "<pad>", "I", "|", "|", "<pad>", "Y", "O", "<pad>", "<pad>"]
    ids = np.array([vocab[t] for t in tokens])
    confidence = np.linspace(0.5, 1.0, len(ids)).astype(np.float32)
    text, chars, words = decode_ctc(ids, confidence, tokenizer, 320)
    assert text == tokenizer.decode(ids) == "HI YO"
    assert [c["char"] for c in chars] == ["H", "I", " ", "Y", "O"]
    assert chars[0]["start_s"] == 0.02 and chars[0]["end_s"] == 0.06
    assert chars[0]["confidence"] == pytest.approx(confidence[1:3].mean())
    assert [w["word"] for w in words] == ["HI", "YO"]
    assert words[0]["start_s"] == 0.02 and words[0]["end_s"] == pytest.approx(0.10)
    # blank frame 3 inside "HI" is not counted; the word's characters' frames are 1, 2, 4
    assert words[0]["confidence"] == pytest.approx(confidence[[1, 2, 4]].mean())
    assert words[1]["confidence"] == pytest.approx(confidence[[8, 9]].mean())


def test_all_blank_frames_decode_to_nothing(tokenizer: Wav2Vec2CTCTokenizer) -> None:
    text, chars, words = decode_ctc(np.zeros(50, int), np.ones(50, np.float32), tokenizer, 320)
    assert (text, chars, words) == ("", [], [])


# ---------------------------------------------------------------- tables


def test_frame_matrices_round_trip_through_parquet(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    matrices = [rng.normal(size=(n, 5)).astype(np.float32) for n in (3, 1, 7)]
    for dtype in ("float32", "float16"):
        column = frames_column(matrices, dtype, 5)
        pq.write_table(pa.table({"m": column}), tmp_path / f"{dtype}.parquet")
        back = pq.read_table(tmp_path / f"{dtype}.parquet").column("m").to_pylist()
        for original, row in zip(matrices, back, strict=True):
            assert np.allclose(np.asarray(row), original, atol=1e-3 if dtype == "float16" else 0)


def test_feature_tables_follow_their_schema() -> None:
    items = [
        ItemResult(
            id=f"f{n}",
            source=f"f{n}",
            duration_s=1.0,
            sample_rate=16_000,
            num_frames=n,
            frames={LOGITS: np.ones((n, 4), np.float32), "hidden_state_0": np.ones((n, 3))},
        )
        for n in (2, 5)
    ]
    spec = logits_table("float16", 4)
    table = spec.to_table(items)
    assert table.schema.equals(spec.schema) and table.num_rows == 2
    assert spec.size_of(items[0]) == 2 * 4 * 4
    spec = hidden_states_table("float32", 3, [0])
    table = spec.to_table(items)
    assert table.column("layer").to_pylist() == [0, 0]
    assert table.column("num_frames").to_pylist() == [2, 5]


def test_classification_and_codes_tables_follow_their_schema() -> None:
    items = [
        ItemResult(
            id=f"f{n}",
            source=f"s{n}",
            duration_s=1.5,
            sample_rate=16_000,
            num_frames=n,
            frames={CODES: np.full((n, 2), 300 + n, np.int16)},
            pooled={CLASS_PROBABILITIES: np.roll(np.array([0.7, 0.2, 0.1], np.float32), n)},
        )
        for n in (1, 2)
    ]
    spec = classifications_table({0: "yes", 1: "no", 2: "up"}, "/m")
    table = spec.to_table(items)
    assert table.schema.equals(spec.schema)
    assert table.column("label").to_pylist() == ["no", "up"]
    assert table.column("score").to_pylist() == pytest.approx([0.7, 0.7])
    assert table.column("probabilities").to_pylist()[1] == pytest.approx([0.2, 0.1, 0.7])
    assert table.column("source").to_pylist() == ["s1", "s2"]
    spec = codes_table(2)
    table = spec.to_table(items)
    assert table.schema.equals(spec.schema)
    assert table.column("codes").to_pylist() == [[[301, 301]], [[302, 302], [302, 302]]]


def test_summary_is_written_twice(tmp_path: Path) -> None:
    paths = write_summary(str(tmp_path), "run1", {"inputs": 3})
    assert [Path(p).name for p in paths] == ["summary.json", "summary-run1.json"]
    assert json.loads(Path(paths[0]).read_text()) == {"inputs": 3}


# ---------------------------------------------------------------- progress


def test_progress_files_add_up_per_run(tmp_path: Path) -> None:
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    run_a.mkdir()
    run_b.mkdir()
    record_progress(str(run_a), files_inferred=2, audio_s=30.0)
    record_progress(str(run_a), files_inferred=1, batches=1)
    record_progress(str(run_b), files_inferred=5)
    record_progress(None, files_inferred=100)
    assert read_progress(str(run_a)) == {"files_inferred": 3, "audio_s": 30.0, "batches": 1}
    assert read_progress(str(run_b)) == {"files_inferred": 5}


def test_items_on_disk_counts_a_cut_stopped_between_publishing_and_recording(
    tmp_path: Path,
) -> None:
    run = str(tmp_path / "progress")
    Path(run).mkdir()
    published, unpublished = tmp_path / "transcripts-1.parquet", tmp_path / "errors-1.parquet"
    with recorded_commit(run, {str(tmp_path / "transcripts-0.parquet"): 4}, 4) as admitted:
        assert admitted  # a whole commit: recorded
    # the signal comes after one file's rename
    with (
        pytest.raises(KeyboardInterrupt),
        recorded_commit(run, {str(published): 3, str(unpublished): 2}, 5),
    ):
        published.write_bytes(b"")
        raise KeyboardInterrupt
    assert read_progress(run)["items_written"] == 4  # the live count: what was recorded
    assert items_on_disk(run) == 4 + 3  # the file that exists counts, the other does not


def test_halted_commits_wait_for_the_one_under_way_and_admit_no_more(tmp_path: Path) -> None:
    run = str(tmp_path)
    inside, release = threading.Event(), threading.Event()

    def writer() -> None:
        with recorded_commit(run, {str(tmp_path / "a.parquet"): 5}, 5) as admitted:
            assert admitted
            inside.set()
            release.wait(10)
            (tmp_path / "a.parquet").write_bytes(b"")

    thread = threading.Thread(target=writer)
    thread.start()
    inside.wait(10)
    threading.Timer(0.3, release.set).start()
    halt_commits(run)  # returns only once the writer's commit is recorded
    assert read_progress(run)["items_written"] == 5
    with recorded_commit(run, {str(tmp_path / "b.parquet"): 1}, 1) as admitted:
        assert not admitted
    thread.join()
    assert items_on_disk(run) == 5


def test_a_progress_line_has_the_percentage_and_the_time_left(tmp_path: Path) -> None:
    record_progress(str(tmp_path), files_succeeded=2, files_failed=1, audio_s=30.0)
    record_progress(str(tmp_path), items_skipped=1, items_written=2)
    census = Census(items=8, audio_s=None)
    line = progress_line(read_progress(str(tmp_path)), 10.0, census)
    # 4 of 8 items done (2 + 1 failed + 1 skipped) in 10 s: 10 s more at that rate.
    assert line == (
        "progress: 50%, 4 of 8 items (0.01 h of audio, 3.0x real time, 2 on disk, 1 failed, "
        "1 skipped (already in the tables)); 10 s elapsed, about 10 s left"
    )
    unknown = progress_line(read_progress(str(tmp_path)), 10.0, Census(items=None, audio_s=None))
    assert unknown.startswith("progress: 4 items (") and "left" not in unknown


def test_the_display_logs_on_its_interval_when_not_a_terminal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "FIRST_LOG_S", 0.05)
    monkeypatch.setattr(console, "LOG_INTERVAL_S", 0.05)
    record_progress(str(tmp_path), files_succeeded=4, audio_s=7200.0)
    with caplog.at_level(logging.INFO, logger="wav2vec2"):
        logger = logging.getLogger("wav2vec2")
        propagate, logger.propagate = logger.propagate, True
        try:
            census = Census(items=16, audio_s=None)
            with ProgressDisplay(str(tmp_path), time.time(), census, sys.stderr, False):
                time.sleep(0.3)
        finally:
            logger.propagate = propagate
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert len(lines) >= 3
    assert lines[-1].startswith("progress: 25%, 4 of 16 items (2.00 h of audio, ")

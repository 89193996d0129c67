"""`--segment vad` (issue #26): voice segments instead of fixed windows, the `segments` table,
and the files `--formats` writes (SRT, WebVTT, CTM).

Material: tests/fixtures/long_recording.py, the pocketsphinx recordings (real speech) in turn
with 1.5-6 s of near silence or steady noise between them, whose spans and references are known.
Oracles: those spans (speech kept, gaps left out), the same stream cut into other blocks, the
fixed windows' run on the same file (seconds sent to the model, character error rate against the
joined references), the `srt` and `webvtt` parsers, and the segments table itself.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
import srt
import webvtt
from fixtures.long_recording import POCKETSPHINX, RATE, long_recording

from wav2vec2_beam.demo import MODEL_DIR
from wav2vec2_beam.demo.evaluate import error_rates
from wav2vec2_beam.pipeline.main import main as run_pipeline
from wav2vec2_beam.transforms.read.voice_activity import (
    MARGIN_S,
    VoiceSegmenter,
    segment_audio,
    voice_segments,
)

pytestmark = pytest.mark.skipif(
    not POCKETSPHINX.is_dir(), reason="run_tests.sh installs pocketsphinx-testdata"
)


@pytest.fixture(scope="module")
def recording():
    return long_recording(150.0)


def sent_mask(segments, length: int) -> np.ndarray:
    mask = np.zeros(length, bool)
    for segment in segments:
        mask[segment.start : segment.end] = True
    return mask


def test_speech_is_kept_and_the_gaps_left_out(recording) -> None:
    segments = list(voice_segments(np.array_split(recording.audio, 40)))
    mask = sent_mask(segments, len(recording.audio))
    speech = np.zeros(len(recording.audio), bool)
    for start, end in recording.utterances:
        speech[start:end] = True
        # Every utterance is sent, nearly whole (the recordings' own lead-in is quiet).
        assert mask[start:end].mean() >= 0.9, (start / RATE, mask[start:end].mean())
    assert mask[speech].mean() >= 0.97
    assert mask[~speech].mean() <= 0.25  # measured 16%: noise right after speech, and margins
    for segment in segments:  # each segment's samples are the recording's
        np.testing.assert_array_equal(segment.samples, recording.audio[segment.start : segment.end])
    assert all(a.end <= b.start for a, b in itertools.pairwise(segments))


def test_the_segments_do_not_depend_on_how_the_stream_is_cut(recording) -> None:
    whole = list(voice_segments([recording.audio]))
    for parts in (7, 333):
        cut = list(voice_segments(np.array_split(recording.audio, parts)))
        assert [(s.start, s.end) for s in cut] == [(s.start, s.end) for s in whole]


def test_long_speech_is_cut_within_the_bound_and_loses_nothing(recording) -> None:
    """Speech with no long pause: utterances back to back, segments of at most 4 s."""
    speech = np.concatenate([recording.audio[start:end] for start, end in recording.utterances[:8]])
    segments = list(voice_segments(np.array_split(speech, 9), max_segment_s=4.0))
    bound = (4.0 + 2 * MARGIN_S) * RATE
    assert len(segments) > len(speech) / RATE / 4.0 / 2
    assert all(len(segment.samples) <= bound for segment in segments)
    mask = sent_mask(segments, len(speech))
    assert mask.mean() >= 0.95


def test_memory_held_is_bounded_by_the_longest_segment(recording) -> None:
    segmenter = VoiceSegmenter(max_segment_s=10.0)
    most = 0
    for _ in range(4):  # ten minutes, in 2.5 s blocks
        for block in np.array_split(recording.audio, 60):
            list(segmenter.feed(block))
            most = max(most, sum(len(held) for held in segmenter._held))
    # Two segments, the pause that may join them, margins, and the second-long trim step.
    assert most <= (2 * 10.0 + 1.0 + 2 * MARGIN_S + 1.0) * RATE + len(block)


def test_an_item_without_speech_is_one_closing_chunk() -> None:
    silence = np.zeros(3 * RATE, np.float32)
    (chunk,) = segment_audio([silence], "quiet", "quiet.wav", 30.0)
    assert chunk.is_last and chunk.total_samples == len(silence)
    assert not chunk.needs_model and chunk.segment_start == 0


@pytest.fixture(scope="module")
def runs(recording, tmp_path_factory) -> dict[str, Path]:
    """The long recording and a silent file, with fixed windows and with `--segment vad`."""
    folder = tmp_path_factory.mktemp("vad")
    soundfile.write(folder / "recording.flac", recording.audio, RATE)
    soundfile.write(folder / "silence.wav", np.zeros(2 * RATE, np.float32), RATE)
    outputs = {}
    for mode, flags in {
        "windows": ["--formats=ctm"],
        "vad": ["--segment=vad", "--formats=srt,vtt,ctm"],
    }.items():
        outputs[mode] = folder / mode
        inputs = [f"--input={folder}/recording.flac", f"--input={folder}/silence.wav"]
        args = [*inputs, f"--model_dir={MODEL_DIR}", f"--output_dir={outputs[mode]}", *flags]
        assert run_pipeline(args) == 0
    return outputs


def rows(output: Path, table: str) -> list[dict]:
    return pq.read_table(output / table).to_pylist()


def test_vad_sends_less_to_the_model_and_transcribes_no_worse(runs, recording) -> None:
    sent = {
        mode: json.loads((output / "summary.json").read_text())["model_input_seconds"]
        for mode, output in runs.items()
    }
    assert sent["vad"] <= 0.7 * sent["windows"], sent  # measured 62% fewer on 2 minutes
    cer = {}
    for mode, output in runs.items():
        (row,) = [r for r in rows(output, "transcripts") if r["id"].endswith("recording.flac")]
        cer[mode] = error_rates([recording.reference], [row["transcript"]])["cer"]
    assert cer["vad"] <= cer["windows"], cer


def test_the_transcript_joins_the_segments(runs) -> None:
    output = runs["vad"]
    transcripts = {Path(r["id"]).name: r for r in rows(output, "transcripts")}
    segments = sorted(rows(output, "segments"), key=lambda r: r["segment"])
    assert {Path(r["id"]).name for r in segments} == {"recording.flac"}  # silence: no segment
    assert transcripts["silence.wav"]["transcript"] == ""
    assert transcripts["silence.wav"]["words"] == []
    recording = transcripts["recording.flac"]
    assert [r["segment"] for r in segments] == list(range(len(segments)))
    texts = [r["transcript"] for r in segments if r["transcript"]]
    assert recording["transcript"] == " ".join(texts)
    assert recording["words"] == [word for r in segments for word in r["words"]]
    for row in segments:
        assert 0 <= row["start_s"] < row["end_s"] <= recording["duration_s"]
        for word in row["words"]:
            assert row["start_s"] <= word["start_s"] < word["end_s"] <= row["end_s"] + 0.02
        if row["words"]:
            mean = np.mean([word["confidence"] for word in row["words"]])
            assert row["confidence"] == pytest.approx(mean, rel=1e-6)
    starts = [r["start_s"] for r in segments]
    assert starts == sorted(starts)
    assert all(a["end_s"] <= b["start_s"] for a, b in itertools.pairwise(segments))


def seconds(clock: str) -> float:
    hours, minutes, rest = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


def test_subtitles_parse_and_their_cues_are_the_segments(runs) -> None:
    output = runs["vad"]
    segments = sorted(rows(output, "segments"), key=lambda r: r["segment"])
    spoken = [r for r in segments if r["transcript"]]
    (srt_file,) = (output / "srt").glob("recording-*.srt")
    cues = list(srt.parse(srt_file.read_text()))
    assert len(cues) == len(spoken)
    for cue, row in zip(cues, spoken, strict=True):
        assert cue.start.total_seconds() == pytest.approx(row["start_s"], abs=5e-4)
        assert cue.end.total_seconds() == pytest.approx(row["end_s"], abs=5e-4)
        assert " ".join(cue.content.split()) == row["transcript"]
        assert all(len(line) <= 42 for line in cue.content.splitlines())
    (vtt_file,) = (output / "vtt").glob("recording-*.vtt")
    captions = webvtt.read(str(vtt_file))
    assert len(captions) == len(spoken)
    for caption, row in zip(captions, spoken, strict=True):
        assert seconds(caption.start) == pytest.approx(row["start_s"], abs=5e-4)
        assert seconds(caption.end) == pytest.approx(row["end_s"], abs=5e-4)
        assert " ".join(caption.text.split()) == row["transcript"]
    (silent,) = (output / "srt").glob("silence-*.srt")
    assert list(srt.parse(silent.read_text())) == []


@pytest.mark.parametrize("mode", ["windows", "vad"])
def test_ctm_has_a_line_per_word_of_the_transcript(runs, mode) -> None:
    output = runs[mode]
    (row,) = [r for r in rows(output, "transcripts") if r["id"].endswith("recording.flac")]
    (ctm_file,) = (output / "ctm").glob("recording-*.ctm")
    lines = [line.split() for line in ctm_file.read_text().splitlines()]
    assert len(lines) == len(row["words"]) > 0
    for fields, word in zip(lines, row["words"], strict=True):
        name, channel, start, duration, text, confidence = fields
        assert (name, channel) == (ctm_file.stem, "1")
        assert float(start) == pytest.approx(word["start_s"], abs=5e-4)
        assert float(duration) == pytest.approx(word["end_s"] - word["start_s"], abs=1e-3)
        assert text == word["word"]
        assert float(confidence) == pytest.approx(word["confidence"], abs=1e-4)


def test_a_resumed_vad_run_recomputes_nothing(runs) -> None:
    output = runs["vad"]
    before = rows(output, "segments")
    inputs = [f"--input={output.parent}/recording.flac", f"--input={output.parent}/silence.wav"]
    args = [*inputs, f"--model_dir={MODEL_DIR}", f"--output_dir={output}"]
    assert run_pipeline([*args, "--segment=vad", "--formats=srt,vtt,ctm", "--skip_existing"]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["skipped_existing"] == 2 and summary["succeeded"] == 0
    assert rows(output, "segments") == before

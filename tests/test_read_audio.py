"""`ReadAudio` on the DirectRunner: every input ends once, in complete chunks or in one error.

The corpus mixes good files of several formats with files that fail up front (empty, text, short,
truncated WAV, a directory, a missing path, an empty glob) and files that fail late, after some of
their windows were emitted (a truncated FLAC, a NaN deep into a float WAV), which is the case the
module's contract exists for.
"""

from __future__ import annotations

import pathlib
import pickle
from collections import defaultdict

import apache_beam as beam
import numpy as np
import pytest
import soundfile
from apache_beam.io import fileio
from apache_beam.metrics.metric import MetricsFilter

from transforms.chunk_audio import chunk_params
from transforms.decode_audio import decode_audio
from transforms.read_audio import CHUNKS_TAG, METRICS_NAMESPACE, ReadAudio
from transforms.records import ERRORS_TAG, TARGET_SAMPLE_RATE, AudioChunk, ErrorRecord

CHUNK_LENGTH_S = 2.0
BLOCK_S = 0.5  # small decode blocks, so late failures happen after windows were emitted


def _sine(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    mono = (0.4 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    return np.stack([mono] * channels, 1) if channels > 1 else mono


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("corpus")
    good, bad = root / "good", root / "bad"
    good.mkdir()
    bad.mkdir()
    files = {
        "wav16": good / "a.wav",
        "flac44": good / "b.flac",
        "mp3": good / "c.mp3",
        "ogg48": good / "d.ogg",
        "empty": bad / "empty.wav",
        "text": bad / "notes.wav",
        "short": bad / "short.wav",
        "cut_wav": bad / "cut.wav",
        "cut_flac": bad / "cut.flac",
        "nan_late": bad / "nan.wav",
        "subdir": bad / "subdir",
    }
    soundfile.write(files["wav16"], _sine(16_000, 5.0), 16_000, subtype="PCM_16")
    soundfile.write(files["flac44"], _sine(44_100, 7.3, 2), 44_100, subtype="PCM_24")
    soundfile.write(files["mp3"], _sine(22_050, 3.0), 22_050, format="MP3")
    soundfile.write(files["ogg48"], _sine(48_000, 1.5, 2), 48_000, format="OGG", subtype="VORBIS")
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not audio\n" * 50)
    soundfile.write(files["short"], np.zeros(100, np.float32), 16_000)
    whole_wav = root / "whole.wav"
    soundfile.write(whole_wav, _sine(16_000, 6.0), 16_000)
    files["cut_wav"].write_bytes(whole_wav.read_bytes()[:50_000])
    whole_flac = root / "whole.flac"
    soundfile.write(whole_flac, _sine(44_100, 20.0), 44_100, subtype="PCM_24")
    files["cut_flac"].write_bytes(whole_flac.read_bytes()[: whole_flac.stat().st_size * 6 // 10])
    late_nan = _sine(16_000, 20.0)
    late_nan[15 * 16_000] = np.nan
    soundfile.write(files["nan_late"], late_nan, 16_000, subtype="FLOAT")
    files["subdir"].mkdir()
    return files


def _run(pipeline_input: beam.PTransform, out: pathlib.Path) -> tuple[list, list, dict]:
    """Run ReadAudio after `pipeline_input`; return its chunks, its errors and its counters."""
    pipeline = beam.Pipeline(runner="DirectRunner")
    result = (
        pipeline
        | pipeline_input
        | ReadAudio(CHUNK_LENGTH_S, stride_length_s=None, align_to=320, block_s=BLOCK_S)
    )
    for tag in (CHUNKS_TAG, ERRORS_TAG):
        target = out / f"{tag}.pickle"
        _ = (
            result[tag]
            | f"Collect{tag}" >> beam.combiners.ToList()
            | f"Save{tag}"
            >> beam.Map(lambda items, path=target: path.write_bytes(pickle.dumps(items)))
        )
    run = pipeline.run()
    run.wait_until_finish()
    counters = {
        counter.key.metric.name: counter.committed
        for counter in run.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))[
            "counters"
        ]
    }
    chunks = pickle.loads((out / f"{CHUNKS_TAG}.pickle").read_bytes())
    errors = pickle.loads((out / f"{ERRORS_TAG}.pickle").read_bytes())
    return chunks, errors, counters


def _group(chunks: list[AudioChunk]) -> dict[str, list[AudioChunk]]:
    by_id: dict[str, list[AudioChunk]] = defaultdict(list)
    for chunk in chunks:
        by_id[chunk.id].append(chunk)
    return {item: sorted(group, key=lambda c: c.index) for item, group in by_id.items()}


def _is_complete(group: list[AudioChunk]) -> bool:
    """The stitcher's completeness rule from read_audio's contract."""
    return (
        [c.index for c in group] == list(range(len(group)))
        and group[-1].is_last
        and not any(c.is_last for c in group[:-1])
    )


def test_every_file_ends_once(corpus: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> None:
    good = corpus["wav16"].parent
    bad = corpus["empty"].parent
    patterns = [
        str(good / "*"),
        str(corpus["wav16"]),  # matched twice: must still be read once
        str(bad / "*.wav"),
        str(bad / "*.flac"),
        str(corpus["subdir"]),
        str(good / "nothing-here-*.wav"),
        str(good / "missing.wav"),
    ]
    chunks, errors, counters = _run(beam.Create(patterns), tmp_path)
    groups = _group(chunks)
    errors_by_id: dict[str, list[ErrorRecord]] = defaultdict(list)
    for error in errors:
        errors_by_id[error.id].append(error)
    assert all(len(found) == 1 for found in errors_by_id.values()), errors_by_id

    complete = {item for item, group in groups.items() if _is_complete(group)}
    good_ids = {str(corpus[k]) for k in ("wav16", "flac44", "mp3", "ogg48")}
    bad_ids = {
        str(corpus[k]) for k in ("empty", "text", "short", "cut_wav", "cut_flac", "nan_late")
    }
    unmatched = {str(good / "nothing-here-*.wav"), str(good / "missing.wav")}
    assert complete == good_ids
    assert set(errors_by_id) == bad_ids | unmatched | {str(corpus["subdir"])}
    assert not complete & set(errors_by_id)  # exactly one place each
    # Files that failed up front emitted nothing; late failures left a prefix without is_last.
    late = {str(corpus["cut_flac"]), str(corpus["nan_late"])}
    assert set(groups) == good_ids | late
    for item in late:
        assert groups[item] and not any(c.is_last for c in groups[item])

    stages = {item: found[0].stage for item, found in errors_by_id.items()}
    assert stages[str(corpus["subdir"])] == "read"
    assert all(stages[item] == "read" for item in unmatched)
    assert all(stages[item] == "decode" for item in bad_ids)
    message = errors_by_id[str(good / "nothing-here-*.wav")][0]
    assert message.source == message.id and "no_match" in message.error
    assert "truncated" in errors_by_id[str(corpus["cut_wav"])][0].error
    assert "non_finite" in errors_by_id[str(corpus["nan_late"])][0].error

    assert counters == {
        "files_read": 4,
        "decode_failures": len(bad_ids) + 1,
        "unmatched_patterns": 2,
        "audio_ms_decoded": 5_000 + 7_300 + 3_000 + 1_500,
    }


def test_chunks_carry_the_decoded_audio(
    corpus: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    """ReadableFile inputs work too, and a complete item's windows rebuild its decoded signal."""
    pattern = str(corpus["flac44"].parent / "*")
    chunks, errors, _ = _run(
        beam.Create([pattern]) | fileio.MatchAll() | fileio.ReadMatches(), tmp_path
    )
    assert errors == []
    step = chunk_params(CHUNK_LENGTH_S).step
    for item, group in _group(chunks).items():
        expected, info = decode_audio(item)
        assert _is_complete(group)
        assert group[-1].total_samples == len(expected)
        rebuilt = np.concatenate([c.samples[:step] for c in group[:-1]] + [group[-1].samples])
        np.testing.assert_array_equal(rebuilt, expected)
        for chunk in group:
            assert chunk.source == item and chunk.sample_rate == TARGET_SAMPLE_RATE
            assert chunk.metadata == {
                "source_sample_rate": info.sample_rate,
                "source_channels": info.channels,
                "source_format": f"{info.format}/{info.subtype}",
            }


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError):
        ReadAudio(1.0, stride_length_s=0.5)

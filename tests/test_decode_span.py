"""Reading a span of a file (a manifest's offset/duration) equals slicing the decoded file.

The reference is computed independently of the streaming decoder: soundfile decodes the whole file
at its own rate, the span's frames (`round(seconds * rate)`) are sliced out, averaged to mono and
resampled by soxr in one call. The span read by the pipeline's decoder (a libsndfile seek, then
only the span's frames, in small blocks) must equal it to the sample.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import soundfile
import soxr
from fixtures.synthetic_audio import synthetic_speech

from wav2vec2_beam.transforms.read.decode_audio import AudioDecodeError, Span, decode_audio
from wav2vec2_beam.transforms.records import TARGET_SAMPLE_RATE

#: (extension, format, subtype, rate, channels, exact): MP3's seek restarts its decoder, which
#: changes samples by float rounding only.
CASES = [
    ("wav", "WAV", "PCM_16", 16_000, 1, True),
    ("flac", "FLAC", "PCM_24", 44_100, 2, True),
    ("ogg", "OGG", "VORBIS", 48_000, 2, True),
    ("opus", "OGG", "OPUS", 48_000, 1, True),
    ("mp3", "MP3", "MPEG_LAYER_III", 22_050, 1, False),
]
SPANS = [(0.0, 1.0), (0.7351, 1.25), (2.0, None), (3.37, 0.5)]


def sliced(path: pathlib.Path, offset_s: float, duration_s: float | None) -> np.ndarray:
    """The span cut out of the whole decoded file, then made 16 kHz mono."""
    whole, rate = soundfile.read(path, dtype="float32", always_2d=True)
    first = round(offset_s * rate)
    end = len(whole) if duration_s is None else first + round(duration_s * rate)
    mono = whole[first:end].mean(axis=1, dtype=np.float32)
    return mono if rate == TARGET_SAMPLE_RATE else soxr.resample(mono, rate, TARGET_SAMPLE_RATE)


@pytest.fixture(scope="module", params=CASES, ids=[case[0] for case in CASES])
def recording(request: pytest.FixtureRequest, tmp_path_factory) -> tuple[pathlib.Path, bool]:
    ext, fmt, subtype, rate, channels, exact = request.param
    mono = synthetic_speech(4.0, seed=11, sampling_rate=rate)
    data = mono if channels == 1 else np.stack([mono, 0.3 * mono[::-1]], axis=1)
    path = tmp_path_factory.mktemp("span") / f"speech.{ext}"
    soundfile.write(path, data, rate, format=fmt, subtype=subtype)
    return path, exact


@pytest.mark.parametrize(("offset_s", "duration_s"), SPANS)
def test_span_equals_slicing_the_decoded_file(
    recording: tuple[pathlib.Path, bool], offset_s: float, duration_s: float | None
) -> None:
    path, exact = recording
    expected = sliced(path, offset_s, duration_s)
    got, _ = decode_audio(path, block_s=0.3, span=Span(offset_s, duration_s))
    assert got.shape == expected.shape
    if exact:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_a_16k_span_is_the_very_samples_of_the_file(tmp_path: pathlib.Path) -> None:
    samples = synthetic_speech(2.0, seed=3)
    path = tmp_path / "x.wav"
    soundfile.write(path, samples, TARGET_SAMPLE_RATE, subtype="FLOAT")
    whole, _ = decode_audio(path)
    span, _ = decode_audio(path, span=Span(0.5, 0.25))
    np.testing.assert_array_equal(span, whole[8_000:12_000])


def test_a_span_past_the_end_is_cut_at_the_end(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.wav"
    soundfile.write(path, synthetic_speech(2.0, seed=3), TARGET_SAMPLE_RATE)
    whole, _ = decode_audio(path)
    span, _ = decode_audio(path, span=Span(1.5, 10.0))
    np.testing.assert_array_equal(span, whole[24_000:])


@pytest.mark.parametrize(
    ("span", "reason"),
    [(Span(2.0, 1.0), "bad_span"), (Span(5.0, None), "bad_span"), (Span(1.0, 0.01), "too_short")],
)
def test_spans_that_hold_no_usable_audio(tmp_path: pathlib.Path, span: Span, reason: str) -> None:
    path = tmp_path / "x.wav"
    soundfile.write(path, synthetic_speech(2.0, seed=3), TARGET_SAMPLE_RATE)
    with pytest.raises(AudioDecodeError) as raised:
        decode_audio(path, span=span)
    assert raised.value.reason == reason and raised.value.stage == "decode"

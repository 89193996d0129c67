"""The streaming decoder: round trips, resampling, downmix, bad files, and flat memory.

All audio is generated here and written by soundfile (libsndfile), so the formats are exactly
those the pipeline meets: WAV int16/float, 24-bit FLAC, Ogg Vorbis, Opus and MP3.
"""

from __future__ import annotations

import io
import pathlib
import tracemalloc

import numpy as np
import pytest
import soundfile
import soxr

from wav2vec2_beam.transforms.infer.chunk import chunk_audio, chunk_params
from wav2vec2_beam.transforms.read.decode_audio import (
    MIN_SAMPLES,
    AudioDecodeError,
    AudioInfo,
    decode_audio,
    open_audio,
)
from wav2vec2_beam.transforms.records import TARGET_SAMPLE_RATE

#: (format, subtype, extension, sample rates the codec takes, lossless)
FORMATS = [
    ("WAV", "PCM_16", "wav", (8_000, 16_000, 22_050, 44_100, 48_000), True),
    ("WAV", "FLOAT", "wav", (8_000, 16_000, 22_050, 44_100, 48_000), True),
    ("FLAC", "PCM_24", "flac", (8_000, 16_000, 22_050, 44_100, 48_000), True),
    ("OGG", "VORBIS", "ogg", (8_000, 16_000, 22_050, 44_100, 48_000), False),
    ("OGG", "OPUS", "opus", (8_000, 16_000, 48_000), False),  # Opus takes no 22.05/44.1 kHz
    ("MP3", "MPEG_LAYER_III", "mp3", (8_000, 16_000, 22_050, 44_100, 48_000), False),
]
FORMAT_CASES = [
    pytest.param(
        fmt, subtype, ext, rate, channels, lossless, id=f"{ext}-{subtype}-{rate}-{channels}ch"
    )
    for fmt, subtype, ext, rates, lossless in FORMATS
    for rate in rates
    for channels in (1, 2)
]


def _sine(rate: int, seconds: float, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write(path: pathlib.Path, data: np.ndarray, rate: int, fmt: str, subtype: str) -> pathlib.Path:
    soundfile.write(path, data, rate, format=fmt, subtype=subtype)
    return path


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * TARGET_SAMPLE_RATE / len(samples))


@pytest.mark.parametrize(("fmt", "subtype", "ext", "rate", "channels", "lossless"), FORMAT_CASES)
def test_formats_rates_and_channels(
    tmp_path: pathlib.Path,
    fmt: str,
    subtype: str,
    ext: str,
    rate: int,
    channels: int,
    lossless: bool,
) -> None:
    """Each format/rate/layout decodes to 16 kHz mono of the right length, pitch and level."""
    mono = _sine(rate, 2.0)
    data = np.stack([mono] * channels, axis=1) if channels == 2 else mono
    path = _write(tmp_path / f"x.{ext}", data, rate, fmt, subtype)

    samples, info = decode_audio(path, block_s=0.5)

    # Block edges must not show: a small-block decode equals a one-block decode (MP3 would not
    # if soundfile re-seeked after every read, see decode_audio._SequentialSoundFile).
    np.testing.assert_allclose(samples, decode_audio(path, block_s=100.0)[0], rtol=0, atol=1e-6)
    assert info == AudioInfo(rate, channels, len(mono), fmt, subtype)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) == round(len(mono) * TARGET_SAMPLE_RATE / rate)
    assert abs(_peak_hz(samples) - 440.0) <= 1.0  # bins are 0.5 Hz wide
    middle = samples[4_000:-4_000]  # away from codec/resampler edge effects
    expected = _sine(TARGET_SAMPLE_RATE, 2.0)[4_000:-4_000]
    if lossless:
        # Only the resampler's passband ripple (and 16-bit quantization) separates them.
        assert np.abs(middle - expected).max() < 2e-3
    else:
        # Lossy codecs shift phase (encoder delay) and level slightly; the tone itself survives.
        assert 0.3 < np.sqrt(2 * np.mean(middle**2)) < 0.7


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_16k_wav_round_trips_exactly(tmp_path: pathlib.Path, subtype: str) -> None:
    rng = np.random.default_rng(0)
    written = (0.3 * rng.standard_normal(50_000)).clip(-1, 1).astype(np.float32)
    path = _write(tmp_path / "x.wav", written, TARGET_SAMPLE_RATE, "WAV", subtype)
    expected, _ = soundfile.read(path, dtype="float32")
    samples, _ = decode_audio(path, block_s=0.37)
    np.testing.assert_array_equal(samples, expected)
    if subtype == "FLOAT":
        np.testing.assert_array_equal(samples, written)


@pytest.mark.parametrize("rate", [16_000, 44_100])
def test_identical_stereo_equals_mono(tmp_path: pathlib.Path, rate: int) -> None:
    mono = (0.3 * np.random.default_rng(1).standard_normal(rate * 3)).astype(np.float32)
    path_mono = _write(tmp_path / "m.wav", mono, rate, "WAV", "FLOAT")
    path_stereo = _write(tmp_path / "s.wav", np.stack([mono, mono], 1), rate, "WAV", "FLOAT")
    np.testing.assert_array_equal(decode_audio(path_stereo)[0], decode_audio(path_mono)[0])


def test_downmix_averages_channels(tmp_path: pathlib.Path) -> None:
    left = np.array([0.5, -0.25, 1.0, 0.0] * 200, np.float32)
    right = np.array([0.25, 0.25, -1.0, 0.75] * 200, np.float32)
    path = _write(
        tmp_path / "s.wav", np.stack([left, right], 1), TARGET_SAMPLE_RATE, "WAV", "FLOAT"
    )
    samples, info = decode_audio(path)
    assert info.channels == 2
    np.testing.assert_array_equal(samples[:4], [0.375, 0.0, 0.0, 0.375])
    np.testing.assert_array_equal(samples, (left + right) / 2)


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
@pytest.mark.parametrize("block_s", [20.0, 1.0, 0.123])
def test_streamed_resample_equals_whole_signal(
    tmp_path: pathlib.Path, rate: int, block_s: float
) -> None:
    """Blocks through one ResampleStream, flushed at the end, equal soxr.resample of the whole."""
    rng = np.random.default_rng(rate)
    signal = (0.3 * rng.standard_normal(rate * 25 + 7)).astype(np.float32)
    path = _write(tmp_path / "x.wav", signal, rate, "WAV", "FLOAT")
    samples, _ = decode_audio(path, block_s=block_s)
    whole = soxr.resample(signal, rate, TARGET_SAMPLE_RATE)
    assert len(samples) == len(whole)
    # Measured: 0.0 (bit-identical) for every rate and block size here.
    assert np.abs(samples - whole).max() <= 1e-6


def test_file_objects_and_paths_agree(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "x.flac", _sine(44_100, 1.0), 44_100, "FLAC", "PCM_24")
    from_path, _ = decode_audio(path)
    from_str, _ = decode_audio(str(path))
    with open(path, "rb") as handle:
        from_handle, _ = decode_audio(handle)
        assert not handle.closed  # the caller's file stays the caller's
    from_bytes, _ = decode_audio(io.BytesIO(path.read_bytes()))
    for other in (from_str, from_handle, from_bytes):
        np.testing.assert_array_equal(other, from_path)


def test_num_samples_counts_what_was_yielded(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "x.wav", _sine(22_050, 3.0), 22_050, "WAV", "PCM_16")
    with open_audio(path, block_s=0.5) as stream:
        total = sum(len(block) for block in stream.blocks())
        assert stream.num_samples == total == 48_000


# --- bad files ---------------------------------------------------------------------------------


def _error(source: object) -> AudioDecodeError:
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(source)  # type: ignore[arg-type]
    error = caught.value
    assert "\n" not in str(error)
    return error


def test_missing_path(tmp_path: pathlib.Path) -> None:
    error = _error(tmp_path / "nope.wav")
    assert (error.stage, error.reason) == ("read", "unreadable")
    assert "FileNotFoundError" in str(error) and "nope.wav" in str(error)


def test_directory(tmp_path: pathlib.Path) -> None:
    error = _error(tmp_path)
    assert (error.stage, error.reason) == ("read", "unreadable")
    assert "IsADirectoryError" in str(error)


def test_empty_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "x.wav").write_bytes(b"")
    error = _error(tmp_path / "x.wav")
    assert (error.stage, error.reason) == ("decode", "empty")


@pytest.mark.parametrize(
    "content",
    [np.random.default_rng(2).bytes(20_000), b"just some text, not audio\n" * 100],
    ids=["random-bytes", "text"],
)
def test_not_audio(tmp_path: pathlib.Path, content: bytes) -> None:
    (tmp_path / "x.wav").write_bytes(content)
    error = _error(tmp_path / "x.wav")
    assert (error.stage, error.reason) == ("decode", "not_audio")
    assert "Format not recognised" in str(error)  # libsndfile's own words


def test_zero_frames(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "x.wav", np.zeros(0, np.float32), 16_000, "WAV", "PCM_16")
    assert _error(path).reason == "zero_frames"


@pytest.mark.parametrize(("frames", "rate"), [(100, 16_000), (399, 16_000), (1_000, 44_100)])
def test_too_short(tmp_path: pathlib.Path, frames: int, rate: int) -> None:
    path = _write(tmp_path / "x.wav", np.zeros(frames, np.float32), rate, "WAV", "PCM_16")
    error = _error(path)
    assert (error.stage, error.reason) == ("decode", "too_short")


def test_one_model_frame_is_enough(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path / "x.wav", np.zeros(MIN_SAMPLES, np.float32), 16_000, "WAV", "PCM_16")
    assert len(decode_audio(path)[0]) == MIN_SAMPLES


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("channels", [1, 2])
def test_non_finite_samples(tmp_path: pathlib.Path, bad: float, channels: int) -> None:
    data = np.zeros((48_000, channels), np.float32)
    data[30_000, channels - 1] = bad
    path = _write(tmp_path / "x.wav", data, 16_000, "WAV", "FLOAT")
    error = _error(path)
    assert (error.stage, error.reason) == ("decode", "non_finite")
    assert "frame 30000" in str(error)


def _truncated(
    tmp_path: pathlib.Path, ext: str, fmt: str, subtype: str, keep: float
) -> pathlib.Path:
    whole = _write(tmp_path / f"whole.{ext}", _sine(44_100, 10.0), 44_100, fmt, subtype)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: int(len(data) * keep)])
    return cut


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.999])
def test_truncated_wav_is_caught_by_its_header(tmp_path: pathlib.Path, keep: float) -> None:
    error = _error(_truncated(tmp_path, "wav", "WAV", "PCM_16", keep))
    assert (error.stage, error.reason) == ("decode", "truncated")
    assert "data bytes" in str(error)


@pytest.mark.parametrize("keep", [0.001, 0.1, 0.5, 0.999])
def test_truncated_flac_fails_while_reading(tmp_path: pathlib.Path, keep: float) -> None:
    path = _truncated(tmp_path, "flac", "FLAC", "PCM_24", keep)
    for block_s in (20.0, 0.1):
        with pytest.raises(AudioDecodeError) as caught:
            decode_audio(path, block_s=block_s)
        assert caught.value.stage == "decode"
        assert caught.value.reason in {"corrupt", "truncated"}


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.999])
def test_truncated_mp3_is_caught_by_its_frame_count(tmp_path: pathlib.Path, keep: float) -> None:
    error = _error(_truncated(tmp_path, "mp3", "MP3", "MPEG_LAYER_III", keep))
    assert (error.stage, error.reason) == ("decode", "truncated")
    assert "of the 441000 frames" in str(error)


def test_truncated_flac_yields_its_prefix_before_failing(tmp_path: pathlib.Path) -> None:
    """The failure is late: blocks were already yielded (why DecodeItems holds back the last)."""
    path = _truncated(tmp_path, "flac", "FLAC", "PCM_24", 0.5)
    yielded = 0
    with open_audio(path, block_s=0.5) as stream, pytest.raises(AudioDecodeError):
        for block in stream.blocks():
            yielded += len(block)
    assert 0 < yielded < 10 * TARGET_SAMPLE_RATE


@pytest.mark.parametrize(("ext", "subtype"), [("ogg", "VORBIS"), ("opus", "OPUS")])
def test_truncated_ogg_decodes_its_prefix(tmp_path: pathlib.Path, ext: str, subtype: str) -> None:
    """Ogg's length comes from its last page, so a cut file is a shorter valid stream."""
    rate = 48_000
    whole = _write(tmp_path / f"whole.{ext}", _sine(rate, 10.0), rate, "OGG", subtype)
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    samples, info = decode_audio(cut)
    assert info.frames < 10 * rate
    assert 0 < len(samples) < 10 * TARGET_SAMPLE_RATE
    assert abs(_peak_hz(samples) - 440.0) <= 2.0


class _FailingFile(io.BytesIO):
    """A file object whose reads fail past some offset, like a dropped network read."""

    def __init__(self, data: bytes, fail_after: int) -> None:
        super().__init__(data)
        self._fail_after = fail_after

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= self._fail_after:
            raise ConnectionError("connection reset by peer")
        return super().read(size)

    def readinto(self, buffer: object) -> int:
        raise AssertionError("the decoder must read through read()")


@pytest.mark.parametrize("fail_after", [0, 5_000, 600_000])
def test_io_errors_are_not_mistaken_for_the_end_of_the_file(
    tmp_path: pathlib.Path, fail_after: int
) -> None:
    """soundfile's callbacks would swallow the error and see a short file; the decoder does not."""
    path = _write(tmp_path / "x.wav", _sine(16_000, 60.0), 16_000, "WAV", "PCM_16")
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(_FailingFile(path.read_bytes(), fail_after), block_s=1.0)
    assert (caught.value.stage, caught.value.reason) == ("read", "io_error")
    assert "ConnectionError: connection reset by peer" in str(caught.value)


class _InterruptedFile(io.BytesIO):
    """A file object whose read is where a signal's exception lands (the launcher's handler
    raises one in whatever the main thread runs, here a libsndfile callback)."""

    def __init__(self, data: bytes, interrupt_after: int) -> None:
        super().__init__(data)
        self._interrupt_after = interrupt_after

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= self._interrupt_after:
            raise KeyboardInterrupt
        return super().read(size)


@pytest.mark.parametrize("interrupt_after", [0, 5_000, 600_000])
def test_a_signal_in_soundfiles_callback_stops_the_decoder(
    tmp_path: pathlib.Path, interrupt_after: int
) -> None:
    """Not an error row, and not a short file: the exception itself, so that the run stops."""
    path = _write(tmp_path / "x.wav", _sine(16_000, 60.0), 16_000, "WAV", "PCM_16")
    with pytest.raises(KeyboardInterrupt):
        decode_audio(_InterruptedFile(path.read_bytes(), interrupt_after), block_s=1.0)


# --- memory --------------------------------------------------------------------------------------


def _write_long(path: pathlib.Path, rate: int, seconds: int) -> None:
    """Write a long file in pieces, so that the test's own setup stays small too."""
    piece = _sine(rate, 1.0, freq=300.0, amplitude=0.3)
    with soundfile.SoundFile(path, "w", rate, 1, "PCM_16", format="WAV") as out:
        for _ in range(seconds):
            out.write(piece)


def test_memory_stays_flat_while_streaming(tmp_path: pathlib.Path) -> None:
    """Ten minutes at 8 kHz decode to 38 MB of 16 kHz float32; streaming holds a tiny fraction."""
    path = tmp_path / "long.wav"
    _write_long(path, 8_000, 600)
    decoded_bytes = 600 * TARGET_SAMPLE_RATE * 4
    tracemalloc.start()
    try:
        with open_audio(path, block_s=5.0) as stream:
            total = sum(len(block) for block in stream.blocks())
        _, decoder_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        # Decoder and chunker together, as the pipeline runs them: about one 30 s window more.
        with open_audio(path, block_s=5.0) as stream:
            windows = sum(1 for _ in chunk_audio(stream.blocks(), "x", "x", chunk_params(30)))
        _, pipeline_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 600 * TARGET_SAMPLE_RATE
    assert windows == 30
    assert decoder_peak < decoded_bytes / 20, decoder_peak  # measured ~1.0 MB
    assert pipeline_peak < decoded_bytes / 4, pipeline_peak  # measured ~6.6 MB

"""Audio corpora for the end-to-end pipeline tests: good files in many formats, and bad ones.

Good files are synthetic speech-like audio (`fixtures/synthetic_audio.py`) written in every
container the pipeline reads, at several rates and channel counts, plus the pocketsphinx-testdata
recordings when that Debian package is installed. Bad files cover every way an input can fail,
each with the stage its error row must name.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
from fixtures.synthetic_audio import synthetic_speech

#: Real recordings, 16 kHz mono WAV (`apt-get install pocketsphinx-testdata`).
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")

#: (name, seconds, rate, channels, format, subtype) of the generated good files.
GOOD_FILES = (
    ("pcm16_16k_mono.wav", 1.3, 16_000, 1, "WAV", "PCM_16"),
    ("float_44k_stereo.wav", 2.1, 44_100, 2, "WAV", "FLOAT"),
    ("pcm24_8k_mono.wav", 3.0, 8_000, 1, "WAV", "PCM_24"),
    ("flac_22k_mono.flac", 0.9, 22_050, 1, "FLAC", "PCM_16"),
    ("flac_48k_stereo.flac", 5.5, 48_000, 2, "FLAC", "PCM_24"),
    ("vorbis_48k_stereo.ogg", 1.7, 48_000, 2, "OGG", "VORBIS"),
    ("opus_48k_mono.opus", 1.2, 48_000, 1, "OGG", "OPUS"),
    ("mp3_44k_mono.mp3", 2.5, 44_100, 1, "MP3", "MPEG_LAYER_III"),
    ("mp3_16k_stereo.mp3", 1.6, 16_000, 2, "MP3", "MPEG_LAYER_III"),
    ("long_16k_mono.wav", 9.3, 16_000, 1, "WAV", "PCM_16"),
)


@dataclass
class Corpus:
    """The files of one corpus and what the pipeline must make of them."""

    root: Path
    #: The `--input` patterns to pass.
    inputs: list[str]
    #: Every good file (its id is its path).
    good: list[str] = field(default_factory=list)
    #: id -> the stage its error row must name.
    bad: dict[str, str] = field(default_factory=dict)
    #: Good files of digital silence (their transcript must be a row, not an error).
    silent: list[str] = field(default_factory=list)


def _write(
    path: Path, seconds: float, rate: int, channels: int, fmt: str, subtype: str, seed: int
) -> None:
    mono = synthetic_speech(seconds, seed=seed, sampling_rate=rate)
    data = mono if channels == 1 else np.stack([mono, 0.5 * mono[::-1]], axis=1)
    soundfile.write(path, data, rate, format=fmt, subtype=subtype)


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def write_bad_files(folder: Path) -> dict[str, str]:
    """One file per way of failing; returns path -> expected error stage."""
    folder.mkdir(parents=True)
    bad: dict[str, str] = {}

    def add(name: str, stage: str) -> Path:
        path = folder / name
        bad[str(path)] = stage
        return path

    add("empty.wav", "decode").write_bytes(b"")
    add("text.wav", "decode").write_text("this is not audio\n")
    add("noise.flac", "decode").write_bytes(np.random.default_rng(0).bytes(5000))
    truncated_wav = add("truncated.wav", "decode")
    _write(truncated_wav, 1.0, 16_000, 1, "WAV", "PCM_16", seed=1)
    _truncate(truncated_wav, 0.5)
    truncated_flac = add("truncated.flac", "decode")
    _write(truncated_flac, 6.0, 16_000, 1, "FLAC", "PCM_16", seed=2)
    _truncate(truncated_flac, 0.6)
    truncated_mp3 = add("truncated.mp3", "decode")
    _write(truncated_mp3, 4.0, 16_000, 1, "MP3", "MPEG_LAYER_III", seed=3)
    _truncate(truncated_mp3, 0.5)
    samples = synthetic_speech(3.0, seed=4)
    samples[40_000] = np.nan
    soundfile.write(add("nan.wav", "decode"), samples, 16_000, subtype="FLOAT")
    samples = synthetic_speech(1.0, seed=5)
    samples[100] = np.inf
    soundfile.write(add("inf.wav", "decode"), samples, 16_000, subtype="FLOAT")
    soundfile.write(add("too_short.wav", "decode"), np.zeros(100, np.float32), 16_000)
    soundfile.write(add("too_short_8k.flac", "decode"), np.zeros(150, np.float32), 8_000)
    soundfile.write(add("no_frames.wav", "decode"), np.zeros(0, np.float32), 16_000)
    return bad


def make_corpus(root: Path, fillers: int = 0, real: bool = True) -> Corpus:
    """Good files of every format, silence, `fillers` short extra files, and every bad kind."""
    good_dir = root / "good"
    good_dir.mkdir(parents=True)
    missing = str(root / "missing.wav")
    empty_glob = str(root / "nothing" / "*.flac")
    folder = root / "folder.wav"  # a directory named like audio, passed explicitly
    folder.mkdir()
    corpus = Corpus(
        root, [str(good_dir / "*"), str(root / "bad" / "*"), missing, empty_glob, str(folder)]
    )
    for seed, (name, seconds, rate, channels, fmt, subtype) in enumerate(GOOD_FILES):
        _write(good_dir / name, seconds, rate, channels, fmt, subtype, seed=100 + seed)
    silence = good_dir / "silence.wav"
    soundfile.write(silence, np.zeros(24_000, np.float32), 16_000)
    corpus.silent.append(str(silence))
    cancelling = good_dir / "cancelling_stereo.flac"
    tone = synthetic_speech(1.0, seed=7)
    soundfile.write(cancelling, np.stack([tone, -tone], axis=1), 16_000, subtype="PCM_16")
    corpus.silent.append(str(cancelling))
    rates = (8_000, 16_000, 22_050, 44_100)
    for index in range(fillers):
        seconds = 0.3 + 0.05 * (index % 7)
        path = good_dir / f"filler_{index:03d}.wav"
        _write(path, seconds, rates[index % len(rates)], 1 + index % 2, "WAV", "PCM_16", index)
    corpus.good = sorted(str(path) for path in good_dir.iterdir())
    if real and POCKETSPHINX.is_dir():
        real_dir = root / "real"
        real_dir.mkdir()
        for path in sorted(POCKETSPHINX.glob("*/*.wav")):
            shutil.copy(path, real_dir / f"{path.parent.name}_{path.name}")
        corpus.inputs.append(str(real_dir / "*.wav"))
        corpus.good += sorted(str(path) for path in real_dir.iterdir())
    corpus.bad = write_bad_files(root / "bad")
    corpus.bad[missing] = "read"
    corpus.bad[empty_glob] = "read"
    corpus.bad[str(folder)] = "read"
    return corpus

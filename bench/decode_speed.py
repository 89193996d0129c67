"""Decoding speed of the FFmpeg path (PyAV) against the libsndfile path, on the same audio.

    .venv/bin/python -m bench.decode_speed [--minutes 5] [--repeats 3]

Writes `--minutes` of the repository's synthetic speech at 44.1 kHz stereo (as media files come)
as a WAV, a FLAC and an Ogg Opus, which libsndfile reads, and as PCM in Matroska, AAC in m4a,
Opus in webm and WMA, which only FFmpeg reads (the PCM and the two Opus files are the pairs where
the same samples or codec go through both paths); then decodes each with the pipeline's decoder (`open_audio`:
blocks, downmix, resampling to 16 kHz) and reports audio-seconds per CPU-second of this process
(one core: the decoder is single-threaded), best of `--repeats`, and each format's ratio to the
libsndfile FLAC. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import soxr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fixtures.media import M4A, PCM_MKV, WEBM, WMA, encode  # noqa: E402
from fixtures.synthetic_audio import synthetic_speech  # noqa: E402

from bench.lm_speed import machine  # noqa: E402
from wav2vec2_beam.transforms.read.decode_audio import open_audio  # noqa: E402

RATE = 44_100


def cpu_seconds_to_decode(path: Path) -> float:
    start = time.process_time()
    with open_audio(path) as stream:
        for _ in stream.blocks():
            pass
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    seconds = args.minutes * 60
    speech = np.concatenate(
        [
            synthetic_speech(60.0, seed=s, sampling_rate=RATE)
            for s in range(int(np.ceil(args.minutes)))
        ]
    )[: round(seconds * RATE)]
    stereo = np.stack([speech, 0.8 * speech], axis=1).astype(np.float32)
    report: dict[str, object] = {"machine": machine(), "audio_s": seconds, "formats": {}}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        files = {"wav (libsndfile)": work / "a.wav", "flac (libsndfile)": work / "a.flac"}
        soundfile.write(files["wav (libsndfile)"], stereo, RATE, subtype="PCM_16")
        soundfile.write(files["flac (libsndfile)"], stereo, RATE)
        files["opus in ogg (libsndfile)"] = work / "a.opus"
        soundfile.write(
            files["opus in ogg (libsndfile)"],
            soxr.resample(stereo, RATE, 48_000),
            48_000,
            format="OGG",
            subtype="OPUS",
        )
        pcm = np.round(stereo * 32767).astype(np.int16)
        files["pcm in mkv (FFmpeg)"] = encode(work / "a.mkv", pcm, RATE, PCM_MKV)
        for spec in (M4A, WEBM, WMA):
            files[f"{spec.codec} in {spec.suffix} (FFmpeg)"] = encode(
                work / f"a.{spec.suffix}", stereo, RATE, spec
            )
        best = {
            name: min(cpu_seconds_to_decode(path) for _ in range(args.repeats))
            for name, path in files.items()
        }
    flac = best["flac (libsndfile)"]
    for name, cpu_s in best.items():
        report["formats"][name] = {
            "audio_s_per_cpu_s": round(seconds / cpu_s, 1),
            "cpu_time_over_flac": round(cpu_s / flac, 2),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

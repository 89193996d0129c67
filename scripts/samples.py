"""Sample audio and a small checkpoint for `run_local.sh`, and a look at what a run wrote.

    python scripts/samples.py make DIR   # DIR/audio/* and DIR/checkpoint/, if not there yet
    python scripts/samples.py show OUT   # a few rows of each table OUT's latest run wrote

The audio is made from what a fresh Debian machine has or can install: espeak-ng speech (when
`espeak-ng` is installed), the pocketsphinx-testdata recordings (when that package is), and
always the repository's own speech-like synthetic audio (tests/fixtures/synthetic_audio.py), so
that the demo also runs with neither. Files are written in several containers, rates and channel
counts, like a real corpus. The checkpoint is, for now, the tiny random-weight test checkpoint
(tests/fixtures/checkpoints/base): its transcripts are gibberish until a trained demo model is
bundled, but every stage of the pipeline runs for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fixtures"))

from synthetic_audio import synthetic_speech  # noqa: E402

CHECKPOINT = REPO / "tests" / "fixtures" / "checkpoints" / "base"
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "speech recognition turns sound into text",
    "apache beam runs this pipeline on many machines",
)


def _espeak(audio: Path) -> None:
    """espeak-ng sentences, one each as WAV, FLAC and MP3 (when espeak-ng is installed)."""
    if shutil.which("espeak-ng") is None:
        return
    for index, (sentence, fmt) in enumerate(zip(SENTENCES, ("WAV", "FLAC", "MP3"), strict=True)):
        spoken = audio / f"espeak_{index}.tmp.wav"
        subprocess.run(["espeak-ng", "-w", str(spoken), sentence], check=True)
        samples, rate = soundfile.read(spoken, dtype="float32")
        spoken.unlink()
        soundfile.write(audio / f"espeak_{index}.{fmt.lower()}", samples, rate, format=fmt)


def make(folder: Path) -> None:
    """Write DIR/audio and DIR/checkpoint unless they exist."""
    checkpoint = folder / "checkpoint"
    if not checkpoint.is_dir():
        shutil.copytree(CHECKPOINT, checkpoint)
    audio = folder / "audio"
    if audio.is_dir():
        return
    audio.mkdir(parents=True)
    _espeak(audio)
    for name in ("cards/001.wav", "librivox/sense_and_sensibility_01_austen_64kb-0870.wav"):
        if (POCKETSPHINX / name).is_file():
            shutil.copy(POCKETSPHINX / name, audio / name.replace("/", "_"))
    speech = synthetic_speech(4.0, seed=1, sampling_rate=48_000)
    soundfile.write(audio / "synthetic_48k_stereo.ogg", np.stack([speech, speech], 1), 48_000)
    soundfile.write(
        audio / "synthetic_8k.wav", synthetic_speech(2.5, seed=2, sampling_rate=8_000), 8_000
    )
    long = synthetic_speech(75.0, seed=3)  # longer than a 30 s window: goes through in chunks
    soundfile.write(audio / "synthetic_long_16k.flac", long, 16_000)


def _latest_run(output: Path, table: str) -> list[dict]:
    """Rows of the latest run's files of a table (earlier runs' files stay beside them)."""
    run_id = json.loads((output / "summary.json").read_text())["run_id"]
    files = sorted((output / table).glob(f"{run_id}-*.parquet"))
    return [row for path in files for row in pq.read_table(path).to_pylist()]


def show(output: Path, rows: int = 5) -> None:
    """Print a few rows of each table the latest run wrote (the head decides which), and its errors.

    Transcripts with their first words timed, classifications with the label and its probability,
    codes and hidden states by their shape and first frames.
    """
    for row in sorted(_latest_run(output, "transcripts"), key=lambda r: r["id"])[:rows]:
        words = ", ".join(
            f"{w['word']} {w['start_s']:.2f}-{w['end_s']:.2f}s ({w['confidence']:.2f})"
            for w in row["words"][:3]
        )
        print(f"{Path(row['id']).name} ({row['duration_s']:.1f} s): {row['transcript'][:60]!r}")
        print(f"    words: {words}")
    for row in sorted(_latest_run(output, "classifications"), key=lambda r: r["id"])[:rows]:
        print(
            f"{Path(row['id']).name} ({row['duration_s']:.1f} s): {row['label']} "
            f"({row['score']:.2f}); probabilities {np.round(row['probabilities'], 2).tolist()}"
        )
    for row in sorted(_latest_run(output, "codes"), key=lambda r: r["id"])[:rows]:
        codes = np.asarray(row["codes"])
        print(f"{Path(row['id']).name}: codes {codes.shape}, first frames {codes[:3].tolist()}")
    for row in sorted(_latest_run(output, "hidden_states"), key=lambda r: r["id"])[:rows]:
        state = np.asarray(row["hidden_state"])
        print(f"{Path(row['id']).name}: hidden state {row['layer']} {state.shape}")
    for row in _latest_run(output, "errors"):
        print(f"error: {Path(row['id']).name} [{row['stage']}] {row['error']}")


if __name__ == "__main__":
    command, path = sys.argv[1], Path(sys.argv[2])
    {"make": make, "show": show}[command](path)

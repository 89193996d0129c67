"""Sample audio for the demo run (`python -m wav2vec2_beam.demo`, `run_local.sh`), and a look at
what a run wrote.

    python -m wav2vec2_beam.demo.samples make DIR   # DIR/audio/*, if not there yet
    python -m wav2vec2_beam.demo.samples show OUT   # a few rows of each table of OUT's latest run

The audio is what the bundled demo model (`MODEL_DIR`, see docs/DEMO_MODEL.md) transcribes: its
held-out speech (`HELDOUT_DIR`, sentences never heard in training),
written in several containers, rates and channel counts, like a real corpus, plus one long file
of all of it, which the pipeline cuts into windows. When pocketsphinx-testdata is installed, two
of its real recordings join them: the demo model knows only synthetic speech, so those show the
limits of a 1.3 M-parameter model, not of the pipeline.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile
import soxr

from wav2vec2_beam.demo import HELDOUT_DIR

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
#: Silence between the utterances of the long file, in seconds.
GAP_S = 0.6


def _heldout(index: int) -> np.ndarray:
    return soundfile.read(HELDOUT_DIR / f"{index:02d}.flac", dtype="float32")[0]


def make(folder: Path) -> None:
    """Write DIR/audio unless it holds these samples (an older set is replaced)."""
    audio = folder / "audio"
    if (audio / "demo_0_16k.wav").is_file():
        return
    shutil.rmtree(audio, ignore_errors=True)
    audio.mkdir(parents=True)
    soundfile.write(audio / "demo_0_16k.wav", _heldout(0), 16_000)
    soundfile.write(audio / "demo_1_16k.mp3", _heldout(1), 16_000, format="MP3")
    stereo = soxr.resample(_heldout(2), 16_000, 48_000)
    soundfile.write(audio / "demo_2_48k_stereo.ogg", np.stack([stereo, stereo], 1), 48_000)
    soundfile.write(audio / "demo_3_8k.wav", soxr.resample(_heldout(3), 16_000, 8_000), 8_000)
    count = len(list(HELDOUT_DIR.glob("*.flac")))
    gap = np.zeros(int(GAP_S * 16_000), np.float32)
    long = np.concatenate([part for i in range(4, count) for part in (_heldout(i), gap)])
    soundfile.write(audio / "demo_long_16k.flac", long, 16_000)  # longer than a window
    for name in ("cards/001.wav", "librivox/sense_and_sensibility_01_austen_64kb-0870.wav"):
        if (POCKETSPHINX / name).is_file():
            shutil.copy(POCKETSPHINX / name, audio / ("real_" + name.replace("/", "_")))


def _latest_run(output: Path, table: str) -> list[dict]:
    """Rows of the latest run's files of a table (earlier runs' files stay beside them)."""
    run_id = json.loads((output / "summary.json").read_text())["run_id"]
    files = sorted((output / table).glob(f"{run_id}-*.parquet"))
    return [row for path in files for row in pq.read_table(path).to_pylist()]


def show(output: Path, rows: int = 7) -> None:
    """Print a few rows of each table the latest run wrote (the head decides which), and its errors.

    Transcripts with their first words timed, classifications with the label and its probability,
    codes and hidden states by their shape and first frames.
    """
    for row in sorted(_latest_run(output, "transcripts"), key=lambda r: r["id"])[:rows]:
        words = ", ".join(
            f"{w['word']} {w['start_s']:.2f}-{w['end_s']:.2f}s ({w['confidence']:.2f})"
            for w in row["words"][:3]
        )
        text = row["transcript"]
        text = text if len(text) <= 100 else text[:97] + "..."
        print(f"{Path(row['id']).name} ({row['duration_s']:.1f} s): {text!r}")
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

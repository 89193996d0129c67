"""`--segment vad` against fixed windows on a long recording of real speech with gaps.

    .venv/bin/python -m bench.vad_segments [--minutes 20] [--model_dir demo model]

Builds the recording of tests/fixtures/long_recording.py (the pocketsphinx utterances in turn,
1.5-6 s of near silence or steady noise between them), runs the pipeline on it twice, with the
default windows and with `--segment vad`, and reports for each: the seconds of audio sent to the
model (summary.json's `model_input_seconds`) and the transcript's CER and WER against the
joined references. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fixtures.long_recording import RATE, long_recording  # noqa: E402

from bench.lm_speed import machine  # noqa: E402
from wav2vec2_beam.demo import MODEL_DIR  # noqa: E402
from wav2vec2_beam.demo.evaluate import error_rates  # noqa: E402
from wav2vec2_beam.pipeline.main import main as run_pipeline  # noqa: E402

MODES = {"windows": [], "vad": ["--segment=vad"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--model_dir", default=str(MODEL_DIR))
    args = parser.parse_args()
    recording = long_recording(args.minutes * 60)
    report: dict[str, object] = {
        "machine": machine(),
        "audio_s": len(recording.audio) / RATE,
        "gap_s": recording.gap_samples / RATE,
        "utterances": len(recording.utterances),
        "model_dir": args.model_dir,
    }
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        audio = work / "recording.flac"
        soundfile.write(audio, recording.audio, RATE)
        for mode, flags in MODES.items():
            output = work / mode
            code = run_pipeline(
                [
                    f"--input={audio}",
                    f"--model_dir={args.model_dir}",
                    f"--output_dir={output}",
                    *flags,
                ]
            )
            assert code == 0, code
            summary = json.loads((output / "summary.json").read_text())
            (row,) = pq.read_table(output / "transcripts").to_pylist()
            rates = error_rates([recording.reference], [row["transcript"]])
            report[mode] = {
                "model_input_s": round(summary["model_input_seconds"], 1),
                "cer": round(rates["cer"], 4),
                "wer": round(rates["wer"], 4),
            }
    windows, vad = report["windows"], report["vad"]
    report["vad_model_input_fewer"] = round(1 - vad["model_input_s"] / windows["model_input_s"], 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

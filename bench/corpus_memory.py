"""Peak memory of a whole run against the size of its corpus.

    python -m bench.corpus_memory --files 20 200 2000

Each run is a fresh `python -m wav2vec2_beam` process on the DirectRunner's defaults, over N files of
10 s of real speech (the pocketsphinx-testdata recordings, `apt-get install
pocketsphinx-testdata`, cut into 10 s clips at shifting offsets), with a random-weight checkpoint
768 wide with 2 encoder layers (the base architecture, fewer layers). Two kinds of run: transcripts
only, and transcripts plus every hidden state. The process reports its own VmHWM (ru_maxrss would
start from the forking parent's peak). Prints one line per run and a JSON list at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
RATE = 16_000

#: The two kinds of run: name -> extra flags.
KINDS = {
    "transcripts": ["--outputs=transcripts"],
    "every layer": ["--outputs=transcripts,hidden_states", "--hidden_layers=all"],
}

_MEASURE = """
import sys
from wav2vec2_beam.pipeline.main import main
assert main(sys.argv[1:]) == 0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print("maxrss_kb", int(hwm.split()[1]))
"""


def recordings() -> np.ndarray:
    """Every pocketsphinx-testdata recording, 16 kHz mono, end to end."""
    parts = []
    for path in sorted(POCKETSPHINX.rglob("*.wav")):
        samples, rate = soundfile.read(path, dtype="float32")
        if rate == RATE and samples.ndim == 1:
            parts.append(samples)
    if not parts:
        raise FileNotFoundError(f"no 16 kHz recordings under {POCKETSPHINX}")
    return np.concatenate(parts)


def speech_clips(folder: Path, count: int, seconds: float = 10.0) -> list[Path]:
    """`count` FLAC files of `seconds` of real speech each, each cut at a different offset."""
    folder.mkdir(parents=True, exist_ok=True)
    speech = recordings()
    length = int(seconds * RATE)
    looped = np.concatenate([speech, speech[:length]])
    step = 7_919  # a prime number of samples: offsets do not repeat for a long while
    paths = []
    for index in range(count):
        path = folder / f"clip{index:05d}.flac"
        if not path.exists():
            start = (index * step) % len(speech)
            soundfile.write(path, looped[start : start + length], RATE)
        paths.append(path)
    return paths


def write_checkpoint(folder: Path, layers: int = 2) -> Path:
    """A random-weight CTC checkpoint of the base architecture with `layers` encoder layers."""
    if (folder / "model.safetensors").exists():
        return folder
    from bench.architectures import ARCHITECTURES
    from bench.make_checkpoints import TOKENIZER
    from wav2vec2_beam.models import TFWav2Vec2ForCTC, Wav2Vec2Config

    raw = {**ARCHITECTURES["base"], "num_hidden_layers": layers}
    TFWav2Vec2ForCTC(Wav2Vec2Config.from_dict(raw), seed=0).save_pretrained(str(folder))
    for file in TOKENIZER.iterdir():
        shutil.copy(file, folder / file.name)
    return folder


def measure(inputs: str, model_dir: Path, output_dir: Path, flags: list[str]) -> dict:
    """One run in a fresh process: its peak RSS (MiB) and its summary.json."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURE,
            f"--input={inputs}",
            f"--model_dir={model_dir}",
            f"--output_dir={output_dir}",
            *flags,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("maxrss_kb")]
    summary = json.loads((output_dir / "summary.json").read_text())
    return {"peak_rss_mib": int(line.split()[1]) / 1024, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[20, 200, 2000])
    parser.add_argument("--work_dir", default="bench/corpus_memory_work")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    args = parser.parse_args()
    work = Path(args.work_dir)
    model_dir = write_checkpoint(work / "checkpoint")
    results = []
    for count in args.files:
        clips = work / f"clips{count}"
        speech_clips(clips, count)
        for kind in args.kinds:
            output = work / "out"
            shutil.rmtree(output, ignore_errors=True)
            found = measure(str(clips / "*.flac"), model_dir, output, KINDS[kind])
            summary = found["summary"]
            row = {
                "files": count,
                "kind": kind,
                "peak_rss_mib": round(found["peak_rss_mib"]),
                "succeeded": summary["succeeded"],
                "wall_seconds": summary["wall_seconds"],
                "audio_seconds": summary["audio_seconds"],
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

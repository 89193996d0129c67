"""Whole pipeline against the bare model on the same corpus, plus peak memory per file length.

    python -m bench.pipeline_speed --checkpoint bench/checkpoints/base --minutes 10 \
        [--precision bfloat16] [--peer_python bench/.venv-torch/bin/python]

1. Writes a corpus of 16 kHz FLAC files with a LibriSpeech-like length mix (2-35 s, mean about
   12 s) of the repository's synthetic speech (tests/fixtures/synthetic_audio.py).
2. Bare model: `Wav2Vec2Runner` over the same audio, already decoded and normalized, in
   duration-sorted batches, in a process of its own: audio-seconds per second of model time
   alone.
3. Pipeline: `python -m wav2vec2_beam` on the DirectRunner in a fresh process: audio-seconds per second
   of the whole process's wall time (Python's start, imports, the checkpoint check, every stage),
   and of the run alone (summary.json's wall_seconds), peak RSS, and the padding waste.
4. With `--peer_python`: transformers' PyTorch model alone on the same decoded files, in the same
   duration-sorted groups (each zero-padded to its longest item, without a mask, as base-960h runs);
   with `--onnx` as well, ONNX Runtime (CPU provider, a thread per core) on that model exported to
   ONNX as optimum does, fp32 and int8 (dynamic quantization), in the same groups.
   With `--repeats N`, steps 2-4 run N times in turn and the report gives the medians (and every
   run's figure): on a shared machine whose speed drifts by 5-10% between minutes, one pass each
   can tilt a ratio either way. It also gives each peer's ratio taken within each repeat (the
   pipeline and the peer minutes apart) and the median of those (`paired_process_over_*`).
5. Peak RSS of the pipeline over one 1-minute and one `--long_minutes` file.
Prints one JSON object.

`--isa avx2` runs every side as an AVX2-only CPU would (no AVX-512, no bf16) on a CPU that has
more: TensorFlow's and PyTorch's oneDNN, PyTorch's own kernels and its MKL, and the XLA code of our
convolutions' epilogues are capped through their switches (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY,
MKL_ENABLE_INSTRUCTIONS, XLA_FLAGS). ONNX Runtime has no such switch (MLAS picks its kernels from
CPUID), so it keeps AVX-512: the comparison then favours it, never us.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fixtures.synthetic_audio import synthetic_speech  # noqa: E402

RATE = 16_000

# Each library's own switch down to AVX2; set before any of them is imported (here and in the
# processes the bench starts, which inherit the environment).
ISA_CAPS = {
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        # XLA's code for our convolutions' epilogues (its own vectors are 256 bits wide by
        # default, but it may still pick AVX-512 instructions on them)
        "XLA_FLAGS": "--xla_cpu_max_isa=AVX2",
    }
}


def corpus_lengths(total_s: float, seed: int = 0) -> list[float]:
    """Durations drawn from a lognormal (median 10 s) clipped to 2-35 s until `total_s` is reached."""
    rng = np.random.default_rng(seed)
    lengths: list[float] = []
    while sum(lengths) < total_s:
        lengths.append(float(np.clip(rng.lognormal(np.log(10.0), 0.55), 2.0, 35.0)))
    return lengths


def write_corpus(folder: Path, total_s: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, seconds in enumerate(corpus_lengths(total_s)):
        path = folder / f"utt{index:05d}.flac"
        soundfile.write(path, synthetic_speech(seconds, seed=index), RATE)
        paths.append(path)
    return paths


def bare_model_speed(checkpoint: str, paths: list[Path], batch_size: int, precision: str) -> float:
    """Our model alone, in a fresh process as every other side runs: a bench process holding a
    loaded TensorFlow slowed the processes it started, the PyTorch peer most (5 min, fp32, 3
    interleaved pairs on a Zen 4: 5.86 against 8.08 audio-s/s on average; our pipeline over 2
    files, bf16: 10.1 against 9.1 s)."""
    args = [checkpoint, str(batch_size), precision, *map(str, paths)]
    done = subprocess.run(
        [sys.executable, "-c", _BARE, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


_BARE = """
import sys
from bench.pipeline_speed import _bare_model_here
checkpoint, batch_size, precision, *paths = sys.argv[1:]
print(_bare_model_here(checkpoint, paths, int(batch_size), precision))
"""


def _bare_model_here(checkpoint: str, paths: list[str], batch_size: int, precision: str) -> float:
    from wav2vec2_beam.models import Wav2Vec2Runner, load_model

    model = load_model(checkpoint)
    runner = Wav2Vec2Runner(model, precision=precision)
    audio = sorted((soundfile.read(p, dtype="float32")[0] for p in paths), key=len)
    normalized = [(a - a.mean()) / np.sqrt(a.var() + 1e-7) for a in audio]
    batches = [normalized[i : i + batch_size] for i in range(0, len(normalized), batch_size)]
    runner.run(batches[0])  # warm up
    start = time.perf_counter()
    for batch in batches:
        runner.run(batch)
    elapsed = time.perf_counter() - start
    return sum(len(a) for a in audio) / RATE / elapsed


_PEER = """
import json, sys, time
import numpy as np, torch
from transformers import Wav2Vec2ForCTC
batch_size, precision = int(sys.argv[2]), sys.argv[3]
model = Wav2Vec2ForCTC.from_pretrained(sys.argv[4]).eval()
with np.load(sys.argv[1]) as saved:
    audio = sorted((saved[key] for key in saved), key=len)
normalized = [(a - a.mean()) / np.sqrt(a.var() + 1e-7) for a in audio]
batches = [normalized[i : i + batch_size] for i in range(0, len(normalized), batch_size)]

def run(batch):
    values = np.zeros((len(batch), max(len(a) for a in batch)), np.float32)
    for row, a in enumerate(batch):
        values[row, : len(a)] = a
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bfloat16"):
        return model(torch.from_numpy(values)).logits.float().numpy()

run(batches[0])
start = time.perf_counter()
for batch in batches:
    run(batch)
print(sum(len(a) for a in audio) / 16000 / (time.perf_counter() - start))
"""


def peer_model_speed(
    python: str, checkpoint: str, paths: list[Path], batch_size: int, precision: str
) -> float:
    """transformers' PyTorch model alone on the same files, in `bare_model_speed`'s groups (each
    zero-padded to its longest item, without a mask, as base-960h is run), fp32 or bf16 autocast."""
    decoded = paths[0].parent.parent / "decoded.npz"  # the peer's venv has no soundfile
    if not decoded.exists():  # once for all --repeats
        np.savez(decoded, *[soundfile.read(p, dtype="float32")[0] for p in paths])
    args = [str(decoded), str(batch_size), precision, checkpoint]
    done = subprocess.run([python, "-c", _PEER, *args], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


_EXPORT = """
import sys
import torch
from transformers import Wav2Vec2ForCTC
from onnxruntime.quantization import QuantType, quantize_dynamic
model = Wav2Vec2ForCTC.from_pretrained(sys.argv[1]).eval()
torch.onnx.export(
    model, (torch.zeros(1, 64000),), sys.argv[2], input_names=["input_values"],
    output_names=["logits"], opset_version=17, dynamo=False,
    dynamic_axes={"input_values": {0: "batch", 1: "samples"}, "logits": {0: "batch", 1: "frames"}},
)
quantize_dynamic(sys.argv[2], sys.argv[3], weight_type=QuantType.QInt8)
"""

_ONNX_PEER = """
import os, sys, time
import numpy as np, onnxruntime as ort
batch_size, path = int(sys.argv[2]), sys.argv[3]
settings = ort.SessionOptions()
settings.intra_op_num_threads = os.cpu_count()  # as many as TensorFlow and PyTorch use
session = ort.InferenceSession(path, settings, providers=["CPUExecutionProvider"])
with np.load(sys.argv[1]) as saved:
    audio = sorted((saved[key] for key in saved), key=len)
normalized = [(a - a.mean()) / np.sqrt(a.var() + 1e-7) for a in audio]
batches = [normalized[i : i + batch_size] for i in range(0, len(normalized), batch_size)]

def run(batch):
    values = np.zeros((len(batch), max(len(a) for a in batch)), np.float32)
    for row, a in enumerate(batch):
        values[row, : len(a)] = a
    return session.run(None, {"input_values": values})[0]

run(batches[0])
start = time.perf_counter()
for batch in batches:
    run(batch)
print(sum(len(a) for a in audio) / 16000 / (time.perf_counter() - start))
"""


def export_onnx(python: str, checkpoint: str, folder: Path) -> dict[str, Path]:
    """transformers' model exported as optimum does it (`torch.onnx.export`, dynamic batch and
    time axes, opset 17) and its int8 dynamic quantization, written once into `folder`."""
    paths = {"onnx_fp32": folder / "model.onnx", "onnx_int8": folder / "model.int8.onnx"}
    if not paths["onnx_int8"].exists():
        subprocess.run(
            [python, "-c", _EXPORT, checkpoint, str(paths["onnx_fp32"]), str(paths["onnx_int8"])],
            capture_output=True,
            check=True,
        )
    return paths


def onnx_model_speed(python: str, model: Path, paths: list[Path], batch_size: int) -> float:
    """ONNX Runtime's CPU provider on the same files in the same groups as the PyTorch peer."""
    decoded = paths[0].parent.parent / "decoded.npz"
    if not decoded.exists():
        np.savez(decoded, *[soundfile.read(p, dtype="float32")[0] for p in paths])
    args = [str(decoded), str(batch_size), str(model)]
    done = subprocess.run(
        [python, "-c", _ONNX_PEER, *args], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


_MEASURED = """
import atexit
from wav2vec2_beam.__main__ import cli  # as `python -m wav2vec2_beam` starts
# VmHWM, not ru_maxrss: the latter starts from the parent's peak when forked. Read at exit, as
# `python -m wav2vec2_beam` ends (cli: its exit handlers, then no interpreter teardown).
atexit.register(lambda: print("maxrss_kb", int([
    line for line in open("/proc/self/status") if line.startswith("VmHWM:")
][0].split()[1])))
cli()
"""


def run_pipeline(inputs: str, checkpoint: str, output: Path, extra: list[str]) -> dict:
    """Run the pipeline in a fresh process; its summary.json plus that process's peak RSS."""
    command = [
        sys.executable,
        "-c",
        _MEASURED,
        f"--input={inputs}",
        f"--model_dir={checkpoint}",
        f"--output_dir={output}",
        *extra,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    process_s = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    summary = json.loads((output / "summary.json").read_text())
    summary["process_seconds"] = process_s
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("maxrss_kb")]
    summary["peak_rss_mib"] = int(line.split()[1]) / 1024
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=str(REPO / "bench" / "checkpoints" / "base"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--long_minutes", type=float, default=60.0)
    parser.add_argument(
        "--no_memory", action="store_true", help="Skip the peak-RSS runs (speed only)."
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="measure every side this many times, interleaved, and report the medians",
    )
    parser.add_argument(
        "--peer_python",
        help="Python with torch and transformers (bench/.venv-torch/bin/python): also time "
        "transformers' PyTorch model alone on the same files",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="with --peer_python (which then needs onnxruntime and onnx): also time ONNX "
        "Runtime on transformers' model exported to ONNX, fp32 and int8 (dynamic quantization)",
    )
    parser.add_argument(
        "--memory_checkpoint",
        help="checkpoint for the peak-RSS runs (default: --checkpoint); the tests' tiny one "
        "measures the same streaming in a fraction of the time",
    )
    parser.add_argument(
        "--isa",
        choices=sorted(ISA_CAPS),
        help="cap TensorFlow's, XLA's and PyTorch's kernels to this instruction set (ONNX "
        "Runtime cannot be capped and keeps what the CPU has)",
    )
    args = parser.parse_args()
    if args.isa:
        caps = dict(ISA_CAPS[args.isa])
        caps["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {caps['XLA_FLAGS']}".strip()
        os.environ.update(caps)
    memory_checkpoint = args.memory_checkpoint or args.checkpoint

    report: dict[str, object] = {
        "checkpoint": args.checkpoint,
        "memory_checkpoint": memory_checkpoint,
        "precision": args.precision,
        "isa_cap": args.isa,
    }
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        paths = write_corpus(work / "corpus", args.minutes * 60)
        report["files"] = len(paths)
        report["audio_s"] = sum(soundfile.info(p).duration for p in paths)
        flags = [
            "--chunk_length_s=0",
            f"--batch_size={args.batch_size}",
            f"--precision={args.precision}",
        ]
        runs: dict[str, list[float]] = {"bare": [], "process": [], "run": [], "peer": []}
        onnx = export_onnx(args.peer_python, args.checkpoint, work) if args.onnx else {}
        runs.update({name: [] for name in onnx})
        for repeat in range(args.repeats):  # interleaved, so that a slower minute hits all sides
            runs["bare"].append(
                bare_model_speed(args.checkpoint, paths, args.batch_size, args.precision)
            )
            summary = run_pipeline(
                str(work / "corpus" / "*.flac"), args.checkpoint, work / f"out{repeat}", flags
            )
            runs["process"].append(summary["audio_seconds"] / summary["process_seconds"])
            runs["run"].append(summary["audio_seconds"] / summary["wall_seconds"])
            if args.peer_python:
                runs["peer"].append(
                    peer_model_speed(
                        args.peer_python, args.checkpoint, paths, args.batch_size, args.precision
                    )
                )
            for name, model in onnx.items():
                runs[name].append(onnx_model_speed(args.peer_python, model, paths, args.batch_size))
        median = {key: float(np.median(values)) for key, values in runs.items() if values}
        bare = median["bare"]
        report["bare_model_audio_s_per_s"] = bare
        report["pipeline_process_audio_s_per_s"] = median["process"]
        report["pipeline_process_over_bare"] = median["process"] / bare
        report["pipeline_run_audio_s_per_s"] = median["run"]
        report["pipeline_run_over_bare"] = median["run"] / bare
        report["padding_waste"] = summary.get("padding_waste")
        report["pipeline_peak_rss_mib"] = summary["peak_rss_mib"]
        if args.peer_python:
            report["pytorch_model_audio_s_per_s"] = median["peer"]
            report["pipeline_process_over_pytorch_model"] = median["process"] / median["peer"]
        for name in onnx:
            report[f"{name}_audio_s_per_s"] = median[name]
            report[f"pipeline_process_over_{name}"] = median["process"] / median[name]
        if args.repeats > 1:
            report["repeats"] = {key: values for key, values in runs.items() if values}
            # The same ratio taken within each repeat, where both sides ran minutes apart, then
            # its median: a slow phase of a shared machine then tilts one pair, not a median.
            for name in ("peer", *onnx):
                if runs[name]:
                    paired = np.array(runs["process"]) / np.array(runs[name])
                    report[f"paired_process_over_{name}"] = {
                        "median": float(np.median(paired)),
                        "runs": paired.tolist(),
                    }
        if args.no_memory:
            print(json.dumps(report, indent=2))
            return
        for label, minutes in (("1min", 1.0), ("long", args.long_minutes)):
            audio = np.concatenate(
                [synthetic_speech(60.0, seed=s) for s in range(int(minutes))]
            ).astype(np.float32)
            path = work / f"{label}.flac"
            soundfile.write(path, audio, RATE)
            del audio
            one = run_pipeline(str(path), memory_checkpoint, work / f"out_{label}", [])
            report[f"peak_rss_mib_{label}"] = one["peak_rss_mib"]
        report["long_over_1min_rss"] = report["peak_rss_mib_long"] / report["peak_rss_mib_1min"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

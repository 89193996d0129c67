"""The GPU bench: our JAX model against transformers' PyTorch model, then the whole pipeline.

Run by `bench/gpu/run.sh` on the GPU machine (an H200 with Python 3.12, PyTorch, transformers,
JAX and flax, and no TensorFlow), from the repository root, in one call of at most 8 minutes:

1. random-weight checkpoints of the base and lv60 architectures (`bench.make_checkpoints`);
2. model only, 10 s clips at batch sizes 8, 32 and 64: our JAX model in fp32 and bf16, and
   transformers' Wav2Vec2ForCTC in fp32 and bf16 with SDPA attention (`bench/model_speed.py`, one
   process per implementation, precision and architecture, so each peak memory is its own);
3. bf16 against fp32: the share of frames whose argmax agrees, on the demo model and on base
   (its CTC head scaled by 30 so that random weights give decided argmaxes), over real speech;
4. if Apache Beam is importable (its wheels brought along): the pipeline with `--backend jax` on
   the held-out demo recordings, whole process.

Prints a Markdown table and writes every row to `<out>/gpu_bench.json`. `--cpu` runs the same
steps on this machine's CPU with a small plan (batch 2, lv60 skipped), to prove the script
before a GPU is lent.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from wav2vec2_beam.demo import HELDOUT_DIR, MODEL_DIR

REPO = Path(__file__).resolve().parents[2]
HELD_OUT = sorted(glob.glob(str(HELDOUT_DIR / "*.flac")))
CONFIGURATIONS = [("jax", "fp32"), ("jax", "bf16"), ("torch", "fp32"), ("torch", "bf16")]


def speed_rows(
    python: dict[str, str], arch: str, batches: str, runs: int, device: str
) -> list[dict]:
    rows = []
    for impl, mode in CONFIGURATIONS:
        command = [
            python[impl],
            str(REPO / "bench" / "model_speed.py"),
            f"--impl={impl}",
            f"--mode={mode}",
            f"--checkpoint={REPO / 'bench' / 'checkpoints' / arch}",
            f"--batch={batches}",
            f"--runs={runs}",
            "--warmup=2",
            f"--device={device}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=_env())
        if done.returncode != 0:
            rows.append({"impl": impl, "mode": mode, "arch": arch, "error": done.stderr[-800:]})
            print(done.stderr[-800:], file=sys.stderr)
            continue
        rows += [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return rows


def agreement(checkpoint: str, scale_head: float) -> dict:
    """Share of frames whose bf16 argmax equals the fp32 one, over the held-out recordings."""
    import soundfile

    from wav2vec2_beam.models import FlaxWav2Vec2ForCTC, FlaxWav2Vec2Runner
    from wav2vec2_beam.models.feature_extraction import Wav2Vec2FeatureExtractor

    model = FlaxWav2Vec2ForCTC.from_pretrained(checkpoint)
    head = model.params["lm_head"]
    head["kernel"] = head["kernel"] * scale_head
    normalize = Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm
    clips = [normalize([soundfile.read(path, dtype="float32")[0]], None)[0] for path in HELD_OUT]
    full = FlaxWav2Vec2Runner(model).run(clips).logits
    half = FlaxWav2Vec2Runner(model, precision="bfloat16").run(clips).logits
    same = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(full, half, strict=True))
    frames = sum(len(a) for a in full)
    return {"checkpoint": checkpoint, "frames": frames, "agreement": same / frames}


def pipeline_row(python: str, model_dir: str, precision: str, out: Path) -> dict:
    output = out / f"pipeline_{Path(model_dir).name}_{precision}"
    command = [
        python,
        "-m",
        "wav2vec2_beam",
        *[f"--input={path}" for path in HELD_OUT],
        f"--model_dir={model_dir}",
        f"--output_dir={output}",
        "--backend=jax",
        f"--precision={precision}",
        "--batch_size=64",
        "--decoder=greedy",  # the model's path; KenLM (source only) is not on the GPU machine
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"pipeline": model_dir, "precision": precision, "error": done.stderr[-800:]}
    summary = json.loads((output / "summary.json").read_text())
    return {
        "pipeline": model_dir,
        "precision": precision,
        "files": summary["succeeded"],
        "failed": summary["failed"],
        "audio_s": summary["audio_seconds"],
        "process_wall_s": wall,
        "audio_s_per_s": summary["audio_seconds"] / wall,
    }


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), str(REPO / "src"), env.get("PYTHONPATH")])
    )
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # each process's peak is then its own use
    return env


def print_table(rows: list[dict], device_name: str) -> None:
    print(f"\n{device_name}, 10 s clips, {time.strftime('%Y-%m-%d')}\n")
    print(
        "| arch | batch | implementation | audio-s/s | x real time | peak MiB | vs torch same mode |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    torch = {
        (r["arch"], r["batch"], r["mode"]): r["median"]
        for r in rows
        if r.get("impl") == "torch" and "median" in r
    }
    for r in rows:
        if "median" not in r:
            continue
        peer = torch.get((r["arch"], r["batch"], r["mode"]))
        ratio = f"{r['median'] / peer:.2f}x" if peer and r["impl"] != "torch" else ""
        memory = f"{r['peak_memory_mb']:.0f}" if r.get("peak_memory_mb") else "n/a"
        print(
            f"| {r['arch']} | {r['batch']} | {r['impl']} {r['mode']} | {r['median']:.0f} "
            f"| {memory} | {ratio} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/gpu/out"))
    parser.add_argument("--cpu", action="store_true", help="The small plan, on this CPU.")
    parser.add_argument("--torch-python", default=sys.executable, help="Python with torch.")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import jax

    device_name = jax.devices()[0].device_kind
    if not args.cpu and jax.default_backend() != "gpu":
        sys.exit(f"JAX sees no GPU ({jax.devices()}); use --cpu for the CPU plan")
    archs = ["base"] if args.cpu else ["base", "lv60"]
    subprocess.run(
        [sys.executable, "-m", "bench.make_checkpoints", "bench/checkpoints", *archs],
        check=True,
        cwd=REPO,
        env=_env(),
    )
    python = {"jax": sys.executable, "torch": args.torch_python}
    rows: list[dict] = []

    def save() -> None:  # after every step, so that a later failure loses nothing measured
        report = {"device": device_name, "host": platform.processor(), "rows": rows}
        (out / "gpu_bench.json").write_text(json.dumps(report, indent=1))

    for arch in archs:
        rows += speed_rows(
            python,
            arch,
            "2" if args.cpu else "8,32,64",
            2 if args.cpu else 10,
            "cpu" if args.cpu else "gpu",
        )
        save()
    steps = [
        ("agreement", lambda: agreement(str(MODEL_DIR), 1.0)),
        ("agreement", lambda: agreement(str(REPO / "bench" / "checkpoints" / "base"), 30.0)),
    ]
    try:
        import apache_beam  # noqa: F401

        for precision in ("float32", "bfloat16"):
            steps.append(
                (
                    "pipeline",
                    partial(pipeline_row, sys.executable, str(MODEL_DIR), precision, out),
                )
            )
    except ImportError as error:
        rows.append({"pipeline": "skipped", "reason": f"no Apache Beam here ({error})"})
    for name, step in steps:
        try:
            rows.append(step())
        except Exception as error:  # a failed step is a row; the rest still runs
            rows.append({name: "failed", "error": f"{type(error).__name__}: {error}"})
        save()
    print_table(rows, device_name)
    for row in rows:
        if "median" not in row:
            print(json.dumps(row))


if __name__ == "__main__":
    main()

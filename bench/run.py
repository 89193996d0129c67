"""Every model-speed configuration side by side, in one run: ours in each mode and the peers.

    bash bench/setup_peers.sh && .venv/bin/python -m bench.run [--arch base] [--runs 5]

Each configuration runs `bench/model_speed.py` in a fresh process of the venv that holds it
(ours, TF and JAX: the project venv; transformers PyTorch: bench/.venv-torch; transformers
4.57 TF: bench/.venv-tf457) on the same random-weight checkpoint (bench/make_checkpoints.py). Prints a
Markdown table with each configuration's audio-seconds per second (median, min, max of `--runs`
after warm-up) and its ratio to PyTorch fp32 and bf16 autocast measured in the same run, and
writes the rows as JSON lines to bench/results-<date>.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHONS = {
    "ours": REPO / ".venv" / "bin" / "python",
    "jax": REPO / ".venv" / "bin" / "python",
    "torch": REPO / "bench" / ".venv-torch" / "bin" / "python",
    "tf457": REPO / "bench" / ".venv-tf457" / "bin" / "python",
}

#: (implementation, mode, batch) for each row, in the order printed.
CONFIGURATIONS = [
    ("torch", "fp32", 8),
    ("torch", "bf16-autocast", 8),
    ("tf457", "tf.function", 8),
    ("ours", "eager", 8),
    ("ours", "fp32", 8),
    ("ours", "fp32-xla", 8),
    ("ours", "fp32", 16),
    ("ours", "bf16", 8),
    ("ours", "bf16-xla", 8),
    ("jax", "fp32", 8),
    ("jax", "bf16", 8),
]


def bf16_hardware() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); without it bf16 is emulated.

    Emulated bf16 is slower than fp32 by far (PyTorch's autocast ran over 8 minutes on one batch on
    an AVX2 CPU), so its rows are skipped, with the reason, rather than run for hours.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def measure(impl: str, mode: str, batch: int, checkpoint: Path, runs: int, warmup: int) -> dict:
    command = [
        str(PYTHONS[impl]),
        str(REPO / "bench" / "model_speed.py"),
        f"--impl={impl}",
        f"--mode={mode}",
        f"--checkpoint={checkpoint}",
        f"--batch={batch}",
        f"--runs={runs}",
        f"--warmup={warmup}",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        return {"impl": impl, "mode": mode, "batch": batch, "error": done.stderr[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "src")])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _ratio(value: float, baseline: float | None) -> str:
    return f"{value / baseline:.2f}x" if baseline else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="base", choices=["base", "lv60"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--impl",
        action="append",
        choices=sorted(PYTHONS),
        help="Only these implementations (repeatable; default all).",
    )
    args = parser.parse_args()
    checkpoint = REPO / "bench" / "checkpoints" / args.arch
    native_bf16 = bf16_hardware()
    rows = [
        measure(i, m, b, checkpoint, args.runs, args.warmup)
        if native_bf16 or "bf16" not in m
        else {"impl": i, "mode": m, "batch": b, "skipped": "no bf16 hardware (AVX512-BF16/AMX)"}
        for i, m, b in CONFIGURATIONS
        if args.impl is None or i in args.impl
    ]
    baseline = {r["mode"]: r["median"] for r in rows if r["impl"] == "torch" and "median" in r}
    today = datetime.date.today().isoformat()
    print(f"{args.arch}, 10 s clips, {platform.processor() or platform.machine()}, {today}\n")
    print(
        "| implementation | mode | batch | audio-s/s median (min-max) | vs torch fp32 | vs torch bf16 |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        if "skipped" in row:
            print(
                f"| {row['impl']} | {row['mode']} | {row['batch']} | skipped: {row['skipped']} | | |"
            )
            continue
        if "error" in row:
            print(f"| {row['impl']} | {row['mode']} | {row['batch']} | failed | | |")
            continue
        fp32 = _ratio(row["median"], baseline.get("fp32"))
        bf16 = _ratio(row["median"], baseline.get("bf16-autocast"))
        print(
            f"| {row['impl']} | {row['mode']} | {row['batch']} | {row['median']:.1f} "
            f"({row['min']:.1f}-{row['max']:.1f}) | {fp32} | {bf16} |"
        )
    with open(REPO / "bench" / f"results-{today}-{args.arch}.jsonl", "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""The start-up JAX's persistent compilation cache saves: the whole pipeline, `--backend jax`, in a
fresh process, with no cache against a cache an earlier run filled.

    python -m bench.jax_cache --checkpoint bench/checkpoints/base --minutes 2 --repeats 3

A run compiles one XLA program per (rows, bucket length) shape it meets, in every worker process,
each time one starts; with `--jax_cache_dir` (on by default) a later process loads them instead.
Writes a LibriSpeech-like corpus (`bench.pipeline_speed.write_corpus`), fills a cache with one
run, then runs `--jax_cache_dir none` and the filled cache in turn, `--repeats` times each, and
prints one JSON object: each mode's whole-process seconds (every run, and the median), the
saving, and the number of programs the cache holds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.lm_speed import machine
from bench.pipeline_speed import write_corpus


def whole_process_seconds(corpus: Path, checkpoint: str, cache: str, output: Path) -> float:
    command = [
        sys.executable,
        "-m",
        "wav2vec2_beam",
        f"--input={corpus}/*.flac",
        f"--model_dir={checkpoint}",
        "--backend=jax",
        "--decoder=greedy",
        f"--jax_cache_dir={cache}",
        f"--output_dir={output}",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="bench/checkpoints/base")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jax-cache-bench-") as scratch:
        root = Path(scratch)
        corpus = root / "corpus"
        write_corpus(corpus, args.minutes * 60)
        cache = root / "cache"
        runs = iter(range(1_000_000))
        fill = whole_process_seconds(corpus, args.checkpoint, str(cache), root / f"o{next(runs)}")
        times: dict[str, list[float]] = {"none": [], "cached": []}
        for _ in range(args.repeats):
            for mode, folder in (("none", "none"), ("cached", str(cache))):
                output = root / f"o{next(runs)}"
                times[mode].append(whole_process_seconds(corpus, args.checkpoint, folder, output))
        medians = {mode: statistics.median(values) for mode, values in times.items()}
        print(
            json.dumps(
                {
                    "checkpoint": args.checkpoint,
                    "audio_minutes": args.minutes,
                    "files": len(list(corpus.glob("*.flac"))),
                    "machine": machine(),
                    "filling_run_s": round(fill, 2),
                    "programs_cached": len(list(cache.glob("jit__outputs-*"))),
                    "whole_process_s": {m: [round(v, 2) for v in vs] for m, vs in times.items()},
                    "median_s": {m: round(v, 2) for m, v in medians.items()},
                    "saved_s": round(medians["none"] - medians["cached"], 2),
                    "speedup": round(medians["none"] / medians["cached"], 2),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

"""Where the whole pipeline's time goes: start-up, then each stage's own work, then the rest.

    .venv/bin/python -m bench.pipeline_profile [--checkpoint bench/checkpoints/base] [--minutes 5]
        [--precision float32]

On one corpus (bench/pipeline_speed.py's: synthetic speech, LibriSpeech-like lengths, 16 kHz
FLAC), in one run:

1. The pipeline as users run it (`python -m wav2vec2_beam`, a fresh process, unchunked, batches of 8):
   its whole-process wall time.
2. Start-up, each in a fresh process: importing Beam; importing TensorFlow; loading the model
   (TensorFlow included); and, in this process, tracing the forward pass for each length bucket
   the corpus needs (the first call of a bucket, less a second call's time).
3. Each stage's own work, here, on the same files and in the pipeline's order: decoding (and
   resampling, where a file is not at 16 kHz), feature normalization and batching (by bucket,
   as `BatchAudio` does), inference (`Wav2Vec2Runner`, warm), greedy CTC decoding with timings
   and confidences, and writing the transcripts table to Parquet.

"The rest" is the whole process's time less start-up and the stages: Beam's own work (bundles,
element passing, metrics), the stitcher, and whatever ran while waiting. Prints one JSON object
and a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.lm_speed import machine
from bench.pipeline_speed import REPO, run_pipeline, write_corpus


def _process_seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def profile(checkpoint: str, minutes: float, precision: str, work: Path) -> dict:
    paths = write_corpus(work / "corpus", minutes * 60)
    start = time.perf_counter()
    summary = run_pipeline(
        str(work / "corpus" / "*.flac"),
        checkpoint,
        work / "out",
        ["--chunk_length_s=0", "--batch_size=8", f"--precision={precision}", "--decoder=greedy"],
    )
    whole = time.perf_counter() - start
    startup = {
        "start Python and import apache_beam": _process_seconds("import apache_beam"),
        "import TensorFlow and load the model": _process_seconds(
            f"from wav2vec2_beam.models import load_model; load_model({checkpoint!r})"
        ),
    }

    from wav2vec2_beam.models import Wav2Vec2Runner, load_model  # isort: skip  (sets TensorFlow's options)

    import pyarrow as pa
    import pyarrow.parquet as pq
    import soxr

    from wav2vec2_beam.models.batching import bucket_for
    from wav2vec2_beam.models.feature_extraction import Wav2Vec2FeatureExtractor
    from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer
    from wav2vec2_beam.transforms.read.decode_audio import decode_audio
    from wav2vec2_beam.transforms.write.ctc_decode import decode_ctc
    from wav2vec2_beam.transforms.write.tables import transcripts_table

    stages: dict[str, float] = {}
    clock = time.perf_counter()
    audio = []
    for path in paths:
        samples, info = decode_audio(str(path))
        if samples.ndim > 1:
            samples = samples.mean(axis=1)
        if info.sample_rate != 16_000:
            samples = soxr.resample(samples, info.sample_rate, 16_000)
        audio.append(samples.astype(np.float32))
    stages["decode and resample"] = time.perf_counter() - clock

    model = load_model(checkpoint)
    runner = Wav2Vec2Runner(model, precision=precision)
    clock = time.perf_counter()
    normalized = Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm(audio, None)
    order = sorted(
        range(len(normalized)), key=lambda i: bucket_for(len(normalized[i]), runner.ladder)
    )
    batches = []
    for index in order:
        bucket = bucket_for(len(normalized[index]), runner.ladder)
        if not batches or batches[-1][0] != bucket or len(batches[-1][1]) == 8:
            batches.append((bucket, []))
        batches[-1][1].append(index)
    stages["normalize and batch"] = time.perf_counter() - clock

    traced: dict[int, float] = {}
    for bucket, members in batches:  # the first call of each bucket traces it
        if bucket not in traced:
            clock = time.perf_counter()
            runner.run([normalized[i] for i in members])
            once = time.perf_counter() - clock
            clock = time.perf_counter()
            runner.run([normalized[i] for i in members])
            traced[bucket] = max(0.0, once - (time.perf_counter() - clock))
    startup[f"trace the forward pass ({len(traced)} buckets)"] = sum(traced.values())

    clock = time.perf_counter()
    logits: dict[int, np.ndarray] = {}
    for _, members in batches:
        for index, item in zip(
            members, runner.run([normalized[i] for i in members]).logits, strict=True
        ):
            logits[index] = item
    stages["inference (warm)"] = time.perf_counter() - clock

    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(checkpoint)
    clock = time.perf_counter()
    rows = []
    for index, path in enumerate(paths):
        item = logits[index]
        shifted = np.exp(item - item.max(axis=-1, keepdims=True))
        confidence = 1.0 / shifted.sum(axis=-1)
        text, chars, words = decode_ctc(item.argmax(-1), confidence, tokenizer, 320)
        rows.append(
            {
                "id": str(path),
                "source": str(path),
                "transcript": text,
                "duration_s": len(audio[index]) / 16_000,
                "sample_rate": 16_000,
                "num_frames": len(item),
                "words": words,
                "chars": chars,
                "model": checkpoint,
            }
        )
    stages["CTC decoding (greedy, timings, confidences)"] = time.perf_counter() - clock

    clock = time.perf_counter()
    schema = transcripts_table().schema
    pq.write_table(pa.Table.from_pylist(rows, schema), work / "transcripts.parquet")
    stages["write the transcripts table"] = time.perf_counter() - clock

    accounted = sum(startup.values()) + sum(stages.values())
    return {
        "files": len(paths),
        "audio_s": summary["audio_seconds"],
        "whole_process_s": whole,
        "startup_s": startup,
        "stages_s": stages,
        "rest_s": whole - accounted,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default=str(REPO / "bench" / "checkpoints" / "base"))
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--precision", default="float32")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        result = profile(args.checkpoint, args.minutes, args.precision, Path(work))
    report = {"machine": machine(), "checkpoint": args.checkpoint, "precision": args.precision}
    report.update(result)
    whole = result["whole_process_s"]
    print(f"whole process: {whole:.1f} s for {result['audio_s']:.0f} s of audio", file=sys.stderr)
    for group in ("startup_s", "stages_s"):
        for name, value in result[group].items():
            print(f"  {name:<50} {value:7.2f} s  {value / whole:6.1%}", file=sys.stderr)
    print(
        f"  {'the rest (Beam, stitching, waiting)':<50} {result['rest_s']:7.2f} s  "
        f"{result['rest_s'] / whole:6.1%}",
        file=sys.stderr,
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

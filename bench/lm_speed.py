"""What the n-gram LM costs: beam-search decode speed per core, and the whole pipeline with it.

    .venv/bin/python -m bench.lm_speed [--minutes 10] [--peer_python /work/refvenv/bin/python]

1. Decode speed on real speech logits. tests/fixtures/reference/lm_decode.npz holds transformers'
   logits of the demo model for held-out and pocketsphinx recordings (the synthetic `peaky/` cases
   are skipped). They are decoded in this one process, so on one core, by
   `CtcBeamSearchDecoder` with the demo model's own LM at beam widths 100 and 20, and without an
   LM at width 100: audio-seconds (frames / 50) decoded per second, the best of `--decode_repeats`
   passes, `log_softmax` included. With `--peer_python`, the interpreter given (one with
   pyctcdecode and kenlm) times pyctcdecode's `decode_beams` on the same logits, widths and LM
   weights, and the ratio ours/pyctcdecode is reported with how many transcripts agree.
2. The whole pipeline with the LM against without it: `python -m wav2vec2_beam` in a fresh process per
   run (as bench/pipeline_speed.py runs it) on one corpus with a LibriSpeech-like length mix,
   `--decoder=greedy` and `--lm=<demo trigram>` alternately. Each run's wall time is measured
   here, process start-up included, beside summary.json's audio_seconds / wall_seconds; the
   transcripts and errors tables are read back to check that every file was decoded.
3. The machine (CPU model, cores, AVX-512/AMX flags) and the date.

Why the checkpoint's CTC head is scaled. The pipeline runs the random-weight base architecture
(bench/make_checkpoints.py), whose logits are near-uniform: every one of the 32 tokens is above
pyctcdecode's -5 log-probability cutoff in every frame, so the beam search tries all 32 tokens per
beam per frame, a pathological load that no trained model produces. Multiplying `lm_head`'s
weight and bias by `--head_scale` multiplies the logits by it and peaks each frame's distribution
as a trained model's is, at the cost of nothing else (the encoder is untouched, so the model's
speed is the same). The tokens above the cutoff per frame are reported for the scaled checkpoint
on (a sample of) the corpus and for the demo model's logits on real speech, so that the reader can
see that the search tries as many tokens per frame on both.

Peaked is not yet speech-like: the scaled random head almost never makes the blank or the word
delimiter a frame's best token (a trained model does in about 60% and 10% of frames), so every
file decodes to one word of hundreds of letters. So the bench also shifts those two biases
until they are the best token as often as in the demo model's logits. The probe reports the
shares of frames per kind of best token, the longest decoded word, and our width-100 LM decode
speed on the checkpoint's logits, to compare with the speed on real speech. `--no-speech_like`
keeps the head merely peaked.

Prints one JSON object on stdout and a short summary on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.pipeline_speed import REPO, run_pipeline, write_corpus
from wav2vec2_beam.demo import MODEL_DIR

REFERENCE_LOGITS = REPO / "tests" / "fixtures" / "reference" / "lm_decode.npz"
DEMO_MODEL = MODEL_DIR
DEMO_ARPA = DEMO_MODEL / "language_model" / "demo_trigram.arpa"
BASE_CHECKPOINT = REPO / "bench" / "checkpoints" / "base"
#: wav2vec2 emits one frame per 320 samples at 16 kHz.
FRAMES_PER_SECOND = 50.0
#: pyctcdecode's `token_min_logp`: tokens below it are not tried (unless a frame's best).
TOKEN_MIN_LOGP = -5.0
HEAD_KEYS = ("lm_head.weight", "lm_head.bias")
#: The decode configurations timed: (name, beam width, with the LM).
DECODE_CONFIGS = (
    ("lm_width100", 100, True),
    ("lm_width20", 20, True),
    ("nolm_width100", 100, False),
)


# ---------------------------------------------------------------------------------------------
# Machine


def machine() -> dict[str, Any]:
    """CPU model, cores, the AVX-512/AMX flags present, and the date (UTC)."""
    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
            "",
        )
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "avx512_amx_flags": sorted(f for f in flags if f.startswith(("avx512", "amx"))),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------
# Decode speed on real speech logits


def speech_logits(path: Path = REFERENCE_LOGITS) -> dict[str, np.ndarray]:
    """The npz's logits of real recordings (held-out and pocketsphinx), without `peaky/`."""
    with np.load(path) as data:
        return {name: data[name] for name in sorted(data.files) if not name.startswith("peaky/")}


def audio_seconds(logits: list[np.ndarray]) -> float:
    return sum(len(item) for item in logits) / FRAMES_PER_SECOND


def candidates_per_frame(log_probs: list[np.ndarray]) -> float:
    """Mean tokens per frame that the beam search tries: those >= the cutoff, and the best."""
    counts = [
        np.maximum((item >= TOKEN_MIN_LOGP).sum(axis=-1), 1) for item in log_probs if len(item)
    ]
    return float(np.concatenate(counts).mean())


def best_time(work: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The shortest of `repeats` timed calls of `work`, and the last call's result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    return best, result


def time_ours(logits: list[np.ndarray], repeats: int) -> dict[str, dict[str, Any]]:
    """Best seconds and transcripts of our decoder, in this process, per `DECODE_CONFIGS`."""
    from wav2vec2_beam.models.ctc_beam_search import (
        BeamSearchOptions,
        CtcBeamSearchDecoder,
        log_softmax,
    )
    from wav2vec2_beam.models.language_model import (
        NgramLanguageModel,
        find_language_model,
        read_alphabet,
    )

    labels = read_alphabet(str(DEMO_MODEL))
    files = find_language_model(str(DEMO_MODEL))
    assert labels is not None and files is not None, "the demo model ships no LM"
    language_model = NgramLanguageModel.load(files)
    results = {}
    for name, width, with_lm in DECODE_CONFIGS:
        decoder = CtcBeamSearchDecoder(labels, language_model if with_lm else None)
        options = BeamSearchOptions(beam_width=width)

        def decode_all(decoder=decoder, options=options) -> list[str]:
            return [decoder.decode(log_softmax(item), options).text for item in logits]

        seconds, texts = best_time(decode_all, repeats)
        results[name] = {"seconds": seconds, "texts": texts}
    return results


_PEER_SCRIPT = """
import json, sys, time
import numpy as np
from pyctcdecode import build_ctcdecoder
npz, names, vocab_path, arpa, unigrams_path, attrs_path, configs, repeats = sys.argv[1:]
with np.load(npz) as data:
    logits = [data[name] for name in json.loads(names)]
vocab = json.load(open(vocab_path))
labels = sorted(vocab, key=vocab.get)
unigrams = open(unigrams_path, encoding="utf-8").read().splitlines()
attrs = json.load(open(attrs_path))
with_lm = build_ctcdecoder(
    labels, arpa, unigrams, alpha=attrs["alpha"], beta=attrs["beta"],
    unk_score_offset=attrs["unk_score_offset"], lm_score_boundary=attrs["score_boundary"],
)
without_lm = build_ctcdecoder(labels)
out = {}
for name, width, lm in json.loads(configs):
    decoder = with_lm if lm else without_lm
    best = float("inf")
    for _ in range(int(repeats)):
        start = time.perf_counter()
        texts = [decoder.decode_beams(item, beam_width=width)[0][0] for item in logits]
        best = min(best, time.perf_counter() - start)
    out[name] = {"seconds": best, "texts": texts}
from importlib.metadata import version
out["version"] = version("pyctcdecode")
print(json.dumps(out))
"""


def time_peer(python: str, names: list[str], repeats: int) -> dict[str, Any]:
    """pyctcdecode's best seconds and transcripts per config, timed in the interpreter given."""
    lm_dir = DEMO_MODEL / "language_model"
    command = [
        python,
        "-c",
        _PEER_SCRIPT,
        str(REFERENCE_LOGITS),
        json.dumps(names),
        str(DEMO_MODEL / "vocab.json"),
        str(DEMO_ARPA),
        str(lm_dir / "unigrams.txt"),
        str(lm_dir / "attrs.json"),
        json.dumps(DECODE_CONFIGS),
        str(repeats),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr[-1500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode_speed(repeats: int, peer_python: str | None) -> dict[str, Any]:
    """Audio-seconds per second on one core, ours (and pyctcdecode's), per configuration."""
    from wav2vec2_beam.models.ctc_beam_search import log_softmax

    items = speech_logits()
    logits = list(items.values())
    seconds = audio_seconds(logits)
    report: dict[str, Any] = {
        "utterances": len(logits),
        "audio_s": seconds,
        "repeats": repeats,
        "demo_candidates_per_frame": candidates_per_frame([log_softmax(x) for x in logits]),
        "demo_candidates_per_frame_heldout": candidates_per_frame(
            [log_softmax(x) for n, x in items.items() if n.startswith("heldout/")]
        ),
        "demo_candidates_per_frame_pocketsphinx": candidates_per_frame(
            [log_softmax(x) for n, x in items.items() if n.startswith("pocketsphinx/")]
        ),
    }
    ours = time_ours(logits, repeats)
    for name, result in ours.items():
        report[f"ours_{name}_audio_s_per_s"] = seconds / result["seconds"]
    if peer_python:
        peer = time_peer(peer_python, list(items), repeats)
        if "error" in peer:
            report["pyctcdecode_error"] = peer["error"]
            return report
        report["pyctcdecode_version"] = peer["version"]
        for name, _, _ in DECODE_CONFIGS:
            speed = seconds / peer[name]["seconds"]
            report[f"pyctcdecode_{name}_audio_s_per_s"] = speed
            report[f"ours_over_pyctcdecode_{name}"] = report[f"ours_{name}_audio_s_per_s"] / speed
            same = sum(
                a == b for a, b in zip(ours[name]["texts"], peer[name]["texts"], strict=True)
            )
            report[f"same_text_as_pyctcdecode_{name}"] = f"{same}/{len(logits)}"
    return report


# ---------------------------------------------------------------------------------------------
# The scaled checkpoint


def scale_head(
    source: Path, target: Path, factor: float, shifts: dict[int, float] | None = None
) -> None:
    """Copy checkpoint `source` to `target` with the CTC head's weight and bias times `factor`,
    then `shifts` (token id -> logit offset) added to the bias."""
    from wav2vec2_beam.models.weights import SAFETENSORS_NAME, read_safetensors, write_safetensors

    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.is_file() and file.name != SAFETENSORS_NAME:
            shutil.copy(file, target / file.name)
    tensors = dict(read_safetensors((source / SAFETENSORS_NAME).read_bytes()))
    for key in HEAD_KEYS:
        tensors[key] = tensors[key] * np.float32(factor)
    bias = tensors["lm_head.bias"].copy()
    for token, shift in (shifts or {}).items():
        bias[token] += np.float32(shift)
    tensors["lm_head.bias"] = bias
    write_safetensors(tensors, str(target / SAFETENSORS_NAME))


def blank_and_space(checkpoint: Path) -> tuple[int, int]:
    """The ids of the CTC blank (`<pad>`) and the word delimiter (`|`) in vocab.json."""
    vocab = json.loads((checkpoint / "vocab.json").read_text())
    return vocab["<pad>"], vocab["|"]


def argmax_shares(logits: list[np.ndarray], blank: int, space: int) -> dict[str, float]:
    """The shares of frames whose best token is the blank, the word delimiter, or a character."""
    best = np.concatenate([item.argmax(axis=-1) for item in logits])
    return {
        "blank": float(np.mean(best == blank)),
        "space": float(np.mean(best == space)),
        "character": float(np.mean((best != blank) & (best != space))),
    }


def speech_like_shifts(
    logits: list[np.ndarray], blank: int, space: int, shares: dict[str, float]
) -> dict[int, float]:
    """Logit offsets for the blank and the delimiter that make them the frame's best token as
    often as in `shares` (the demo model's on real speech).

    A token is a frame's best once its offset exceeds the gap to the frame's best other token,
    so its offset is that gap's quantile at the wanted share; the two offsets are refined in
    turn, since each one's frames are taken partly from the other.
    """
    frames = np.concatenate(logits).astype(np.float64)
    wanted = {blank: shares["blank"], space: shares["space"]}
    shifts = dict.fromkeys(wanted, 0.0)
    for _ in range(4):
        for token, share in wanted.items():
            shifted = frames.copy()
            for other, shift in shifts.items():
                shifted[:, other] += shift
            gap = np.delete(shifted, token, axis=1).max(axis=1) - frames[:, token]
            shifts[token] = float(np.quantile(gap, share))
    return shifts


def model_logits(checkpoint: Path, paths: list[Path]) -> list[np.ndarray]:
    """The checkpoint's logits for each file, one file per batch."""
    import soundfile

    from wav2vec2_beam.models import Wav2Vec2Runner, load_model

    runner = Wav2Vec2Runner(load_model(str(checkpoint)))
    logits = []
    for path in paths:
        audio = soundfile.read(path, dtype="float32")[0]
        normalized = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        logits.extend(runner.run([normalized]).logits)
    return logits


def lm_decode_probe(logits: list[np.ndarray]) -> dict[str, float]:
    """Our width-100 LM decode speed on `logits` (one core), and its longest decoded word."""
    from wav2vec2_beam.models.ctc_beam_search import CtcBeamSearchDecoder, log_softmax
    from wav2vec2_beam.models.language_model import (
        NgramLanguageModel,
        find_language_model,
        read_alphabet,
    )

    files = find_language_model(str(DEMO_MODEL))
    assert files is not None
    decoder = CtcBeamSearchDecoder(read_alphabet(str(DEMO_MODEL)), NgramLanguageModel.load(files))
    start = time.perf_counter()
    texts = [decoder.decode(log_softmax(item)).text for item in logits]
    elapsed = time.perf_counter() - start
    return {
        "lm_width100_audio_s_per_s": audio_seconds(logits) / elapsed,
        "longest_word_chars": max((len(w) for text in texts for w in text.split()), default=0),
    }


def prepare_in_process(
    source: Path, target: Path, factor: float, speech_like: bool, paths: list[Path]
) -> dict[str, Any]:
    """Write the scaled checkpoint (see the module docstring) and describe its logits on `paths`.

    The head is linear, so the unscaled model's logits are the scaled ones divided by `factor`,
    and bias offsets add to the logits as they are.
    """
    from wav2vec2_beam.models.ctc_beam_search import log_softmax

    scale_head(source, target, factor)
    logits = model_logits(target, paths)
    blank, space = blank_and_space(target)
    demo = argmax_shares(list(speech_logits().values()), blank, space)
    unscaled = [item / factor for item in logits]
    report: dict[str, Any] = {"audio_s": audio_seconds(logits), "speech_like": speech_like}
    if speech_like:
        shifts = speech_like_shifts(logits, blank, space, demo)
        scale_head(source, target, factor, shifts)
        offsets = np.zeros(logits[0].shape[-1], dtype=np.float32)
        for token, shift in shifts.items():
            offsets[token] = shift
        logits = [item + offsets for item in logits]
        report["bias_shifts"] = {"blank": shifts[blank], "space": shifts[space]}
    report.update(
        {
            "candidates_per_frame": candidates_per_frame([log_softmax(x) for x in logits]),
            "unscaled_candidates_per_frame": candidates_per_frame(
                [log_softmax(x) for x in unscaled]
            ),
            "argmax_shares": argmax_shares(logits, blank, space),
            "demo_argmax_shares": demo,
            "decode": lm_decode_probe(logits),
        }
    )
    return report


_PREPARE_SCRIPT = """
import json, sys
from pathlib import Path
from bench.lm_speed import prepare_in_process
source, target, factor, speech_like, paths = sys.argv[1:]
paths = [Path(p) for p in json.loads(paths)]
report = prepare_in_process(Path(source), Path(target), float(factor), speech_like == "1", paths)
print(json.dumps(report))
"""


def prepare_checkpoint(
    source: Path, target: Path, factor: float, speech_like: bool, probe: list[Path]
) -> dict[str, Any]:
    """`prepare_in_process` in a fresh process: TensorFlow stays out of this one, which times
    the decoder and launches the pipeline runs."""
    command = [
        sys.executable,
        "-c",
        _PREPARE_SCRIPT,
        str(source),
        str(target),
        str(factor),
        "1" if speech_like else "0",
        json.dumps([str(p) for p in probe]),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure_base_checkpoint() -> None:
    if not (BASE_CHECKPOINT / "model.safetensors").exists():
        command = [sys.executable, "-m", "bench.make_checkpoints", str(BASE_CHECKPOINT.parent)]
        subprocess.run([*command, "base"], cwd=REPO, check=True)


def probe_sample(paths: list[Path], seconds: float) -> list[Path]:
    """The corpus's first files, up to `seconds` of audio."""
    sample, total = [], 0.0
    for path in paths:
        if total >= seconds:
            break
        sample.append(path)
        total += duration(path)
    return sample


# ---------------------------------------------------------------------------------------------
# Whole pipeline


def table_rows(folder: Path) -> int:
    """Rows of a Parquet table folder (0 when it has no pieces)."""
    import pyarrow.parquet as pq

    if not folder.exists() or not any(folder.glob("*.parquet")):
        return 0
    return pq.read_table(folder).num_rows


def one_pipeline_run(inputs: str, checkpoint: Path, output: Path, flags: list[str]) -> dict:
    """One fresh `python -m wav2vec2_beam` process: its wall time measured here and its summary."""
    start = time.perf_counter()
    summary = run_pipeline(inputs, str(checkpoint), output, flags)
    process_s = time.perf_counter() - start
    audio = summary["audio_seconds"]
    return {
        "process_wall_s": process_s,
        "summary_wall_s": summary["wall_seconds"],
        "audio_s": audio,
        "audio_s_per_s_process": audio / process_s,
        "audio_s_per_s_summary": audio / summary["wall_seconds"],
        "decoding": summary.get("options", {}).get("decoding"),
        "peak_rss_mib_main_process": summary["peak_rss_mib"],
        "inputs": summary["inputs"],
        "succeeded": summary["succeeded"],
        "failed": summary["failed"],
        "transcripts_rows": table_rows(output / "transcripts"),
        "errors_rows": table_rows(output / "errors"),
    }


def ratios(runs: dict[str, list[dict]], key: str) -> dict[str, float]:
    """with-LM / without-LM of `key` (a speed): best over best, median over median."""
    greedy = [run[key] for run in runs["greedy"]]
    lm = [run[key] for run in runs["lm"]]
    return {
        "best": max(lm) / max(greedy),
        "median": statistics.median(lm) / statistics.median(greedy),
    }


def pipeline_speed(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Greedy and LM pipeline runs, alternated, on one corpus and the scaled checkpoint."""
    ensure_base_checkpoint()
    paths = write_corpus(work / "corpus", args.minutes * 60)
    checkpoint = work / "scaled_checkpoint"
    sample = probe_sample(paths, args.probe_minutes * 60)
    probe = prepare_checkpoint(
        BASE_CHECKPOINT, checkpoint, args.head_scale, args.speech_like, sample
    )
    common = ["--chunk_length_s=0", f"--batch_size={args.batch_size}"]
    modes = {
        "greedy": [*common, "--decoder=greedy"],
        "lm": [*common, f"--lm={DEMO_ARPA}", f"--beam_width={args.beam_width}"],
    }
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for repeat in range(args.repeats):
        for mode, flags in modes.items():
            output = work / f"out_{mode}_{repeat}"
            runs[mode].append(
                one_pipeline_run(str(work / "corpus" / "*.flac"), checkpoint, output, flags)
            )
            shutil.rmtree(output, ignore_errors=True)
            print(
                f"  pipeline {mode} run {repeat + 1}: {runs[mode][-1]['process_wall_s']:.1f} s",
                file=sys.stderr,
            )
    return {
        "checkpoint": f"{BASE_CHECKPOINT.relative_to(REPO)}, lm_head x {args.head_scale}"
        + (", blank/space bias shifted (--speech_like)" if args.speech_like else ""),
        "files": len(paths),
        "corpus_audio_s": sum(duration(p) for p in paths),
        "flags": modes,
        "scaled_checkpoint_probe": probe,
        "runs": runs,
        "lm_over_greedy_process": ratios(runs, "audio_s_per_s_process"),
        "lm_over_greedy_summary": ratios(runs, "audio_s_per_s_summary"),
    }


def duration(path: Path) -> float:
    import soundfile

    return soundfile.info(path).duration


# ---------------------------------------------------------------------------------------------


def human_summary(report: dict[str, Any]) -> str:
    decode, pipe = report["decode"], report.get("pipeline")
    lines = [
        f"machine: {report['machine']['cpu_model']}, {report['machine']['cores']} cores",
        "decode, audio-s/s on one core: "
        + ", ".join(
            f"{name} {decode[f'ours_{name}_audio_s_per_s']:.1f}" for name, _, _ in DECODE_CONFIGS
        ),
    ]
    if "ours_over_pyctcdecode_lm_width100" in decode:
        lines.append(
            "ours / pyctcdecode: "
            + ", ".join(
                f"{name} {decode[f'ours_over_pyctcdecode_{name}']:.2f}x"
                for name, _, _ in DECODE_CONFIGS
            )
        )
    if pipe:
        lines.append(
            f"tokens above {TOKEN_MIN_LOGP} per frame: scaled checkpoint "
            f"{pipe['scaled_checkpoint_probe']['candidates_per_frame']:.2f}, demo logits "
            f"{decode['demo_candidates_per_frame']:.2f}"
        )
        process, summary = pipe["lm_over_greedy_process"], pipe["lm_over_greedy_summary"]
        lines.append(
            f"pipeline with LM / without: {process['best']:.3f} best, {process['median']:.3f} "
            f"median (process wall); {summary['best']:.3f} / {summary['median']:.3f} (summary.json)"
        )
    return "\n".join(lines)


def command_line() -> str:
    """How this run was started, as a shell line."""
    import shlex

    return shlex.join([sys.executable, "-m", "bench.lm_speed", *sys.argv[1:]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="corpus length")
    parser.add_argument("--repeats", type=int, default=2, help="pipeline runs per mode")
    parser.add_argument("--decode_repeats", type=int, default=3, help="decode passes (best kept)")
    parser.add_argument("--head_scale", type=float, default=20.0)
    parser.add_argument(
        "--speech_like",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also shift the head's blank and delimiter biases so that they are the frame's best "
        "token as often as in the demo model's logits (default; without it, the scaled random "
        "head almost never emits either: one word per file)",
    )
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--beam_width", type=int, default=100, help="of the pipeline's LM runs")
    parser.add_argument(
        "--probe_minutes",
        type=float,
        default=1.0,
        help="corpus audio over which the scaled checkpoint's tokens above the cutoff are counted",
    )
    parser.add_argument("--peer_python", help="an interpreter with pyctcdecode and kenlm")
    parser.add_argument("--skip_pipeline", action="store_true", help="decode speed only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report: dict[str, Any] = {"machine": machine(), "command": command_line()}
    report["decode"] = decode_speed(args.decode_repeats, args.peer_python)
    if not args.skip_pipeline:
        with tempfile.TemporaryDirectory() as work_dir:
            report["pipeline"] = pipeline_speed(args, Path(work_dir))
    print(json.dumps(report, indent=2))
    print(human_summary(report), file=sys.stderr)


if __name__ == "__main__":
    main()

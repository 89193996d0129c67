"""Word and character error rates of the demo model (or any CTC checkpoint) on up to five sets.

    python -m wav2vec2_beam.demo.evaluate [--model CHECKPOINT] [--count 200] [--json results.json]

- the bundled held-out speech (`HELDOUT_DIR`, 24 utterances shipped with the package): works
  wherever the package is installed, with nothing else;
- held-out sentences (never in training) in training voices: does the model transcribe what it
  was trained for, on text it has not seen?
- held-out sentences in held-out voices (espeak-ng variants and accents never heard in training):
  does it generalize across speakers?
- the real recordings of pocketsphinx-testdata (read speech and spoken card names, with their
  transcripts): how far is synthetic speech from real speech?

The synthesized sets are spoken clean (no augmentation) at 16 kHz by espeak-ng; without it
(`apt-get install espeak-ng`) they are left out, with a line saying so. WER and CER are corpus
rates (total edits over total reference words or characters, spaces included, as jiwer counts
them) by rapidfuzz's Levenshtein distance, on text normalized by `demo_corpus.normalize_text`:
upper case, apostrophes kept, other punctuation dropped, spaces collapsed. Decoding is greedy CTC and, when the checkpoint ships an LM
(`language_model/`), beam search with it, as the pipeline does by default.

A further set, Harvard sentences (demo/out_of_domain.txt, the first `--count` of its 40) in
training voices, checks that the demo's LM, estimated on the demo's own narrow text, does not
spoil words outside it.

With `--precision bfloat16`, each set is also run in that precision: its greedy WER and CER,
and the share of frames whose argmax (the greedy decision) equals float32's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile
from rapidfuzz.distance import Levenshtein

from wav2vec2_beam.demo import HELDOUT_DIR, MODEL_DIR
from wav2vec2_beam.demo import corpus as demo_corpus
from wav2vec2_beam.models.feature_extraction import Wav2Vec2FeatureExtractor
from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer

if TYPE_CHECKING:  # TensorFlow loads only when a model runs
    from wav2vec2_beam.models.inference import Wav2Vec2Runner

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
OUT_OF_DOMAIN = Path(__file__).with_name("out_of_domain.txt")
#: pocketsphinx-testdata folders with 16 kHz WAVs and a Sphinx transcription file
#: ("<s> words </s> (file id)" per line).
POCKETSPHINX_SETS = {"librivox": "transcription", "cards": "cards.transcription"}


@dataclass
class EvaluationSet:
    """Utterances (16 kHz float32) and their reference transcripts."""

    name: str
    audio: list[np.ndarray]
    texts: list[str]


def held_out_plans(
    count: int, voices: tuple[demo_corpus.Voice, ...], seed: int
) -> list[demo_corpus.Utterance]:
    """`count` held-out sentences, each planned in a voice of `voices`, clean (no band limit).

    The evaluation sets and the tests' committed held-out set (tests/fixtures/make_demo_heldout.py)
    are both drawn this way.
    """
    sentences = demo_corpus.draw_sentences(count, held_out=True, seed=seed)
    return demo_corpus.plan_utterances(sentences, voices, seed, band_limit=False)


def synthesized_set(
    name: str, count: int, voices: tuple[demo_corpus.Voice, ...], seed: int
) -> EvaluationSet:
    """`count` held-out sentences, each in a voice of `voices`, spoken clean."""
    plans = held_out_plans(count, voices, seed)
    with ThreadPoolExecutor(4) as pool:  # espeak-ng runs as subprocesses: threads suffice
        audio = list(pool.map(demo_corpus.synthesize, plans))
    return EvaluationSet(name, audio, [plan.text for plan in plans])


def bundled_set(folder: Path = HELDOUT_DIR) -> EvaluationSet:
    """The held-out utterances that ship with the package, with their transcripts."""
    utterances = json.loads((folder / "transcripts.json").read_text())["utterances"]
    audio = [soundfile.read(folder / item["file"], dtype="float32")[0] for item in utterances]
    texts = [item["text"] for item in utterances]
    return EvaluationSet("bundled held-out speech", audio, texts)


def pocketsphinx_set(root: Path = POCKETSPHINX) -> EvaluationSet | None:
    """The transcribed recordings of pocketsphinx-testdata, or None if it is not installed."""
    audio, texts = [], []
    for folder, transcription in POCKETSPHINX_SETS.items():
        path = root / folder / transcription
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words, _, file_id = line.rpartition("(")
            text = words.replace("<s>", " ").replace("</s>", " ")
            samples, rate = soundfile.read(
                root / folder / f"{file_id.strip(') ')}.wav", dtype="float32"
            )
            if rate != demo_corpus.SAMPLING_RATE:
                raise ValueError(f"{folder}/{file_id}: {rate} Hz, expected 16 kHz")
            audio.append(samples)
            texts.append(" ".join(text.split()))
    return EvaluationSet("pocketsphinx recordings", audio, texts) if audio else None


def utterance_logits(
    runner: Wav2Vec2Runner, audio: Sequence[np.ndarray], batch_size: int = 16
) -> list[np.ndarray]:
    """Each 16 kHz utterance's CTC logits, in batches of similar lengths.

    Each utterance is normalized on its own (as the feature extractor and the pipeline do), and
    the attention mask makes padding exact, so the logits do not depend on the batch.
    """
    normalized = Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm(
        [np.asarray(a, np.float32) for a in audio], None
    )
    order = sorted(range(len(normalized)), key=lambda i: len(normalized[i]))
    logits: list[np.ndarray] = [np.empty(0)] * len(normalized)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        outputs = runner.run([normalized[i] for i in chosen]).logits
        for index, item in zip(chosen, outputs, strict=True):
            logits[index] = item
    return logits


def transcribe(
    runner: Wav2Vec2Runner,
    tokenizer: Wav2Vec2CTCTokenizer,
    audio: Sequence[np.ndarray],
    batch_size: int = 16,
) -> list[str]:
    """Greedy CTC transcripts of 16 kHz utterances."""
    logits = utterance_logits(runner, audio, batch_size)
    return tokenizer.batch_decode([item.argmax(-1) for item in logits])


def lm_transcripts(model_dir: str, logits: Sequence[np.ndarray]) -> list[str] | None:
    """Beam-search transcripts with the checkpoint's own LM (as the pipeline's default decodes
    them), or None when the checkpoint ships no `language_model/`."""
    from wav2vec2_beam.models.ctc_beam_search import CtcBeamSearchDecoder, log_softmax
    from wav2vec2_beam.models.language_model import (
        NgramLanguageModel,
        find_language_model,
        read_alphabet,
    )

    files = find_language_model(model_dir)
    if files is None:
        return None
    decoder = CtcBeamSearchDecoder(read_alphabet(model_dir), NgramLanguageModel.load(files))
    return [decoder.decode(log_softmax(item)).text for item in logits]


def out_of_domain_set(count: int, seed: int) -> EvaluationSet:
    """The first `count` of demo/out_of_domain.txt (Harvard sentences, about half their words
    outside the demo's vocabulary) in training voices, spoken clean: what an LM of the demo's
    text must not spoil."""
    sentences = OUT_OF_DOMAIN.read_text().splitlines()[:count]
    plans = demo_corpus.plan_utterances(
        sentences, demo_corpus.TRAINING_VOICES, seed, band_limit=False
    )
    with ThreadPoolExecutor(4) as pool:
        audio = list(pool.map(demo_corpus.synthesize, plans))
    return EvaluationSet("out-of-domain sentences, training voices", audio, [p.text for p in plans])


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus-level WER and CER (total edits over total reference words or characters)."""
    refs = [demo_corpus.normalize_text(t) for t in references]
    hyps = [demo_corpus.normalize_text(t) for t in hypotheses]
    word_edits = sum(
        Levenshtein.distance(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True)
    )
    char_edits = sum(Levenshtein.distance(r, h) for r, h in zip(refs, hyps, strict=True))
    return {
        "wer": word_edits / sum(len(r.split()) for r in refs),
        "cer": char_edits / sum(len(r) for r in refs),
    }


def argmax_agreement(logits: Sequence[np.ndarray], others: Sequence[np.ndarray]) -> float:
    """The share of frames, over all utterances, whose argmax is the same in both."""
    same = sum(
        int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(logits, others, strict=True)
    )
    return same / sum(len(a) for a in logits)


def evaluate(
    model_dir: str, count: int, seed: int, precision: str = "float32"
) -> list[dict[str, Any]]:
    """One row per set: its name, size, WER and CER (greedy, and with the checkpoint's LM if it
    ships one) and a few example transcripts; with another `precision`, also its greedy WER and
    CER in it and its argmax agreement with float32."""
    from wav2vec2_beam.models.inference import Wav2Vec2Runner
    from wav2vec2_beam.models.modeling_wav2vec2 import TFWav2Vec2ForCTC

    model = TFWav2Vec2ForCTC.from_pretrained(model_dir)
    runner = Wav2Vec2Runner(model)
    other = None if precision == "float32" else Wav2Vec2Runner(model, precision=precision)
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(model_dir)
    sets = [bundled_set()]
    if shutil.which("espeak-ng") is None:
        print(
            "espeak-ng is not installed: the synthesized sets are left out "
            "(apt-get install espeak-ng to add them)",
            file=sys.stderr,
        )
    else:
        sets += [
            synthesized_set(
                "held-out sentences, training voices", count, demo_corpus.TRAINING_VOICES, seed
            ),
            synthesized_set(
                "held-out sentences, held-out voices", count, demo_corpus.HELD_OUT_VOICES, seed + 1
            ),
            out_of_domain_set(count, seed + 2),
        ]
    recordings = pocketsphinx_set()
    if recordings is not None:
        sets.append(recordings)
    rows = []
    for evaluation_set in sets:
        logits = utterance_logits(runner, evaluation_set.audio)
        hypotheses = tokenizer.batch_decode([item.argmax(-1) for item in logits])
        with_lm = lm_transcripts(model_dir, logits)
        row = {
            "set": evaluation_set.name,
            "utterances": len(evaluation_set.texts),
            "hours": round(sum(len(a) for a in evaluation_set.audio) / 16000 / 3600, 3),
            **error_rates(evaluation_set.texts, hypotheses),
        }
        if with_lm is not None:
            rates = error_rates(evaluation_set.texts, with_lm)
            row.update(wer_lm=rates["wer"], cer_lm=rates["cer"])
        if other is not None:
            other_logits = utterance_logits(other, evaluation_set.audio)
            other_texts = tokenizer.batch_decode([item.argmax(-1) for item in other_logits])
            rates = error_rates(evaluation_set.texts, other_texts)
            row.update(
                {
                    f"wer_{precision}": rates["wer"],
                    f"cer_{precision}": rates["cer"],
                    f"argmax_agreement_{precision}": argmax_agreement(logits, other_logits),
                }
            )
        row["examples"] = [
            {"reference": r, "greedy": h, **({"with_lm": m} if with_lm else {})}
            for r, h, m in list(
                zip(evaluation_set.texts, hypotheses, with_lm or hypotheses, strict=True)
            )[:3]
        ]
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows, for the terminal and docs/DEMO_MODEL.md."""
    lm = all("wer_lm" in row for row in rows)
    precision = next(
        (k.removeprefix("wer_") for k in rows[0] if k.startswith("wer_") and k != "wer_lm"), None
    )
    header = "| set | utterances | WER | CER |" + (" WER with LM | CER with LM |" if lm else "")
    if precision:
        header += f" WER {precision} | CER {precision} | argmax = float32 |"
    columns = 2 + 2 * lm + 3 * bool(precision)
    lines = [header, "|---|---:" + "|---:" * columns + "|"]
    for row in rows:
        line = (
            f"| {row['set']} | {row['utterances']} | {100 * row['wer']:.1f}% | "
            f"{100 * row['cer']:.1f}% |"
        )
        if lm:
            line += f" {100 * row['wer_lm']:.1f}% | {100 * row['cer_lm']:.1f}% |"
        if precision:
            line += (
                f" {100 * row[f'wer_{precision}']:.1f}% | {100 * row[f'cer_{precision}']:.1f}% |"
                f" {100 * row[f'argmax_agreement_{precision}']:.2f}% |"
            )
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=str(MODEL_DIR), help="checkpoint folder (default: the demo model)"
    )
    parser.add_argument(
        "--count",
        type=int,
        default=200,
        help="utterances per synthesized set (the out-of-domain set has at most 40)",
    )
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the rows (with examples) here")
    parser.add_argument("--examples", action="store_true", help="print example transcripts")
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="also run each set in this precision and compare it with float32",
    )
    args = parser.parse_args(argv)
    rows = evaluate(args.model, args.count, args.seed, args.precision)
    print(table(rows))
    if args.examples:
        for row in rows:
            for example in row["examples"]:
                print(f"{row['set']}")
                for field, text in example.items():
                    print(f"  {field}: {text}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

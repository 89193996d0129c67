"""Word and character error rates of the demo model (or any CTC checkpoint) on three sets.

    python -m models.evaluate_demo --model demo_model/ [--count 200] [--json results.json]

- held-out sentences (never in training) in training voices: does the model transcribe what it
  was trained for, on text it has not seen?
- held-out sentences in held-out voices (espeak-ng variants and accents never heard in training):
  does it generalize across speakers?
- the real recordings of pocketsphinx-testdata (read speech and spoken card names, with their
  transcripts): how far is synthetic speech from real speech?

The synthesized sets are spoken clean (no augmentation) at 16 kHz. WER and CER are jiwer's, on
text normalized by `demo_corpus.normalize_text`: upper case, apostrophes kept, other punctuation
dropped, spaces collapsed. Decoding is greedy CTC, as the pipeline does.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile

from models import demo_corpus
from models.feature_extraction import Wav2Vec2FeatureExtractor
from models.tokenizer import Wav2Vec2CTCTokenizer

if TYPE_CHECKING:  # TensorFlow loads only when a model runs
    from models.inference import Wav2Vec2Runner

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
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


def transcribe(
    runner: Wav2Vec2Runner,
    tokenizer: Wav2Vec2CTCTokenizer,
    audio: Sequence[np.ndarray],
    batch_size: int = 16,
) -> list[str]:
    """Greedy CTC transcripts of 16 kHz utterances, in batches of similar lengths.

    Each utterance is normalized on its own (as the feature extractor and the pipeline do), and
    the attention mask makes padding exact, so a transcript does not depend on its batch.
    """
    normalized = Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm(
        [np.asarray(a, np.float32) for a in audio], None
    )
    order = sorted(range(len(normalized)), key=lambda i: len(normalized[i]))
    texts: list[str] = [""] * len(normalized)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        logits = runner.run([normalized[i] for i in chosen]).logits
        decoded = tokenizer.batch_decode([item.argmax(-1) for item in logits])
        for index, text in zip(chosen, decoded, strict=True):
            texts[index] = text
    return texts


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus-level WER and CER (total edits over total reference words or characters)."""
    import jiwer

    refs = [demo_corpus.normalize_text(t) for t in references]
    hyps = [demo_corpus.normalize_text(t) for t in hypotheses]
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}


def evaluate(model_dir: str, count: int, seed: int) -> list[dict[str, Any]]:
    """One row per set: its name, size, WER, CER and a few example transcripts."""
    from models.inference import Wav2Vec2Runner
    from models.modeling_wav2vec2 import TFWav2Vec2ForCTC

    runner = Wav2Vec2Runner(TFWav2Vec2ForCTC.from_pretrained(model_dir))
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(model_dir)
    sets = [
        synthesized_set(
            "held-out sentences, training voices", count, demo_corpus.TRAINING_VOICES, seed
        ),
        synthesized_set(
            "held-out sentences, held-out voices", count, demo_corpus.HELD_OUT_VOICES, seed + 1
        ),
    ]
    recordings = pocketsphinx_set()
    if recordings is not None:
        sets.append(recordings)
    rows = []
    for evaluation_set in sets:
        hypotheses = transcribe(runner, tokenizer, evaluation_set.audio)
        rows.append(
            {
                "set": evaluation_set.name,
                "utterances": len(evaluation_set.texts),
                "hours": round(sum(len(a) for a in evaluation_set.audio) / 16000 / 3600, 3),
                **error_rates(evaluation_set.texts, hypotheses),
                "examples": [
                    {"reference": r, "hypothesis": h}
                    for r, h in list(zip(evaluation_set.texts, hypotheses, strict=True))[:3]
                ],
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of the rows, for the terminal and the README."""
    lines = ["| set | utterances | WER | CER |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['set']} | {row['utterances']} | {100 * row['wer']:.1f}% | "
            f"{100 * row['cer']:.1f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo_model", help="checkpoint folder")
    parser.add_argument("--count", type=int, default=200, help="utterances per synthesized set")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the rows (with examples) here")
    parser.add_argument("--examples", action="store_true", help="print example transcripts")
    args = parser.parse_args(argv)
    rows = evaluate(args.model, args.count, args.seed)
    print(table(rows))
    if args.examples:
        for row in rows:
            for example in row["examples"]:
                print(
                    f"{row['set']}\n  ref: {example['reference']}\n  hyp: {example['hypothesis']}"
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

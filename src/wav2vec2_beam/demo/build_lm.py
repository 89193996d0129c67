"""The demo model's language model: a Kneser-Ney trigram of its training text, saved beside it.

    python -m wav2vec2_beam.demo.build_lm [--sentences 40000] [--order 3]

The text is the demo's own sentence generator, training split only (`draw_sentences(held_out=
False, seed=0)`, whose first 12,000 sentences are the ones the model was trained on), so the
held-out sentences of the evaluation stay unseen by the LM too. The LM is estimated by
`lm.kneser_ney` and written in the layout `Wav2Vec2ProcessorWithLM.save_pretrained` writes
(`alphabet.json` and `language_model/`), so transformers' processor and our pipeline both pick it
up. Its fusion weights were chosen on development sets drawn with other seeds than the
evaluation's (docs/DEMO_MODEL.md has the figures): a milder unknown-word offset than
pyctcdecode's -10 keeps words outside the demo's vocabulary from being forced into it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from wav2vec2_beam.demo import MODEL_DIR
from wav2vec2_beam.demo import corpus as demo_corpus
from wav2vec2_beam.lm.arpa import write_arpa
from wav2vec2_beam.lm.kneser_ney import estimate
from wav2vec2_beam.models.ctc_beam_search import alphabet_from_vocab
from wav2vec2_beam.models.language_model import FusionWeights, save_language_model

#: The committed demo LM's settings.
DEFAULT_SENTENCES = 40_000
DEFAULT_WEIGHTS = FusionWeights(alpha=0.3, beta=3.0, unk_score_offset=-4.0, score_boundary=True)
ARPA_NAME = "demo_trigram.arpa"


def training_text(count: int) -> list[list[str]]:
    """The first `count` training-split sentences, as the transcripts spell them."""
    sentences = demo_corpus.draw_sentences(count, held_out=False, seed=0)
    return [demo_corpus.normalize_text(sentence).split() for sentence in sentences]


def build(
    model_dir: Path,
    count: int = DEFAULT_SENTENCES,
    order: int = 3,
    prune: tuple[int, ...] = (0, 0, 1),
    weights: FusionWeights = DEFAULT_WEIGHTS,
) -> Path:
    """Estimate the LM and save it into `model_dir`; returns its `language_model/` folder."""
    vocab = json.loads((model_dir / "vocab.json").read_text())
    labels = alphabet_from_vocab(sorted(vocab, key=vocab.get))
    model = estimate(training_text(count), order=order, prune=prune)
    with tempfile.TemporaryDirectory() as scratch:
        arpa = Path(scratch) / ARPA_NAME
        write_arpa(arpa, model)
        return save_language_model(model_dir, arpa, labels, weights)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--sentences", type=int, default=DEFAULT_SENTENCES)
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument("--prune", type=int, nargs="+", default=[0, 0, 1])
    parser.add_argument("--alpha", type=float, default=DEFAULT_WEIGHTS.alpha)
    parser.add_argument("--beta", type=float, default=DEFAULT_WEIGHTS.beta)
    parser.add_argument("--unk_score_offset", type=float, default=DEFAULT_WEIGHTS.unk_score_offset)
    args = parser.parse_args(argv)
    weights = FusionWeights(args.alpha, args.beta, args.unk_score_offset, True)
    folder = build(args.model, args.sentences, args.order, tuple(args.prune), weights)
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(folder.iterdir()))
    print(f"{folder}: {sizes}")


if __name__ == "__main__":
    main()

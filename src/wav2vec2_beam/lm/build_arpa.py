"""`python -m wav2vec2_beam.lm.build_arpa`: text in, a Kneser-Ney ARPA model for KenLM out, in
place of `lmplz`.

    python -m wav2vec2_beam.lm.build_arpa --text corpus.txt --checkpoint path/to/checkpoint \\
        [--alpha 0.5 ...]
    python -m wav2vec2_beam.lm.build_arpa --text corpus.txt [--text more.txt] --output lm.arpa \\
        [--vocab path/to/checkpoint] [--order 3] [--prune 0 0 1] [--discount_fallback 0.5 1 1.5]

With `--checkpoint`, the model goes into that checkpoint folder as transformers'
`Wav2Vec2ProcessorWithLM.save_pretrained` lays it out (`alphabet.json` from the checkpoint's
vocabulary, `language_model/` with `attrs.json`, `unigrams.txt` and `<name>.arpa`), so that the
pipeline, and transformers, decode with it by default.

One sentence per line, words separated by whitespace; blank lines are skipped. When the CTC
vocabulary is known (`--checkpoint`, or `--vocab` with `--output`), the text is normalized to it
by default (`lm/normalize.py`: its case, punctuation dropped, accents its alphabet lacks
removed), since a word the decoder cannot spell is a word the LM can never help with;
`--normalize none` keeps the text as it is, `--case` then setting its case. KenLM loads orders 2 and up. Exit status 2, with one line on stderr, for a text that is
missing or holds no sentence, or for settings the estimator refuses; no output is written then.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from wav2vec2_beam.lm.arpa import write_arpa
from wav2vec2_beam.lm.kneser_ney import DEFAULT_FALLBACK, estimate
from wav2vec2_beam.lm.normalize import alphabet_normalizer, vocabulary_characters

_CASES = {"upper": str.upper, "lower": str.lower, "keep": str}


def read_sentences(
    paths: Sequence[Path], case: str, normalize: Callable[[str], str] | None = None
) -> Iterator[list[str]]:
    """Token lists of every non-blank line (normalized when `normalize` is given); a ValueError
    at the end of a file that had none.

    Files are streamed, not read whole, so a corpus costs memory only for its n-gram counts.
    """
    cased = _CASES[case]

    def convert(line: str) -> str:
        return cased(line) if normalize is None else normalize(cased(line))

    for path in paths:
        sentences = 0
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                tokens = convert(line).split()
                if tokens:
                    sentences += 1
                    yield tokens
        if not sentences:
            raise ValueError(f"{path}: no sentences (the file is empty)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wav2vec2_beam.lm.build_arpa",
        description="Estimate a modified Kneser-Ney n-gram model and write it as an ARPA file.",
    )
    parser.add_argument(
        "--text",
        type=Path,
        action="append",
        required=True,
        help="text, one sentence per line (repeat for more files)",
    )
    parser.add_argument("--output", type=Path, help="the ARPA file to write")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="a CTC checkpoint folder to save the model into, as language_model/",
    )
    parser.add_argument(
        "--vocab",
        help="with --output: the CTC checkpoint (or its vocab.json) whose characters the text "
        "is normalized to",
    )
    parser.add_argument(
        "--normalize",
        choices=["alphabet", "none"],
        help="alphabet (the default when the vocabulary is known): the text as the checkpoint "
        "can spell it; none: as it is",
    )
    parser.add_argument("--name", default="lm", help="with --checkpoint: the ARPA file's name")
    parser.add_argument("--alpha", type=float, default=0.5, help="with --checkpoint: LM weight")
    parser.add_argument("--beta", type=float, default=1.5, help="with --checkpoint: word bonus")
    parser.add_argument(
        "--unk_score_offset",
        type=float,
        default=-10.0,
        help="with --checkpoint: the log10 penalty of a word the LM does not know",
    )
    parser.add_argument("--order", type=int, default=3)
    parser.add_argument(
        "--prune",
        type=int,
        nargs="+",
        default=[0],
        help="per order, drop n-grams counted at most this often (unigrams: 0)",
    )
    parser.add_argument("--case", choices=sorted(_CASES), default="keep")
    parser.add_argument(
        "--discount_fallback",
        type=float,
        nargs=3,
        default=DEFAULT_FALLBACK,
        metavar=("D1", "D2", "D3+"),
        help="discounts for an order whose counts give none",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if (args.output is None) == (args.checkpoint is None):
        print("build_arpa: give --output or --checkpoint (one of them)", file=sys.stderr)
        return 2
    if args.checkpoint is not None and not (args.checkpoint / "vocab.json").is_file():
        print(
            f"build_arpa: {args.checkpoint}: no vocab.json (not a CTC checkpoint)", file=sys.stderr
        )
        return 2
    missing = [str(path) for path in args.text if not path.is_file()]
    if missing:
        print(f"build_arpa: no such text file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        normalize = _normalizer(args)
        sentences = read_sentences(args.text, args.case, normalize)
        model = estimate(sentences, args.order, args.prune, args.discount_fallback)
    except (OSError, ValueError) as error:
        print(f"build_arpa: {error}", file=sys.stderr)
        return 2
    output = args.output
    if args.checkpoint is not None:
        scratch = tempfile.TemporaryDirectory()
        output = Path(scratch.name) / f"{args.name}.arpa"
    write_arpa(output, model)
    if args.checkpoint is not None:
        output = _save_into(args.checkpoint, output, args) / output.name
    counts = " ".join(f"{n}-grams={len(grams)}" for n, grams in sorted(model.items()))
    print(f"{output}: {counts}")
    return 0


def _normalizer(args: argparse.Namespace) -> Callable[[str], str] | None:
    """The text normalization asked for (module docstring); ValueError for a vocabulary that
    cannot be read, or `--normalize alphabet` without one."""
    vocabulary = args.checkpoint if args.checkpoint is not None else args.vocab
    if args.normalize == "none" or (args.normalize is None and vocabulary is None):
        return None
    if vocabulary is None:
        raise ValueError("--normalize alphabet needs the checkpoint: give --vocab CHECKPOINT")
    from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer

    folder = Path(vocabulary)
    if folder.name == "vocab.json":
        folder = folder.parent
    if not (folder / "vocab.json").is_file():
        raise ValueError(f"{vocabulary}: no vocab.json (not a CTC checkpoint)")
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(folder))
    characters = vocabulary_characters(tokenizer.encoder, tokenizer.word_delimiter_token)
    return alphabet_normalizer(characters)


def _save_into(checkpoint: Path, arpa: Path, args: argparse.Namespace) -> Path:
    """`alphabet.json` and `language_model/` in the checkpoint; returns the LM folder."""
    from wav2vec2_beam.models.configuration import Wav2Vec2Config
    from wav2vec2_beam.models.ctc_beam_search import alphabet_from_vocab
    from wav2vec2_beam.models.language_model import FusionWeights, save_language_model
    from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer

    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(checkpoint))
    # One label per logit column: tokens added beyond the model's vocabulary have no column.
    columns = Wav2Vec2Config.from_pretrained(str(checkpoint)).vocab_size
    labels = alphabet_from_vocab(
        [tokenizer.convert_ids_to_tokens(i) for i in range(columns)],
        tokenizer.word_delimiter_token,
        tokenizer.pad_token,
    )
    weights = FusionWeights(args.alpha, args.beta, args.unk_score_offset, True)
    return save_language_model(checkpoint, arpa, labels, weights)


if __name__ == "__main__":
    sys.exit(main())

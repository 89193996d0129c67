"""`python -m lm.build_arpa`: text in, a Kneser-Ney ARPA model for KenLM out, in place of `lmplz`.

    python -m lm.build_arpa --text corpus.txt [--text more.txt] --output lm.arpa \\
        [--order 3] [--prune 0 0 1] [--case upper|lower|keep] [--discount_fallback 0.5 1 1.5]

One sentence per line, words separated by whitespace; blank lines are skipped. `--case` should
match the CTC vocabulary's case, since a word the decoder spells differently is unknown to the
model. KenLM loads orders 2 and up. Exit status 2, with one line on stderr, for a text that is
missing or holds no sentence, or for settings the estimator refuses; no output is written then.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from lm.arpa import write_arpa
from lm.kneser_ney import DEFAULT_FALLBACK, estimate

_CASES = {"upper": str.upper, "lower": str.lower, "keep": str}


def read_sentences(paths: Sequence[Path], case: str) -> Iterator[list[str]]:
    """Token lists of every non-blank line; a ValueError at the end of a file that had none.

    Files are streamed, not read whole, so a corpus costs memory only for its n-gram counts.
    """
    convert = _CASES[case]
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
        prog="python -m lm.build_arpa",
        description="Estimate a modified Kneser-Ney n-gram model and write it as an ARPA file.",
    )
    parser.add_argument(
        "--text",
        type=Path,
        action="append",
        required=True,
        help="text, one sentence per line (repeat for more files)",
    )
    parser.add_argument("--output", type=Path, required=True, help="the ARPA file to write")
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
    missing = [str(path) for path in args.text if not path.is_file()]
    if missing:
        print(f"build_arpa: no such text file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        model = estimate(
            read_sentences(args.text, args.case), args.order, args.prune, args.discount_fallback
        )
    except (OSError, ValueError) as error:
        print(f"build_arpa: {error}", file=sys.stderr)
        return 2
    write_arpa(args.output, model)
    counts = " ".join(f"{n}-grams={len(grams)}" for n, grams in sorted(model.items()))
    print(f"{args.output}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ARPA back-off files: the text form of an n-gram model that KenLM (and SRILM) load.

Layout::

    \\data\\
    ngram 1=<count>
    ...
    \\1-grams:
    <log10 p(w)>\\t<w>\\t<log10 backoff(w)>
    ...
    \\end\\

A line's backoff field is present for an n-gram that is a context of a longer one, and for every
1-gram but `</s>` (see `kneser_ney.estimate`). Numbers
are written with 9 significant digits: KenLM stores them as float32, which 9 digits round-trip,
so loading loses nothing to the text.
"""

from __future__ import annotations

from pathlib import Path

#: order -> {n-gram: (log10 probability, log10 backoff weight or None)}.
ArpaModel = dict[int, dict[tuple[str, ...], tuple[float, float | None]]]


def _number(value: float) -> str:
    return f"{value:.9g}"


def write_arpa(path: str | Path, model: ArpaModel) -> None:
    """Write `model`, each order's n-grams sorted, so that one model always gives the same file."""
    orders = sorted(model)
    with open(path, "w", encoding="utf-8") as out:
        out.write("\\data\\\n")
        for order in orders:
            out.write(f"ngram {order}={len(model[order])}\n")
        for order in orders:
            out.write(f"\n\\{order}-grams:\n")
            for gram, (prob, backoff) in sorted(model[order].items()):
                line = f"{_number(prob)}\t{' '.join(gram)}"
                if backoff is not None:
                    line += f"\t{_number(backoff)}"
                out.write(line + "\n")
        out.write("\n\\end\\\n")


def read_arpa(path: str | Path) -> ArpaModel:
    """The n-grams of an ARPA file; a ValueError when a section disagrees with the header's count."""
    declared: dict[int, int] = {}
    model: ArpaModel = {}
    section: dict[tuple[str, ...], tuple[float, float | None]] | None = None
    order = 0
    with open(path, encoding="utf-8") as lines:
        for raw in lines:
            line = raw.strip()
            if not line or line == "\\data\\":
                continue
            if line == "\\end\\":
                break
            if line.startswith("ngram "):
                key, count = line[len("ngram ") :].split("=")
                declared[int(key)] = int(count)
            elif line.startswith("\\") and line.endswith("-grams:"):
                order = int(line[1 : -len("-grams:")])
                section = model.setdefault(order, {})
            elif section is not None:
                fields = line.split()
                if len(fields) not in (order + 1, order + 2):
                    raise ValueError(f"{path}: bad {order}-gram line {line!r}")
                backoff = float(fields[order + 1]) if len(fields) == order + 2 else None
                section[tuple(fields[1 : order + 1])] = (float(fields[0]), backoff)
    found = {key: len(grams) for key, grams in model.items()}
    if found != declared:
        raise ValueError(f"{path}: header declares {declared} n-grams, sections hold {found}")
    return model

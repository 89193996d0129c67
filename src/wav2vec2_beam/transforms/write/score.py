"""Beam stage: items whose transcript row has reference text in, the rows with WER and CER out.

Both sides are normalized the same way before they are compared (`normalize_text`), so that
casing and punctuation, which CTC vocabularies mostly lack, are not counted as errors:

1. Unicode NFKC (full-width forms, ligatures and the like become their plain letters);
2. lower case;
3. typographic apostrophes (U+2019, U+2018, U+02BC, U+0060, U+00B4) become `'`, and an
   apostrophe is kept only inside a word, between two letters or digits (`don't`, `o'clock`):
   quotes around words, and an apostrophe that starts or ends a word (`'tis`, `dogs'`), go;
4. every other punctuation mark or symbol (Unicode categories P and S: `.,;:!?"-()[]/<>` ...)
   becomes a space, so `well-known` is two words and `<unk>` is the word `unk`;
5. runs of whitespace become one space, and the ends are trimmed.

Words are the normalized text split at spaces; characters are the normalized text's characters,
spaces between words included. An item's WER is its word edit distance (substitutions +
deletions + insertions, each 1) over the reference's word count, and its CER the character edit
distance over the reference's character count; both are null for an item without a reference, or
whose reference normalizes to nothing. The corpus WER and CER in summary.json sum the edits and
the reference lengths over every scored item and divide the sums (so a long utterance weighs
more than a short one, as in every ASR benchmark), rather than averaging the items' rates; an
empty reference adds its insertions to the edits and nothing to the length. Items that failed
have no transcript and are not scored; summary.json counts them as failed.

The edit distance is rapidfuzz's Levenshtein (C++, on lists of words as well as strings), the
library jiwer itself uses.

Counters (namespace `wav2vec2`, beside the run's others): `items_scored`, `word_edits`,
`reference_words`, `char_edits`, `reference_chars`; `summarize_scores` turns them into
summary.json's numbers.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from rapidfuzz.distance import Levenshtein

from wav2vec2_beam.transforms.records import ErrorRecord, ItemResult
from wav2vec2_beam.transforms.write.progress import METRICS_NAMESPACE

_APOSTROPHES = str.maketrans(dict.fromkeys("\u2019\u2018\u02bc`\u00b4", "'"))
_LONE_APOSTROPHE = re.compile(r"(?<![^\W_])'|'(?![^\W_])")


def normalize_text(text: str) -> str:
    """The text as it is compared (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    text = "".join(
        char if char == "'" or unicodedata.category(char)[0] not in "PS" else " " for char in text
    )
    return " ".join(_LONE_APOSTROPHE.sub(" ", text).split())


@dataclass(frozen=True)
class Score:
    """Edits and reference lengths of one item (or, summed, of a corpus)."""

    word_edits: int
    reference_words: int
    char_edits: int
    reference_chars: int

    @property
    def wer(self) -> float | None:
        return self.word_edits / self.reference_words if self.reference_words else None

    @property
    def cer(self) -> float | None:
        return self.char_edits / self.reference_chars if self.reference_chars else None


def score(reference: str, hypothesis: str) -> Score:
    """Word and character edits of `hypothesis` against `reference`, both normalized."""
    reference, hypothesis = normalize_text(reference), normalize_text(hypothesis)
    reference_words, hypothesis_words = reference.split(), hypothesis.split()
    return Score(
        word_edits=Levenshtein.distance(reference_words, hypothesis_words),
        reference_words=len(reference_words),
        char_edits=Levenshtein.distance(reference, hypothesis),
        reference_chars=len(reference),
    )


class _ScoreRow(beam.DoFn):
    def __init__(self) -> None:
        self._counters = {
            name: Metrics.counter(METRICS_NAMESPACE, name)
            for name in ("word_edits", "reference_words", "char_edits", "reference_chars")
        }
        self._scored = Metrics.counter(METRICS_NAMESPACE, "items_scored")

    def process(self, item: ItemResult | ErrorRecord) -> Iterator[ItemResult | ErrorRecord]:
        if isinstance(item, ErrorRecord):  # on to the writer as it is
            yield item
            return
        yield replace(item, transcript=self._scored_row(item.transcript))

    def _scored_row(self, row: dict[str, Any]) -> dict[str, Any]:
        reference = row.get("reference")
        if reference is None:
            return {**row, "wer": None, "cer": None}
        result = score(reference, row["transcript"])
        self._scored.inc()
        for name, counter in self._counters.items():
            counter.inc(getattr(result, name))
        return {**row, "wer": result.wer, "cer": result.cer}


class ScoreTranscripts(beam.PTransform):
    """`ItemResult`s whose transcript row has `reference` (maybe None) to rows with `wer`, `cer`;
    `ErrorRecord`s pass through."""

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        return items | "Score" >> beam.ParDo(_ScoreRow())


def summarize_scores(counters: Mapping[str, int]) -> dict[str, Any]:
    """summary.json's corpus scores from a finished run's counters (`progress.counters`).

    `wer` and `cer` are null when no item had a reference.
    """
    corpus = Score(
        counters.get("word_edits", 0),
        counters.get("reference_words", 0),
        counters.get("char_edits", 0),
        counters.get("reference_chars", 0),
    )
    return {
        "wer": corpus.wer,
        "cer": corpus.cer,
        "scoring": {"items_scored": counters.get("items_scored", 0), **vars(corpus)},
    }


def score_line(summary: Mapping[str, Any]) -> str:
    """The line the launcher prints after its summary when some items had references."""
    scored = summary["scoring"]
    return (
        f"scores: {scored['items_scored']} items with references, "
        f"WER {100 * summary['wer']:.2f}% ({scored['word_edits']}/{scored['reference_words']} "
        f"words), CER {100 * summary['cer']:.2f}% ({scored['char_edits']}/"
        f"{scored['reference_chars']} characters)"
    )

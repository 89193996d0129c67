"""WER and CER: the normalization, a hand-computed example, jiwer's numbers, the corpus sums."""

from __future__ import annotations

import apache_beam as beam
import jiwer
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from wav2vec2_beam.transforms.records import ItemResult
from wav2vec2_beam.transforms.write.progress import counters
from wav2vec2_beam.transforms.write.score import (
    ScoreTranscripts,
    normalize_text,
    score,
    summarize_scores,
)

#: (reference, hypothesis) pairs as users and CTC models write them.
PAIRS = [
    ("The cat sat on the mat.", "THE CAT SIT ON MAT"),
    ("Hello, world!", "HELLO WORLD"),
    ("It's a well-known fact", "ITS A WELL KNOWN FACT"),
    ("\u201cDon\u2019t,\u201d she said.", "DON'T SHE SAID"),
    ("a b c d", "A X C"),
    ("One more, with feeling", "ONE MORE WITH FEELING AND MORE"),
]


def as_item(row: dict) -> ItemResult:
    """An item carrying `row` as its transcript, as CtcDecode hands it on."""
    return ItemResult(row["id"], "src", 1.0, 16_000, 0, {}, transcript=row)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Hello, World!", "hello world"),
        ("DON'T  stop", "don't stop"),
        ("\u2018Quoted\u2019 dogs' o\u2019clock 'tis", "quoted dogs o'clock tis"),
        ("well-known <unk> 3% caf\u00e9", "well known unk 3 caf\u00e9"),
        ("\uff26\uff35\uff2c\uff2c\u3000width", "full width"),
        ("rock'n'roll", "rock'n'roll"),
        ("  \t\n", ""),
    ],
)
def test_normalization(text: str, normalized: str) -> None:
    assert normalize_text(text) == normalized


def test_a_hand_computed_example() -> None:
    # "the cat sat on the mat" vs "the cat sit on mat": sat -> sit and a deleted "the" are two
    # word edits of six words; s(a->i)t and the deleted "the " are 1 + 4 character edits of 22.
    result = score("The cat sat on the mat.", "THE CAT SIT ON MAT")
    assert (result.word_edits, result.reference_words) == (2, 6)
    assert (result.char_edits, result.reference_chars) == (5, 22)
    assert result.wer == pytest.approx(2 / 6) and result.cer == pytest.approx(5 / 22)


def test_an_empty_reference_has_no_rate_but_its_insertions_count() -> None:
    result = score("...", "SOME WORDS")
    assert result.wer is None and result.cer is None
    assert (result.word_edits, result.reference_words) == (2, 0)


@pytest.mark.parametrize(("reference", "hypothesis"), PAIRS)
def test_each_item_equals_jiwer_on_the_normalized_strings(reference: str, hypothesis: str) -> None:
    ours = score(reference, hypothesis)
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    assert ours.wer == pytest.approx(jiwer.wer(ref, hyp), abs=1e-12)
    assert ours.cer == pytest.approx(jiwer.cer(ref, hyp), abs=1e-12)
    measures = jiwer.process_words(ref, hyp)
    assert ours.word_edits == measures.substitutions + measures.deletions + measures.insertions


def test_the_corpus_rates_sum_edits_and_lengths_as_jiwer_does() -> None:
    rows = [
        {"id": str(index), "transcript": hypothesis, "reference": reference}
        for index, (reference, hypothesis) in enumerate(PAIRS)
    ] + [{"id": "no-reference", "transcript": "ANYTHING", "reference": None}]
    pipeline = beam.Pipeline(runner=FnApiRunner())
    scored = pipeline | beam.Create([as_item(row) for row in rows]) | ScoreTranscripts()
    references = [normalize_text(reference) for reference, _ in PAIRS]
    hypotheses = [normalize_text(hypothesis) for _, hypothesis in PAIRS]
    expected = [(row["id"], score(row["reference"], row["transcript"]).wer) for row in rows[:-1]]
    expected.append(("no-reference", None))
    assert_that(
        scored | beam.Map(lambda item: (item.id, item.transcript["wer"])), equal_to(expected)
    )
    result = pipeline.run()
    result.wait_until_finish()
    summary = summarize_scores(counters(result))
    assert summary["wer"] == pytest.approx(jiwer.wer(references, hypotheses), abs=1e-12)
    assert summary["cer"] == pytest.approx(jiwer.cer(references, hypotheses), abs=1e-12)
    per_item_mean = sum(score(r, h).wer for r, h in PAIRS) / len(PAIRS)
    assert summary["wer"] != pytest.approx(per_item_mean)  # summed, not averaged
    assert summary["scoring"]["items_scored"] == len(PAIRS)
    assert summary["scoring"]["reference_words"] == sum(len(r.split()) for r in references)


def test_no_references_no_rates() -> None:
    pipeline = beam.Pipeline(runner=FnApiRunner())
    row = {"id": "x", "transcript": "X", "reference": None}
    _ = pipeline | beam.Create([as_item(row)]) | ScoreTranscripts()
    result = pipeline.run()
    result.wait_until_finish()
    summary = summarize_scores(counters(result))
    assert summary["wer"] is None and summary["cer"] is None
    assert summary["scoring"]["items_scored"] == 0

"""The demo's sentence generator, its held-out split and its augmentation (demo/corpus.py), and
the evaluation's precision comparison (demo/evaluate.py).

The draw order matters beyond these tests: the same command must train the same model, so the
committed artifacts that were drawn from the generator (the held-out test set's texts, voices,
speeds and pitches; the demo LM, estimated from the first 40,000 training sentences) are the
oracle for it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from wav2vec2_beam.demo import HELDOUT_DIR, MODEL_DIR, corpus
from wav2vec2_beam.demo.build_lm import ARPA_NAME, build
from wav2vec2_beam.demo.evaluate import (
    OUT_OF_DOMAIN,
    argmax_agreement,
    bundled_set,
    error_rates,
    held_out_plans,
    out_of_domain_set,
    table,
)

REPO = Path(__file__).resolve().parents[1]
HELDOUT = HELDOUT_DIR / "transcripts.json"


def test_the_generator_is_seeded_and_endless() -> None:
    first = [s for s, _ in zip(corpus.SentenceGenerator(7), range(500), strict=False)]
    again = [s for s, _ in zip(corpus.SentenceGenerator(7), range(500), strict=False)]
    other = [s for s, _ in zip(corpus.SentenceGenerator(8), range(500), strict=False)]
    assert first == again and first != other
    assert all(s.strip() == s and s for s in first)
    assert len(set(first)) > 450  # millions of distinct sentences: repeats are rare


def test_the_split_is_one_in_eight_by_the_texts_hash() -> None:
    sentences = corpus.draw_sentences(4000, held_out=False, seed=3)
    held = corpus.draw_sentences(500, held_out=True, seed=3)
    assert len(set(sentences)) == 4000 and len(set(held)) == 500
    for sentence in sentences[:200] + held[:200]:
        digest = hashlib.sha256(sentence.encode("utf8")).digest()
        assert corpus.is_held_out(sentence) == (digest[0] % 8 == 0)
    assert not set(sentences) & set(held)
    # Over the generator's own stream, the held-out share is about 1/8 (binomial, n = 8000).
    stream = [s for s, _ in zip(corpus.SentenceGenerator(11), range(8000), strict=False)]
    share = sum(map(corpus.is_held_out, stream)) / len(stream)
    assert abs(share - 1 / 8) < 4 * np.sqrt(1 / 8 * 7 / 8 / len(stream))


def test_the_held_out_test_set_is_drawn_as_committed() -> None:
    committed = json.loads(HELDOUT.read_text())["utterances"]
    plans = held_out_plans(len(committed), corpus.TRAINING_VOICES, seed=2000)
    drawn = [
        {
            "text": corpus.normalize_text(p.text),
            "voice": p.voice.name,
            "speed": p.speed,
            "pitch": p.pitch,
        }
        for p in plans
    ]
    assert drawn == [
        {key: item[key] for key in ("text", "voice", "speed", "pitch")} for item in committed
    ]


def test_the_demo_lm_rebuilds_byte_for_byte(tmp_path: Path) -> None:
    """The first 40,000 training sentences, in the committed LM's n-gram counts."""
    checkpoint = tmp_path / "demo"
    checkpoint.mkdir()
    (checkpoint / "vocab.json").write_bytes((MODEL_DIR / "vocab.json").read_bytes())
    folder = build(checkpoint)
    committed = MODEL_DIR / "language_model"
    for name in (ARPA_NAME, "unigrams.txt", "attrs.json"):
        assert (folder / name).read_bytes() == (committed / name).read_bytes(), name
    assert (checkpoint / "alphabet.json").read_bytes() == (MODEL_DIR / "alphabet.json").read_bytes()


@pytest.mark.parametrize("seed", range(12))
def test_augmentation_pads_levels_and_adds_noise_within_its_ranges(seed: int) -> None:
    rate = corpus.SAMPLING_RATE
    clean = (0.3 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)).astype(np.float32)
    out = corpus.augment(clean, np.random.default_rng(seed))
    padding = len(out) - len(clean)
    assert out.dtype == np.float32 and 0 <= padding < 2 * int(0.2 * rate)
    # Find the leading silence and the gain by least squares against the clean signal.
    fits = []
    for lead in range(padding + 1):
        segment = out[lead : lead + len(clean)].astype(np.float64)
        gain = float(segment @ clean / (clean @ clean))
        fits.append((float(np.sum((segment - gain * clean) ** 2)), lead, gain))
    _, lead, gain = min(fits)
    assert -20.5 <= 20 * np.log10(gain) <= 3.5
    padded = np.zeros(len(out))
    padded[lead : lead + len(clean)] = gain * clean
    noise = out - padded
    if np.mean(noise**2) > 1e-12:  # 60% of draws: noise 10-40 dB under the (padded) speech
        snr_db = 10 * np.log10(np.mean(padded**2) / np.mean(noise**2))
        assert 9.0 <= snr_db <= 41.0, snr_db


def test_argmax_agreement_counts_frames_over_all_utterances() -> None:
    # Utterance one: frames 0 and 2 agree, frame 1 does not; utterance two: its one frame agrees.
    first = [np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]), np.array([[0.0, 1.0]])]
    second = [np.array([[0.7, 0.3], [0.4, 0.6], [0.1, 0.9]]), np.array([[0.2, 0.3]])]
    assert argmax_agreement(first, second) == 3 / 4


def test_the_table_shows_the_other_precision() -> None:
    row = {"set": "s", "utterances": 2, "wer": 0.5, "cer": 0.25}
    row.update(wer_bfloat16=0.5, cer_bfloat16=0.3, argmax_agreement_bfloat16=0.99875)
    header, rule, line = table([row]).splitlines()
    assert header.count("|") == rule.count("|") == line.count("|") == 8
    assert line == "| s | 2 | 50.0% | 25.0% | 50.0% | 30.0% | 99.88% |"


def test_count_sizes_the_out_of_domain_set_too() -> None:
    """`evaluate --count 3` speaks 3 out-of-domain sentences, the first 3 of the file's 40."""
    sentences = OUT_OF_DOMAIN.read_text().splitlines()
    evaluation_set = out_of_domain_set(3, seed=5)
    assert evaluation_set.texts == sentences[:3] and len(evaluation_set.audio) == 3


def test_the_bundled_set_is_the_packaged_held_out_speech() -> None:
    utterances = json.loads((HELDOUT_DIR / "transcripts.json").read_text())["utterances"]
    bundled = bundled_set()
    assert bundled.texts == [item["text"] for item in utterances] and len(bundled.audio) == 24


def test_error_rates_are_corpus_rates() -> None:
    """Hand-computed: 1 substitution in 4 words and 1 deletion in 2 (2 of 6 words); characters:
    "THE CAT SAT DOWN" -> "THE BAT SAT DOWN" is 1 edit of 16, "A DOG" -> "A" 4 of 5."""
    rates = error_rates(["the cat sat down", "a dog"], ["THE BAT SAT DOWN", "A"])
    assert rates == {"wer": 2 / 6, "cer": 5 / 21}

"""The Kneser-Ney estimator and its ARPA files, checked against arithmetic done by hand, against
ARPA back-off semantics written out here, and against KenLM, which reads the files in decoding.

The back-off oracle below is this file's own: an ARPA model gives p(w|h) = p(hw) when hw is
listed, else b(h) p(w|h') (b = 1 when h is not listed or has no backoff field), with unknown
words read as `<unk>`, and that is all KenLM does when it scores a sentence.
"""

from __future__ import annotations

import logging
import math
import random
import subprocess
import sys
from pathlib import Path

import kenlm
import pytest

from wav2vec2_beam.lm.arpa import ArpaModel, read_arpa, write_arpa
from wav2vec2_beam.lm.kneser_ney import estimate, kneser_ney_discounts

REPO = Path(__file__).resolve().parents[1]

# Chosen so that the bigram order's counts of counts give real discounts while the unigram and
# trigram orders fall back to the defaults (1/2, 1, 3/2); the counts are worked out in
# test_probabilities_match_hand_arithmetic.
HAND_CORPUS = ["b c c", "a b c", "b b b c", "b c b c"]


def _sentences(lines: list[str]) -> list[list[str]]:
    return [line.split() for line in lines]


def _model(tmp_path: Path, lines: list[str], order: int = 3, prune: tuple[int, ...] = (0,)):
    """Estimate, write and read back, so that the tests see what the file holds."""
    path = tmp_path / f"lm_{order}_{'_'.join(map(str, prune))}.arpa"
    write_arpa(path, estimate(_sentences(lines), order, prune))
    return path, read_arpa(path)


def _known(model: ArpaModel, word: str) -> str:
    return word if (word,) in model[1] else "<unk>"


def log10_prob(model: ArpaModel, history: tuple[str, ...], word: str) -> float:
    """log10 p(word | history) by ARPA back-off semantics."""
    order = max(model)
    history = tuple(_known(model, w) for w in history)
    history = history[max(0, len(history) - (order - 1)) :] if order > 1 else ()
    word = _known(model, word)
    backoff = 0.0
    while True:
        gram = (*history, word)
        if gram in model.get(len(gram), {}):
            return backoff + model[len(gram)][gram][0]
        listed = model.get(len(history), {}).get(history)
        if listed is not None and listed[1] is not None:
            backoff += listed[1]
        history = history[1:]


def sentence_log10(model: ArpaModel, sentence: str) -> float:
    words = ["<s>", *sentence.split(), "</s>"]
    return sum(log10_prob(model, tuple(words[:i]), words[i]) for i in range(1, len(words)))


def vocabulary(model: ArpaModel) -> list[str]:
    return [gram[0] for gram in model[1] if gram != ("<s>",)]


def assert_normalized(model: ArpaModel, contexts: list[tuple[str, ...]]) -> None:
    for context in contexts:
        total = sum(10 ** log10_prob(model, context, w) for w in vocabulary(model))
        assert total == pytest.approx(1.0, abs=1e-6), context


def _random_corpus(seed: int, sentences: int) -> list[str]:
    """Sentences with a skewed word distribution, so counts of 1, 2, 3 and 4+ all occur."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(12)]
    weights = [1 / (i + 1) for i in range(len(words))]
    return [" ".join(rng.choices(words, weights, k=rng.randint(1, 8))) for _ in range(sentences)]


def test_probabilities_match_hand_arithmetic(tmp_path, caplog):
    # Padded: <s> b c c </s> | <s> a b c </s> | <s> b b b c </s> | <s> b c b c </s>
    #
    # Trigrams, raw counts: <s> b c 2, b c </s> 3, and 1 each for b c c, c c </s>, <s> a b,
    # a b c, <s> b b, b b b, b b c, b c b, c b c.  t1..t4 = 9, 1, 1, 0: D2 < 0, so fallback.
    # Bigrams, distinct left words (raw for <s>-initial ones): <s> b 3, <s> a 1,
    # b c 4 (<s>, a, b, c), c </s> 2 (b, c), b b 2 (<s>, b), c c 1, a b 1, c b 1.
    # t1..t4 = 4, 2, 1, 1: Y = 4/8, D1 = 1 - 2Y 2/4 = 1/2, D2 = 2 - 3Y 1/2 = 5/4, D3+ = 3 - 4Y = 1.
    # Unigrams, distinct left words: b 4 (<s>, a, b, c), c 2 (b, c), a 1 (<s>), </s> 1 (c); sum 8.
    # t1..t4 = 2, 1, 0, 1: t3 = 0, so fallback. Vocabulary: a b c </s> <unk>, |V| = 5.
    with caplog.at_level(logging.WARNING, logger="lm.kneser_ney"):
        _, model = _model(tmp_path, HAND_CORPUS)
    fallbacks = [r.getMessage() for r in caplog.records]
    assert len(fallbacks) == 2
    assert fallbacks[0].startswith("order 1:")
    assert fallbacks[1].startswith("order 3:")

    gamma_unigram = (1 / 2 * 2 + 1 * 1 + 3 / 2 * 1) / 8  # a, </s> count 1; c 2; b 4: 7/16
    p = {
        "a": (1 - 1 / 2) / 8 + gamma_unigram / 5,  # 3/20
        "</s>": (1 - 1 / 2) / 8 + gamma_unigram / 5,
        "c": (2 - 1) / 8 + gamma_unigram / 5,  # 17/80
        "b": (4 - 3 / 2) / 8 + gamma_unigram / 5,  # 2/5
        "<unk>": gamma_unigram / 5,  # 7/80
    }
    # Bigram contexts: <s> -> b 3, a 1 (sum 4); b -> c 4, b 2 (sum 6); c -> </s> 2, c 1, b 1
    # (sum 4); a -> b 1 (sum 1).
    gamma_bos = (1 / 2 * 1 + 1 * 1) / 4  # 3/8
    gamma_b = (5 / 4 * 1 + 1 * 1) / 6  # 3/8
    gamma_c = (1 / 2 * 2 + 5 / 4 * 1) / 4  # 9/16
    gamma_a = (1 / 2 * 1) / 1
    p_b_bos = (3 - 1) / 4 + gamma_bos * p["b"]  # 13/20
    p_a_bos = (1 - 1 / 2) / 4 + gamma_bos * p["a"]  # 29/160
    p_c_b = (4 - 1) / 6 + gamma_b * p["c"]  # 371/640
    p_b_b = (2 - 5 / 4) / 6 + gamma_b * p["b"]  # 11/40
    p_end_c = (2 - 5 / 4) / 4 + gamma_c * p["</s>"]  # 87/320
    p_c_c = (1 - 1 / 2) / 4 + gamma_c * p["c"]  # 313/1280
    p_b_a = (1 - 1 / 2) / 1 + gamma_a * p["b"]  # 7/10
    # Trigram contexts (fallback discounts): <s> b -> c 2, b 1 (sum 3); b c -> </s> 3, c 1, b 1
    # (sum 5); a b -> c 1.
    gamma_bos_b = (1 / 2 * 1 + 1 * 1) / 3  # 1/2
    gamma_bc = (1 / 2 * 2 + 3 / 2 * 1) / 5  # 1/2
    gamma_ab = (1 / 2 * 1) / 1
    expected = {
        ("a",): (p["a"], gamma_a),
        ("b",): (p["b"], gamma_b),
        ("c",): (p["c"], gamma_c),
        ("</s>",): (p["</s>"], None),
        ("<unk>",): (p["<unk>"], None),
        ("<s>", "b"): (p_b_bos, gamma_bos_b),
        ("<s>", "a"): (p_a_bos, 1 / 2),  # <s> a -> b 1, discounted by the trigram D1
        ("b", "c"): (p_c_b, gamma_bc),
        ("b", "b"): (p_b_b, (1 / 2 * 2) / 2),  # b b -> b 1, c 1
        ("c", "c"): (p_c_c, 1 / 2),  # c c -> </s> 1
        ("c", "</s>"): (p_end_c, None),
        ("a", "b"): (p_b_a, gamma_ab),
        ("<s>", "b", "c"): ((2 - 1) / 3 + gamma_bos_b * p_c_b, None),
        ("<s>", "b", "b"): ((1 - 1 / 2) / 3 + gamma_bos_b * p_b_b, None),
        ("b", "c", "</s>"): ((3 - 3 / 2) / 5 + gamma_bc * p_end_c, None),
        ("b", "c", "c"): ((1 - 1 / 2) / 5 + gamma_bc * p_c_c, None),
        ("a", "b", "c"): ((1 - 1 / 2) / 1 + gamma_ab * p_c_b, None),
    }
    for gram, (prob, backoff) in expected.items():
        written_prob, written_backoff = model[len(gram)][gram]
        assert written_prob == pytest.approx(math.log10(prob), abs=1e-6), gram
        if backoff is None:
            assert written_backoff in (None, 0.0), gram
        else:
            assert written_backoff == pytest.approx(math.log10(backoff), abs=1e-6), gram
    assert model[1][("<s>",)] == (-99.0, pytest.approx(math.log10(gamma_bos), abs=1e-6))
    assert {n: len(grams) for n, grams in model.items()} == {1: 6, 2: 8, 3: 11}
    # Unseen: p(a | b c) = b(b c) b(c) p(a), as c a and b c a never occur.
    assert log10_prob(model, ("b", "c"), "a") == pytest.approx(
        math.log10(gamma_bc * gamma_c * p["a"]), abs=1e-6
    )


def test_discounts_follow_counts_of_counts():
    # Y = 4 / (4 + 2*2) = 1/2: D1 = 1 - 2Y 2/4, D2 = 2 - 3Y 1/2, D3+ = 3 - 4Y 1/1.
    assert kneser_ney_discounts([4, 2, 1, 1]) == pytest.approx((1 / 2, 5 / 4, 1))
    assert kneser_ney_discounts([4, 2, 1, 0]) is None  # D3+ = 3: count-3 n-grams keep nothing
    assert kneser_ney_discounts([9, 1, 1, 0]) is None  # D2 = 2 - 27/11 < 0
    assert kneser_ney_discounts([0, 2, 1, 1]) is None


@pytest.mark.parametrize("prune", [(0,), (0, 1, 1)])
def test_every_context_sums_to_one(tmp_path, prune):
    _, hand = _model(tmp_path, HAND_CORPUS, prune=prune)
    assert_normalized(
        hand,
        [
            *[(), ("<s>",), ("b",), ("c",), ("<s>", "b"), ("b", "c"), ("a", "b"), ("c", "c")],
            *[("zz",), ("a", "zz"), ("zz", "b"), ("<s>", "zz")],
        ],
    )
    _, larger = _model(tmp_path, _random_corpus(1, 200), order=4, prune=prune)
    contexts = [gram for n in (1, 2, 3) for gram in sorted(larger[n]) if gram[-1] != "</s>"]
    assert_normalized(larger, [*contexts[::7], ("<s>",), ("zz", "zz", "zz")])


@pytest.mark.parametrize(("order", "prune"), [(2, (0,)), (3, (0,)), (4, (0, 0, 1)), (3, (0, 1))])
def test_kenlm_scores_match_back_off_semantics(tmp_path, order, prune):
    corpus = _random_corpus(2, 300)
    path, model = _model(tmp_path, corpus, order=order, prune=prune)
    loaded = kenlm.Model(str(path))
    assert loaded.order == order
    for sentence in [*corpus[:20], "w0 unseen w1", "never seen words", "w11 w11 w11 w11 w0", "w3"]:
        assert loaded.score(sentence, bos=True, eos=True) == pytest.approx(
            sentence_log10(model, sentence), abs=1e-4
        ), sentence


def test_pruning_moves_mass_to_the_backoff(tmp_path):
    # Trigrams: <s> x y 3, x y z 2, y z </s> 3, x y </s> 1, <s> w y 1, w y z 1.
    # Bigrams (distinct left words): x y 1 (<s>), y z 2 (x, w), w y 1, z </s> 1, y </s> 1.
    corpus = ["x y z", "x y z", "w y z", "x y"]
    _, full = _model(tmp_path, corpus)
    _, pruned = _model(tmp_path, corpus, prune=(0, 1, 1))

    assert set(pruned[3]) == {("<s>", "x", "y"), ("x", "y", "z"), ("y", "z", "</s>")}
    # x y (count 1) stays as a prefix of x y z and a suffix of <s> x y; z </s> (1) as a suffix of
    # y z </s>. w y and y </s> (1 each) are needed by no kept trigram.
    assert ("x", "y") in pruned[2]
    assert ("z", "</s>") in pruned[2]
    assert ("w", "y") not in pruned[2]
    assert ("y", "</s>") not in pruned[2]
    for n in (2, 3):
        for gram in pruned[n]:
            assert gram[:-1] in pruned[n - 1]
            assert gram[1:] in pruned[n - 1]
    # Kept n-grams keep the unpruned model's probabilities.
    for n, grams in pruned.items():
        for gram, (prob, _) in grams.items():
            assert prob == pytest.approx(full[n][gram][0], abs=1e-6), gram

    # x y lost x y </s>: its backoff grows to spread that mass over what it no longer lists.
    kept_after_xy = ["z"]
    expected = (1 - sum(10 ** full[3][("x", "y", w)][0] for w in kept_after_xy)) / (
        1 - sum(10 ** full[2][("y", w)][0] for w in kept_after_xy)
    )
    assert pruned[2][("x", "y")][1] == pytest.approx(math.log10(expected), abs=1e-6)
    assert pruned[2][("x", "y")][1] > full[2][("x", "y")][1]
    assert_normalized(pruned, [(), ("<s>",), ("y",), ("x", "y"), ("<s>", "w"), ("w", "y")])


def _build(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wav2vec2_beam.lm.build_arpa", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_command_writes_a_model_kenlm_loads(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join([*HAND_CORPUS, "", "  a   c  "]) + "\n")
    more = tmp_path / "more.txt"
    more.write_text("c a\n")
    output = tmp_path / "out.arpa"
    settings = ["--case", "upper", "--prune", "0", "0", "1"]
    done = _build("--text", str(text), "--text", str(more), "--output", str(output), *settings)
    assert done.returncode == 0, done.stderr
    # Pruned to the trigrams seen twice or more: <s> B C and B C </s>.
    assert done.stdout.splitlines() == [f"{output}: 1-grams=6 2-grams=12 3-grams=2"]
    model = read_arpa(output)
    assert sorted(vocabulary(model)) == ["</s>", "<unk>", "A", "B", "C"]
    loaded = kenlm.Model(str(output))
    assert loaded.order == 3
    for sentence in ["B C A", "B C", "A X C"]:
        assert loaded.score(sentence, bos=True, eos=True) == pytest.approx(
            sentence_log10(model, sentence), abs=1e-4
        )

    # The same sentences in another order give the same bytes.
    shuffled = tmp_path / "shuffled.txt"
    shuffled.write_text("c a\n" + "\n".join(reversed(HAND_CORPUS)) + "\na c\n")
    again = tmp_path / "again.arpa"
    assert _build("--text", str(shuffled), "--output", str(again), *settings).returncode == 0
    assert again.read_bytes() == output.read_bytes()


@pytest.mark.parametrize("content", [None, "", "\n  \n"])
def test_command_refuses_a_missing_or_empty_text(tmp_path, content):
    text = tmp_path / "corpus.txt"
    if content is not None:
        text.write_text(content)
    output = tmp_path / "out.arpa"
    done = _build("--text", str(text), "--output", str(output))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert str(text) in done.stderr
    assert not output.exists()

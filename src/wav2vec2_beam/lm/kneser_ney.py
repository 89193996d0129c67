"""Interpolated modified Kneser-Ney estimation with count pruning, as KenLM's `lmplz` does it.

Why here: `lmplz` is neither on PyPI nor in Debian, while the `kenlm` module that loads its ARPA
output is; this estimator writes the same model, so beam search needs no binary that cannot be
installed.

The model (Chen & Goodman's modified Kneser-Ney, interpolated):

* Sentences are wrapped as `<s> ... </s>`. The highest order counts n-grams as they occur. Lower
  orders use continuation counts: how many distinct words precede the n-gram, because a word's
  lower-order probability matters only where the longer context was not seen, and there a word
  seen after many contexts is likelier than one seen often after one. N-grams starting with `<s>`
  keep their raw counts: nothing precedes `<s>`, so a continuation count would be 0.
* Each order has three discounts, D1, D2 and D3+ (for counts 1, 2 and 3 or more), from its counts
  of counts. A tiny corpus makes them undefined or out of range; that order then takes fixed
  fallback amounts, with a warning.
* p(w|h) = (a(hw) - D(a(hw))) / a(h.) + gamma(h) p(w|h'), where h' drops h's first word and
  gamma(h) is the discounted mass, so each context's distribution sums to 1. Unigrams interpolate
  with the uniform distribution over the vocabulary (the words seen, `</s>` and `<unk>`); `<s>` is
  only ever a context and gets log10 probability -99, as in KenLM.
* Pruning drops n-grams (order 2 and up) whose count is at most their order's threshold, except
  those another kept n-gram needs: its prefix (ARPA looks up a context's backoff there) and its
  suffix (KenLM finds a long n-gram only by extending the shorter ones that end the same way).
  Probabilities are those of the unpruned model; each context's backoff weight is then set so
  that its distribution, read back with ARPA back-off semantics, sums to 1 again. (lmplz also
  renormalizes, but by folding pruned counts into gamma, so pruned models differ in detail.)
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from wav2vec2_beam.lm.arpa import ArpaModel

log = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
#: KenLM's log10 probability for `<s>`, which is never predicted.
BOS_LOG10_PROB = -99.0
#: D1, D2, D3+ for an order whose counts of counts give no usable discounts (lmplz's defaults).
DEFAULT_FALLBACK = (0.5, 1.0, 1.5)

NGram = tuple[str, ...]


def count_ngrams(sentences: Iterable[Sequence[str]], order: int) -> list[Counter[NGram]]:
    """Per order (index 0 for unigrams): raw counts at the highest, continuation counts below.

    `<s>` itself is left out of the unigrams: it is never predicted.
    """
    if order < 1:
        raise ValueError(f"the order must be at least 1, not {order}")
    top: Counter[NGram] = Counter()
    starts: list[Counter[NGram]] = [Counter() for _ in range(order)]
    for tokens in sentences:
        if not tokens:
            continue
        if BOS in tokens or EOS in tokens:
            raise ValueError(f"the text holds {BOS} or {EOS}, which mark sentence boundaries")
        words = [BOS, *tokens, EOS]
        top.update(zip(*(words[i:] for i in range(order)), strict=False))
        for n in range(2, min(order, len(words) + 1)):
            starts[n][tuple(words[:n])] += 1
    counts = [top]
    for n in range(order - 1, 0, -1):
        # Each key of the order above is one distinct word before its suffix; `<s>`-initial
        # n-grams are nobody's suffix, so adding their raw counts sets them.
        adjusted = Counter(gram[1:] for gram in counts[0])
        adjusted.update(starts[n])
        counts.insert(0, adjusted)
    counts[0].pop((BOS,), None)
    return counts


def kneser_ney_discounts(counts_of_counts: Sequence[int]) -> tuple[float, float, float] | None:
    """D1, D2, D3+ from t1..t4, or None where they are undefined or leave no mass in (0, count)."""
    t1, t2, t3, t4 = counts_of_counts
    if t1 == 0 or t2 == 0 or t3 == 0:
        return None
    y = t1 / (t1 + 2 * t2)
    amounts = (1 - 2 * y * t2 / t1, 2 - 3 * y * t3 / t2, 3 - 4 * y * t4 / t3)
    if all(0 < amount < count for count, amount in enumerate(amounts, 1)):
        return amounts
    return None


def order_discounts(
    order: int, counts: Iterable[int], fallback: tuple[float, float, float]
) -> tuple[float, float, float]:
    """The discounts of one order, falling back (with a warning) where the corpus is too small."""
    tally = Counter(count for count in counts if count <= 4)
    counts_of_counts = [tally[k] for k in range(1, 5)]
    amounts = kneser_ney_discounts(counts_of_counts)
    if amounts is not None:
        return amounts
    log.warning(
        "order %d: counts of counts %s give no usable discounts; using the fallback %s",
        order,
        counts_of_counts,
        fallback,
    )
    return fallback


def prune_thresholds(prune: Sequence[int], order: int) -> list[int]:
    """One threshold per order, the last given one repeated; 0 for unigrams, never decreasing."""
    if len(prune) > order:
        raise ValueError(f"--prune gives {len(prune)} thresholds for an order-{order} model")
    if prune and prune[0] != 0:
        raise ValueError("the unigram pruning threshold must be 0 (every word needs a probability)")
    if any(later < earlier for earlier, later in itertools.pairwise(prune)):
        # A lower order pruned harder than the one above it would have to keep most of its
        # n-grams anyway, as prefixes and suffixes of the longer ones.
        raise ValueError(f"pruning thresholds must not decrease with the order: {list(prune)}")
    given = list(prune) or [0]
    return given + [given[-1]] * (order - len(given))


@dataclass
class _Order:
    """One order's counts and what interpolation derives from them."""

    counts: Counter[NGram]
    discounts: tuple[float, float, float]
    #: context -> (sum of its continuations' counts, how many have count 1, 2, 3+).
    contexts: dict[NGram, list[int]]
    gamma: dict[NGram, float]
    prob: dict[NGram, float]

    def discounted(self, gram: NGram, count: int) -> float:
        """The n-gram's own share of its context's mass, before interpolation."""
        return (count - self.discounts[min(count, 3) - 1]) / self.contexts[gram[:-1]][0]


def _interpolate(
    counts: Counter[NGram],
    discounts: tuple[float, float, float],
    lower: _Order | None,
    vocabulary_size: int,
) -> _Order:
    contexts: dict[NGram, list[int]] = {}
    for gram, count in counts.items():
        stats = contexts.get(gram[:-1])
        if stats is None:
            stats = contexts[gram[:-1]] = [0, 0, 0, 0]
        stats[0] += count
        stats[min(count, 3)] += 1
    d1, d2, d3 = discounts
    gamma = {h: (d1 * s[1] + d2 * s[2] + d3 * s[3]) / s[0] for h, s in contexts.items()}
    level = _Order(counts, discounts, contexts, gamma, {})
    uniform = 1.0 / vocabulary_size
    for gram, count in counts.items():
        backed_off = lower.prob[gram[1:]] if lower is not None else uniform
        level.prob[gram] = level.discounted(gram, count) + gamma[gram[:-1]] * backed_off
    if lower is None:
        level.prob.setdefault((UNK,), gamma[()] * uniform)
    return level


def _kept(counts: list[Counter[NGram]], thresholds: list[int]) -> list[set[NGram] | None]:
    """Per order, the n-grams to write (None: all of them), from the highest order down."""
    kept: list[set[NGram] | None] = [None] * len(counts)
    needed: set[NGram] = set()
    for n in range(len(counts) - 1, 0, -1):
        if thresholds[n] == 0:
            break  # and so are all lower orders' thresholds
        keep = {gram for gram, count in counts[n].items() if count > thresholds[n]} | needed
        kept[n] = keep
        needed = {gram[:-1] for gram in keep} | {gram[1:] for gram in keep}
    return kept


def _backoffs(upper: _Order, lower: _Order, kept: set[NGram] | None) -> dict[NGram, float]:
    """Backoff weights of the contexts of `upper`'s n-grams, after pruning `upper` to `kept`.

    With nothing pruned a context's weight is gamma. Pruning hw moves its own share to the
    backoff, spread over the words the context no longer lists: b(h) = gamma(h) +
    pruned share / (1 - sum of p(w|h') over the kept w).
    """
    weights = dict(upper.gamma)
    if kept is None:
        return weights
    pruned: dict[NGram, float] = {}
    lower_mass: dict[NGram, float] = {}
    for gram, count in upper.counts.items():
        h = gram[:-1]
        if gram in kept:
            lower_mass[h] = lower_mass.get(h, 0.0) + lower.prob[gram[1:]]
        else:
            pruned[h] = pruned.get(h, 0.0) + upper.discounted(gram, count)
    for h, share in pruned.items():
        weights[h] += share / (1.0 - lower_mass.get(h, 0.0))
    return weights


def estimate(
    sentences: Iterable[Sequence[str]],
    order: int = 3,
    prune: Sequence[int] = (0,),
    fallback: Sequence[float] = DEFAULT_FALLBACK,
) -> ArpaModel:
    """The ARPA model of `sentences` (token lists); a ValueError for bad settings or no text."""
    thresholds = prune_thresholds(prune, order)
    d1, d2, d3 = fallback
    if not (0 < d1 < 1 and 0 < d2 < 2 and 0 < d3 < 3):
        # A discount of a count or more would leave an n-gram no probability of its own.
        raise ValueError(f"fallback discounts must lie in (0, 1), (0, 2), (0, 3): {fallback}")
    counts = count_ngrams(sentences, order)
    if not counts[0]:
        raise ValueError("the text holds no sentences")
    if not counts[-1]:
        raise ValueError(f"no sentence is long enough for {order}-grams; lower the order")
    vocabulary_size = len(counts[0]) + ((UNK,) not in counts[0])
    levels: list[_Order] = []
    for n, grams in enumerate(counts, 1):
        discounts = order_discounts(n, grams.values(), (d1, d2, d3))
        levels.append(
            _interpolate(grams, discounts, levels[-1] if levels else None, vocabulary_size)
        )
    kept = _kept(counts, thresholds)
    weights = [_backoffs(levels[n], levels[n - 1], kept[n]) for n in range(1, order)] + [{}]
    model: ArpaModel = {}
    for n, (level, keep, weight) in enumerate(zip(levels, kept, weights, strict=True), 1):
        model[n] = {
            gram: (math.log10(prob), _log10_or_none(weight.get(gram)))
            for gram, prob in level.prob.items()
            if keep is None or gram in keep
        }
    bos_weight = weights[0].get((BOS,))
    model[1][(BOS,)] = (BOS_LOG10_PROB, _log10_or_none(bos_weight))
    if order > 1:
        # Every word but </s> gets a backoff field, 0 (log10 1) where it is no context: readers
        # such as pyctcdecode take the unigram list from the 1-gram lines that have three fields.
        for gram, (prob, backoff) in model[1].items():
            if backoff is None and gram != (EOS,):
                model[1][gram] = (prob, 0.0)
    return model


def _log10_or_none(value: float | None) -> float | None:
    return None if value is None else math.log10(value)

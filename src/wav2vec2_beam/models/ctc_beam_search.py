"""CTC prefix beam search with shallow fusion of an n-gram LM, as pyctcdecode 0.5 does it.

Why our own: pyctcdecode's last release declares `numpy<2`, which our stack cannot honour (pip
would downgrade numpy under TensorFlow and pyarrow). Its search is short, and what users compare
against is its output through transformers' `Wav2Vec2ProcessorWithLM.decode`, so this module
reproduces that search step for step: the same candidate tokens per frame, the same merging of
prefixes, the same LM and hotword scores, the same pruning and the same word frames. The tests
hold it to pyctcdecode's transcripts on transformers' logits (tests/fixtures/make_lm_reference.py).

A hypothesis ("beam") is the committed text, the word just completed (`next_word`, scored by the
LM at the next step), the word being spelled (`word_part`), the last token (to tell a repeat from
a new character), the frames of every committed word and of the word being spelled, and the sum of
the acoustic log-probabilities of every path that reaches it. Beams are ranked by that acoustic
score plus the LM's: alpha times the LM's natural-log probability of the words plus beta per word,
an `unk_score_offset` for a word outside the LM's unigrams, and a penalty for a partial word that
starts no known word.

Only character vocabularies (wav2vec2's CTC heads) are supported; BPE alphabets are refused.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

#: pyctcdecode's defaults, which `Wav2Vec2ProcessorWithLM.decode` uses when not told otherwise.
DEFAULT_BEAM_WIDTH = 100
DEFAULT_BEAM_PRUNE_LOGP = -10.0
DEFAULT_TOKEN_MIN_LOGP = -5.0
DEFAULT_HOTWORD_WEIGHT = 10.0
#: Log-probabilities are clipped here, so a malformed frame cannot produce -inf scores.
MIN_LOG_PROB = math.log(1e-15)

BLANK = ""
SPACE = " "
UNK = "⁇"

#: (start, end) logit frames of a word, end exclusive; (-1, -1) before its first character.
Frames = tuple[int, int]
NO_FRAMES: Frames = (-1, -1)


class LanguageModel(Protocol):
    """What the search asks of an LM (`models.language_model.NgramLanguageModel` is one)."""

    def start_state(self) -> Any: ...

    def score_word(self, state: Any, word: str, last: bool) -> tuple[float, Any]:
        """The fused score of `word` after `state` (with the end of sentence if `last`), and
        the state after it."""
        ...

    def score_partial_word(self, partial: str) -> float: ...


class AlphabetError(ValueError):
    """The decoder's alphabet does not fit the tokenizer's vocabulary."""


def alphabet_from_vocab(
    tokens_by_id: Sequence[str], word_delimiter: str = "|", blank: str = "<pad>"
) -> list[str]:
    """The decoder's labels for a CTC vocabulary, in id order, as pyctcdecode normalizes them.

    `<pad>`/`[pad]` (or the tokenizer's pad token, `blank`: CTC's blank is the pad id) is the
    blank (""), the word delimiter is a space, `<unk>` becomes "⁇"; other tokens (letters, `<s>`,
    `</s>`) are spelled as they are.
    """
    labels = []
    for token in tokens_by_id:
        if token == blank or _is_special(token, "pad"):
            labels.append(BLANK)
        elif token == word_delimiter:
            labels.append(SPACE)
        elif _is_special(token, "unk"):
            labels.append(UNK)
        else:
            labels.append(token)
    if any(label.startswith(("##", "▁")) for label in labels):
        raise AlphabetError("BPE vocabularies are not supported by the beam search decoder")
    return labels


def check_alphabet(
    labels: Sequence[str], tokens_by_id: Sequence[str], word_delimiter: str, blank: str = "<pad>"
) -> None:
    """Raise `AlphabetError` unless `labels` gives each logit column the tokenizer's meaning.

    transformers only checks that every token has some label; a label list in another order would
    still decode, into the wrong letters. Here position matters: label i must be token i.
    """
    expected = alphabet_from_vocab(tokens_by_id, word_delimiter, blank)
    if len(labels) != len(expected):
        raise AlphabetError(
            f"the alphabet has {len(labels)} labels and the vocabulary {len(expected)} tokens"
        )
    wrong = [
        f"{index}: {label!r} for {token!r}"
        for index, (label, token) in enumerate(zip(labels, expected, strict=True))
        if label != token
    ]
    if wrong:
        raise AlphabetError(
            f"the alphabet does not match the vocabulary at {len(wrong)} of {len(labels)} ids "
            f"({', '.join(wrong[:3])})"
        )


def _is_special(token: str, name: str) -> bool:
    return (
        len(token) == len(name) + 2
        and token[0] + token[-1] in ("<>", "[]")
        and (token[1:-1].lower() == name)
    )


class PrefixSet:
    """Which strings begin some word of a sorted list: a trie's answer without a trie's memory."""

    def __init__(self, words: Iterable[str]) -> None:
        self._words = sorted(set(words))

    def __len__(self) -> int:
        return len(self._words)

    @property
    def words(self) -> list[str]:
        return list(self._words)

    def __contains__(self, word: str) -> bool:
        index = bisect_left(self._words, word)
        return index < len(self._words) and self._words[index] == word

    def starts_a_word(self, prefix: str) -> bool:
        index = bisect_left(self._words, prefix)
        return index < len(self._words) and self._words[index].startswith(prefix)

    def shortest_with_prefix(self, prefix: str) -> int:
        """The length of the shortest word beginning with `prefix` (which must begin one)."""
        index = bisect_left(self._words, prefix)
        shortest = len(self._words[index])
        while index < len(self._words) and self._words[index].startswith(prefix):
            shortest = min(shortest, len(self._words[index]))
            index += 1
        return shortest


class HotwordScorer:
    """A bonus of `weight` per hotword in the text, and a share of it while one is being spelled.

    A hotword phrase counts word by word; a partial word earns weight x (letters so far / letters
    of the shortest hotword it begins), which keeps a hotword's beam alive while it is spelled.
    """

    def __init__(self, hotwords: Iterable[str] | None, weight: float = DEFAULT_HOTWORD_WEIGHT):
        words = [word for phrase in hotwords or () for word in phrase.split()]
        self._words = PrefixSet(words)
        self._weight = weight

    def __bool__(self) -> bool:
        return len(self._words) > 0

    def score(self, text: str) -> float:
        return self._weight * sum(word in self._words for word in text.split())

    def begins_hotword(self, partial: str) -> bool:
        return self._words.starts_a_word(partial)

    def score_partial(self, partial: str) -> float:
        if not self._words.starts_a_word(partial):
            return 0.0
        return self._weight * len(partial) / self._words.shortest_with_prefix(partial)


@dataclass(frozen=True)
class BeamSearchOptions:
    """How wide and how selective the search is; pyctcdecode's defaults."""

    beam_width: int = DEFAULT_BEAM_WIDTH
    #: Beams scoring this far below the best one are dropped.
    beam_prune_logp: float = DEFAULT_BEAM_PRUNE_LOGP
    #: Tokens below this log-probability are not tried, unless they are the frame's best.
    token_min_logp: float = DEFAULT_TOKEN_MIN_LOGP
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = DEFAULT_HOTWORD_WEIGHT


@dataclass(frozen=True)
class DecodedBeam:
    """One hypothesis: its text, each word's frames, and its two scores."""

    text: str
    #: (word, (start frame, end frame)), end exclusive.
    words: list[tuple[str, Frames]]
    #: Acoustic log-probability summed over the paths merged into this beam.
    logit_score: float
    #: The ranking score: acoustic plus LM (and hotword) scores.
    score: float


# A beam in flight: (text, next_word, word_part, last_char, word frames, partial frames, score).
_Beam = tuple[str, str, str, "str | None", tuple[Frames, ...], Frames, float]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Per-frame log-probabilities of logits [frames, labels], in the logits' dtype."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _join(text: str, word: str) -> str:
    if not word:
        return text
    return f"{text} {word}" if text else word


def _sum_log(first: float, second: float) -> float:
    if first >= second:
        return first + math.log(1 + math.exp(second - first))
    return second + math.log(1 + math.exp(first - second))


def _merge(beams: list[_Beam]) -> list[_Beam]:
    """One beam per (text, word part, last token), its score the log-sum of the merged ones.

    The last beam of a group lends its fields (frames included); pyctcdecode keeps the same.
    """
    merged: dict[tuple[str, str, str | None], _Beam] = {}
    for beam in beams:
        text, next_word, word_part, last_char, frames, part_frames, score = beam
        key = (_join(text, next_word), word_part, last_char)
        earlier = merged.get(key)
        if earlier is not None:
            beam = (text, next_word, word_part, last_char, frames, part_frames)
            beam += (_sum_log(earlier[-1], score),)
        merged[key] = beam
    return list(merged.values())


class CtcBeamSearchDecoder:
    """Beam search over one utterance's log-probabilities, with or without a language model."""

    def __init__(self, labels: Sequence[str], language_model: LanguageModel | None = None):
        if any(label.startswith(("##", "▁")) for label in labels):
            raise AlphabetError("BPE vocabularies are not supported by the beam search decoder")
        self.labels = list(labels)
        self.language_model = language_model

    def decode(
        self, log_probs: np.ndarray, options: BeamSearchOptions = BeamSearchOptions()
    ) -> DecodedBeam:
        """The best hypothesis for `log_probs` [frames, labels] (`log_softmax` of the logits)."""
        return self.decode_beams(log_probs, options)[0]

    def decode_beams(
        self, log_probs: np.ndarray, options: BeamSearchOptions = BeamSearchOptions()
    ) -> list[DecodedBeam]:
        """Every surviving hypothesis, best first; `log_probs` as `log_softmax` gives them."""
        if log_probs.ndim != 2 or log_probs.shape[1] != len(self.labels):
            raise ValueError(
                f"log-probabilities of shape {log_probs.shape} for {len(self.labels)} labels"
            )
        # Scores add up in float64 (pyctcdecode's arithmetic), whatever the input's dtype.
        log_probs = np.clip(log_probs.astype(np.float64), MIN_LOG_PROB, 0.0)
        hotwords = HotwordScorer(options.hotwords, options.hotword_weight)
        scorer = _BeamScorer(self.language_model, hotwords)
        labels = self.labels
        beams: list[_Beam] = [("", "", "", None, (), NO_FRAMES, 0.0)]
        for frame, column in enumerate(log_probs):
            # A set, as pyctcdecode builds it: its iteration order decides ties between merges.
            candidates = set(np.flatnonzero(column >= options.token_min_logp)) | {column.argmax()}
            extended: list[_Beam] = []
            for index in candidates:
                log_prob = column[index]
                char = labels[index]
                for text, next_word, part, last, frames, part_frames, score in beams:
                    score = score + log_prob
                    if char == BLANK:
                        extended.append((text, next_word, part, char, frames, part_frames, score))
                    elif char == last:  # a repeat: the same character, one frame longer
                        spelled = (part_frames[0], frame + 1)
                        extended.append((text, next_word, part, char, frames, spelled, score))
                    elif char == SPACE:  # the word ends; the LM scores it at the next step
                        done = frames if part == "" else (*frames, part_frames)
                        extended.append((text, part, "", char, done, NO_FRAMES, score))
                    else:
                        start = frame if part_frames[0] < 0 else part_frames[0]
                        spelled = (start, frame + 1)
                        extended.append(
                            (text, next_word, part + char, char, frames, spelled, score)
                        )
            beams = [beam[:-1] for beam in self._best(scorer.rank(_merge(extended)), options)]
        ended = [
            (text, part, "", None, frames if part == "" else (*frames, part_frames), NO_FRAMES, s)
            for text, _, part, _, frames, part_frames, s in beams
        ]
        best = self._best(scorer.rank(_merge(ended), end_of_sentence=True), options)
        return [
            DecodedBeam(
                " ".join(text.split()), list(zip(text.split(), frames, strict=False)), score, total
            )
            for text, _, _, _, frames, _, score, total in best
        ]

    @staticmethod
    def _best(ranked: list[tuple], options: BeamSearchOptions) -> list[tuple]:
        floor = max(beam[-1] for beam in ranked) + options.beam_prune_logp
        kept = [beam for beam in ranked if beam[-1] >= floor]
        return heapq.nlargest(options.beam_width, kept, key=lambda beam: beam[-1])


class _BeamScorer:
    """Adds the ranking score to merged beams, caching LM scores per text for one utterance."""

    def __init__(self, language_model: LanguageModel | None, hotwords: HotwordScorer):
        self._lm = language_model
        self._hotwords = hotwords
        # (text, end of sentence) -> (LM + hotword score, LM score, LM state after text)
        self._texts: dict[tuple[str, bool], tuple[float, float, object]] = {}
        if language_model is not None:
            self._texts[("", False)] = (0.0, 0.0, language_model.start_state())
        self._partials: dict[str, float] = {}

    def rank(self, beams: list[_Beam], end_of_sentence: bool = False) -> list[tuple]:
        """Each beam with the next word committed to its text, and its ranking score appended."""
        hotwords = self._hotwords
        ranked = []
        if self._lm is None:
            for text, next_word, part, last, frames, part_frames, score in beams:
                text = _join(text, next_word)
                total = score  # adding two 0.0 hotword scores would change nothing
                if hotwords:
                    total = score + hotwords.score(text) + hotwords.score_partial(part)
                ranked.append((text, "", part, last, frames, part_frames, score, total))
            return ranked
        for text, next_word, part, last, frames, part_frames, score in beams:
            joined = _join(text, next_word)
            lm_score = self._text_score(text, next_word, joined, end_of_sentence)
            if part:
                lm_score += self._partial_score(part)
            ranked.append((joined, "", part, last, frames, part_frames, score, score + lm_score))
        return ranked

    def _text_score(self, text: str, word: str, joined: str, end_of_sentence: bool) -> float:
        key = (joined, end_of_sentence)
        cached = self._texts.get(key)
        if cached is None:
            _, previous, state = self._texts[(text, False)]
            score, state = self._lm.score_word(state, word, end_of_sentence)
            lm_score = previous + score
            cached = (lm_score + self._hotwords.score(joined), lm_score, state)
            self._texts[key] = cached
        return cached[0]

    def _partial_score(self, part: str) -> float:
        score = self._partials.get(part)
        if score is None:
            if self._hotwords.begins_hotword(part):
                score = self._hotwords.score_partial(part)
            else:
                score = self._lm.score_partial_word(part)
            self._partials[part] = score
        return score

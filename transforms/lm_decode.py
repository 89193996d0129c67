"""Beam-search decoding in a pool of processes beside the model, and the transcript it makes.

Why processes: the beam search is pure Python and holds the GIL for as long as it runs (tens of
milliseconds per second of audio with an LM). Run on the model's thread, it would stall
inference; in a thread, it would stall it just the same. So the `CtcDecode` stage hands each
item's log-probabilities to a pool of `spawn`ed processes (a fork of a process running
TensorFlow is unsafe) and goes back to the model at once; finished transcripts are collected
as they come. Each process loads the LM once.

Nothing here imports Beam or TensorFlow: the pool's processes import this module.

Word timings are the beam's word frames. A word's characters are placed inside those frames by a
CTC forced alignment (the best path that spells exactly the word there), which gives each
character its frames. Confidence is then defined as for greedy decoding: the mean, over the frames
where the word's characters are emitted (blanks left out), of the model's probability of the
character emitted. On a word where the beam agrees with the frame-wise argmax it is exactly
greedy decoding's confidence.
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.ctc_beam_search import BLANK, SPACE, BeamSearchOptions, CtcBeamSearchDecoder
from models.language_model import LanguageModelFiles, NgramLanguageModel


@dataclass(frozen=True)
class BeamDecoding:
    """Everything a pool process needs: plain values, so that it pickles."""

    labels: tuple[str, ...]
    language_model: LanguageModelFiles | None
    options: BeamSearchOptions
    seconds_per_frame: float


_decoder: CtcBeamSearchDecoder | None = None
_decoding: BeamDecoding | None = None


def _load(decoding: BeamDecoding) -> None:
    """Pool initializer: load the LM once per process."""
    global _decoder, _decoding
    language_model = None
    if decoding.language_model is not None:
        language_model = NgramLanguageModel.load(decoding.language_model)
    _decoder = CtcBeamSearchDecoder(decoding.labels, language_model)
    _decoding = decoding


def decode_item(log_probs: np.ndarray) -> tuple[str, list[dict], list[dict]]:
    """(transcript, chars, words) of one item, in a process that ran `_load`."""
    assert _decoder is not None and _decoding is not None, "the pool was not initialized"
    best = _decoder.decode(log_probs, _decoding.options)
    return (best.text, *word_rows(best.words, log_probs, _decoding))


def word_rows(
    words: list[tuple[str, tuple[int, int]]], log_probs: np.ndarray, decoding: BeamDecoding
) -> tuple[list[dict], list[dict]]:
    """The `chars` and `words` entries of a transcript row (same fields as greedy decoding's)."""
    ids = {label: i for i, label in enumerate(decoding.labels) if label not in (BLANK, SPACE)}
    blank = decoding.labels.index(BLANK)
    step = decoding.seconds_per_frame
    chars: list[dict] = []
    rows: list[dict] = []
    for word, (start, end) in words:
        spans = align_word(_spell(word, ids), log_probs[start:end], blank)
        if spans is None:  # not alignable (a label the vocabulary lacks): frames' best instead
            probability = float(np.exp(log_probs[start:end].max(axis=-1)).mean())
            rows.append(_row("word", word, start * step, end * step, probability))
            continue
        total = 0.0
        emitted = 0
        for char, (first, last, probabilities) in spans:
            chars.append(
                _row("char", char, (start + first) * step, (start + last) * step, probabilities)
            )
            total += probabilities * (last - first)
            emitted += last - first
        rows.append(_row("word", word, start * step, end * step, total / emitted))
    return chars, rows


def _row(kind: str, text: str, start_s: float, end_s: float, confidence: float) -> dict[str, Any]:
    return {kind: text, "start_s": start_s, "end_s": end_s, "confidence": float(confidence)}


def _spell(word: str, ids: dict[str, int]) -> list[tuple[str, int]] | None:
    """The word as vocabulary labels, longest label first (labels such as `<s>` are several
    characters long); None when some character is no label."""
    longest = max((len(label) for label in ids), default=1)
    spelled = []
    position = 0
    while position < len(word):
        for size in range(min(longest, len(word) - position), 0, -1):
            piece = word[position : position + size]
            if piece in ids:
                spelled.append((piece, ids[piece]))
                position += size
                break
        else:
            return None
    return spelled


def align_word(
    spelled: list[tuple[str, int]] | None, log_probs: np.ndarray, blank: int
) -> list[tuple[str, tuple[int, int, float]]] | None:
    """Best CTC path spelling `spelled` over all of `log_probs` (first frame on the first
    character, last frame on the last): each character's (first frame, end frame, mean
    probability over its frames). None if the word cannot fit the frames."""
    if not spelled:
        return None
    states = []  # char, blank, char, blank, ..., char
    for index, (_, label) in enumerate(spelled):
        if index:
            states.append(blank)
        states.append(label)
    frames, count = len(log_probs), len(states)
    if frames < len(spelled) + sum(1 for a, b in itertools.pairwise(spelled) if a[1] == b[1]):
        return None
    emit = log_probs[:, states]  # [frames, states]
    # A character may follow the one two states back unless they are the same (CTC needs a blank).
    skip = np.zeros(count, dtype=bool)
    skip[2:] = [states[j] != blank and states[j] != states[j - 2] for j in range(2, count)]
    best = np.full(count, -np.inf)
    best[0] = emit[0, 0]
    came_from = np.zeros((frames, count), dtype=np.int8)  # 0 stay, 1 from j-1, 2 from j-2
    for t in range(1, frames):
        stay = best
        step = np.concatenate([[-np.inf], best[:-1]])
        jump = np.where(skip, np.concatenate([[-np.inf, -np.inf], best[:-2]]), -np.inf)
        choices = np.stack([stay, step, jump])
        came_from[t] = choices.argmax(axis=0)
        best = choices.max(axis=0) + emit[t]
    if not np.isfinite(best[-1]):
        return None
    path = np.empty(frames, dtype=np.int64)
    state = count - 1
    for t in range(frames - 1, -1, -1):
        path[t] = state
        state -= came_from[t, state]
    spans = []
    for index, (char, _) in enumerate(spelled):
        at = np.flatnonzero(path == 2 * index)
        probabilities = np.exp(emit[at, 2 * index])
        spans.append((char, (int(at[0]), int(at[-1]) + 1, float(probabilities.mean()))))
    return spans


class DecodePool:
    """A bounded pool of decoding processes, shared by every `CtcDecode` of one process."""

    def __init__(self, decoding: BeamDecoding, processes: int) -> None:
        self.decoding = decoding
        self.processes = processes
        self._executor = ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_load,
            initargs=(decoding,),
        )

    def submit(self, log_probs: np.ndarray) -> Future:
        return self._executor.submit(decode_item, log_probs)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_pool_lock = threading.Lock()
_pool: DecodePool | None = None


def shared_pool(decoding: BeamDecoding, processes: int) -> DecodePool:
    """This process's pool for `decoding`; one that decodes otherwise is replaced."""
    global _pool
    with _pool_lock:
        if _pool is not None and (_pool.decoding, _pool.processes) != (decoding, processes):
            _pool.shutdown()
            _pool = None
        if _pool is None:
            _pool = DecodePool(decoding, processes)
        return _pool


def discard_pool(pool: DecodePool) -> None:
    """Forget a pool whose processes died, so that the next item starts a new one."""
    global _pool
    with _pool_lock:
        if _pool is pool:
            _pool = None
    pool.shutdown()


@atexit.register
def _shutdown() -> None:
    if _pool is not None:
        _pool.shutdown()

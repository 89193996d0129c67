"""Beam-search decoding in a pool of processes beside the model, and the transcript it makes.

Why processes: the beam search is pure Python and holds the GIL for as long as it runs (about 10
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
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from wav2vec2_beam.models.ctc_beam_search import (
    BLANK,
    SPACE,
    AlphabetError,
    BeamSearchOptions,
    CtcBeamSearchDecoder,
    alphabet_from_vocab,
    check_alphabet,
)
from wav2vec2_beam.models.language_model import (
    LanguageModelError,
    LanguageModelFiles,
    NgramLanguageModel,
    locate_language_model,
    read_alphabet,
)
from wav2vec2_beam.transforms.records import frame_time


@dataclass(frozen=True)
class BeamDecoding:
    """What beam-search decoding needs, as plain values that pickle to Dataflow workers.

    The LM is named by where it is (`checkpoint`'s `language_model/`, or the `--lm` file), not
    by local paths: each worker fetches its own copy when it starts decoding.
    """

    labels: tuple[str, ...]
    options: BeamSearchOptions
    seconds_per_frame: float
    checkpoint: str
    #: `--lm`: an ARPA or KenLM binary to use instead of the checkpoint's own LM.
    lm_path: str | None = None
    #: Whether to fuse an LM at all (False: plain beam search, with hotwords if any).
    use_lm: bool = True
    #: `--lm_alpha` and `--lm_beta`; None keeps the LM's attrs.json (or pyctcdecode's defaults).
    alpha: float | None = None
    beta: float | None = None

    def describe(self) -> str:
        """One line for the log and summary.json: the search and the LM it fuses."""
        lm = "no LM"
        if self.use_lm:
            where = self.lm_path or f"{self.checkpoint}/language_model"
            default = "defaults" if self.lm_path else "attrs.json"
            alpha = default if self.alpha is None else f"{self.alpha:g}"
            beta = default if self.beta is None else f"{self.beta:g}"
            weights = f"alpha {alpha}, beta {beta}"
            if self.alpha is None and self.beta is None:
                weights = f"weights from {default}"
            lm = f"LM {where} ({weights})"
        hotwords = f", {len(self.options.hotwords)} hotwords" if self.options.hotwords else ""
        return f"beam search, width {self.options.beam_width}, {lm}{hotwords}"

    def language_model_files(self) -> LanguageModelFiles | None:
        """Local files of the LM (downloaded when remote), with the weights overridden."""
        if not self.use_lm:
            return None
        files = locate_language_model(self.checkpoint, self.lm_path)
        return None if files is None else files.with_weights(alpha=self.alpha, beta=self.beta)


_decoder: CtcBeamSearchDecoder | None = None
_decoding: BeamDecoding | None = None


def _load(decoding: BeamDecoding, files: LanguageModelFiles | None) -> None:
    """Pool initializer: load the LM once per process, leave Ctrl-C (which the terminal sends
    to the whole process group) to the launcher, and end the process with its parent."""
    global _decoder, _decoding
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the launcher's to handle
    _exit_with_parent()
    _decoder = load_decoder(decoding.labels, files)
    _decoding = decoding


#: How often a decoding process checks that the process that started it is alive (seconds).
PARENT_CHECK_S = 1.0


def _exit_with_parent() -> None:
    """Exit when the parent dies, however it died: a launcher killed with SIGKILL cannot stop its
    pool, whose processes would wait on their task pipe forever (and keep multiprocessing's
    resource tracker alive with them). The parent's death shows as a new parent process id."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_S)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def load_decoder(labels: tuple[str, ...], files: LanguageModelFiles | None) -> CtcBeamSearchDecoder:
    """The decoder with its LM loaded; `LanguageModelError` for an LM file KenLM refuses."""
    language_model = None if files is None else NgramLanguageModel.load(files)
    return CtcBeamSearchDecoder(labels, language_model)


def plan_decoding(
    *,
    decoder: str | None,
    checkpoint: str,
    lm_path: str | None,
    tokens_by_id: list[str],
    word_delimiter: str,
    blank: str,
    seconds_per_frame: float,
    options: BeamSearchOptions,
    alpha: float | None = None,
    beta: float | None = None,
) -> BeamDecoding | None:
    """How to decode transcripts: None for greedy, else a beam decoding checked end to end.

    `decoder` None means beam search exactly when there is an LM (`lm_path`, or the checkpoint's
    `language_model/`), as transformers' ASR pipeline does, or hotwords to favour. Everything a worker will load is
    loaded here once, so that a bad LM stops the job before it starts: `LanguageModelError` for
    an LM file or folder that cannot be used, `AlphabetError` for an alphabet.json that does not
    give each logit column the tokenizer's token, or an LM spelled in characters the vocabulary
    lacks.
    """
    if decoder == "greedy":
        return None
    files = locate_language_model(checkpoint, lm_path)
    if files is None and (alpha is not None or beta is not None):
        raise LanguageModelError(
            f"--lm_alpha/--lm_beta weigh an LM, and {checkpoint} has no language_model/ "
            "(give one with --lm)"
        )
    if decoder is None and files is None and not options.hotwords:
        return None
    labels = read_alphabet(checkpoint) if files is not None and lm_path is None else None
    if labels is not None:
        check_alphabet(labels, tokens_by_id, word_delimiter, blank)
    else:
        labels = alphabet_from_vocab(tokens_by_id, word_delimiter, blank)
    decoding = BeamDecoding(
        tuple(labels),
        options,
        seconds_per_frame,
        checkpoint,
        lm_path,
        use_lm=files is not None,
        alpha=alpha,
        beta=beta,
    )
    loaded = load_decoder(
        decoding.labels, None if files is None else files.with_weights(alpha=alpha, beta=beta)
    )
    if loaded.language_model is not None:
        _check_spelling(loaded.language_model, decoding.labels, files.kenlm_path)
    return decoding


def _check_spelling(language_model: NgramLanguageModel, labels: tuple[str, ...], path: str) -> None:
    """Refuse an LM whose words the model cannot spell (pyctcdecode only warns, then every word
    would count as unknown): more than a fifth of their characters missing from the labels."""
    words = [w for w in language_model.unigrams or () if w not in ("<s>", "</s>", "<unk>")]
    characters = set("".join(words))
    missing = sorted(characters - set(labels))
    if characters and len(missing) > 0.2 * len(characters):
        raise AlphabetError(
            f"{path}: its words use {len(missing)} characters the model's vocabulary lacks "
            f"({''.join(missing[:12])}); is its case different from the vocabulary's?"
        )


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
    return {
        kind: text,
        "start_s": frame_time(start_s, 1.0),
        "end_s": frame_time(end_s, 1.0),
        "confidence": float(confidence),
    }


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
    came_from = np.zeros((frames, count), dtype=np.int64)  # 0 stay, 1 from j-1, 2 from j-2
    step = np.full(count, -np.inf)
    jump = np.full(count, -np.inf)
    for t in range(1, frames):
        step[1:] = best[:-1]
        jump[2:] = best[:-2]
        jump[~skip] = -np.inf
        choices = np.stack([best, step, jump])
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
            initargs=(decoding, decoding.language_model_files()),
        )

    def submit(self, log_probs: np.ndarray) -> Future:
        return self._executor.submit(decode_item, log_probs)

    def shutdown(self, wait: bool = False) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=True)


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


def close_shared_pool() -> None:
    """Stop this process's pool and wait for its processes to exit: for a process about to end
    without the interpreter's own shutdown, which would otherwise stop them."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True)


@atexit.register
def _shutdown() -> None:
    if _pool is not None:
        _pool.shutdown()

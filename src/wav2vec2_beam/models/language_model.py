"""An n-gram LM for CTC beam search: a KenLM model, its unigrams and the fusion weights.

The files are pyctcdecode's saved layout, which `Wav2Vec2ProcessorWithLM.save_pretrained` writes
and Hugging Face checkpoints ship:

    <checkpoint>/alphabet.json              {"labels": [...], "is_bpe": false}
    <checkpoint>/language_model/attrs.json  {"alpha", "beta", "unk_score_offset", "score_boundary"}
    <checkpoint>/language_model/unigrams.txt  one known word per line
    <checkpoint>/language_model/<name>.arpa | .bin | .binary  the KenLM model

Scores follow pyctcdecode's `LanguageModel`, so that our transcripts equal transformers': a word
costs alpha x ln P(word | history) + beta, plus `unk_score_offset` (before alpha) when the word is
not a known unigram; with `score_boundary` the text starts at <s> and the last word also pays
for </s>. A partial word that begins no known word costs `unk_score_offset`, scaled up by its
length beyond six letters, so a beam spelling nonsense falls behind before the word ends.

`kenlm` is imported only here, only when an LM is loaded.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from wav2vec2_beam.models import _files
from wav2vec2_beam.models.ctc_beam_search import PrefixSet

ALPHABET_FILE = "alphabet.json"
LM_FOLDER = "language_model"
ATTRS_FILE = "attrs.json"
UNIGRAMS_FILE = "unigrams.txt"
KENLM_SUFFIXES = (".arpa", ".bin", ".binary")
#: KenLM scores are log10; the decoder adds them to natural-log acoustic scores.
_LN_10 = 1.0 / math.log10(math.e)
#: A partial word longer than this pays its unknown-word offset in proportion to its length.
_AVERAGE_WORD_LENGTH = 6


class LanguageModelError(ValueError):
    """An LM file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class FusionWeights:
    """How the LM's score joins the acoustic one (pyctcdecode's defaults)."""

    alpha: float = 0.5
    beta: float = 1.5
    unk_score_offset: float = -10.0
    score_boundary: bool = True


@dataclass(frozen=True)
class LanguageModelFiles:
    """Where an LM's files are: a KenLM model, its unigram list (or None) and the weights."""

    kenlm_path: str
    unigrams_path: str | None
    weights: FusionWeights
    #: Read the unigram list from the ARPA file's 1-grams (`--lm model.arpa`).
    unigrams_from_arpa: bool = False

    def with_weights(self, **changes: Any) -> LanguageModelFiles:
        """These files with some weights overridden (None leaves a weight as it is)."""
        given = {name: value for name, value in changes.items() if value is not None}
        return replace(self, weights=replace(self.weights, **given))


class NgramLanguageModel:
    """A loaded KenLM model with its known words and fusion weights."""

    def __init__(self, kenlm_model: Any, unigrams: list[str] | None, weights: FusionWeights):
        import kenlm

        self._model = kenlm_model
        self._new_state = kenlm.State
        self.weights = weights
        # pyctcdecode keeps only the unigrams the model knows; without a list every word is known
        # to the model only, and every partial word counts as unknown.
        self._unigrams = (
            None if unigrams is None else PrefixSet(w for w in unigrams if w in kenlm_model)
        )

    @classmethod
    def load(cls, files: LanguageModelFiles) -> NgramLanguageModel:
        """Load the KenLM model and unigrams; raises `LanguageModelError` naming the file."""
        import kenlm

        config = kenlm.Config()
        config.show_progress = False  # KenLM draws a progress bar on stderr otherwise
        config.arpa_complain = kenlm.ARPALoadComplain.NONE
        try:
            model = kenlm.Model(files.kenlm_path, config)
        except (OSError, RuntimeError, ValueError) as error:
            message = " ".join(str(error).split())[:300]
            raise LanguageModelError(f"{files.kenlm_path}: not a KenLM model ({message})") from None
        unigrams = None
        if files.unigrams_from_arpa:
            unigrams = arpa_unigrams(files.kenlm_path)
        elif files.unigrams_path is not None:
            unigrams = Path(files.unigrams_path).read_text(encoding="utf-8").splitlines()
        return cls(model, unigrams, files.weights)

    @property
    def unigrams(self) -> list[str] | None:
        """The known words (those of the list that the model has), or None without a list."""
        return None if self._unigrams is None else self._unigrams.words

    def start_state(self) -> Any:
        state = self._new_state()
        if self.weights.score_boundary:
            self._model.BeginSentenceWrite(state)
        else:
            self._model.NullContextWrite(state)
        return state

    def score_word(self, state: Any, word: str, last: bool) -> tuple[float, Any]:
        """The fused score of `word` after `state`, and the state after it."""
        after = self._new_state()
        score = self._model.BaseScore(state, word, after)
        unknown = self._unigrams is not None and len(self._unigrams) > 0
        if (unknown and word not in self._unigrams) or word not in self._model:
            score += self.weights.unk_score_offset
        if last and self.weights.score_boundary:
            score = score + self._model.BaseScore(after, "</s>", self._new_state())
        return self.weights.alpha * score * _LN_10 + self.weights.beta, after

    def score_partial_word(self, partial: str) -> float:
        """The penalty for a word being spelled: zero while it can still become a known word."""
        known = self._unigrams is not None and self._unigrams.starts_a_word(partial)
        score = 0.0 if known else self.weights.unk_score_offset
        if len(partial) > _AVERAGE_WORD_LENGTH:
            score = score * len(partial) / _AVERAGE_WORD_LENGTH
        return score


def find_language_model(checkpoint: str) -> LanguageModelFiles | None:
    """The LM a checkpoint ships in `language_model/`, or None; local copies for gs:// ones.

    Raises `LanguageModelError` for a folder that is not pyctcdecode's layout.
    """
    if not _files.exists(checkpoint, f"{LM_FOLDER}/{ATTRS_FILE}"):
        return None
    folder = f"{LM_FOLDER}/"
    attrs = _files.read_json(checkpoint, folder + ATTRS_FILE)
    expected = {"alpha", "beta", "unk_score_offset", "score_boundary"}
    if not isinstance(attrs, dict) or set(attrs) != expected:
        raise LanguageModelError(
            f"{_files.join(checkpoint, folder + ATTRS_FILE)}: expected the keys {sorted(expected)}"
        )
    names = [name for name in _files.list_names(checkpoint, LM_FOLDER) if not name.startswith(".")]
    models = [name for name in names if name.endswith(KENLM_SUFFIXES)]
    if len(models) != 1:
        raise LanguageModelError(
            f"{_files.join(checkpoint, LM_FOLDER)}: expected one KenLM file "
            f"({', '.join(KENLM_SUFFIXES)}), found {models or 'none'}"
        )
    unigrams = None
    if UNIGRAMS_FILE in names:
        unigrams = _files.local_copy(checkpoint, folder + UNIGRAMS_FILE)
    weights = FusionWeights(
        float(attrs["alpha"]),
        float(attrs["beta"]),
        float(attrs["unk_score_offset"]),
        bool(attrs["score_boundary"]),
    )
    return LanguageModelFiles(_files.local_copy(checkpoint, folder + models[0]), unigrams, weights)


def locate_language_model(checkpoint: str, lm_path: str | None) -> LanguageModelFiles | None:
    """The LM to decode with: the file given (`--lm`), else the checkpoint's own, else None."""
    return standalone_language_model(lm_path) if lm_path else find_language_model(checkpoint)


def standalone_language_model(path: str) -> LanguageModelFiles:
    """An ARPA or KenLM binary given on its own (`--lm`), with default weights.

    Its unigrams come from the ARPA's 1-gram section; a binary needs a `unigrams.txt` beside it,
    since KenLM's Python module cannot list a binary's vocabulary and, without a unigram list,
    every partial word would be scored as unknown.
    """
    folder, name = path.rsplit("/", 1) if "/" in path else (".", path)
    if not _files.exists(folder, name):
        raise LanguageModelError(f"{path}: no such file")
    local = _files.local_copy(folder, name)
    kind = kenlm_format(local)
    if kind is None:
        raise LanguageModelError(
            f"{path} is neither an ARPA file nor a KenLM binary; to make an ARPA file from "
            f"text (one sentence per line): python -m wav2vec2_beam.lm.build_arpa --text {path} "
            "--vocab CHECKPOINT --output lm.arpa"
        )
    if kind == "arpa":
        return LanguageModelFiles(local, None, FusionWeights(), unigrams_from_arpa=True)
    if _files.exists(folder, UNIGRAMS_FILE):
        return LanguageModelFiles(local, _files.local_copy(folder, UNIGRAMS_FILE), FusionWeights())
    raise LanguageModelError(
        f"{path}: a KenLM binary needs its word list: put {UNIGRAMS_FILE} (one word per line) "
        "beside it, or give the ARPA file"
    )


#: How every KenLM binary begins (its header's magic string).
KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"


def kenlm_format(path: str) -> str | None:
    """The file's format by its content, not its name: "binary", "arpa" (its `\\data\\`
    header in the first lines, also gzip-compressed, which KenLM reads), or None for neither."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head.startswith(KENLM_BINARY_MAGIC):
        return "binary"
    if head.startswith(b"\x1f\x8b"):
        with gzip.open(path, "rb") as handle:
            head = handle.read(4096)
    return "arpa" if b"\\data\\" in head else None


def arpa_unigrams(path: str) -> list[str]:
    """The words of an ARPA file's 1-gram lines that have a backoff weight.

    That is how pyctcdecode reads them (and so what a decoder transformers builds from an ARPA
    file knows): `</s>` has no backoff, `<s>` and `<unk>` are in. `lm.build_arpa` writes a
    backoff on every other 1-gram.
    """
    words = []
    with open(path, encoding="utf-8") as lines:
        inside = False
        for line in lines:
            line = line.strip()
            if line == "\\1-grams:":
                inside = True
            elif inside and line.startswith("\\"):
                break
            elif inside and line:
                fields = line.split("\t")
                if len(fields) == 3:
                    words.append(fields[1])
    if not words:
        raise LanguageModelError(f"{path}: no 1-grams found; not an ARPA file")
    return words


def read_alphabet(checkpoint: str) -> list[str] | None:
    """The labels of a checkpoint's `alphabet.json`, or None when it has none."""
    if not _files.exists(checkpoint, ALPHABET_FILE):
        return None
    alphabet = _files.read_json(checkpoint, ALPHABET_FILE)
    if not isinstance(alphabet, dict) or not isinstance(alphabet.get("labels"), list):
        raise LanguageModelError(
            f"{_files.join(checkpoint, ALPHABET_FILE)}: expected {{'labels': [...], 'is_bpe': ...}}"
        )
    return alphabet["labels"]


def save_language_model(
    checkpoint: str | Path,
    kenlm_path: str | Path,
    labels: list[str],
    weights: FusionWeights = FusionWeights(),
    unigrams: list[str] | None = None,
) -> Path:
    """Write `alphabet.json` and `language_model/` into a checkpoint folder, as transformers does.

    `unigrams` default to the ARPA file's words. Returns the LM folder.
    """
    checkpoint = Path(checkpoint)
    folder = checkpoint / LM_FOLDER
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (checkpoint / ALPHABET_FILE).write_text(json.dumps({"labels": labels, "is_bpe": False}))
    (folder / ATTRS_FILE).write_text(
        json.dumps(
            {
                "alpha": weights.alpha,
                "beta": weights.beta,
                "unk_score_offset": weights.unk_score_offset,
                "score_boundary": weights.score_boundary,
            }
        )
    )
    words = sorted(set(unigrams if unigrams is not None else arpa_unigrams(str(kenlm_path))))
    (folder / UNIGRAMS_FILE).write_text("".join(f"{word}\n" for word in words), encoding="utf-8")
    shutil.copy2(kenlm_path, folder / Path(kenlm_path).name)
    return folder

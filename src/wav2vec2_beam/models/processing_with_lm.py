"""`Wav2Vec2ProcessorWithLM`: transformers' processor that decodes logits with an n-gram LM.

For library users who decode logits themselves, with transformers' signature and output
fields: `processor.batch_decode(logits).text`. The search is our pyctcdecode-equal beam search
(`models.ctc_beam_search`) over the checkpoint's `alphabet.json` and `language_model/` (the files
transformers' `save_pretrained` writes), so the texts, word offsets and scores are what
transformers gives on the same logits, without pyctcdecode (whose release pins numpy < 2).

As in transformers, `alpha`, `beta`, `unk_score_offset` and `lm_score_boundary` given to a decode
call stay set for the calls after it (pyctcdecode's `reset_params`).
"""

from __future__ import annotations

import logging
import multiprocessing
import weakref
from dataclasses import dataclass, replace
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import numpy as np

from wav2vec2_beam.models import hub
from wav2vec2_beam.models.ctc_beam_search import (
    DEFAULT_BEAM_PRUNE_LOGP,
    DEFAULT_BEAM_WIDTH,
    DEFAULT_HOTWORD_WEIGHT,
    DEFAULT_TOKEN_MIN_LOGP,
    BeamSearchOptions,
    CtcBeamSearchDecoder,
    DecodedBeam,
    alphabet_from_vocab,
    check_alphabet,
    log_softmax,
)
from wav2vec2_beam.models.feature_extraction import Wav2Vec2FeatureExtractor
from wav2vec2_beam.models.language_model import (
    LanguageModelError,
    LanguageModelFiles,
    NgramLanguageModel,
    find_language_model,
    read_alphabet,
    save_language_model,
)
from wav2vec2_beam.models.processing import Wav2Vec2Processor
from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer

_log = logging.getLogger(__name__)

#: transformers marks the padded frames of a batch of logits with this value in every column.
_PADDING_LOGIT = -100.0


@dataclass
class Wav2Vec2DecoderWithLMOutput:
    """What `decode` (one item) and `batch_decode` (lists, one entry per item) return; with
    `n_best`, each item's entry is a list of its best hypotheses."""

    text: Any
    logit_score: Any = None
    lm_score: Any = None
    #: [{"word", "start_offset", "end_offset"}] in logit frames, with `output_word_offsets`.
    word_offsets: Any = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


class Wav2Vec2ProcessorWithLM(Wav2Vec2Processor):
    """Feature extractor, tokenizer and LM beam-search decoder of one checkpoint."""

    def __init__(
        self,
        feature_extractor: Wav2Vec2FeatureExtractor,
        tokenizer: Wav2Vec2CTCTokenizer,
        decoder: CtcBeamSearchDecoder,
        language_model_files: LanguageModelFiles | None = None,
    ) -> None:
        """`language_model_files`: where the decoder's LM came from, for `save_pretrained`."""
        super().__init__(feature_extractor, tokenizer)
        self.decoder = decoder
        self.language_model_files = language_model_files
        # A pool forked from now on holds this decoder (and its loaded LM) in each process.
        _forked_decoders[id(decoder)] = decoder

    @classmethod
    def from_pretrained(
        cls, path: str, revision: str | None = None, **overrides: Any
    ) -> Wav2Vec2ProcessorWithLM:
        """Load a checkpoint's processor and its `alphabet.json` + `language_model/`;
        `LanguageModelError` when it has none (then `Wav2Vec2Processor` is the class to use)."""
        path = hub.resolve(str(path), revision)
        processor = Wav2Vec2Processor.from_pretrained(path, **overrides)
        files = find_language_model(path)
        if files is None:
            raise LanguageModelError(
                f"{path}: no language_model/ (use Wav2Vec2Processor for a checkpoint without an LM)"
            )
        tokenizer = processor.tokenizer
        tokens = [tokenizer.convert_ids_to_tokens(i) for i in range(len(tokenizer))]
        labels = read_alphabet(path)
        if labels is None:
            labels = alphabet_from_vocab(
                tokens, tokenizer.word_delimiter_token, tokenizer.pad_token
            )
        else:
            check_alphabet(labels, tokens, tokenizer.word_delimiter_token, tokenizer.pad_token)
        decoder = CtcBeamSearchDecoder(labels, NgramLanguageModel.load(files))
        return cls(processor.feature_extractor, tokenizer, decoder, files)

    def save_pretrained(self, folder: str) -> tuple[str, ...]:
        """Write the processor's files, `alphabet.json` and `language_model/` into `folder`."""
        written = super().save_pretrained(folder)
        language_model = self.decoder.language_model
        files = self.language_model_files
        if language_model is None or files is None:
            raise LanguageModelError("this processor's decoder has no LM files to save")
        lm_folder = save_language_model(
            folder,
            files.kenlm_path,
            self.decoder.labels,
            language_model.weights,
            language_model.unigrams,
        )
        return (*written, str(Path(folder) / "alphabet.json"), str(lm_folder))

    # --- decoding ----------------------------------------------------------------------------

    def decode(
        self,
        logits: np.ndarray,
        beam_width: int | None = None,
        beam_prune_logp: float | None = None,
        token_min_logp: float | None = None,
        hotwords: list[str] | None = None,
        hotword_weight: float | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        unk_score_offset: float | None = None,
        lm_score_boundary: bool | None = None,
        output_word_offsets: bool = False,
        n_best: int | None = None,
    ) -> Wav2Vec2DecoderWithLMOutput:
        """The best hypothesis for one item's (frames, vocabulary) logits (or `n_best` of them)."""
        self._set_weights(alpha, beta, unk_score_offset, lm_score_boundary)
        options = _options(beam_width, beam_prune_logp, token_min_logp, hotwords, hotword_weight)
        beams = self.decoder.decode_beams(log_softmax(np.asarray(logits)), options)
        return _output([beams], output_word_offsets, n_best, batched=False)

    def batch_decode(
        self,
        logits: np.ndarray,
        pool: Pool | None = None,
        num_processes: int | None = None,
        beam_width: int | None = None,
        beam_prune_logp: float | None = None,
        token_min_logp: float | None = None,
        hotwords: list[str] | None = None,
        hotword_weight: float | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        unk_score_offset: float | None = None,
        lm_score_boundary: bool | None = None,
        output_word_offsets: bool = False,
        n_best: int | None = None,
    ) -> Wav2Vec2DecoderWithLMOutput:
        """Each item's best hypothesis (or `n_best`): `logits` (batch, frames, vocabulary),
        padded frames marked with -100 in every column as transformers pads them.

        With a `pool` created after this processor by `fork` (whose processes then hold its
        LM), the items are decoded in it; otherwise in this process, one after another.
        `num_processes` without a pool starts such a pool for the call.
        """
        self._set_weights(alpha, beta, unk_score_offset, lm_score_boundary)
        options = _options(beam_width, beam_prune_logp, token_min_logp, hotwords, hotword_weight)
        items = [
            log_softmax(item[(item != _PADDING_LOGIT).all(axis=-1)]) for item in np.asarray(logits)
        ]
        if pool is not None and num_processes is not None:
            _log.warning("num_processes=%d is ignored: the given pool decodes", num_processes)
        beams = self._decode_all(items, options, pool, num_processes)
        return _output(beams, output_word_offsets, n_best, batched=True)

    def _decode_all(
        self,
        items: list[np.ndarray],
        options: BeamSearchOptions,
        pool: Pool | None,
        num_processes: int | None,
    ) -> list[list[DecodedBeam]]:
        forking = "fork" in multiprocessing.get_all_start_methods()
        if pool is None and num_processes is not None and num_processes > 1 and forking:
            with multiprocessing.get_context("fork").Pool(num_processes) as own:
                return self._decode_all(items, options, own, None)
        if pool is not None:
            if _pool_start_method(pool) == "fork":
                weights = getattr(self.decoder.language_model, "weights", None)
                tasks = [(id(self.decoder), item, options, weights) for item in items]
                return pool.starmap(_decode_in_fork, tasks)
            _log.warning("the pool's processes are not forked from this one: decoding here")
        return [self.decoder.decode_beams(item, options) for item in items]

    def _set_weights(
        self,
        alpha: float | None,
        beta: float | None,
        unk_score_offset: float | None,
        lm_score_boundary: bool | None,
    ) -> None:
        """Change the LM's fusion weights for this and later calls (transformers' rule)."""
        language_model = self.decoder.language_model
        changes = {
            "alpha": alpha,
            "beta": beta,
            "unk_score_offset": unk_score_offset,
            "score_boundary": lm_score_boundary,
        }
        given = {name: value for name, value in changes.items() if value is not None}
        if given:
            language_model.weights = replace(language_model.weights, **given)


#: The processors' decoders, by id: a pool forked after a processor was made finds its
#: decoder here, LM loaded, without pickling it (a KenLM model does not pickle).
_forked_decoders: weakref.WeakValueDictionary[int, CtcBeamSearchDecoder] = (
    weakref.WeakValueDictionary()
)


def _decode_in_fork(
    key: int, log_probs: np.ndarray, options: BeamSearchOptions, weights: Any
) -> list[DecodedBeam]:
    """Decode in a forked process, with the fusion weights the parent has now."""
    decoder = _forked_decoders[key]
    if weights is not None:
        decoder.language_model.weights = weights
    return decoder.decode_beams(log_probs, options)


def _pool_start_method(pool: Pool) -> str | None:
    context = getattr(pool, "_ctx", None)
    return context.get_start_method() if context is not None else None


def _options(
    beam_width: int | None,
    beam_prune_logp: float | None,
    token_min_logp: float | None,
    hotwords: list[str] | None,
    hotword_weight: float | None,
) -> BeamSearchOptions:
    """pyctcdecode's defaults for whatever is None."""
    return BeamSearchOptions(
        beam_width=DEFAULT_BEAM_WIDTH if beam_width is None else beam_width,
        beam_prune_logp=DEFAULT_BEAM_PRUNE_LOGP if beam_prune_logp is None else beam_prune_logp,
        token_min_logp=DEFAULT_TOKEN_MIN_LOGP if token_min_logp is None else token_min_logp,
        hotwords=tuple(hotwords or ()),
        hotword_weight=DEFAULT_HOTWORD_WEIGHT if hotword_weight is None else hotword_weight,
    )


def _output(
    beams: list[list[DecodedBeam]], word_offsets: bool, n_best: int | None, batched: bool
) -> Wav2Vec2DecoderWithLMOutput:
    """transformers' output: per item the best beam's fields, or lists of the `n_best`."""

    def fields(beam: DecodedBeam) -> tuple[str, float, float, list[dict[str, Any]]]:
        offsets = [
            {"word": word, "start_offset": start, "end_offset": end}
            for word, (start, end) in beam.words
        ]
        return beam.text, beam.logit_score, beam.score, offsets

    items = []
    for item in beams:
        best = [fields(beam) for beam in item[: n_best or 1]]
        items.append(
            tuple(list(column) for column in zip(*best, strict=True)) if n_best else best[0]
        )
    text, logit_score, lm_score, offsets = (list(column) for column in zip(*items, strict=True))
    if not batched:
        text, logit_score, lm_score, offsets = text[0], logit_score[0], lm_score[0], offsets[0]
    return Wav2Vec2DecoderWithLMOutput(
        text=text,
        logit_score=logit_score,
        lm_score=lm_score,
        word_offsets=offsets if word_offsets else None,
    )

"""Wav2Vec2 processor: the feature extractor and the CTC tokenizer of one checkpoint, together.

Mirrors transformers' `Wav2Vec2Processor`, including how it routes keyword arguments: call
arguments go to whichever half accepts them, and a few keys found in tokenizer_config.json
(notably `return_attention_mask`) become call defaults for *both* halves. That last rule is why
wav2vec2-base-960h's processor never returns an attention mask unless asked explicitly.
"""

from __future__ import annotations

from typing import Any

from wav2vec2_beam.models import hub
from wav2vec2_beam.models.feature_extraction import BatchFeature, Wav2Vec2FeatureExtractor
from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer, Wav2Vec2CTCTokenizerOutput

_AUDIO_KWARGS = frozenset(
    {
        "padding",
        "max_length",
        "truncation",
        "pad_to_multiple_of",
        "return_attention_mask",
        "return_tensors",
        "sampling_rate",
    }
)
_TEXT_KWARGS = frozenset(
    {
        "padding",
        "max_length",
        "truncation",
        "pad_to_multiple_of",
        "padding_side",
        "return_attention_mask",
        "return_tensors",
    }
)


class Wav2Vec2Processor:
    """Feature extractor for audio, tokenizer for text and for decoding model predictions."""

    def __init__(
        self, feature_extractor: Wav2Vec2FeatureExtractor, tokenizer: Wav2Vec2CTCTokenizer
    ) -> None:
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls, path: str, revision: str | None = None, **overrides: Any
    ) -> Wav2Vec2Processor:
        """Load both halves from one folder or URL; overrides go to the tokenizer.

        (Overrides such as `do_lower_case` only make sense for the tokenizer; build the parts
        yourself to override feature extractor settings.) `path` may be a hub id.
        """
        path = hub.resolve(str(path), revision)
        return cls(
            Wav2Vec2FeatureExtractor.from_pretrained(path),
            Wav2Vec2CTCTokenizer.from_pretrained(path, **overrides),
        )

    def save_pretrained(self, folder: str) -> tuple[str, ...]:
        """Write both halves' files into `folder`; returns the paths written."""
        folder = str(folder)
        return (
            self.feature_extractor.save_pretrained(folder),
            *self.tokenizer.save_pretrained(folder),
        )

    @property
    def model_input_names(self) -> list[str]:
        return [*self.feature_extractor.model_input_names, "labels"]

    def _call_kwargs(
        self, allowed: frozenset[str], call_kwargs: dict[str, Any], modality_kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """Defaults from tokenizer_config.json, then call kwargs, then per-modality kwargs."""
        merged = {key: value for key, value in self.tokenizer.config.items() if key in allowed}
        if "padding_side" in allowed and "padding_side" in self.tokenizer.config:
            merged["padding_side"] = self.tokenizer.padding_side
        merged.update({key: value for key, value in call_kwargs.items() if key in allowed})
        merged.update(modality_kwargs)
        return merged

    def __call__(
        self,
        audio: Any = None,
        text: str | list[str] | None = None,
        sampling_rate: int | None = None,
        audio_kwargs: dict[str, Any] | None = None,
        text_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Featurize audio and/or tokenize text.

        Audio only -> the feature extractor's output; text only -> the tokenizer's; both -> the
        audio output plus `labels` (the text's input_ids). Shared kwargs (padding, max_length,
        return_tensors, ...) go to both halves; `audio_kwargs`/`text_kwargs` target one.
        """
        if audio is None and text is None:
            raise ValueError("You need to specify either an `audio` or `text` input to process.")
        unknown = set(kwargs) - _AUDIO_KWARGS - _TEXT_KWARGS
        if unknown:
            raise TypeError(f"Unexpected keyword arguments: {sorted(unknown)}")
        if sampling_rate is not None:
            kwargs["sampling_rate"] = sampling_rate

        inputs = encodings = None
        if audio is not None:
            inputs = self.feature_extractor(
                audio, **self._call_kwargs(_AUDIO_KWARGS, kwargs, audio_kwargs or {})
            )
        if text is not None:
            encodings = self.tokenizer(
                text, **self._call_kwargs(_TEXT_KWARGS, kwargs, text_kwargs or {})
            )
        if inputs is None:
            return encodings
        if encodings is not None:
            inputs["labels"] = encodings["input_ids"]
        return inputs

    def decode(self, *args: Any, **kwargs: Any) -> str | Wav2Vec2CTCTokenizerOutput:
        """The tokenizer's `decode` (greedy CTC)."""
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str] | Wav2Vec2CTCTokenizerOutput:
        """The tokenizer's `batch_decode` (greedy CTC, one text per row)."""
        return self.tokenizer.batch_decode(*args, **kwargs)

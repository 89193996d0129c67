"""Wav2Vec2 feature extractor: raw mono audio -> padded, normalized `input_values`.

Numpy only, so Beam workers that only decode audio need no TensorFlow. It reproduces the Hugging
Face `Wav2Vec2FeatureExtractor` numerically (the checkpoints were trained on its output), quirks
included; the quirks are called out where they happen because they change model outputs:

- normalization is per example, `(x - mean) / sqrt(var + 1e-7)` in float32;
- without an attention mask, padded examples are normalized *including* their padding, so the
  padding is no longer `padding_value` afterwards (this is what wav2vec2-base-960h was used with);
- with an attention mask the statistics use the first `sum(mask)` samples and everything after
  them is set to `padding_value` (with left padding that is the wrong end, as in the reference).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from wav2vec2_beam.models import _files, hub

logger = logging.getLogger(__name__)

FEATURE_EXTRACTOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"

# Added to the variance before the square root; the reference's value, kept for bit-level parity.
NORMALIZATION_EPSILON = 1e-7

_PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")


class BatchFeature(dict):
    """A dict that also exposes its keys as attributes (`out.input_values`), like transformers'.

    The pipeline and the tests read outputs both ways, so one plain dict subclass serves the
    feature extractor, the tokenizer and the processor.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def convert_to_tensors(value: Any, return_tensors: str | None, dtype: Any = None) -> Any:
    """Stack a batch (list of 1-D arrays or lists) into the requested container.

    None keeps the list; "np" stacks into one array (an object array of rows when lengths differ,
    as the reference does); "tf" builds a `tf.Tensor`, and needs equal lengths. TensorFlow is
    imported only here so numpy-only callers never load it.
    """
    if return_tensors is None:
        return value
    if return_tensors == "np":
        lengths = {len(row) for row in value} if isinstance(value, list) else set()
        if len(lengths) > 1:
            rows = np.empty(len(value), dtype=object)
            for index, row in enumerate(value):
                rows[index] = np.asarray(row, dtype=dtype)
            return rows
        return np.asarray(value, dtype=dtype)
    if return_tensors == "tf":
        lengths = {len(row) for row in value} if isinstance(value, list) else set()
        if len(lengths) > 1:
            raise ValueError(
                "Cannot build a tf.Tensor from sequences of different lengths "
                f"{sorted(lengths)}; pass padding=True (or 'max_length')."
            )
        import tensorflow as tf

        return tf.constant(np.asarray(value, dtype=dtype))
    raise ValueError(f"return_tensors must be None, 'np' or 'tf', not {return_tensors!r}")


def padding_strategy(padding: bool | str, max_length: int | None) -> str:
    """Normalize a `padding` argument to 'longest', 'max_length' or 'do_not_pad'."""
    if padding is True:
        strategy = "longest"
    elif padding is False or padding is None:
        strategy = "do_not_pad"
    elif isinstance(padding, str) and padding in _PADDING_STRATEGIES:
        strategy = padding
    else:
        raise ValueError(
            f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', not {padding!r}"
        )
    if strategy == "max_length" and max_length is None:
        raise ValueError("padding='max_length' needs max_length to be set.")
    return strategy


def round_up(length: int, multiple: int | None) -> int:
    """`length` rounded up to a multiple of `multiple` (unchanged when `multiple` is None)."""
    if multiple is None or length % multiple == 0:
        return length
    return (length // multiple + 1) * multiple


def _to_numpy(value: Any) -> np.ndarray:
    """A numpy view of a list, array or tf.Tensor, without importing TensorFlow."""
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    return np.asarray(value)


class Wav2Vec2FeatureExtractor:
    """Turns raw 1-D waveforms into the `input_values` (and `attention_mask`) Wav2Vec2 expects.

    Args mirror `preprocessor_config.json`: `return_attention_mask` is the checkpoint's choice
    (False for models with group-norm feature extractors such as wav2vec2-base-960h, which were
    trained without a mask, True for layer-norm ones such as the lv60 models).
    """

    model_input_names = ("input_values", "attention_mask")

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16000,
        padding_value: float = 0.0,
        return_attention_mask: bool = False,
        do_normalize: bool = True,
        padding_side: str = "right",
        **extra: Any,
    ) -> None:
        if feature_size != 1:
            raise ValueError(f"Only mono audio (feature_size=1) is supported, got {feature_size}.")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', not {padding_side!r}")
        self.feature_size = feature_size
        self.sampling_rate = sampling_rate
        self.padding_value = padding_value
        self.return_attention_mask = return_attention_mask
        self.do_normalize = do_normalize
        self.padding_side = padding_side
        # Keys we do not use (feature_extractor_type, processor_class, ...) are kept so that
        # save_pretrained writes back what it read.
        extra.pop("feature_extractor_type", None)
        self.extra = extra
        self._warned_missing_rate = False

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_dict(cls, config: dict[str, Any], **overrides: Any) -> Wav2Vec2FeatureExtractor:
        """Build from a parsed `preprocessor_config.json`, with keyword overrides on top."""
        return cls(**{**config, **overrides})

    @classmethod
    def from_pretrained(
        cls, path: str, revision: str | None = None, **overrides: Any
    ) -> Wav2Vec2FeatureExtractor:
        """Load from a folder or URL holding `preprocessor_config.json`.

        A `processor_config.json` with a "feature_extractor" entry (what transformers 5 writes when
        saving a whole processor) takes precedence, as in the reference. `path` may be a hub id.
        """
        path = hub.resolve(str(path), revision)
        config = None
        if _files.exists(path, PROCESSOR_FILE):
            processor_config = _files.read_json(path, PROCESSOR_FILE)
            config = processor_config.get(
                "feature_extractor", processor_config.get("audio_processor")
            )
        if config is None:
            config = _files.read_json(path, FEATURE_EXTRACTOR_FILE)
        return cls.from_dict(config, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as `preprocessor_config.json` holds it."""
        return {
            **self.extra,
            "do_normalize": self.do_normalize,
            "feature_extractor_type": type(self).__name__,
            "feature_size": self.feature_size,
            "padding_side": self.padding_side,
            "padding_value": self.padding_value,
            "return_attention_mask": self.return_attention_mask,
            "sampling_rate": self.sampling_rate,
        }

    def save_pretrained(self, folder: str) -> str:
        """Write `preprocessor_config.json` into `folder` (local or URL); returns its path."""
        return _files.write_json(str(folder), FEATURE_EXTRACTOR_FILE, self.to_dict())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"

    # ------------------------------------------------------------------ processing

    @staticmethod
    def zero_mean_unit_var_norm(
        input_values: list[np.ndarray],
        attention_mask: list[np.ndarray] | None,
        padding_value: float = 0.0,
    ) -> list[np.ndarray]:
        """Normalize each example to zero mean and unit variance, exactly as the reference.

        With a mask, the statistics come from the first `sum(mask)` samples and the samples after
        them are overwritten with `padding_value`; without one, the whole (possibly padded) array
        is used. The arithmetic stays in the arrays' float32 so results match bit for bit.
        """
        normalized = []
        if attention_mask is None:
            for values in input_values:
                normalized.append(
                    (values - values.mean()) / np.sqrt(values.var() + NORMALIZATION_EPSILON)
                )
            return normalized
        for values, mask in zip(input_values, attention_mask, strict=True):
            length = int(np.asarray(mask, dtype=np.int32).sum())
            valid = values[:length]
            result = (values - valid.mean()) / np.sqrt(valid.var() + NORMALIZATION_EPSILON)
            result[length:] = padding_value
            normalized.append(result)
        return normalized

    def _as_batch(self, raw_speech: Any) -> list[np.ndarray]:
        """A list of 1-D float32 arrays from one waveform or a batch of them.

        Integer and float64 input are converted to float32 first, so all arithmetic is float32
        (the reference does the same for float64 and for Python lists; it would keep integers
        and compute in float64, which differs only in the last float32 bits).
        """
        if isinstance(raw_speech, np.ndarray) or hasattr(raw_speech, "numpy"):
            array = _to_numpy(raw_speech)
            if array.ndim > 2:
                raise ValueError(f"Only mono-channel audio is supported, got shape {array.shape}.")
            examples: Sequence[Any] = list(array) if array.ndim == 2 else [array]
        elif isinstance(raw_speech, (list, tuple)):
            if not raw_speech:
                raise ValueError("raw_speech is an empty list; pass at least one waveform.")
            first = raw_speech[0]
            is_batch = isinstance(first, (np.ndarray, list, tuple)) or hasattr(first, "numpy")
            examples = raw_speech if is_batch else [raw_speech]
        else:
            raise TypeError(
                f"raw_speech must be an array, a tf.Tensor or a list, not {type(raw_speech)}"
            )
        batch = []
        for example in examples:
            array = _to_numpy(example)
            if array.ndim != 1:
                raise ValueError(
                    f"Only mono-channel audio is supported: each waveform must be 1-D, got shape "
                    f"{array.shape}."
                )
            batch.append(array.astype(np.float32, copy=True))
        return batch

    def __call__(
        self,
        raw_speech: Any,
        padding: bool | str = False,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        sampling_rate: int | None = None,
    ) -> BatchFeature:
        """Pad (optionally truncate) and normalize one waveform or a batch of them.

        Returns a BatchFeature with `input_values` (a list of float32 arrays, or a stacked array/
        tensor with return_tensors="np"/"tf") and, when requested or when the checkpoint asks for
        it, `attention_mask` (int32, 1 for real samples). The output is always batched.
        """
        if sampling_rate is not None:
            if sampling_rate != self.sampling_rate:
                raise ValueError(
                    f"The model corresponding to this feature extractor was trained using a "
                    f"sampling rate of {self.sampling_rate}. Please make sure that the provided "
                    f"`raw_speech` input was sampled with {self.sampling_rate} and not "
                    f"{sampling_rate}."
                )
        elif not self._warned_missing_rate:
            # Once per extractor: the reference warns on every call, which floods worker logs.
            logger.warning(
                "Pass sampling_rate to %s(); without it a wrongly resampled input goes unnoticed.",
                type(self).__name__,
            )
            self._warned_missing_rate = True

        strategy = padding_strategy(padding, max_length)
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        batch = self._as_batch(raw_speech)

        if truncation:
            if max_length is None:
                raise ValueError("truncation=True needs max_length to be set.")
            limit = round_up(max_length, pad_to_multiple_of)
            batch = [values[:limit] for values in batch]

        target = None
        if strategy == "longest":
            target = max(len(values) for values in batch)
        elif strategy == "max_length":
            target = max_length
        if target is not None:
            target = round_up(target, pad_to_multiple_of)

        input_values = []
        attention_mask = []
        for values in batch:
            mask = np.ones(len(values), dtype=np.int32)
            if target is not None and len(values) < target:
                missing = target - len(values)
                widths = (0, missing) if self.padding_side == "right" else (missing, 0)
                values = np.pad(values, widths, constant_values=self.padding_value)
                mask = np.pad(mask, widths)
            input_values.append(values.astype(np.float32, copy=False))
            attention_mask.append(mask)

        if self.do_normalize:
            # The mask steers normalization only when padding was asked for (reference rule).
            norm_mask = attention_mask if return_attention_mask and target is not None else None
            if norm_mask is not None and len({len(mask) for mask in norm_mask}) > 1:
                # The reference fails here too (it stacks the masks); say why instead.
                raise ValueError(
                    f"Some inputs are longer than max_length={max_length} and the attention mask "
                    "cannot be stacked for normalization; pass truncation=True or a larger "
                    "max_length."
                )
            input_values = self.zero_mean_unit_var_norm(
                input_values, norm_mask, padding_value=self.padding_value
            )

        output = BatchFeature(input_values=convert_to_tensors(input_values, return_tensors))
        if return_attention_mask:
            output["attention_mask"] = convert_to_tensors(attention_mask, return_tensors)
        return output

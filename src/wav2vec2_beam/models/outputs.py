"""What a model call returns, shared by the TensorFlow and the Flax classes.

The classes behave as transformers' output classes do, because user code indexes them in all the
ways transformers allows: `output.logits`, `output["logits"]`, `output[0]` (the first field that
is set: the logits of a CTC call without labels), `len(output)`, `output.to_tuple()`, and
`**output` or `dict(output)`. An output is an ordered mapping of its fields that are set, so
TensorFlow's `tf.nest` (Keras' functional API) and JAX's pytrees (once `models.modeling_flax_wav2vec2`
registers them) carry it through `keras.Model`, `jax.jit` and `jax.grad` as they carry a dict.

Its own module, free of any backend, so that the Flax classes work where TensorFlow is not
installed and the TF classes where JAX is not.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any


class ModelOutput(OrderedDict):
    """Base of the output dataclasses: their fields that are not None, in field order.

    Built either with keyword arguments (the fields) or, as `tf.nest` and pytrees rebuild it,
    with one iterable of (name, value) pairs.
    """

    def __post_init__(self) -> None:
        names = [f.name for f in fields(self)]
        first = getattr(self, names[0])
        others_unset = all(getattr(self, name) is None for name in names[1:])
        if others_unset and _is_pairs(first):
            setattr(self, names[0], None)
            for key, value in first:
                setattr(self, key, value)
            return
        for name in names:
            value = getattr(self, name)
            if value is not None:
                super().__setitem__(name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dataclass_fields__:
            if value is None:
                super().pop(name, None)
            else:
                self._store(name, value)
        super().__setattr__(name, value)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def _store(self, name: str, value: Any) -> None:
        """Put `name` in the mapping at its field position (fields set late keep the order)."""
        super().__setitem__(name, value)
        order = [f.name for f in fields(self) if f.name in self]
        for key in order:
            self.move_to_end(key)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(key)
        return self.to_tuple()[key]

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"fields of {type(self).__name__} are set to None, not deleted")

    def to_tuple(self) -> tuple[Any, ...]:
        """The values that are set, in field order (what `return_dict=False` returns)."""
        return tuple(self.values())

    def __reduce__(self) -> Any:
        return type(self), (), None, None, iter(self.items())


def _is_pairs(value: Any) -> bool:
    """Whether `value` is the iterable of (name, value) pairs a mapping is rebuilt from."""
    if value is None or isinstance(value, str | bytes | dict) or hasattr(value, "shape"):
        return False
    return isinstance(value, Iterable) and not isinstance(value, tuple)


@dataclass(eq=False)
class Wav2Vec2BaseModelOutput(ModelOutput):
    """The bare encoder's outputs (transformers' Wav2Vec2BaseModelOutput)."""

    last_hidden_state: Any = None
    extract_features: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass(eq=False)
class CausalLMOutput(ModelOutput):
    """A CTC head's outputs: `loss` only with labels (transformers' CausalLMOutput)."""

    loss: Any = None
    logits: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass(eq=False)
class SequenceClassifierOutput(ModelOutput):
    """A sequence classifier's outputs (transformers' SequenceClassifierOutput)."""

    loss: Any = None
    logits: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None


@dataclass(eq=False)
class Wav2Vec2ForPreTrainingOutput(ModelOutput):
    """The pretraining head's outputs (transformers' Wav2Vec2ForPreTrainingOutput), and the
    codevector each frame was quantized to (`codevector_ids`, (batch, frames, groups)): the
    discrete units that speech-to-unit models are trained on."""

    loss: Any = None
    projected_states: Any = None
    projected_quantized_states: Any = None
    codevector_perplexity: Any = None
    hidden_states: tuple[Any, ...] | None = None
    attentions: tuple[Any, ...] | None = None
    contrastive_loss: Any = None
    diversity_loss: Any = None
    codevector_ids: Any = None


#: Every output class, for backends that register them (JAX pytrees).
OUTPUT_CLASSES: tuple[type[ModelOutput], ...] = (
    Wav2Vec2BaseModelOutput,
    CausalLMOutput,
    SequenceClassifierOutput,
    Wav2Vec2ForPreTrainingOutput,
)

"""A model's named parameters and how a PyTorch checkpoint's tensors map onto them.

Its own module so that the model (`modeling_wav2vec2`) uses the weight loader (`weights`) and
the loader needs nothing from the model but this: `NamedParameters` is what it loads into.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

#: PyTorch -> TensorFlow layout of a parameter: "same", "linear" ((out, in) -> (in, out)) or
#: "conv" ((out, in, kernel) -> (kernel, in, out)).
Layout = str


@dataclass
class Parameter:
    """A model variable (a `tf.Variable`) and how a PyTorch tensor of its name maps onto it."""

    variable: Any
    layout: Layout
    #: Draws the variable's initial value anew (transformers' init for the layer), for a head
    #: that a checkpoint of another architecture does not have; None where the backend
    #: initializes missing parameters itself (Flax: `init_weights`).
    initialize: Callable[[], None] | None = None

    @property
    def torch_shape(self) -> tuple[int, ...]:
        shape = tuple(self.variable.shape)
        if self.layout == "linear":
            return shape[::-1]
        if self.layout == "conv":
            return (shape[2], shape[1], shape[0])
        return shape


def torch_to_tf(array: np.ndarray, layout: Layout) -> np.ndarray:
    """Re-lay a PyTorch-layout array for a TensorFlow variable (see `Layout`); its own inverse."""
    if layout == "linear":
        return array.T
    if layout == "conv":
        return np.transpose(array, (2, 1, 0))
    return array


class NamedParameters(Protocol):
    """What a checkpoint loads into and saves from: a model with Hugging Face parameter names."""

    #: The head's name in config.json's `architectures`, e.g. "Wav2Vec2ForCTC".
    architecture: str
    #: "wav2vec2." for heads whose encoder sits under that prefix, "" for the bare encoder.
    base_prefix: str
    config: Any

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]: ...

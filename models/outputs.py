"""What a model call returns, shared by the TensorFlow and the Flax models.

Its own module, free of any backend, so that the Flax classes work where TensorFlow is not
installed (the GPU machines and TPU workers that run JAX).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class Wav2Vec2Output:
    """What a model call returns; fields a head does not produce are None.

    Attribute access as in transformers' output classes, plus `output["logits"]`. The arrays are
    the backend's own (`tf.Tensor` or `jax.Array`).
    """

    last_hidden_state: Any = None
    extract_features: Any = None
    hidden_states: tuple[Any, ...] | None = None
    logits: Any = None
    loss: Any = None
    projected_states: Any = None
    projected_quantized_states: Any = None
    codevector_perplexity: Any = None
    codevector_ids: Any = None
    #: (B, T) 1.0 on each item's valid frames, when an attention mask was given.
    frame_mask: Any = None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

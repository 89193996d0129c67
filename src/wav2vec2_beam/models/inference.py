"""Batched inference with the TensorFlow model: a tf.function per bucket (see `models.batching`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from wav2vec2_beam.models.batching import (
    PRECISIONS,
    BatchOutputs,
    batch_outputs,
    bucket_for,
    bucket_ladder,
    check_lengths,
    checked_hidden_layers,
    pad_batch,
    padded_batch_size,
)
from wav2vec2_beam.models.modeling_wav2vec2 import TFWav2Vec2PreTrainedModel


class Wav2Vec2Runner:
    """Runs a loaded model over lists of normalized 16 kHz arrays, compiled per bucket.

    `hidden_layers` are indices into the reference's `hidden_states` (0 is the encoder input,
    -1 the last); empty means none are returned. `precision` "bfloat16"/"float16" computes the
    matrix products in that type, from copies of the weights in it (`keep_weights_in`); the
    first convolution layer, the norms and the activations compute in float32, and attention
    scores are rounded to the compute type before softmax, as PyTorch's autocast does.
    """

    def __init__(
        self,
        model: TFWav2Vec2PreTrainedModel,
        *,
        hidden_layers: Sequence[int] = (),
        jit_compile: bool = False,
        precision: str = "float32",
        ladder: Sequence[int] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.model = model
        self.config = model.config
        self.hidden_layers = checked_hidden_layers(self.config, hidden_layers)
        self.ladder = list(ladder) if ladder is not None else bucket_ladder(60 * 16_000)
        self.compute_dtype = tf.dtypes.as_dtype(precision)
        if self.compute_dtype != tf.float32:
            model.keep_weights_in(self.compute_dtype)
        # One trace for every shape; XLA still compiles once per concrete (batch, length) bucket.
        signature = [
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None, None], tf.int32),
        ]
        self._forward = tf.function(
            self._run, jit_compile=jit_compile, input_signature=signature, autograph=False
        )

    def _run(self, values: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
        values = tf.cast(values, self.compute_dtype)
        output = self.model.forward(values, mask, None, False)
        result: dict[str, tf.Tensor] = {}
        if output.logits is not None:
            result["logits"] = tf.cast(output.logits, tf.float32)
        if output.codevector_ids is not None:
            result["codevector_ids"] = output.codevector_ids
        for position, layer in enumerate(self.hidden_layers):
            result[f"hidden_{position}"] = tf.cast(output.hidden_states[layer], tf.float32)
        return result

    def length_for(self, longest: int) -> int:
        """The padded length of a batch whose longest item has `longest` samples (past the ladder
        its own length: a tf.function runs any shape without retracing)."""
        return bucket_for(longest, self.ladder)

    def rows_for(self, count: int) -> int:
        """Rows a batch of `count` items is padded to (a power of two)."""
        return padded_batch_size(count)

    def run(self, arrays: Sequence[np.ndarray]) -> BatchOutputs:
        """Outputs for each array (normalized 16 kHz samples, each >= the receptive field)."""
        check_lengths(self.config, arrays)
        length = self.length_for(max(len(a) for a in arrays))
        values, mask = pad_batch(arrays, length, self.rows_for(len(arrays)))
        tensors = {k: v.numpy() for k, v in self._forward(values, mask).items()}
        return batch_outputs(
            tensors, self.config, [len(a) for a in arrays], len(self.hidden_layers)
        )

"""Batched inference with the Flax model: one XLA program per bucket, over every local device.

The same buckets and padding as the TensorFlow runner (`models.batching`). `jax.jit` compiles once
per (rows, bucket length) shape, so a run compiles at most one program per bucket and power-of-two
row count. With several accelerators (a multi-GPU worker, a TPU host) the batch is split by rows
over a one-axis device mesh and the parameters are replicated: each device runs its share of the
rows, and rows are padded to a multiple of the device count.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

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
from wav2vec2_beam.models.modeling_flax_wav2vec2 import FlaxWav2Vec2PreTrainedModel


def _outputs(
    module: Any, hidden_layers: tuple[int, ...], params: Any, values: jax.Array, mask: jax.Array
) -> dict[str, jax.Array]:
    """The requested outputs of one padded batch, in float32 (one XLA program per shape)."""
    output = module.apply({"params": params}, values, mask)
    result: dict[str, jax.Array] = {}
    if "logits" in output:
        result["logits"] = output["logits"].astype(jnp.float32)
    if "codevector_ids" in output:
        result["codevector_ids"] = output["codevector_ids"]
    for position, layer in enumerate(hidden_layers):
        result[f"hidden_{position}"] = output["hidden_states"][layer].astype(jnp.float32)
    return result


def keep_compiled_programs(folder: str) -> None:
    """Keep every compiled XLA program in `folder` (JAX's persistent compilation cache), so that
    a later process or run with the same model, shapes and devices loads it instead of compiling.

    A run compiles one program per (rows, bucket) shape it meets, in every worker process, each
    time a worker starts. JAX caches only programs that took a second or more to compile by
    default; a bucket's program of a small model compiles faster than that and would be compiled
    again, so every program is kept (they are small: tens of KB each). `folder` may be gs://
    (shared by a job's workers and later jobs) or local.
    """
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


class FlaxWav2Vec2Runner:
    """Runs a loaded Flax model over lists of normalized 16 kHz arrays, compiled per bucket.

    `hidden_layers` are indices into the reference's `hidden_states` (0 is the encoder input,
    -1 the last). `precision` "bfloat16"/"float16" computes the matrix products and convolutions
    in that type (parameters stay float32; norms and softmax run in float32); outputs are float32.
    """

    def __init__(
        self,
        model: FlaxWav2Vec2PreTrainedModel,
        *,
        hidden_layers: Sequence[int] = (),
        precision: str = "float32",
        ladder: Sequence[int] | None = None,
        devices: Sequence[jax.Device] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.config = model.config
        self.hidden_layers = checked_hidden_layers(self.config, hidden_layers)
        self.ladder = list(ladder) if ladder is not None else bucket_ladder(60 * 16_000)
        self._module = model.module_class(config=model.config, dtype=jnp.dtype(precision))
        self.devices = list(devices) if devices is not None else jax.local_devices()
        mesh = Mesh(np.array(self.devices), ("rows",))
        self._rows = NamedSharding(mesh, PartitionSpec("rows"))
        self._params = jax.device_put(model.params, NamedSharding(mesh, PartitionSpec()))
        # A function of the module, not a bound method, which would keep the runner alive in a
        # reference cycle.
        self._forward = jax.jit(partial(_outputs, self._module, tuple(self.hidden_layers)))

    def length_for(self, longest: int) -> int:
        """The padded length of a batch whose longest item has `longest` samples: its bucket, and
        past the ladder a further rung of the same 1/16 growth, so that unchunked long files
        share programs rather than compile one each."""
        length = bucket_for(longest, self.ladder)
        if length == longest and length > self.ladder[-1]:
            rung, frame = self.ladder[-1], self.config.inputs_to_logits_ratio
            while rung < longest:
                rung = -(-int(rung * 1.0625) // frame) * frame
            length = rung
        return length

    def rows_for(self, count: int) -> int:
        """Rows a batch of `count` items is padded to: a power of two, and a multiple of the
        device count so that every device gets the same share."""
        rows = padded_batch_size(count)
        devices = len(self.devices)
        return -(-rows // devices) * devices

    def run(self, arrays: Sequence[np.ndarray]) -> BatchOutputs:
        """Outputs for each array (normalized 16 kHz samples, each >= the receptive field)."""
        check_lengths(self.config, arrays)
        length = self.length_for(max(len(a) for a in arrays))
        values, mask = pad_batch(arrays, length, self.rows_for(len(arrays)))
        outputs = self._forward(
            self._params, jax.device_put(values, self._rows), jax.device_put(mask, self._rows)
        )
        tensors = {name: np.asarray(array) for name, array in outputs.items()}
        return batch_outputs(
            tensors, self.config, [len(a) for a in arrays], len(self.hidden_layers)
        )

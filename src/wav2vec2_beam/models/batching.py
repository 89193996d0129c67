"""Batching for inference over many utterances: length buckets, padding, and per-item outputs.

A corpus has utterances of every length. Compiling (XLA) or tracing (tf.function) once per exact
length would compile thousands of programs, so each batch is padded to one of a few bucket
lengths (a geometric ladder, aligned to the model's frame size) and its batch dimension to a
power of two. Padding is exact: both models mask every padded sample, so an utterance gets the
same outputs in any bucket and any batch.

Backend-free (numpy only): the TensorFlow runner (`models.inference`), the JAX runner
(`models.inference_flax`) and the pipeline's batching stage share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wav2vec2_beam.models.configuration import Wav2Vec2Config

PRECISIONS = ("float32", "bfloat16", "float16")


def bucket_ladder(
    max_samples: int, *, smallest: int = 16_000, growth: float = 1.0625, multiple: int = 320
) -> list[int]:
    """Lengths in samples from `smallest` up to at least `max_samples`, each `growth` x the last.

    With growth 1.0625 a batch pads at most 6.25% of its longest item, and 2 s to 35 s needs 48
    buckets. (1.125 halved the buckets but measured 5.5% padding waste on a LibriSpeech-like
    corpus, against 2.8% now, at the same pipeline speed; with XLA, each bucket used is one more
    compile.)
    """
    ladder = []
    length = float(smallest)
    while True:
        aligned = int(math.ceil(length / multiple) * multiple)
        if not ladder or aligned > ladder[-1]:
            ladder.append(aligned)
        if aligned >= max_samples:
            return ladder
        length *= growth


def bucket_for(num_samples: int, ladder: Sequence[int]) -> int:
    """The smallest bucket length that holds `num_samples` (or the exact length past the ladder)."""
    for length in ladder:
        if length >= num_samples:
            return length
    return num_samples


def padded_batch_size(size: int) -> int:
    """The next power of two, so that a run compiles for at most log2(batch_size) batch sizes."""
    return 1 << max(size - 1, 0).bit_length()


def pad_batch(
    arrays: Sequence[np.ndarray], length: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stack 1-D arrays into (batch_size, length) zero-padded values and a 0/1 attention mask."""
    values = np.zeros((batch_size, length), np.float32)
    mask = np.zeros((batch_size, length), np.int32)
    for row, array in enumerate(arrays):
        values[row, : len(array)] = array
        mask[row, : len(array)] = 1
    return values, mask


@dataclass
class BatchOutputs:
    """Per-item numpy outputs of one batch, trimmed to each item's valid frames."""

    num_frames: list[int]
    logits: list[np.ndarray] | None = None
    #: hidden_states[layer_index][item] for each requested layer, in the order requested.
    hidden_states: list[list[np.ndarray]] | None = None
    #: Sequence-classification logits, one (num_labels,) vector per item.
    class_logits: list[np.ndarray] | None = None
    codevector_ids: list[np.ndarray] | None = None


def checked_hidden_layers(config: Wav2Vec2Config, hidden_layers: Sequence[int]) -> list[int]:
    """`hidden_layers` (indices into the reference's hidden_states, -1 the last) as non-negative
    indices; ValueError for one the model does not have."""
    count = config.num_hidden_layers + 1
    for requested in hidden_layers:
        if not -count <= requested < count:
            raise ValueError(f"hidden layer {requested} out of range: the model has {count}")
    return [layer % count for layer in hidden_layers]


def batch_outputs(
    tensors: dict[str, np.ndarray],
    config: Wav2Vec2Config,
    lengths: Sequence[int],
    hidden_layer_count: int,
) -> BatchOutputs:
    """Split a padded batch's outputs ("logits", "codevector_ids", "hidden_<position>") into
    each item's, trimmed to its valid frames (`lengths` are the items' samples)."""
    frames = [config.output_frames(n) for n in lengths]
    items = range(len(lengths))
    out = BatchOutputs(num_frames=frames)
    if "logits" in tensors and tensors["logits"].ndim == 3:
        out.logits = [tensors["logits"][i, : frames[i]] for i in items]
    elif "logits" in tensors:
        out.class_logits = [tensors["logits"][i] for i in items]
    if "codevector_ids" in tensors:
        out.codevector_ids = [tensors["codevector_ids"][i, : frames[i]] for i in items]
    if hidden_layer_count:
        out.hidden_states = [
            [tensors[f"hidden_{p}"][i, : frames[i]] for i in items]
            for p in range(hidden_layer_count)
        ]
    return out


def check_model_inputs(
    config: Wav2Vec2Config,
    values_shape: tuple[int | None, ...],
    mask_shape: tuple[int | None, ...] | None = None,
    unmasked_lengths: Sequence[int] | None = None,
) -> None:
    """ValueError, in one line, for inputs the convolution stack cannot take: both backends'
    model calls check (batch, samples) values, their attention mask's shape, and each item's
    unmasked samples against the receptive field (unknown sizes, None, are not checked)."""
    if len(values_shape) != 2:
        raise ValueError(f"input_values must be (batch, samples); got shape {values_shape}")
    needed = config.receptive_field
    if values_shape[1] is not None and values_shape[1] < needed:
        raise ValueError(
            f"input has {values_shape[1]} samples; the model needs at least {needed} "
            f"(one frame of its convolution stack, {needed / 16000 * 1000:.0f} ms at 16 kHz)"
        )
    if mask_shape is not None and mask_shape != values_shape:
        raise ValueError(
            f"attention_mask shape {mask_shape} differs from input_values shape {values_shape}"
        )
    short = [i for i, n in enumerate(unmasked_lengths or ()) if n < needed]
    if short:
        raise ValueError(
            f"items {short} have {[int(unmasked_lengths[i]) for i in short]} unmasked samples; "
            f"the model needs at least {needed} per item"
        )


def check_lengths(config: Wav2Vec2Config, arrays: Sequence[np.ndarray]) -> None:
    """ValueError naming the first item shorter than the model's receptive field."""
    needed = config.receptive_field
    for index, array in enumerate(arrays):
        if len(array) < needed:
            raise ValueError(f"item {index} has {len(array)} samples; the model needs {needed}")

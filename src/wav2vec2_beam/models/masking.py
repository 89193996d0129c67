"""SpecAugment-style time masks, as the reference's `_compute_mask_indices` draws them.

Pretraining (and its `mask_time_indices` input) needs random spans of masked frames. The draw
uses numpy's legacy global generator in the same order as the reference (one uniform for the
probabilistic rounding, then one `choice` per item), so that with the same `np.random.seed` both
give the same mask; pass `random_state` to keep the draw away from global state.
"""

from __future__ import annotations

import numpy as np


def compute_mask_indices(
    shape: tuple[int, int],
    mask_prob: float,
    mask_length: int,
    attention_mask: np.ndarray | None = None,
    min_masks: int = 0,
    random_state: np.random.RandomState | None = None,
) -> np.ndarray:
    """A (batch, frames) boolean mask of spans of `mask_length` frames.

    About `mask_prob * length / mask_length` spans per item (at least `min_masks`), start
    positions drawn without replacement from the item's valid frames; spans may overlap, so
    `mask_prob` is an upper bound on the masked fraction.
    """
    rng = random_state if random_state is not None else np.random  # the global legacy generator
    batch_size, sequence_length = shape
    if mask_length < 1:
        raise ValueError("mask_length must be at least 1")
    if mask_length > sequence_length:
        raise ValueError(
            f"mask_length ({mask_length}) must not exceed the sequence length ({sequence_length})"
        )
    rounding = rng.rand(1).item()

    def spans_for(length: int) -> int:
        count = max(int(mask_prob * length / mask_length + rounding), min_masks)
        if count * mask_length > sequence_length:
            count = sequence_length // mask_length
        return min(count, max(length - (mask_length - 1), 0))

    lengths = (
        np.asarray(attention_mask).sum(-1).tolist()
        if attention_mask is not None
        else [sequence_length] * batch_size
    )
    mask = np.zeros((batch_size, sequence_length), dtype=bool)
    most = spans_for(sequence_length)
    if most == 0:
        return mask
    for row, length in enumerate(lengths):
        count = spans_for(int(length))
        starts = rng.choice(np.arange(int(length) - (mask_length - 1)), count, replace=False)
        # The reference pads every item to `most` starts by repeating one (or the last frame);
        # repeated starts mask nothing new, so only the drawn spans need marking.
        if count == 0:
            starts = np.array([sequence_length - 1])
        for start in starts:
            mask[row, start : min(start + mask_length, sequence_length)] = True
    return mask

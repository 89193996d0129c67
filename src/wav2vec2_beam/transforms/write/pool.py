"""Utterance-level feature vectors: the mean over an item's frames of each chosen hidden layer.

`--pool mean` writes the table `pooled_hidden_states/`, one row per (id, layer) for the layers of
`--hidden_layers`: `id`, `layer`, `num_frames` (the frames averaged) and `mean_hidden_state`
(fixed_size_list<float32 or float16, hidden_size>, `--feature_dtype`). It needs no
`hidden_states` in `--outputs`: the frame-level table is written only when asked for, so a run
can keep one small vector per utterance (1.5 KB for wav2vec2-base in float16) instead of 50 per
second.

The mean is taken over the stitched frames, in float64, from the model's float32 outputs, and
only then cast to the table's dtype, so float16 tables lose nothing to accumulated rounding. It
is the plain mean over the item's valid frames (padding never enters them: the runner trims each
item to its own frames).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from wav2vec2_beam.transforms.records import ItemResult, hidden_state_key
from wav2vec2_beam.transforms.write.tables import FEATURE_DTYPES, TableSpec

#: `--pool` values.
POOLINGS = ("none", "mean")

TABLE = "pooled_hidden_states"


def pooled_schema(dtype: str, hidden_size: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("layer", pa.int32(), nullable=False),
            pa.field("num_frames", pa.int32(), nullable=False),
            pa.field(
                "mean_hidden_state", pa.list_(FEATURE_DTYPES[dtype], hidden_size), nullable=False
            ),
        ]
    )


def mean_over_frames(frames: np.ndarray, dtype: str) -> np.ndarray:
    """The mean of a (frames x hidden) matrix over its frames, accumulated in float64."""
    return frames.mean(axis=0, dtype=np.float64).astype(dtype)


def pooled_table(dtype: str, hidden_size: int, layers: Sequence[int]) -> TableSpec:
    """The `pooled_hidden_states` table of `ItemResult`s holding `layers`' hidden states."""
    schema = pooled_schema(dtype, hidden_size)

    def to_table(items: list[ItemResult]) -> pa.Table:
        rows = [(item, layer) for item in items for layer in layers]
        vectors = [
            mean_over_frames(item.frames[hidden_state_key(layer)], dtype) for item, layer in rows
        ]
        flat = np.concatenate(vectors) if vectors else np.zeros(0, dtype)
        return pa.Table.from_arrays(
            [
                pa.array([item.id for item, _ in rows], pa.string()),
                pa.array([layer for _, layer in rows], pa.int32()),
                pa.array([item.num_frames for item, _ in rows], pa.int32()),
                pa.FixedSizeListArray.from_arrays(
                    pa.array(flat, FEATURE_DTYPES[dtype]), hidden_size
                ),
            ],
            schema=schema,
        )

    return TableSpec(TABLE, schema, to_table, lambda item: 64 + 4 * hidden_size * len(layers))

"""The records that flow between the pipeline's stages.

Each stage of the data's path (read, decode, chunk, batch, infer, stitch, decode CTC, write) takes
and gives these small dataclasses, so that a stage can be tested alone and the wiring in pipeline/
stays a list of named transforms. Every input item ends either in an output row or in exactly one
`ErrorRecord`; that accounting is why errors carry the item's id and the stage that failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The sampling rate every model input is resampled to.
TARGET_SAMPLE_RATE = 16_000

#: Tag of the side output that carries `ErrorRecord`s in every DoFn that can fail on an item.
ERRORS_TAG = "errors"


@dataclass(frozen=True)
class ErrorRecord:
    """One input item that could not be processed, and why (a row of the `errors/` table)."""

    id: str
    source: str
    stage: str
    error: str


@dataclass
class AudioChunk:
    """A window of one item's audio, mono float32 at 16 kHz, not yet normalized.

    Windows follow Hugging Face's ASR-pipeline chunking: `stride_left`/`stride_right` samples at the
    window's edges overlap the neighbours and their logits are dropped when the item is stitched
    back together. An item that needs no chunking is one window with zero strides.
    """

    id: str
    source: str
    index: int
    is_last: bool
    samples: np.ndarray
    stride_left: int
    stride_right: int
    sample_rate: int
    #: Total 16 kHz samples of the whole item; set on the last window only (known once decoded).
    total_samples: int | None = None
    #: Extra per-item fields (reference text, metadata) carried to the output rows.
    metadata: dict[str, Any] = field(default_factory=dict)

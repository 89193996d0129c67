"""summary.json's `padding_waste`: the share of the samples the model computed that were padding.

Hand-computed case: a 1 s and a 0.5 s file, unchunked. Both fall in the ladder's smallest bucket
(1 s, 16,000 samples), so whether they share a batch or not, the model computes 2 x 16,000
samples for 24,000 samples of audio: a waste of 1 - 24,000 / 32,000 = 0.25. Two 1 s files waste
nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from wav2vec2_beam.pipeline.main import main

CHECKPOINT = Path(__file__).resolve().parent / "fixtures" / "checkpoints" / "base"


def waste(tmp_path: Path, seconds: list[float], batch_size: int) -> float:
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for index, length in enumerate(seconds):
        samples = 0.1 * rng.standard_normal(int(length * 16_000)).astype(np.float32)
        soundfile.write(audio / f"{index}.wav", samples, 16_000, subtype="FLOAT")
    output = tmp_path / "out"
    argv = [
        f"--input={audio}/*.wav",
        f"--model_dir={CHECKPOINT}",
        f"--output_dir={output}",
        "--chunk_length_s=0",
        f"--batch_size={batch_size}",
    ]
    assert main(argv) == 0
    return json.loads((output / "summary.json").read_text())["padding_waste"]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_half_empty_bucket_wastes_a_quarter(tmp_path: Path, batch_size: int) -> None:
    assert waste(tmp_path, [1.0, 0.5], batch_size) == pytest.approx(0.25)


def test_full_buckets_waste_nothing(tmp_path: Path) -> None:
    assert waste(tmp_path, [1.0, 1.0], 2) == 0.0

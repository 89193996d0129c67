"""The batched runner: buckets, batch padding and XLA give each item its unbatched outputs."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from models import TFWav2Vec2ForCTC, Wav2Vec2Runner
from models.inference import bucket_for, bucket_ladder, padded_batch_size

CHECKPOINTS = Path(__file__).parent / "fixtures" / "checkpoints"


def test_bucket_ladder_by_hand() -> None:
    ladder = bucket_ladder(30_000, smallest=16_000, growth=1.5, multiple=320)
    # 16000 -> 24000 -> 36000 (each rounded up to a multiple of 320)
    assert ladder == [16_000, 24_000, 36_160]
    assert bucket_for(100, ladder) == 16_000
    assert bucket_for(24_001, ladder) == 36_160
    assert bucket_for(50_000, ladder) == 50_000  # past the ladder: exact length


def test_default_ladder_pads_at_most_a_sixteenth() -> None:
    ladder = bucket_ladder(35 * 16_000)
    for previous, length in itertools.pairwise(ladder):
        assert length <= previous * 1.0625 + 320


def test_padded_batch_size_is_next_power_of_two() -> None:
    assert [padded_batch_size(n) for n in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]


@pytest.fixture(scope="module", params=["base", "lv60"])
def model(request: pytest.FixtureRequest) -> TFWav2Vec2ForCTC:
    return TFWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / request.param))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_runner_outputs_equal_single_calls(model: TFWav2Vec2ForCTC, jit_compile: bool) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=n).astype(np.float32) for n in (400, 5_000, 17_000)]
    runner = Wav2Vec2Runner(model, hidden_layers=[0, -1], jit_compile=jit_compile)
    out = runner.run(arrays)
    for i, array in enumerate(arrays):
        alone = model(array[None], output_hidden_states=True)
        expected = alone.logits[0].numpy()
        assert out.num_frames[i] == expected.shape[0]
        scale = np.abs(expected).max()
        assert np.abs(out.logits[i] - expected).max() <= 1e-4 * scale
        last = alone.hidden_states[-1][0].numpy()
        assert np.abs(out.hidden_states[1][i] - last).max() <= 1e-4 * np.abs(last).max()
        first = alone.hidden_states[0][0].numpy()
        assert np.abs(out.hidden_states[0][i] - first).max() <= 1e-4 * np.abs(first).max()


def test_runner_refuses_out_of_range_layers(model: TFWav2Vec2ForCTC) -> None:
    with pytest.raises(ValueError, match="out of range"):
        Wav2Vec2Runner(model, hidden_layers=[model.config.num_hidden_layers + 1])

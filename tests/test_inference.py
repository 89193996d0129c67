"""The batched runner: buckets, batch padding and XLA give each item its unbatched outputs."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from wav2vec2_beam.models import TFWav2Vec2ForCTC, Wav2Vec2Runner
from wav2vec2_beam.models.batching import bucket_for, bucket_ladder, padded_batch_size

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


def test_bfloat16_runner_reads_its_own_copies_of_the_weights() -> None:
    """A bfloat16 runner keeps bfloat16 copies of the weights: its outputs are exactly those of
    casting the float32 weights on every call, and it reads the copies (float32 weights changed
    afterwards are not seen)."""
    import tensorflow as tf

    checkpoint = str(CHECKPOINTS / "base")
    audio = np.random.default_rng(1).normal(size=(2, 5_000)).astype(np.float32)
    values = tf.cast(tf.constant(audio), tf.bfloat16)
    casting = TFWav2Vec2ForCTC.from_pretrained(checkpoint)
    expected = casting.forward(values, None, None, False).logits.numpy()
    copying = TFWav2Vec2ForCTC.from_pretrained(checkpoint)
    Wav2Vec2Runner(copying, precision="bfloat16")
    assert np.array_equal(copying.forward(values, None, None, False).logits.numpy(), expected)
    head = copying.lm_head.weight
    head.assign(head * 2.0)
    assert np.array_equal(copying.forward(values, None, None, False).logits.numpy(), expected)


def test_runner_refuses_out_of_range_layers(model: TFWav2Vec2ForCTC) -> None:
    with pytest.raises(ValueError, match="out of range"):
        Wav2Vec2Runner(model, hidden_layers=[model.config.num_hidden_layers + 1])


@pytest.mark.parametrize("name", ["base", "lv60"])
def test_flax_runner_outputs_equal_the_tf_model_alone(name: str) -> None:
    """The JAX runner (padded, bucketed, one program per shape) against each item run alone by
    the other backend."""
    from wav2vec2_beam.models import FlaxWav2Vec2ForCTC, FlaxWav2Vec2Runner

    tf_model = TFWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / name))
    runner = FlaxWav2Vec2Runner(
        FlaxWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / name)), hidden_layers=[0, -1]
    )
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=n).astype(np.float32) for n in (400, 5_000, 17_000)]
    out = runner.run(arrays)
    for i, array in enumerate(arrays):
        alone = tf_model(array[None], output_hidden_states=True)
        for ours, expected in (
            (out.logits[i], alone.logits[0].numpy()),
            (out.hidden_states[0][i], alone.hidden_states[0][0].numpy()),
            (out.hidden_states[1][i], alone.hidden_states[-1][0].numpy()),
        ):
            assert ours.shape == expected.shape
            assert np.abs(ours - expected).max() <= 1e-4 * np.abs(expected).max()


def test_flax_runner_in_bfloat16_keeps_the_float32_argmax_on_most_frames() -> None:
    from wav2vec2_beam.models import FlaxWav2Vec2ForCTC, FlaxWav2Vec2Runner

    model = FlaxWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / "lv60"))
    rng = np.random.default_rng(2)
    arrays = [rng.normal(size=n).astype(np.float32) for n in (16_000, 30_000, 48_000)]
    full = FlaxWav2Vec2Runner(model).run(arrays)
    half = FlaxWav2Vec2Runner(model, precision="bfloat16").run(arrays)
    agree = np.concatenate(
        [a.argmax(-1) == b.argmax(-1) for a, b in zip(full.logits, half.logits, strict=True)]
    )
    assert half.logits[0].dtype == np.float32
    assert agree.mean() >= 0.9, agree.mean()
    assert not np.array_equal(full.logits[0], half.logits[0])  # it did compute in bfloat16


def test_flax_runner_splits_rows_over_a_device_mesh(tmp_path: Path) -> None:
    """Two (host) devices: rows are padded to a multiple of two and split; outputs unchanged."""
    script = f"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
import jax, numpy as np
from wav2vec2_beam.models import FlaxWav2Vec2ForCTC, FlaxWav2Vec2Runner
assert len(jax.local_devices()) == 2
model = FlaxWav2Vec2ForCTC.from_pretrained({str(CHECKPOINTS / "base")!r})
rng = np.random.default_rng(3)
arrays = [rng.normal(size=n).astype(np.float32) for n in (3_000, 9_000, 20_000)]
two = FlaxWav2Vec2Runner(model)
one = FlaxWav2Vec2Runner(model, devices=jax.local_devices()[:1])
assert two.rows_for(1) == 2 and two.rows_for(3) == 4 and one.rows_for(1) == 1
np.savez({str(tmp_path / "out.npz")!r},
         *[x for pair in zip(two.run(arrays).logits, one.run(arrays).logits) for x in pair])
"""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", script], check=True)
    with np.load(tmp_path / "out.npz") as saved:
        arrays = [saved[f"arr_{i}"] for i in range(6)]
    for two, one in zip(arrays[::2], arrays[1::2], strict=True):
        np.testing.assert_allclose(two, one, atol=1e-5 * np.abs(one).max())


def test_items_past_the_ladder_share_rungs_under_jax_and_keep_their_length_under_tf() -> None:
    """XLA compiles once per shape, so the JAX runner rounds lengths past the ladder up to
    further 1/16 rungs (by hand: 32000 -> 34240 -> 36480 -> 39040 -> 41600); the TF runner's
    tf.function takes any shape, so there an item keeps its own length."""
    from wav2vec2_beam.models import FlaxWav2Vec2ForCTC, FlaxWav2Vec2Runner

    ladder = [16_000, 32_000]
    flax = FlaxWav2Vec2Runner(
        FlaxWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / "base")), ladder=ladder
    )
    assert [flax.length_for(n) for n in (20_000, 32_000, 34_000, 39_000, 40_000)] == [
        32_000,
        32_000,
        34_240,
        39_040,
        41_600,
    ]
    tf_runner = Wav2Vec2Runner(
        TFWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / "base")), ladder=ladder
    )
    assert [tf_runner.length_for(n) for n in (20_000, 40_000)] == [32_000, 40_000]
    rng = np.random.default_rng(4)
    long = rng.normal(size=40_000).astype(np.float32)  # padded to 41,600: still its own outputs
    expected = tf_runner.model(long[None]).logits[0].numpy()
    ours = flax.run([long]).logits[0]
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1e-4 * np.abs(expected).max()

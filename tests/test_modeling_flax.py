"""What the Flax classes add to the parity tests of test_modeling.py (which run both backends):
the seed's pretraining example, life without TensorFlow, the `params` pytree, and training mode."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from tests.test_modeling import CHECKPOINTS, INPUTS, assert_close, reference, single
from wav2vec2_beam.models import (
    AutoFeatureExtractor,
    FlaxWav2Vec2ForCTC,
    FlaxWav2Vec2ForPreTraining,
    TFWav2Vec2ForCTC,
    Wav2Vec2Config,
)
from wav2vec2_beam.models.modeling_flax_wav2vec2 import _compute_mask_indices

REPO = Path(__file__).resolve().parents[1]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_seed_pretraining_example_runs_with_only_the_import_changed() -> None:
    """transformers' FlaxWav2Vec2ForPreTraining example, on the fixture checkpoint; then its
    cosine similarity under the reference's mask, against the reference's own states."""
    path = str(CHECKPOINTS / "pretrain")
    feature_extractor = AutoFeatureExtractor.from_pretrained(path)
    model = FlaxWav2Vec2ForPreTraining.from_pretrained(path)
    input_values = feature_extractor(INPUTS["audio_1"], return_tensors="np").input_values
    assert_close(input_values[0], INPUTS["input_values_1"], "feature extractor")
    batch_size, raw_sequence_length = input_values.shape
    sequence_length = model._get_feat_extract_output_lengths(raw_sequence_length)
    mask_time_indices = _compute_mask_indices(
        (batch_size, sequence_length), mask_prob=0.2, mask_length=2
    )
    outputs = model(input_values, mask_time_indices=mask_time_indices)
    cosine_sim = optax.cosine_similarity(
        outputs.projected_states, outputs.projected_quantized_states
    )
    assert np.asarray(cosine_sim)[mask_time_indices].shape == (int(mask_time_indices.sum()),)

    ref = reference("pretrain")
    mask = ref["masked_mask_time_indices"]
    assert mask.shape == (1, sequence_length)
    outputs = model(input_values, mask_time_indices=mask)
    expected = cosine(ref["masked_projected_states"], ref["masked_projected_quantized_states"])
    ours = optax.cosine_similarity(outputs.projected_states, outputs.projected_quantized_states)
    np.testing.assert_allclose(np.asarray(ours)[0], expected, atol=1e-4)


def test_models_and_the_flax_classes_work_without_tensorflow(tmp_path: Path) -> None:
    """As on a GPU machine or TPU worker with JAX and no TensorFlow: importing TensorFlow fails."""
    script = textwrap.dedent(
        f"""
        import sys
        class NoTensorFlow:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
                    raise ImportError("no TensorFlow on this machine")
        sys.meta_path.insert(0, NoTensorFlow())
        sys.path.insert(0, {str(REPO / "src")!r})
        import numpy as np
        import wav2vec2_beam.models
        from wav2vec2_beam.models import FlaxWav2Vec2ForCTC, load_model
        model = load_model({str(CHECKPOINTS / "lv60")!r}, backend="jax")
        assert type(model) is FlaxWav2Vec2ForCTC
        inputs = np.load({str(REPO / "tests/fixtures/reference/inputs.npz")!r})
        np.save({str(tmp_path / "logits.npy")!r}, np.asarray(model(inputs["input_values_0"][None]).logits[0]))
        assert "tensorflow" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path)
    logits = np.load(tmp_path / "logits.npy")
    assert_close(logits, reference("lv60")["logits_0"], "lv60 logits without TensorFlow")


def test_params_pytree_carries_hugging_face_names_and_saves_for_the_tf_model(
    tmp_path: Path,
) -> None:
    model = FlaxWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / "base"))
    q_proj = model.params["wav2vec2"]["encoder"]["layers"]["0"]["attention"]["q_proj"]
    assert set(q_proj) == {"kernel", "bias"}
    assert q_proj["kernel"].shape == (32, 32)
    model.save_pretrained(str(tmp_path / "saved"))
    for name in ("vocab.json", "preprocessor_config.json"):
        (tmp_path / "saved" / name).write_bytes((CHECKPOINTS / "base" / name).read_bytes())
    tf_model = TFWav2Vec2ForCTC.from_pretrained(str(tmp_path / "saved"))
    assert_close(tf_model(single(2)).logits[0], reference("base")["logits_2"], "saved by Flax")


def test_params_argument_runs_other_weights() -> None:
    """`params=` runs the module on another pytree (a training step's), here a zeroed head."""
    model = FlaxWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / "base"))
    params = jax.tree_util.tree_map(lambda x: x, model.params)
    params["lm_head"] = {k: np.zeros_like(v) for k, v in params["lm_head"].items()}
    zeroed = model(single(0), params=params).logits
    assert not np.asarray(zeroed).any()
    assert_close(model(single(0)).logits[0], reference("base")["logits_0"], "own params kept")


def test_random_init_builds_every_named_parameter_of_a_checkpoint() -> None:
    config = Wav2Vec2Config.from_pretrained(str(CHECKPOINTS / "lv60"))
    fresh = FlaxWav2Vec2ForCTC(config, seed=3)
    loaded = FlaxWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / "lv60"))
    shapes = {name: p.torch_shape for name, p in fresh.named_parameters()}
    assert shapes == {name: p.torch_shape for name, p in loaded.named_parameters()}
    logits = np.asarray(fresh(single(0)).logits)
    assert np.isfinite(logits).all() and logits.std() > 0


def test_train_mode_applies_dropout_and_needs_its_rng() -> None:
    model = FlaxWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / "base"))
    model.config.hidden_dropout = 0.5  # the module reads its config when it is traced
    with pytest.raises(ValueError, match="dropout_rng"):
        model(single(0), train=True)
    one = model(single(0), train=True, dropout_rng=jax.random.PRNGKey(0)).logits
    two = model(single(0), train=True, dropout_rng=jax.random.PRNGKey(1)).logits
    assert not np.allclose(np.asarray(one), np.asarray(two))
    assert_close(model(single(0)).logits[0], reference("base")["logits_0"], "eval mode")

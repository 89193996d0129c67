"""The training path of our TF model, as demo/train.py uses it: a tf.function step on CPU.

Training needs what inference never exercises: gradients through every layer (TensorFlow has no
CPU gradient for the grouped positional convolution, so training convolves group by group), a
loss that can be traced inside tf.function, and a CTC loss fast enough to train with (TF's CTC
kernel, which needs stand-ins for empty and unalignable labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from wav2vec2_beam.models import TFWav2Vec2ForCTC, Wav2Vec2Config
from wav2vec2_beam.models.loading import load_checkpoint_into
from wav2vec2_beam.models.tf_layers import ctc_loss

LV60 = str(Path(__file__).parent / "fixtures" / "checkpoints" / "lv60")
DROPOUTS = ("hidden_dropout", "attention_dropout", "activation_dropout", "final_dropout")


def lv60_without_dropout() -> TFWav2Vec2ForCTC:
    """The lv60 fixture (grouped positional convolution) with dropout off, so training=True is
    deterministic and comparable with inference."""
    config = Wav2Vec2Config.from_pretrained(LV60)
    for name in DROPOUTS:
        setattr(config, name, 0.0)
    model = TFWav2Vec2ForCTC(config)
    load_checkpoint_into(model, LV60)
    return model


def batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((2, 4000)).astype(np.float32)
    mask = np.ones((2, 4000), np.int32)
    mask[1, 3000:] = 0
    values[1, 3000:] = 0
    labels = np.array([[5, 6, 7, 5, -100], [8, 9, 10, 11, 12]], np.int32)
    return values, mask, labels


def test_training_step_traces_and_gives_finite_gradients_for_every_weight() -> None:
    model = lv60_without_dropout()
    values, mask, labels = batch()
    frames = model.config.output_frames(4000)
    time_mask = np.zeros((2, frames), bool)
    time_mask[:, 2:4] = True

    @tf.function
    def step(values: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor) -> tuple:
        with tf.GradientTape() as tape:
            output = model(
                values,
                attention_mask=mask,
                labels=labels,
                training=True,
                mask_time_indices=time_mask,
            )
        return output.loss, tape.gradient(output.loss, model.trainable_variables)

    loss, gradients = step(values, mask, labels)
    assert loss.shape == (1,) and np.isfinite(loss.numpy()).all()
    names = [v.name for v in model.trainable_variables]
    missing = [n for n, g in zip(names, gradients, strict=True) if g is None]
    assert not missing, f"no gradient for {missing}"
    bad = [n for n, g in zip(names, gradients, strict=True) if not np.isfinite(g.numpy()).all()]
    assert not bad, f"non-finite gradient for {bad}"


def test_training_mode_without_dropout_computes_what_inference_does() -> None:
    """The group-by-group positional convolution of training equals the grouped one."""
    model = lv60_without_dropout()
    model.config.apply_spec_augment = False  # no randomly drawn time masks in training either
    values, mask, labels = batch()
    traced = tf.function(lambda v, m, la: model(v, attention_mask=m, labels=la, training=True).loss)
    inference = model(values, attention_mask=mask, labels=labels)
    np.testing.assert_allclose(traced(values, mask, labels), inference.loss, rtol=1e-5)
    trained = model(values, attention_mask=mask, training=True)
    np.testing.assert_allclose(trained.logits.numpy(), inference.logits.numpy(), atol=1e-5)


def test_ctc_loss_equals_tensorflows_dense_ctc_for_empty_repeated_and_plain_labels() -> None:
    """The fast kernel path (sparse labels, stand-ins for empty labels) against TF's dense CTC."""
    rng = np.random.default_rng(1)
    logits = tf.constant(rng.standard_normal((3, 12, 8)), tf.float32)
    frames = tf.constant([12, 9, 7])
    labels = np.array([[3, 4, 5, 6], [2, 2, 5, -100], [-100, -100, -100, -100]], np.int32)
    lengths = (labels != -100).sum(-1)
    dense = tf.nn.ctc_loss(
        labels=np.where(labels == -100, 0, labels),
        logits=tf.nn.log_softmax(logits),
        label_length=lengths,
        logit_length=frames,
        logits_time_major=False,
        blank_index=0,
    )
    ours = ctc_loss(logits, labels, frames, blank=0, reduction="sum", zero_infinity=False)
    np.testing.assert_allclose(ours, [tf.reduce_sum(dense)], rtol=1e-5)


def test_ctc_gradients_stay_finite_with_an_unalignable_item() -> None:
    logits = tf.Variable(np.random.default_rng(2).standard_normal((2, 6, 8)), dtype=tf.float32)
    labels = np.array([[3, 4, -100, -100, -100, -100, -100], [1, 2, 3, 4, 5, 6, 7]], np.int32)
    with tf.GradientTape() as tape:
        loss = ctc_loss(logits, labels, tf.constant([6, 6]), 0, "mean", zero_infinity=True)
    gradient = tape.gradient(loss, logits).numpy()
    assert np.isfinite(loss.numpy()).all() and np.isfinite(gradient).all()
    assert not gradient[1].any(), "the zeroed item must not move the logits"

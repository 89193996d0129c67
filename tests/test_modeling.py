"""Our Wav2Vec2, TF and Flax, against the reference (transformers, PyTorch) on the fixture checkpoints.

Every test that takes `models_by_name` runs once per backend (TensorFlow and JAX/Flax).

The fixtures are tiny random-weight checkpoints in the real Hugging Face layout, with the
reference's outputs saved by tests/fixtures/make_reference.py. Tolerance: the largest absolute
difference is at most 1e-4 of the largest reference value.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from wav2vec2_beam.models import (
    FlaxWav2Vec2ForCTC,
    FlaxWav2Vec2ForPreTraining,
    FlaxWav2Vec2ForSequenceClassification,
    FlaxWav2Vec2Model,
    FlaxWav2Vec2PreTrainedModel,
    TFWav2Vec2ForCTC,
    TFWav2Vec2ForPreTraining,
    TFWav2Vec2ForSequenceClassification,
    TFWav2Vec2Model,
    Wav2Vec2CTCTokenizer,
    compute_mask_indices,
    load_model,
)

FIXTURES = Path(__file__).parent / "fixtures"
CHECKPOINTS = FIXTURES / "checkpoints"
REFERENCE = FIXTURES / "reference"
UTTERANCES = range(3)
TOLERANCE = 1e-4


def reference(name: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCE / f"{name}.npz") as data:
        return dict(data)


def reference_json(name: str) -> dict:
    return json.loads((REFERENCE / f"{name}.json").read_text())


INPUTS = reference("inputs")


def assert_close(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    scale = max(float(np.abs(ref).max()), 1e-12)
    error = float(np.abs(ours - ref).max()) / scale
    assert error <= TOLERANCE, f"{what}: max abs diff is {error:.2e} of the largest value"


def single(index: int) -> np.ndarray:
    return INPUTS[f"input_values_{index}"][None, :]


def encoder_outputs(model, values: np.ndarray, **kwargs):
    """The encoder's own outputs (`extract_features`, `last_hidden_state`), which a head's
    outputs leave out as transformers' do: from the TF classes' `wav2vec2` layer, or a bare
    Flax model run on a head's `params["wav2vec2"]`."""
    if not isinstance(model, FlaxWav2Vec2PreTrainedModel):
        return model.wav2vec2(values, **kwargs)
    if model.base_model_prefix is None:
        return model(values, **kwargs)
    bare = FlaxWav2Vec2Model(model.config, _do_init=False)
    return bare(values, params=model.params[model.base_model_prefix], **kwargs)


#: The class of each fixture checkpoint, per backend.
CLASSES = {
    "tf": {
        "base": TFWav2Vec2ForCTC,
        "lv60": TFWav2Vec2ForCTC,
        "bare": TFWav2Vec2Model,
        "seqcls": TFWav2Vec2ForSequenceClassification,
        "pretrain": TFWav2Vec2ForPreTraining,
    },
    "jax": {
        "base": FlaxWav2Vec2ForCTC,
        "lv60": FlaxWav2Vec2ForCTC,
        "bare": FlaxWav2Vec2Model,
        "seqcls": FlaxWav2Vec2ForSequenceClassification,
        "pretrain": FlaxWav2Vec2ForPreTraining,
    },
}


@pytest.fixture(scope="module", params=sorted(CLASSES))
def models_by_name(request: pytest.FixtureRequest) -> dict:
    return {
        name: cls.from_pretrained(str(CHECKPOINTS / name))
        for name, cls in CLASSES[request.param].items()
    }


@pytest.mark.parametrize("name", ["base", "lv60", "bare", "seqcls", "pretrain"])
def test_single_utterance_outputs_match_reference(models_by_name: dict, name: str) -> None:
    model, ref = models_by_name[name], reference(name)
    for u in UTTERANCES:
        out = model(single(u), output_hidden_states=True)
        encoder = encoder_outputs(model, single(u))
        assert_close(
            encoder.extract_features[0],
            ref[f"extract_features_{u}"],
            f"{name} extract_features {u}",
        )
        assert_close(
            encoder.last_hidden_state[0],
            ref[f"last_hidden_state_{u}"],
            f"{name} last_hidden_state {u}",
        )
        ref_states = ref[f"hidden_states_{u}"]
        assert len(out.hidden_states) == len(ref_states)
        for layer, state in enumerate(out.hidden_states):
            assert_close(state[0], ref_states[layer], f"{name} hidden_states[{layer}] {u}")
        if f"logits_{u}" in ref:
            assert_close(out.logits[0], ref[f"logits_{u}"], f"{name} logits {u}")


def test_legacy_weight_norm_layout_loads_to_the_same_model() -> None:
    """weight_g/weight_v and parametrizations.weight.original0/1 both fold to one weight."""
    legacy = TFWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / "base_legacy_wn"))
    ref = reference("base_legacy_wn")
    for u in UTTERANCES:
        assert_close(legacy(single(u)).logits[0], ref[f"logits_{u}"], f"legacy logits {u}")


def test_base_zero_padded_batch_without_mask_matches_reference(models_by_name: dict) -> None:
    """Without a mask we compute exactly what the reference does, padding included."""
    ref = reference("base")
    out = models_by_name["base"](INPUTS["batch_input_values_nomask"])
    assert_close(out.logits, ref["batch_logits"], "base feature-extractor-padded batch logits")
    values = np.zeros((3, max(int(n) for n in INPUTS["lengths"])), np.float32)
    for u in UTTERANCES:
        values[u, : len(INPUTS[f"input_values_{u}"])] = INPUTS[f"input_values_{u}"]
    out = models_by_name["base"](values)
    assert_close(out.logits, ref["batch_zeropad_logits"], "base zero-padded batch logits")


@pytest.mark.parametrize("name", ["lv60", "bare"])
def test_masked_batch_matches_reference_for_layer_norm_models(
    models_by_name: dict, name: str
) -> None:
    ref = reference(name)
    model = models_by_name[name]
    values, mask = INPUTS["batch_input_values_mask"], INPUTS["batch_attention_mask"]
    out = model(values, attention_mask=mask, output_hidden_states=True)
    encoder = encoder_outputs(model, values, attention_mask=mask)
    frames = [
        int(f)
        for f in ref.get("frames", [ref[f"last_hidden_state_{u}"].shape[0] for u in UTTERANCES])
    ]
    for u, n in enumerate(frames):
        assert_close(
            encoder.last_hidden_state[u, :n],
            ref["batch_last_hidden_state"][u, :n],
            f"{name} batch {u}",
        )
        if "batch_logits" in ref:
            assert_close(out.logits[u, :n], ref["batch_logits"][u, :n], f"{name} batch logits {u}")


@pytest.mark.parametrize("name", ["base", "lv60", "seqcls", "pretrain"])
def test_padded_batch_with_mask_equals_each_utterance_alone(
    models_by_name: dict, name: str
) -> None:
    """Beyond the reference: group-norm models too give each item its unbatched outputs."""
    model = models_by_name[name]
    lengths = [int(n) for n in INPUTS["lengths"]]
    assert max(lengths) >= 3 * min(lengths)
    arrays = [INPUTS[f"input_values_{u}"] for u in UTTERANCES]
    extra = 1000  # pad past the longest item too
    values = np.zeros((3, max(lengths) + extra), np.float32)
    mask = np.zeros(values.shape, np.int32)
    for u, array in enumerate(arrays):
        values[u, : len(array)] = array
        mask[u, : len(array)] = 1
    batched = model(values, attention_mask=mask, output_hidden_states=True)
    for u in UTTERANCES:
        alone = model(arrays[u][None], output_hidden_states=True)
        n = alone.hidden_states[-1].shape[1]
        for layer, state in enumerate(alone.hidden_states):
            assert_close(
                batched.hidden_states[layer][u, :n], state[0], f"{name} hidden {layer} item {u}"
            )
        if name == "seqcls":
            assert_close(batched.logits[u], alone.logits[0], f"{name} logits item {u}")
        elif name == "pretrain":
            assert_close(
                batched.projected_states[u, :n], alone.projected_states[0], f"{name} item {u}"
            )
            np.testing.assert_array_equal(batched.codevector_ids[u, :n], alone.codevector_ids[0])
        else:
            assert_close(batched.logits[u, :n], alone.logits[0], f"{name} logits item {u}")


@pytest.mark.parametrize("name", ["base", "lv60"])
def test_ctc_loss_matches_reference(name: str) -> None:
    ref = reference(name)
    uses_mask = name == "lv60"
    values = INPUTS["batch_input_values_mask" if uses_mask else "batch_input_values_nomask"]
    mask = INPUTS["batch_attention_mask"] if uses_mask else None
    # "mean" is transformers' TF rule, the batch mean of the items' losses: the reference's
    # "sum" over the batch size (its PyTorch "mean" also divides each item by its label count).
    per_batch = {"sum": 1, "mean": len(values)}
    for reduction in ("mean", "sum"):
        model = TFWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / name))
        model.config.ctc_loss_reduction = reduction
        loss = model(values, attention_mask=mask, labels=ref["ctc_labels"]).loss
        assert loss.shape == (1,)
        expected = float(ref["ctc_loss_sum"]) / per_batch[reduction]
        np.testing.assert_allclose(float(loss[0]), expected, rtol=1e-4)
        model.config.ctc_zero_infinity = True
        loss = model(values, attention_mask=mask, labels=ref["ctc_mixed_labels"]).loss
        expected = float(ref["ctc_mixed_loss_sum_zero_infinity"]) / per_batch[reduction]
        np.testing.assert_allclose(float(loss[0]), expected, rtol=1e-4)
        for zero_infinity in (False, True):
            model.config.ctc_zero_infinity = zero_infinity
            loss = model(single(0), labels=ref["ctc_inf_labels"]).loss
            suffix = "_zero_infinity" if zero_infinity else ""
            expected = float(ref[f"ctc_inf_loss_sum{suffix}"])
            assert float(loss[0]) == expected, (reduction, zero_infinity, float(loss[0]), expected)


@pytest.mark.parametrize("name", ["base", "lv60"])
def test_decoded_text_and_offsets_match_reference(models_by_name: dict, name: str) -> None:
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(CHECKPOINTS / name))
    decoded = reference_json(name)["decoded"]
    ids = [
        np.argmax(np.asarray(models_by_name[name](single(u)).logits[0]), axis=-1)
        for u in UTTERANCES
    ]
    for u in UTTERANCES:
        np.testing.assert_array_equal(ids[u], reference(name)[f"argmax_{u}"])
    for skip in (False, True):
        expected = decoded[f"skip_special_tokens_{skip}"]
        ours = tokenizer.batch_decode(
            ids, skip_special_tokens=skip, output_char_offsets=True, output_word_offsets=True
        )
        assert list(ours.text) == expected["text"]
        assert [list(o) for o in ours.char_offsets] == expected["char_offsets"]
        assert [list(o) for o in ours.word_offsets] == expected["word_offsets"]


def test_sequence_classification_labels_match_reference(models_by_name: dict) -> None:
    model = models_by_name["seqcls"]
    info = reference_json("seqcls")
    ref = reference("seqcls")
    for u in UTTERANCES:
        logits = np.asarray(model(single(u)).logits[0])
        assert_close(logits, ref[f"logits_{u}"], f"seqcls logits {u}")
        label = model.config.id2label[int(np.argmax(logits))]
        assert label == info["predicted_labels"][u]


def test_pretraining_outputs_and_codevector_ids_match_reference(models_by_name: dict) -> None:
    model = models_by_name["pretrain"]
    ref = reference("pretrain")
    for u in UTTERANCES:
        out = model(single(u))
        assert_close(out.projected_states[0], ref[f"projected_states_{u}"], f"projected_states {u}")
        assert_close(
            out.projected_quantized_states[0],
            ref[f"projected_quantized_states_{u}"],
            f"projected_quantized_states {u}",
        )
        np.testing.assert_allclose(
            float(out.codevector_perplexity), float(ref[f"codevector_perplexity_{u}"]), rtol=1e-5
        )
        np.testing.assert_array_equal(np.asarray(out.codevector_ids[0]), ref[f"codevector_ids_{u}"])
    masked = model(single(1), mask_time_indices=ref["masked_mask_time_indices"])
    encoder = encoder_outputs(model, single(1), mask_time_indices=ref["masked_mask_time_indices"])
    assert_close(
        encoder.last_hidden_state[0], ref["masked_last_hidden_state"], "masked last hidden"
    )
    assert_close(masked.projected_states[0], ref["masked_projected_states"], "masked projected")
    np.testing.assert_allclose(
        float(masked.codevector_perplexity), float(ref["masked_codevector_perplexity"]), rtol=1e-5
    )


def test_mask_indices_match_reference_draws() -> None:
    ref = reference("mask_indices")
    cases = reference_json("mask_indices")["cases"]
    for case in cases:
        np.random.seed(case["np_random_seed"])
        lengths = case["attention_mask_valid_lengths"]
        mask = None
        if lengths is not None:
            mask = np.zeros(case["shape"], np.int64)
            for row, n in enumerate(lengths):
                mask[row, :n] = 1
        ours = compute_mask_indices(
            tuple(case["shape"]),
            case["mask_prob"],
            case["mask_length"],
            attention_mask=mask,
            min_masks=case["min_masks"],
        )
        np.testing.assert_array_equal(ours, ref[case["key"]], err_msg=case["key"])


@pytest.mark.parametrize("backend", sorted(CLASSES))
def test_load_model_picks_the_class_from_config(backend: str) -> None:
    for name in ("base", "seqcls", "pretrain", "bare"):
        model = load_model(str(CHECKPOINTS / name), backend=backend)
        assert type(model) is CLASSES[backend][name]


@pytest.mark.parametrize("backend", sorted(CLASSES))
def test_bare_model_loads_a_ctc_checkpoint_without_its_head(backend: str) -> None:
    bare = CLASSES[backend]["bare"].from_pretrained(str(CHECKPOINTS / "base"))
    ref = reference("base")
    out = bare(single(0))
    assert_close(out.last_hidden_state[0], ref["last_hidden_state_0"], "bare from CTC checkpoint")


def test_numpy_lists_and_tensors_are_accepted() -> None:
    import tensorflow as tf

    model = TFWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / "base"))
    expected = model(single(0)).logits.numpy()
    as_list = model(single(0).tolist()).logits.numpy()
    as_tensor = model(tf.constant(single(0).astype(np.float64))).logits.numpy()
    np.testing.assert_allclose(as_list, expected, atol=1e-6)
    np.testing.assert_allclose(as_tensor, expected, atol=1e-6)


def test_tf_h5_checkpoint_loads_to_the_same_outputs_as_its_safetensors_twin(
    models_by_name: dict,
) -> None:
    """tf_model.h5 written by transformers 4.57's TF classes, same weights as `base`; each
    backend loads it."""
    backend = "jax" if isinstance(models_by_name["base"], FlaxWav2Vec2ForCTC) else "tf"
    h5_model = CLASSES[backend]["base"].from_pretrained(str(CHECKPOINTS / "base_h5"))
    assert not (CHECKPOINTS / "base_h5" / "model.safetensors").exists()
    for u in UTTERANCES:
        ours = np.asarray(h5_model(single(u)).logits[0])
        twin = np.asarray(models_by_name["base"](single(u)).logits[0])
        assert_close(ours, twin, f"h5 vs safetensors logits {u}")
        assert_close(ours, reference("base_h5")[f"logits_{u}"], f"h5 vs TF reference {u}")


@pytest.mark.parametrize(
    ("values", "mask", "message"),
    [
        (np.zeros(16_000, np.float32), None, r"must be \(batch, samples\)"),
        (
            np.zeros((1, 399), np.float32),
            None,
            "input has 399 samples; the model needs at least 400",
        ),
        (np.zeros((2, 1000), np.float32), np.ones((2, 999)), "attention_mask shape"),
        (
            np.zeros((2, 1000), np.float32),
            np.concatenate([np.ones((1, 1000)), np.zeros((1, 1000))]),
            r"items \[1\] have \[0\] unmasked samples",
        ),
    ],
)
def test_inputs_the_conv_stack_cannot_take_are_refused_in_one_line(
    models_by_name: dict, values: np.ndarray, mask: np.ndarray | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        models_by_name["base"](values, attention_mask=mask)


@pytest.mark.parametrize(
    "cap, flags, expected",
    [
        ("", {"avx2", "fma"}, True),  # an AVX2-only CPU
        ("", {"avx2", "avx512f", "avx512_bf16"}, False),  # AVX-512: oneDNN's convolution
        ("AVX2", {"avx2", "avx512f"}, True),  # capped to AVX2
        ("avx512_core", {"avx2", "avx512f"}, False),
        ("SSE41", {"avx2"}, False),  # not measured: as before
        ("", set(), False),  # flags unknown (not Linux)
    ],
)
def test_one_item_products_only_where_oneDNN_runs_avx2(
    monkeypatch: pytest.MonkeyPatch, cap: str, flags: set[str], expected: bool
) -> None:
    from wav2vec2_beam.models import tf_layers

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    monkeypatch.setattr(tf_layers, "_cpu_flags", lambda: frozenset(flags))
    tf_layers._one_item_products_pay.cache_clear()
    try:
        assert tf_layers._one_item_products_pay() is expected
    finally:
        tf_layers._one_item_products_pay.cache_clear()


@pytest.mark.parametrize(
    ("taps", "stride", "frames"),
    [(3, 2, 101), (3, 2, 100), (2, 2, 64), (2, 2, 3), (3, 2, 3), (5, 2, 40), (4, 4, 17)],
)
def test_a_one_item_convolution_as_products_equals_tensorflows_convolution(
    taps: int, stride: int, frames: int
) -> None:
    """A batch of one item goes through the conv stack's matrix-product form (faster there on
    AVX2), every other batch through `tf.nn.conv1d`: both give the same frames, odd lengths and
    a group of fewer taps than the stride included."""
    import tensorflow as tf

    from wav2vec2_beam.models.tf_layers import _convolved_as_products

    rng = np.random.default_rng(taps * 100 + frames)
    x = tf.constant(rng.standard_normal((1, frames, 24)), tf.float32)
    kernel = tf.constant(rng.standard_normal((taps, 24, 16)), tf.float32)
    expected = tf.nn.conv1d(x, kernel, stride=stride, padding="VALID").numpy()
    got = _convolved_as_products(x, kernel, stride).numpy()
    assert got.shape == expected.shape == (1, (frames - taps) // stride + 1, 16)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())

"""The classes as drop-in replacements for transformers' TF and Flax Wav2Vec2 classes, in our words.

What transformers' own test suite asks of them (../shared/hf-suite, run outside this suite), held
here to independent oracles: the reference's outputs on the fixture checkpoints (its attention
probabilities in reference/attentions.npz, tests/fixtures/make_attention_reference.py), round
trips through files, and Keras' and JAX's own machinery.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile
import tensorflow as tf
import tf_keras as keras

from tests.test_modeling import CHECKPOINTS, INPUTS, REFERENCE, assert_close, reference, single
from wav2vec2_beam.demo import HELDOUT_DIR, MODEL_DIR
from wav2vec2_beam.models import (
    FlaxWav2Vec2ForCTC,
    FlaxWav2Vec2Model,
    TFWav2Vec2ForCTC,
    TFWav2Vec2Model,
    UnsupportedConfigError,
    Wav2Vec2Config,
    Wav2Vec2Processor,
    Wav2Vec2ProcessorWithLM,
)

FIXTURES = Path(__file__).parent / "fixtures"
DEMO = MODEL_DIR
ATTENTIONS = dict(np.load(REFERENCE / "attentions.npz"))
LM_REFERENCE = json.loads((REFERENCE / "lm_decode.json").read_text())
LM_LOGITS = np.load(REFERENCE / "lm_decode.npz")
#: A traced model (SavedModel, functional API) against the same model called eagerly, relative to
#: the largest logit: traced, Grappler folds the first convolution's and the feed-forward blocks'
#: GELU into oneDNN's products, whose rounding differs from the separate ops run eagerly (6.6e-7
#: measured on these inputs; each side stays within 1.6e-6 of the reference).
GRAPH_VS_EAGER = 2e-6

# --- the config ----------------------------------------------------------------------------


def test_config_keeps_keyword_arguments_it_does_not_know_and_writes_them_back(tmp_path) -> None:
    config = Wav2Vec2Config(hidden_size=37, feat_extract_dropout=0.0, hidden_dropout_prob=0.1)
    assert (config.hidden_size, config.feat_extract_dropout, config.hidden_dropout_prob) == (
        37,
        0.0,
        0.1,
    )
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["hidden_dropout_prob"] == 0.1 and written["hidden_size"] == 37
    loaded = Wav2Vec2Config.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    json_file = tmp_path / "other.json"
    config.to_json_file(json_file)
    assert Wav2Vec2Config.from_json_file(json_file) == config


def test_config_labels_stay_in_step_and_survive_json() -> None:
    config = Wav2Vec2Config(num_labels=5)
    assert len(config.id2label) == len(config.label2id) == 5
    config.num_labels = 3
    assert config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    named = Wav2Vec2Config(id2label={"0": "yes", "1": "no"})
    assert named.id2label == {0: "yes", 1: "no"} and named.label2id == {"yes": 0, "no": 1}
    again = Wav2Vec2Config.from_dict(json.loads(named.to_json_string()))
    assert again.id2label == named.id2label and again.num_labels == 2


def test_config_from_pretrained_takes_overrides_and_returns_the_rest() -> None:
    path = CHECKPOINTS / "base"
    config, unused = Wav2Vec2Config.from_pretrained(
        path, hidden_dropout=0.3, not_a_field=1, return_unused_kwargs=True
    )
    assert config.hidden_dropout == 0.3 and unused == {"not_a_field": 1}
    with pytest.raises(OSError):
        Wav2Vec2Config.from_pretrained(path / "nowhere")


def test_a_config_we_cannot_compute_is_refused_when_a_model_is_built() -> None:
    config = Wav2Vec2Config(hidden_size=37)  # legal as a config, as in transformers
    with pytest.raises(UnsupportedConfigError, match="hidden_size=37"):
        TFWav2Vec2Model(config)
    with pytest.raises(UnsupportedConfigError, match="hidden_size=37"):
        FlaxWav2Vec2Model(config)


# --- inputs and outputs -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tf_base() -> TFWav2Vec2ForCTC:
    return TFWav2Vec2ForCTC.from_pretrained(CHECKPOINTS / "base")


def test_every_input_format_gives_the_reference_logits(tf_base: TFWav2Vec2ForCTC) -> None:
    values = single(0)
    mask = np.ones_like(values, np.int32)
    expected = reference("base")["logits_0"]
    calls = {
        "positional": lambda: tf_base(values),
        "keywords": lambda: tf_base(input_values=values, attention_mask=mask),
        "dict": lambda: tf_base({"input_values": values, "attention_mask": mask}),
        "list": lambda: tf_base([tf.constant(values), tf.constant(mask)]),
        "tuple": lambda: tf_base((values, mask)),
        "tensor": lambda: tf_base(tf.constant(values), attention_mask=tf.constant(mask)),
        "python lists": lambda: tf_base(values.tolist()),
        "float64": lambda: tf_base(values.astype(np.float64)),
    }
    for name, call in calls.items():
        assert_close(call().logits[0], expected, name)
    with pytest.raises(TypeError, match="input_ids"):
        tf_base({"input_ids": values})


def test_return_dict_false_gives_the_tuple_of_the_fields_set(tf_base: TFWav2Vec2ForCTC) -> None:
    labels = np.array([[5, 6, 7]])
    full = tf_base(single(0), labels=labels, output_hidden_states=True)
    as_tuple = tf_base(single(0), labels=labels, output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(full) == 3
    np.testing.assert_array_equal(as_tuple[0], full.loss)
    np.testing.assert_array_equal(as_tuple[1], full.logits)
    assert list(full.keys()) == ["loss", "logits", "hidden_states"]
    np.testing.assert_array_equal(full[1], full["logits"])
    flax = FlaxWav2Vec2ForCTC.from_pretrained(CHECKPOINTS / "base")
    (logits,) = flax(single(0), return_dict=False)
    assert_close(logits[0], reference("base")["logits_0"], "flax tuple")


@pytest.mark.parametrize("backend", ["tf", "jax"])
@pytest.mark.parametrize("name", ["base", "lv60"])
def test_attentions_are_the_references(backend: str, name: str) -> None:
    cls = TFWav2Vec2ForCTC if backend == "tf" else FlaxWav2Vec2ForCTC
    model = cls.from_pretrained(CHECKPOINTS / name)
    for u in range(3):
        out = model(single(u), output_attentions=True)
        ours = np.stack([np.asarray(layer[0]) for layer in out.attentions])
        assert_close(ours, ATTENTIONS[f"{name}_attentions_{u}"], f"{backend} {name} {u}")
    if name == "lv60":  # a padded batch: each item's real frames attend as the reference's do
        out = model(
            INPUTS["batch_input_values_mask"],
            attention_mask=INPUTS["batch_attention_mask"],
            output_attentions=True,
        )
        expected = ATTENTIONS["lv60_batch_attentions"]
        for u in range(3):
            n = ATTENTIONS[f"lv60_attentions_{u}"].shape[-1]
            ours = np.stack([np.asarray(layer[u, :, :n, :n]) for layer in out.attentions])
            assert_close(ours, expected[:, u, :, :n, :n], f"{backend} lv60 batch item {u}")


@pytest.mark.parametrize("backend", ["tf", "jax"])
def test_the_configs_output_switches_are_the_defaults(backend: str) -> None:
    cls = TFWav2Vec2ForCTC if backend == "tf" else FlaxWav2Vec2ForCTC
    model = cls.from_pretrained(CHECKPOINTS / "base")
    assert list(model(single(0)).keys()) == ["logits"]
    model.config.output_hidden_states = True
    model.config.output_attentions = True
    out = model(single(0))
    assert list(out.keys()) == ["logits", "hidden_states", "attentions"]
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert list(model(single(0), output_attentions=False).keys()) == ["logits", "hidden_states"]
    model.config.return_dict = False
    assert isinstance(model(single(0)), tuple)


# --- Keras ---------------------------------------------------------------------------------


def demo_batch() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four held-out demo utterances, padded, with their transcripts as CTC labels (-100 pads)."""
    processor = Wav2Vec2Processor.from_pretrained(str(DEMO))
    names = [f"heldout/0{i}.flac" for i in range(4)]
    audio = [soundfile.read(HELDOUT_DIR / n.split("/")[1])[0] for n in names]
    inputs = processor(
        audio, sampling_rate=16_000, padding=True, return_attention_mask=True, return_tensors="np"
    )
    ids = [processor.tokenizer(LM_REFERENCE["references"][n]).input_ids for n in names]
    labels = np.full((len(ids), max(map(len, ids))), -100, np.int32)
    for row, item in enumerate(ids):
        labels[row, : len(item)] = item
    x = {"input_values": inputs.input_values, "attention_mask": inputs.attention_mask}
    return x, labels


def test_keras_fit_trains_on_the_models_own_loss() -> None:
    """compile() without a loss, then fit on a dict of inputs with the labels as targets: the
    CTC loss is finite and goes down on the batch it trains on."""
    model = TFWav2Vec2ForCTC.from_pretrained(DEMO)
    model.freeze_feature_encoder()
    frozen = {v.ref() for v in model.wav2vec2.feature_extractor.variables}
    assert not frozen & {v.ref() for v in model.trainable_weights}
    before = [v.numpy() for v in model.wav2vec2.feature_extractor.variables]
    x, labels = demo_batch()
    model.compile(optimizer=keras.optimizers.Adam(3e-4))
    history = model.fit(x, labels, batch_size=4, epochs=6, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    after = [v.numpy() for v in model.wav2vec2.feature_extractor.variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    labelled = {**x, "labels": labels}  # the labels inside the inputs work the same way
    assert np.isfinite(model.evaluate(labelled, batch_size=4, verbose=0))


def test_savedmodel_export_reloads_to_the_same_logits(tmp_path, tf_base) -> None:
    tf_base.save_pretrained(tmp_path, saved_model=True)
    loaded = tf.saved_model.load(str(tmp_path / "saved_model" / "1"))
    serve = loaded.signatures["serving_default"]
    values = INPUTS["batch_input_values_mask"]
    mask = INPUTS["batch_attention_mask"].astype(np.int32)
    served = serve(input_values=tf.constant(values), attention_mask=tf.constant(mask))
    direct = tf_base(values, attention_mask=mask).logits
    np.testing.assert_allclose(
        served["logits"].numpy(), direct.numpy(), atol=GRAPH_VS_EAGER * np.abs(direct).max()
    )
    again = TFWav2Vec2ForCTC.from_pretrained(tmp_path)  # the weights beside it load too
    # (within float32 rounding: the positional convolution is saved weight-normed, as g and v)
    np.testing.assert_allclose(again(values, attention_mask=mask).logits, direct, atol=1e-5)


def test_the_functional_api_and_keras_files(tmp_path, tf_base) -> None:
    inputs = {
        "input_values": keras.Input((None,), dtype=tf.float32, name="input_values"),
        "attention_mask": keras.Input((None,), dtype=tf.int32, name="attention_mask"),
    }
    functional = keras.Model(inputs, tf_base(inputs).logits)
    batch = {
        "input_values": INPUTS["batch_input_values_mask"],
        "attention_mask": INPUTS["batch_attention_mask"].astype(np.int32),
    }
    expected = tf_base(batch).logits.numpy()
    np.testing.assert_allclose(
        functional.predict(batch, verbose=0), expected, atol=GRAPH_VS_EAGER * np.abs(expected).max()
    )
    tf_base.save_weights(tmp_path / "weights.h5")
    fresh = TFWav2Vec2ForCTC.from_config(tf_base.get_config())
    fresh.load_weights(tmp_path / "weights.h5")
    np.testing.assert_array_equal(fresh(batch).logits.numpy(), expected)


# --- JAX transformations --------------------------------------------------------------------


def test_flax_inside_jit_grad_and_vmap_with_a_mask() -> None:
    model = FlaxWav2Vec2ForCTC.from_pretrained(CHECKPOINTS / "lv60")
    values = INPUTS["batch_input_values_mask"]
    mask = INPUTS["batch_attention_mask"]
    expected = reference("lv60")["batch_logits"]

    @jax.jit
    def logits(params, values, mask):
        return model(values, attention_mask=mask, params=params).logits

    jitted = np.asarray(logits(model.params, values, mask))
    for u in range(3):
        n = reference("lv60")[f"logits_{u}"].shape[0]
        assert_close(jitted[u, :n], expected[u, :n], f"jit item {u}")

    def loss(params):
        out = model(values, attention_mask=mask, params=params)
        return jnp.mean(out.logits**2)

    grads = jax.grad(loss)(model.params)
    assert np.isfinite(np.asarray(grads["lm_head"]["kernel"])).all()
    assert np.asarray(grads["lm_head"]["kernel"]).any()

    one_each = jax.vmap(
        lambda v, m: model(v[None], attention_mask=m[None]).logits[0], in_axes=(0, 0)
    )(jnp.asarray(values), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(one_each), jitted, atol=1e-5)


# --- Wav2Vec2ProcessorWithLM ------------------------------------------------------------------


@pytest.fixture(scope="module")
def processor_with_lm(tmp_path_factory) -> Wav2Vec2ProcessorWithLM:
    """The demo model's processor files with tests/fixtures/lm's decoder (what transformers'
    processor was loaded from in make_lm_reference.py)."""
    folder = tmp_path_factory.mktemp("with_lm")
    for name in (
        "preprocessor_config.json",
        "tokenizer_config.json",
        "vocab.json",
        "special_tokens_map.json",
    ):
        shutil.copy(DEMO / name, folder / name)
    shutil.copy(FIXTURES / "lm" / "alphabet.json", folder / "alphabet.json")
    shutil.copytree(FIXTURES / "lm" / "language_model", folder / "language_model")
    return Wav2Vec2ProcessorWithLM.from_pretrained(str(folder))


def _offsets(words: list[dict]) -> list[list]:
    return [[w["word"], w["start_offset"], w["end_offset"]] for w in words]


@pytest.mark.parametrize("setting", sorted(LM_REFERENCE["settings"]))
def test_processor_with_lm_decodes_as_transformers_does(
    processor_with_lm: Wav2Vec2ProcessorWithLM, setting: str
) -> None:
    saved = processor_with_lm.decoder.language_model.weights
    kwargs = LM_REFERENCE["settings"][setting]
    try:
        for name in LM_LOGITS.files:
            out = processor_with_lm.decode(LM_LOGITS[name], output_word_offsets=True, **kwargs)
            expected = LM_REFERENCE["expected"][name][setting]
            assert out.text == expected["text"], name
            assert _offsets(out.word_offsets) == expected["words"], name
            assert out.logit_score == pytest.approx(expected["logit_score"], abs=1e-9)
            assert out.lm_score == pytest.approx(expected["lm_score"], abs=1e-9)
    finally:
        processor_with_lm.decoder.language_model.weights = saved


def padded(names: list[str]) -> np.ndarray:
    """The items' logits in one batch, padded frames -100 in every column (transformers' way)."""
    frames = max(LM_LOGITS[n].shape[0] for n in names)
    batch = np.full((len(names), frames, LM_LOGITS[names[0]].shape[1]), -100.0, np.float32)
    for row, name in enumerate(names):
        batch[row, : LM_LOGITS[name].shape[0]] = LM_LOGITS[name]
    return batch


def test_processor_with_lm_batch_decode_in_a_pool_and_alone(processor_with_lm) -> None:
    names = sorted(LM_LOGITS.files)[:8]
    expected = [LM_REFERENCE["expected"][n]["default"] for n in names]
    out = processor_with_lm.batch_decode(padded(names), output_word_offsets=True)
    assert out.text == [e["text"] for e in expected]
    assert [_offsets(w) for w in out.word_offsets] == [e["words"] for e in expected]
    assert out.lm_score == pytest.approx([e["lm_score"] for e in expected], abs=1e-9)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pooled = processor_with_lm.batch_decode(padded(names), pool)
    assert pooled.text == out.text
    best = processor_with_lm.batch_decode(padded(names[:2]), n_best=3)
    assert [texts[0] for texts in best.text] == out.text[:2]
    assert all(len(texts) <= 3 for texts in best.text)


def test_processor_with_lm_saves_what_it_loads(processor_with_lm, tmp_path) -> None:
    processor_with_lm.save_pretrained(str(tmp_path))
    again = Wav2Vec2ProcessorWithLM.from_pretrained(str(tmp_path))
    name = sorted(LM_LOGITS.files)[0]
    assert again.decode(LM_LOGITS[name]).text == LM_REFERENCE["expected"][name]["default"]["text"]


def test_transformers_processor_with_lm_example_runs_with_only_the_import_changed() -> None:
    """transformers' Wav2Vec2ProcessorWithLM example (docs/MODELS.md) on the demo model and its
    shipped LM: the text transformers' processor gives on the reference's logits."""
    from wav2vec2_beam.models import (  # was: from transformers ...
        TFWav2Vec2ForCTC,
        Wav2Vec2ProcessorWithLM,
    )

    speech, _ = soundfile.read(HELDOUT_DIR / "00.flac")
    processor = Wav2Vec2ProcessorWithLM.from_pretrained(str(DEMO))
    model = TFWav2Vec2ForCTC.from_pretrained(str(DEMO))
    inputs = processor(speech, sampling_rate=16_000, return_tensors="tf")
    logits = model(**inputs).logits
    transcription = processor.batch_decode(logits.numpy()).text
    assert transcription == [LM_REFERENCE["expected"]["heldout/00.flac"]["demo_lm"]["text"]]

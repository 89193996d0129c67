"""Broken checkpoints and bad inputs fail early with one line that names what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from wav2vec2_beam.models import (
    CheckpointError,
    FlaxWav2Vec2ForCTC,
    TFWav2Vec2ForCTC,
    UnsupportedConfigError,
)
from wav2vec2_beam.models.weights import read_safetensors, write_safetensors

BASE = Path(__file__).parent / "fixtures" / "checkpoints" / "base"


@pytest.fixture()
def broken(tmp_path: Path) -> Path:
    """A writable copy of the base checkpoint to break."""
    target = tmp_path / "ckpt"
    shutil.copytree(BASE, target)
    return target


def load_error(path: Path) -> str:
    with pytest.raises((CheckpointError, UnsupportedConfigError, FileNotFoundError)) as caught:
        TFWav2Vec2ForCTC.from_pretrained(str(path))
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def rewrite_weights(folder: Path, change) -> None:
    path = folder / "model.safetensors"
    tensors = {k: np.array(v) for k, v in read_safetensors(path.read_bytes()).items()}
    change(tensors)
    write_safetensors(tensors, str(path))


def test_missing_config(broken: Path) -> None:
    (broken / "config.json").unlink()
    assert "config.json" in load_error(broken)


def test_missing_weight_is_named(broken: Path) -> None:
    rewrite_weights(broken, lambda t: t.pop("lm_head.bias"))
    assert "missing weight 'lm_head.bias'" in load_error(broken)


def test_unexpected_weight_is_named(broken: Path) -> None:
    rewrite_weights(broken, lambda t: t.update({"lm_head.extra": np.zeros(3, np.float32)}))
    assert "unexpected weight 'lm_head.extra'" in load_error(broken)


def test_wrong_shape_is_named(broken: Path) -> None:
    def shrink(tensors: dict) -> None:
        tensors["wav2vec2.encoder.layers.0.attention.q_proj.weight"] = np.zeros((4, 4), np.float32)

    rewrite_weights(broken, shrink)
    message = load_error(broken)
    assert "wav2vec2.encoder.layers.0.attention.q_proj.weight" in message
    assert "(4, 4)" in message


def test_unsupported_config_field_is_named(broken: Path) -> None:
    config = json.loads((broken / "config.json").read_text())
    config["add_adapter"] = True
    (broken / "config.json").write_text(json.dumps(config))
    assert "add_adapter" in load_error(broken)


def test_unknown_activation_is_named(broken: Path) -> None:
    config = json.loads((broken / "config.json").read_text())
    config["hidden_act"] = "mish"
    (broken / "config.json").write_text(json.dumps(config))
    assert "hidden_act" in load_error(broken)


def test_garbage_weights_file(broken: Path) -> None:
    (broken / "model.safetensors").write_bytes(b"this is not a safetensors file at all")
    assert "model.safetensors" in load_error(broken)


def test_only_a_pickle_is_refused(broken: Path) -> None:
    (broken / "model.safetensors").rename(broken / "pytorch_model.bin")
    message = load_error(broken)
    assert "no weights" in message and "pytorch_model.bin" in message


def test_missing_folder(tmp_path: Path) -> None:
    assert "config.json" in load_error(tmp_path / "nowhere")


def test_input_shorter_than_receptive_field_is_a_clear_error() -> None:
    model = TFWav2Vec2ForCTC.from_pretrained(str(BASE))
    with pytest.raises(ValueError, match="at least 400"):
        model(np.zeros((1, 399), np.float32))
    model(np.zeros((1, 400), np.float32))  # exactly one frame is fine
    values = np.zeros((2, 1000), np.float32)
    mask = np.ones((2, 1000), np.int32)
    mask[1, 300:] = 0
    with pytest.raises(ValueError, match=r"items \[1\]"):
        model(values, attention_mask=mask)


# --- checked before the model is built (models.loading, models.parameter_shapes) -------------


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("base", {}),
        ("lv60", {"conv_bias": True}),
        ("seqcls", {"use_weighted_layer_sum": True}),
        ("seqcls", {"use_weighted_layer_sum": False, "mask_time_prob": 0.0}),
        ("pretrain", {}),
        ("bare", {"feat_extract_norm": "group", "do_stable_layer_norm": False}),
    ],
)
def test_the_parameters_a_config_implies_are_the_models(name: str, changes: dict) -> None:
    """The oracle of the check before building: both backends' own parameters, by name and
    PyTorch shape, for every head and norm layout."""
    from wav2vec2_beam.models import FLAX_MODEL_CLASSES, MODEL_CLASSES, Wav2Vec2Config
    from wav2vec2_beam.models.parameter_shapes import expected_parameters

    config = Wav2Vec2Config.from_pretrained(str(BASE.parent / name), **changes)
    architecture = config.architecture
    for classes, pair in ((MODEL_CLASSES, False), (FLAX_MODEL_CLASSES, True)):
        model = classes[architecture](config)
        built = {n: p.torch_shape for n, p in model.named_parameters()}
        assert dict(expected_parameters(config, architecture, pair)) == built, classes


def set_config(folder: Path, **values) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(values)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"num_hidden_layers": 1_000_000}, "wav2vec2.encoder.layers.2."),
        ({"num_hidden_layers": 2000}, "wav2vec2.encoder.layers.2."),
        ({"hidden_size": 4096, "num_attention_heads": 64}, "has shape"),
        (
            {
                "conv_dim": [32] * 100_000,
                "conv_kernel": [10, 3, 3, 3, 3, 2, 2] + [1] * (100_000 - 7),
                "conv_stride": [5, 2, 2, 2, 2, 2, 2] + [1] * (100_000 - 7),
            },
            "conv_layers.7.",
        ),
        ({"vocab_size": 10**9}, "lm_head"),
    ],
)
def test_config_sizes_the_weights_lack_are_refused_before_anything_is_built(
    broken: Path, values: dict, named: str
) -> None:
    set_config(broken, **values)
    for load in (TFWav2Vec2ForCTC.from_pretrained, FlaxWav2Vec2ForCTC.from_pretrained):
        with pytest.raises(CheckpointError) as caught:
            load(str(broken))
        assert named in str(caught.value) and "\n" not in str(caught.value)


def header_and_body(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def write_header(path: Path, header: dict, body: bytes) -> None:
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + body)


def test_safetensors_with_overlapping_tensors_is_refused(broken: Path) -> None:
    path = broken / "model.safetensors"
    header, body = header_and_body(path)
    first, second = sorted(
        (k for k in header if k != "__metadata__" and header[k]["shape"] == [32]),
    )[:2]
    header[second]["data_offsets"] = header[first]["data_offsets"]  # same bytes, twice
    write_header(path, header, body)
    message = load_error(broken)
    assert "overlap" in message and first in message and second in message


def test_safetensors_entry_without_offsets_is_named(broken: Path) -> None:
    path = broken / "model.safetensors"
    header, body = header_and_body(path)
    key = next(k for k in header if k != "__metadata__")
    del header[key]["data_offsets"]
    write_header(path, header, body)
    message = load_error(broken)
    assert "model.safetensors" in message and key in message and "data_offsets" in message


def test_safetensors_entry_whose_bytes_do_not_fit_its_shape_is_named(broken: Path) -> None:
    path = broken / "model.safetensors"
    header, body = header_and_body(path)
    key = next(k for k in header if k != "__metadata__" and header[k]["shape"] == [32])
    header[key]["shape"] = [33]
    write_header(path, header, body)
    assert key in load_error(broken)


@pytest.mark.parametrize("shard", ["../model.safetensors", "/etc/passwd", "sub/x.safetensors"])
def test_a_shard_index_names_files_of_the_checkpoint_only(broken: Path, shard: str) -> None:
    weights = broken / "model.safetensors"
    shutil.copy(weights, broken.parent / "model.safetensors")
    header, _ = header_and_body(weights)
    weights.unlink()
    weight_map = {key: shard for key in header if key != "__metadata__"}
    (broken / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    message = load_error(broken)
    assert "model.safetensors.index.json" in message and "own folder" in message

"""Broken checkpoints and bad inputs fail early with one line that names what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models import CheckpointError, TFWav2Vec2ForCTC, UnsupportedConfigError
from models.weights import read_safetensors, write_safetensors

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

"""Wav2Vec2FeatureExtractor against transformers' recorded outputs (tests/fixtures/reference/).

The fixture is written by tests/fixtures/reference_processing.py in the reference venv; here we
replay each recorded call and require the same rows within 1e-6 and identical attention masks.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
import pytest

from wav2vec2_beam.models.feature_extraction import Wav2Vec2FeatureExtractor

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
REFERENCE = FIXTURES / "reference"
CHECKPOINTS = FIXTURES / "checkpoints"
TOLERANCE = 1e-6

FIXTURE = json.loads((REFERENCE / "processing.json").read_text(encoding="utf-8"))
with np.load(REFERENCE / "processing.npz") as _arrays:
    ARRAYS = dict(_arrays)


def _waveform(name: str) -> Any:
    """A recorded input waveform; "list" was passed to the reference as a Python list."""
    audio = ARRAYS[f"audio/{name}"]
    return audio.tolist() if name == "list" else audio


def _raw_speech(inputs: str | list[str]) -> Any:
    return _waveform(inputs) if isinstance(inputs, str) else [_waveform(key) for key in inputs]


def _rows(case: dict[str, Any], key: str) -> list[np.ndarray]:
    return [ARRAYS[f"features/{case['name']}/{key}/{index}"] for index in range(case["rows"])]


@pytest.mark.parametrize("case", FIXTURE["feature_cases"], ids=lambda case: case["name"])
def test_matches_reference(case: dict[str, Any]) -> None:
    extractor = Wav2Vec2FeatureExtractor(**FIXTURE["feature_extractors"][case["config"]])
    raw_speech = _raw_speech(case["inputs"])
    if "error" in case:
        with pytest.raises(ValueError, match="max_length"):
            extractor(raw_speech, sampling_rate=FIXTURE["sampling_rate"], **case["kwargs"])
        return
    output = extractor(raw_speech, sampling_rate=FIXTURE["sampling_rate"], **case["kwargs"])
    values = output.input_values
    assert len(values) == case["rows"]
    if case["kwargs"].get("return_tensors") == "np":
        assert isinstance(values, np.ndarray) and values.ndim == 2
    for got, want in zip(values, _rows(case, "input_values"), strict=True):
        assert got.dtype == np.float32
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE)
    assert ("attention_mask" in output) == case["has_attention_mask"]
    if case["has_attention_mask"]:
        for got, want in zip(output.attention_mask, _rows(case, "attention_mask"), strict=True):
            np.testing.assert_array_equal(got, want)


def test_padding_without_mask_normalizes_the_padding_too() -> None:
    """The reference quirk wav2vec2-base-960h relies on: padding is part of the statistics."""
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=False)
    short = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    out = extractor([short, np.ones(5, np.float32)], padding=True, sampling_rate=16000)
    padded = np.array([1.0, 2.0, 3.0, 0.0, 0.0], dtype=np.float32)
    expected = (padded - padded.mean()) / np.sqrt(padded.var() + 1e-7)
    np.testing.assert_allclose(out.input_values[0], expected, atol=1e-7)
    assert out.input_values[0][-1] != 0.0


def test_padding_with_mask_keeps_padding_value() -> None:
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True, padding_value=0.0)
    short = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    out = extractor([short, np.ones(5, np.float32)], padding=True, sampling_rate=16000)
    expected = (short - short.mean()) / np.sqrt(short.var() + 1e-7)
    np.testing.assert_allclose(out.input_values[0][:3], expected, atol=1e-7)
    np.testing.assert_array_equal(out.input_values[0][3:], [0.0, 0.0])
    np.testing.assert_array_equal(out.attention_mask[0], [1, 1, 1, 0, 0])


def test_sampling_rate_mismatch_is_a_value_error() -> None:
    extractor = Wav2Vec2FeatureExtractor()
    with pytest.raises(ValueError, match="sampling rate of 16000") as error:
        extractor(np.zeros(10, np.float32), sampling_rate=8000)
    assert "not 8000" in str(error.value)
    assert "not 8000" in FIXTURE["sampling_rate_error"]


@pytest.mark.parametrize(
    "kwargs",
    [{"padding": "max_length"}, {"padding": "sideways"}, {"truncation": True}],
    ids=["max_length_without_length", "unknown_strategy", "truncation_without_length"],
)
def test_bad_padding_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Wav2Vec2FeatureExtractor()(np.zeros(10, np.float32), sampling_rate=16000, **kwargs)


def test_stereo_is_rejected() -> None:
    extractor = Wav2Vec2FeatureExtractor()
    with pytest.raises(ValueError, match="mono"):
        extractor(np.zeros((2, 3, 4), np.float32), sampling_rate=16000)
    with pytest.raises(ValueError, match="mono"):
        extractor([np.zeros((3, 2), np.float32)], sampling_rate=16000)


def test_two_dimensional_array_is_a_batch() -> None:
    batch = np.stack([ARRAYS["audio/short"], ARRAYS["audio/short"][::-1]])
    extractor = Wav2Vec2FeatureExtractor()
    from_array = extractor(batch, sampling_rate=16000, return_tensors="np")
    from_list = extractor(list(batch), sampling_rate=16000, return_tensors="np")
    assert from_array.input_values.shape == (2, 37)
    np.testing.assert_array_equal(from_array.input_values, from_list.input_values)


def test_tensorflow_input_and_output() -> None:
    tf = pytest.importorskip("tensorflow")
    extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    audio = [ARRAYS["audio/mid"], ARRAYS["audio/short"]]
    expected = extractor(audio, padding=True, sampling_rate=16000, return_tensors="np")
    output = extractor(
        [tf.constant(item) for item in audio],
        padding=True,
        sampling_rate=16000,
        return_tensors="tf",
    )
    assert isinstance(output.input_values, tf.Tensor)
    assert output.input_values.dtype == tf.float32
    np.testing.assert_array_equal(output.input_values.numpy(), expected.input_values)
    np.testing.assert_array_equal(output.attention_mask.numpy(), expected.attention_mask)
    with pytest.raises(ValueError, match="padding"):
        extractor(audio, sampling_rate=16000, return_tensors="tf")


def test_from_pretrained_reads_base960h_config() -> None:
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(CHECKPOINTS / "tokenizer_base960h"))
    assert extractor.return_attention_mask is False
    assert extractor.do_normalize is True
    assert extractor.sampling_rate == 16000
    assert extractor.padding_value == 0.0


def test_from_pretrained_reads_transformers5_processor_config() -> None:
    """transformers 5 saves processors with the extractor inside processor_config.json."""
    folder = REFERENCE / "processing_hf_saved" / "processor_lv60like"
    assert not (folder / "preprocessor_config.json").exists()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    assert extractor.return_attention_mask is True


def test_from_pretrained_overrides() -> None:
    folder = CHECKPOINTS / "tokenizer_base960h"
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder, return_attention_mask=True)
    assert extractor.return_attention_mask is True


def test_save_pretrained_round_trip(tmp_path: pathlib.Path) -> None:
    original = Wav2Vec2FeatureExtractor(
        return_attention_mask=True, padding_value=-1.0, processor_class="Wav2Vec2Processor"
    )
    path = original.save_pretrained(str(tmp_path / "saved"))
    saved = json.loads(pathlib.Path(path).read_text())
    assert saved["feature_extractor_type"] == "Wav2Vec2FeatureExtractor"
    assert saved["processor_class"] == "Wav2Vec2Processor"
    loaded = Wav2Vec2FeatureExtractor.from_pretrained(str(tmp_path / "saved"))
    assert loaded.to_dict() == original.to_dict()
    audio = [ARRAYS["audio/mid"], ARRAYS["audio/short"]]
    np.testing.assert_array_equal(
        loaded(audio, padding=True, sampling_rate=16000, return_tensors="np").input_values,
        original(audio, padding=True, sampling_rate=16000, return_tensors="np").input_values,
    )


def test_missing_config_names_the_path(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        Wav2Vec2FeatureExtractor.from_pretrained(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "preprocessor_config.json") in message
    assert "\n" not in message

"""Wav2Vec2Processor against transformers' recorded outputs (tests/fixtures/reference/).

Besides plain delegation, the processor's keyword routing is checked: the reference takes
`return_attention_mask` from tokenizer_config.json for both halves (the "mixed" cases).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
import pytest

from wav2vec2_beam.models.feature_extraction import Wav2Vec2FeatureExtractor
from wav2vec2_beam.models.processing import Wav2Vec2Processor
from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
REFERENCE = FIXTURES / "reference"
CHECKPOINTS = FIXTURES / "checkpoints"
TOLERANCE = 1e-6

FIXTURE = json.loads((REFERENCE / "processing.json").read_text(encoding="utf-8"))
with np.load(REFERENCE / "processing.npz") as _arrays:
    ARRAYS = dict(_arrays)


def _processor(folder: str) -> Wav2Vec2Processor:
    if folder == "mixed":
        return Wav2Vec2Processor(
            Wav2Vec2FeatureExtractor(return_attention_mask=True),
            Wav2Vec2CTCTokenizer.from_pretrained(str(CHECKPOINTS / "tokenizer_base960h")),
        )
    if folder.startswith("hf_saved/"):
        return Wav2Vec2Processor.from_pretrained(
            str(REFERENCE / "processing_hf_saved" / folder.removeprefix("hf_saved/"))
        )
    return Wav2Vec2Processor.from_pretrained(str(CHECKPOINTS / folder))


def _to_list(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


@pytest.mark.parametrize("case", FIXTURE["processor_cases"], ids=lambda case: case["name"])
def test_matches_reference(case: dict[str, Any]) -> None:
    processor = _processor(case["folder"])
    kwargs = dict(case["kwargs"])
    if case["audio"] is not None:
        kwargs["audio"] = [ARRAYS[f"audio/{name}"] for name in case["audio"]]
        kwargs["sampling_rate"] = FIXTURE["sampling_rate"]
    if case["text"] is not None:
        kwargs["text"] = case["text"]
    output = processor(**kwargs)
    assert sorted(output.keys()) == case["keys"]
    for key in ("input_values", "attention_mask"):
        if key not in output:
            continue
        rows = [ARRAYS[f"processor/{case['name']}/{key}/{i}"] for i in range(case[f"{key}_rows"])]
        assert len(output[key]) == len(rows)
        for got, want in zip(output[key], rows, strict=True):
            np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=TOLERANCE)
    for key in ("input_ids", "labels"):
        if key in case:
            assert _to_list(output[key]) == case[key]


def test_needs_audio_or_text() -> None:
    with pytest.raises(ValueError, match="audio"):
        _processor("tokenizer_base960h")()


def test_unknown_keyword_is_an_error() -> None:
    with pytest.raises(TypeError, match="padd"):
        _processor("tokenizer_base960h")(text="HI", padd=True)


def test_modality_kwargs_target_one_half() -> None:
    processor = _processor("processor_lv60like")
    audio = [ARRAYS["audio/mid"], ARRAYS["audio/short"]]
    output = processor(
        audio=audio,
        text=["AB", "ABCD"],
        sampling_rate=16000,
        audio_kwargs={"padding": True},
        text_kwargs={"padding": "max_length", "max_length": 6},
    )
    assert len(output.input_values[1]) == 1000
    assert output.labels == [[7, 24, 0, 0, 0, 0], [7, 24, 19, 14, 0, 0]]


def test_decode_delegates_to_tokenizer() -> None:
    processor = _processor("tokenizer_base960h")
    ids = np.array([[11, 11, 0, 5, 15, 0, 15, 8], [4, 18, 8, 0, 0, 0, 0, 0]])
    assert processor.batch_decode(ids) == ["HELLO", "WO"]
    assert processor.decode(ids[0]) == "HELLO"
    assert processor.decode(ids[0], output_word_offsets=True).word_offsets == [
        {"word": "HELLO", "start_offset": 0, "end_offset": 8}
    ]


def test_model_input_names() -> None:
    assert _processor("tokenizer_base960h").model_input_names == [
        "input_values",
        "attention_mask",
        "labels",
    ]


@pytest.mark.parametrize("folder", ["tokenizer_base960h", "processor_lv60like"])
def test_save_pretrained_round_trip(folder: str, tmp_path: pathlib.Path) -> None:
    original = _processor(folder)
    original.save_pretrained(str(tmp_path))
    loaded = Wav2Vec2Processor.from_pretrained(str(tmp_path))
    assert loaded.feature_extractor.to_dict() == original.feature_extractor.to_dict()
    assert loaded.tokenizer.config == original.tokenizer.config
    audio = [ARRAYS["audio/mid"], ARRAYS["audio/short"]]
    kwargs = {"audio": audio, "text": ["AB C", "D"], "sampling_rate": 16000, "padding": True}
    got, want = loaded(**kwargs), original(**kwargs)
    assert sorted(got) == sorted(want)
    assert got.labels == want.labels
    for got_row, want_row in zip(got.input_values, want.input_values, strict=True):
        np.testing.assert_array_equal(got_row, want_row)


def test_missing_vocab_names_the_path(tmp_path: pathlib.Path) -> None:
    Wav2Vec2FeatureExtractor().save_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        Wav2Vec2Processor.from_pretrained(str(tmp_path))
    assert str(tmp_path / "vocab.json") in str(error.value)
    assert "\n" not in str(error.value)

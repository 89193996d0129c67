"""Wav2Vec2CTCTokenizer against transformers' recorded outputs (tests/fixtures/reference/).

Encodings, decoded texts and offsets must be identical to the reference's, for the hand-picked
cases and the seeded random strings and id sequences recorded by reference_processing.py. Cases
are checked per tokenizer in one test so that a failure lists every mismatch at once.
"""

from __future__ import annotations

import json
import pathlib
import pickle
from typing import Any

import numpy as np
import pytest

from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer, Wav2Vec2CTCTokenizerOutput

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
REFERENCE = FIXTURES / "reference"
CHECKPOINTS = FIXTURES / "checkpoints"

FIXTURE = json.loads((REFERENCE / "processing.json").read_text(encoding="utf-8"))
TOKENIZER_NAMES = list(FIXTURE["tokenizers"])


def _folder(name: str) -> pathlib.Path:
    folder = FIXTURE["tokenizers"][name]["folder"]
    if folder.startswith("hf_saved/"):
        return REFERENCE / "processing_hf_saved" / folder.removeprefix("hf_saved/")
    return CHECKPOINTS / folder


def _load(name: str) -> Wav2Vec2CTCTokenizer:
    return Wav2Vec2CTCTokenizer.from_pretrained(
        str(_folder(name)), **FIXTURE["tokenizers"][name]["overrides"]
    )


def _plain(value: Any) -> Any:
    """Outputs as JSON would hold them (arrays -> lists), to compare with the fixture."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _decoded(result: Any) -> dict[str, Any]:
    if isinstance(result, (str, list)):
        return {"text": result}
    assert isinstance(result, Wav2Vec2CTCTokenizerOutput)
    return {
        "text": result.text,
        "char_offsets": result.char_offsets,
        "word_offsets": result.word_offsets,
    }


def _encode_mismatches(tokenizer: Wav2Vec2CTCTokenizer, cases: list[dict]) -> list[str]:
    mismatches = []
    for case in cases:
        output = tokenizer(case["text"], **case["kwargs"])
        got = _plain(dict(output))
        if got != case["output"]:
            mismatches.append(f"{case['text']!r} {case['kwargs']}: {got} != {case['output']}")
        for key, type_name in case.get("output_types", {}).items():
            if type(output[key]).__name__ != type_name:
                mismatches.append(f"{case['text']!r} {case['kwargs']}: {key} type")
    return mismatches


def _decode_mismatches(tokenizer: Wav2Vec2CTCTokenizer, cases: list[dict]) -> list[str]:
    mismatches = []
    for case in cases:
        ids = np.int64(case["ids"]) if isinstance(case["ids"], int) else case["ids"]
        got = _decoded(tokenizer.decode(ids, **case["kwargs"]))
        if got != case["output"]:
            mismatches.append(f"{case['ids']} {case['kwargs']}: {got} != {case['output']}")
    return mismatches


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_encode_matches_reference(name: str) -> None:
    cases = [case for case in FIXTURE["encode_cases"] if case["tokenizer"] == name]
    assert cases
    mismatches = _encode_mismatches(_load(name), cases)
    assert not mismatches, "\n".join(mismatches[:20])


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_decode_matches_reference(name: str) -> None:
    cases = [case for case in FIXTURE["decode_cases"] if case["tokenizer"] == name]
    assert cases
    mismatches = _decode_mismatches(_load(name), cases)
    assert not mismatches, "\n".join(mismatches[:20])


@pytest.mark.parametrize(
    "case",
    FIXTURE["batch_decode_cases"],
    ids=lambda case: f"{case['tokenizer']}-{'-'.join(sorted(case['kwargs'])) or 'plain'}",
)
def test_batch_decode_matches_reference(case: dict[str, Any]) -> None:
    tokenizer = _load(case["tokenizer"])
    for ids in (case["ids"], np.array(case["ids"]), np.array(case["ids"], dtype=np.int32)):
        assert _decoded(tokenizer.batch_decode(ids, **case["kwargs"])) == case["output"]


def test_tensorflow_ids() -> None:
    tf = pytest.importorskip("tensorflow")
    tokenizer = _load("base960h")
    case = next(case for case in FIXTURE["batch_decode_cases"] if case["kwargs"] == {})
    ids = tf.constant(case["ids"], dtype=tf.int64)
    assert tokenizer.batch_decode(ids) == case["output"]["text"]
    assert tokenizer.decode(ids[0]) == case["output"]["text"][0]
    # argmax over logits gives int64 tensors: the pipeline's path.
    logits = tf.one_hot(ids, depth=32)
    assert tokenizer.batch_decode(tf.argmax(logits, axis=-1)) == case["output"]["text"]
    encoded = tokenizer(["HELLO", "HI"], padding=True, return_tensors="tf")
    assert isinstance(encoded.input_ids, tf.Tensor)
    assert encoded.input_ids.numpy().tolist() == [[11, 5, 15, 15, 8], [11, 10, 0, 0, 0]]


def test_special_tokens_and_vocabulary() -> None:
    tokenizer = _load("base960h")
    assert tokenizer.all_special_tokens == ["<s>", "</s>", "<unk>", "<pad>", "|"]
    assert tokenizer.all_special_ids == [1, 2, 3, 0, 4]
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.word_delimiter_token_id) == (
        0,
        3,
        4,
    )
    assert tokenizer.vocab_size == len(tokenizer) == 32
    assert tokenizer.convert_ids_to_tokens([1, 5, 99]) == ["<s>", "E", "<unk>"]
    assert tokenizer.convert_ids_to_tokens(np.int64(5)) == "E"
    assert tokenizer.convert_ids_to_tokens([1, 5, 4], skip_special_tokens=True) == ["E"]


def test_special_tokens_outside_the_vocabulary_get_new_ids() -> None:
    tokenizer = _load("custom")
    assert tokenizer.vocab_size == 10
    assert len(tokenizer) == 13
    assert tokenizer.convert_tokens_to_ids(["<s>", "</s>", "<noise>"]) == [10, 11, 12]
    assert tokenizer.convert_ids_to_tokens([10, 11, 12]) == ["<s>", "</s>", "<noise>"]


def test_decode_rejects_a_batch() -> None:
    with pytest.raises(ValueError, match="batch_decode"):
        _load("base960h").decode([[1, 2], [3, 4]])


def test_empty_batch_decode() -> None:
    tokenizer = _load("base960h")
    assert tokenizer.batch_decode([]) == []
    output = tokenizer.batch_decode(np.zeros((0, 5), np.int64), output_char_offsets=True)
    assert output.text == []


@pytest.mark.parametrize("name", ["base960h", "base960h_lower", "custom"])
def test_save_pretrained_round_trip(name: str, tmp_path: pathlib.Path) -> None:
    original = _load(name)
    original.save_pretrained(str(tmp_path))
    assert {path.name for path in tmp_path.iterdir()} == {
        "vocab.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    loaded = Wav2Vec2CTCTokenizer.from_pretrained(str(tmp_path))
    assert loaded.added_tokens_decoder == original.added_tokens_decoder
    assert loaded.all_special_tokens == original.all_special_tokens
    assert loaded.do_lower_case == original.do_lower_case
    encode_cases = [case for case in FIXTURE["encode_cases"] if case["tokenizer"] == name]
    decode_cases = [case for case in FIXTURE["decode_cases"] if case["tokenizer"] == name]
    assert not _encode_mismatches(loaded, encode_cases)
    assert not _decode_mismatches(loaded, decode_cases)


def test_pickle_round_trip() -> None:
    """Beam pickles DoFns together with the tokenizer they hold."""
    tokenizer = _load("custom")
    restored = pickle.loads(pickle.dumps(tokenizer))
    assert restored("ab <noise> ch").input_ids == tokenizer("ab <noise> ch").input_ids
    assert restored.decode([3, 12, 3, 10, 2, 8]) == tokenizer.decode([3, 12, 3, 10, 2, 8])


def test_missing_vocab_names_the_path(tmp_path: pathlib.Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as error:
        Wav2Vec2CTCTokenizer.from_pretrained(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "vocab.json") in message
    assert "\n" not in message


def test_invalid_vocab_json_names_the_path(tmp_path: pathlib.Path) -> None:
    (tmp_path / "vocab.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"vocab\.json"):
        Wav2Vec2CTCTokenizer.from_pretrained(str(tmp_path))

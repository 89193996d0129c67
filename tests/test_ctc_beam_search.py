"""Our CTC beam search against pyctcdecode through transformers' `Wav2Vec2ProcessorWithLM`.

The oracle is tests/fixtures/reference/lm_decode.{json,npz} (tests/fixtures/make_lm_reference.py):
transformers' PyTorch logits of the demo model on held-out and out-of-domain speech, peaky random
logits, and what `processor.decode` returned for them under several settings, with the LM saved
by transformers in tests/fixtures/lm/. The LM's pieces are checked against hand-computed values.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from dataclasses import replace
from pathlib import Path

import jiwer
import numpy as np
import pytest

from wav2vec2_beam.demo import MODEL_DIR
from wav2vec2_beam.lm.arpa import read_arpa
from wav2vec2_beam.models.ctc_beam_search import (
    AlphabetError,
    BeamSearchOptions,
    CtcBeamSearchDecoder,
    HotwordScorer,
    PrefixSet,
    alphabet_from_vocab,
    check_alphabet,
    log_softmax,
)
from wav2vec2_beam.models.language_model import (
    FusionWeights,
    LanguageModelError,
    NgramLanguageModel,
    arpa_unigrams,
    find_language_model,
    read_alphabet,
    standalone_language_model,
)
from wav2vec2_beam.transforms.write.lm_decode import (
    BeamDecoding,
    DecodePool,
    align_word,
    load_decoder,
    word_rows,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LM_DIR = FIXTURES / "lm"
REFERENCE = json.loads((FIXTURES / "reference" / "lm_decode.json").read_text())
LOGITS = np.load(FIXTURES / "reference" / "lm_decode.npz")
VOCAB = json.loads((MODEL_DIR / "vocab.json").read_text())
TOKENS = sorted(VOCAB, key=VOCAB.get)


@pytest.fixture(scope="module")
def decoder() -> CtcBeamSearchDecoder:
    files = find_language_model(str(LM_DIR))
    assert files is not None
    return CtcBeamSearchDecoder(read_alphabet(str(LM_DIR)), NgramLanguageModel.load(files))


def _options(settings: dict) -> BeamSearchOptions:
    return BeamSearchOptions(
        beam_width=settings.get("beam_width", 100),
        hotwords=tuple(settings.get("hotwords", ())),
        hotword_weight=settings.get("hotword_weight", 10.0),
    )


def _weights(settings: dict) -> FusionWeights:
    return FusionWeights(
        settings.get("alpha", 0.5),
        settings.get("beta", 1.5),
        settings.get("unk_score_offset", -10.0),
        settings.get("lm_score_boundary", True),
    )


def _same(expected: dict, got, name: str) -> None:
    assert got.text == expected["text"], name
    assert [[w, s, e] for w, (s, e) in got.words] == expected["words"], name
    assert got.logit_score == pytest.approx(expected["logit_score"], abs=1e-9), name
    assert got.score == pytest.approx(expected["lm_score"], abs=1e-9), name


@pytest.mark.parametrize("setting", sorted(REFERENCE["settings"]))
def test_equals_transformers_processor_with_lm(decoder: CtcBeamSearchDecoder, setting: str) -> None:
    settings = REFERENCE["settings"][setting]
    decoder.language_model.weights = _weights(settings)
    try:
        for name in LOGITS.files:
            got = decoder.decode(log_softmax(LOGITS[name]), _options(settings))
            _same(REFERENCE["expected"][name][setting], got, f"{name} {setting}")
    finally:
        decoder.language_model.weights = FusionWeights()


@pytest.mark.parametrize("hotwords", [(), ("MARTIN",)])
def test_equals_pyctcdecode_without_an_lm(hotwords: tuple[str, ...]) -> None:
    plain = CtcBeamSearchDecoder(read_alphabet(str(LM_DIR)))
    options = BeamSearchOptions(hotwords=hotwords, hotword_weight=6.0)
    setting = "no_lm_hotwords" if hotwords else "no_lm"
    for name in LOGITS.files:
        got = plain.decode(log_softmax(LOGITS[name]), options)
        _same(REFERENCE["expected"][name][setting], got, name)


def test_the_lm_helps_on_held_out_speech(decoder: CtcBeamSearchDecoder) -> None:
    """Not parity: the point of it. Fewer word errors than the frame-wise argmax."""
    references, greedy, beam = [], [], []
    for name, text in REFERENCE["references"].items():
        logits = LOGITS[name]
        ids = logits.argmax(-1)
        spelled = "".join(
            TOKENS[i] for k, i in enumerate(ids) if i != 0 and (k == 0 or ids[k - 1] != i)
        )
        references.append(text)
        greedy.append(" ".join(spelled.replace("|", " ").split()))
        beam.append(decoder.decode(log_softmax(logits)).text)
    assert jiwer.wer(references, beam) < 0.75 * jiwer.wer(references, greedy)


def test_alphabet_of_the_vocabulary_is_transformers_saved_one() -> None:
    assert alphabet_from_vocab(TOKENS) == read_alphabet(str(LM_DIR))
    check_alphabet(read_alphabet(str(LM_DIR)), TOKENS, "|")


def test_an_alphabet_in_another_order_or_size_is_refused() -> None:
    labels = read_alphabet(str(LM_DIR))
    swapped = [labels[0], labels[1], labels[2], labels[3], labels[4], labels[6], labels[5]]
    with pytest.raises(AlphabetError, match="at 2 of 32 ids"):
        check_alphabet(swapped + labels[7:], TOKENS, "|")
    with pytest.raises(AlphabetError, match="31 labels and the vocabulary 32"):
        check_alphabet(labels[:-1], TOKENS, "|")
    with pytest.raises(AlphabetError, match="BPE"):
        alphabet_from_vocab(["<pad>", "▁the", "##s"])


def test_prefix_set_and_hotwords_by_hand() -> None:
    words = PrefixSet(["CAT", "CATALOG", "DOG"])
    assert words.starts_a_word("CA") and words.starts_a_word("CAT") and "CAT" in words
    assert not words.starts_a_word("CAX") and "CA" not in words
    assert words.shortest_with_prefix("CA") == 3
    hot = HotwordScorer(["BEAM SEARCH", "BEAMS"], weight=4.0)
    assert hot.score("A BEAM SEARCH OF BEAMS") == 12.0  # BEAM, SEARCH, BEAMS
    assert hot.score("ABEAM") == 0.0  # whole words only
    assert hot.score_partial("BE") == 4.0 * 2 / 4  # shortest hotword starting BE: BEAM
    assert hot.score_partial("SEA") == 4.0 * 3 / 6
    assert hot.score_partial("X") == 0.0


def test_lm_scores_by_hand() -> None:
    """alpha x ln(10) x log10 P + beta, with KenLM's probabilities read off the ARPA file."""
    files = find_language_model(str(LM_DIR))
    weights = FusionWeights(alpha=0.7, beta=2.0, unk_score_offset=-10.0, score_boundary=True)
    model = NgramLanguageModel.load(files.with_weights(alpha=0.7, beta=2.0))
    arpa = read_arpa(files.kenlm_path)
    ln10 = math.log(10)
    bigram = next(g for g in arpa[2] if g[0] == "<s>" and g[1] != "</s>")
    score, _ = model.score_word(model.start_state(), bigram[1], last=False)
    assert score == pytest.approx(weights.alpha * ln10 * arpa[2][bigram][0] + weights.beta)
    # An unknown word backs off to <unk>, and pays the offset on top.
    unknown, _ = model.score_word(model.start_state(), "QQQQ", last=False)
    backoff = arpa[1][("<s>",)][1]
    expected = backoff + arpa[1][("<unk>",)][0] - 10.0
    assert unknown == pytest.approx(weights.alpha * ln10 * expected + weights.beta, abs=1e-5)
    assert model.score_partial_word(bigram[1][:2]) == 0.0
    assert model.score_partial_word("QQ") == -10.0
    assert model.score_partial_word("QQQQQQQQQ") == pytest.approx(-10.0 * 9 / 6)


def test_word_frames_become_timings_and_confidence_by_alignment() -> None:
    labels = ("", " ", "A", "B")
    # Frames: A A _ B _  -> the word "AB" over frames 0..4 (end exclusive at 4).
    probabilities = np.array(
        [
            [0.1, 0.0, 0.8, 0.1],
            [0.2, 0.0, 0.6, 0.2],
            [0.7, 0.0, 0.2, 0.1],
            [0.1, 0.0, 0.1, 0.8],
        ]
    )
    log_probs = np.log(np.clip(probabilities, 1e-9, 1))
    decoding = BeamDecoding(labels, BeamSearchOptions(), 0.02, "unused", use_lm=False)
    chars, words = word_rows([("AB", (0, 4))], log_probs, decoding)
    assert [(c["char"], c["start_s"], c["end_s"]) for c in chars] == [
        ("A", 0.0, 0.04),
        ("B", 0.06, 0.08),
    ]
    assert chars[0]["confidence"] == pytest.approx(0.7)  # mean of 0.8 and 0.6
    assert words[0]["confidence"] == pytest.approx((0.8 + 0.6 + 0.8) / 3)
    assert (words[0]["start_s"], words[0]["end_s"]) == (0.0, 0.08)
    # A doubled letter needs a blank between its two emissions.
    assert align_word([("A", 2), ("A", 2)], log_probs[:2], blank=0) is None
    spans = align_word([("A", 2), ("A", 2)], log_probs[:3], blank=0)
    assert [span[1][:2] for span in spans] == [(0, 1), (2, 3)]


def test_the_pool_decodes_in_another_process_as_in_this_one() -> None:
    files = find_language_model(str(LM_DIR))
    decoding = BeamDecoding(
        tuple(read_alphabet(str(LM_DIR))), BeamSearchOptions(), 0.02, str(LM_DIR)
    )
    assert decoding.language_model_files() == files
    log_probs = log_softmax(LOGITS["heldout/00.flac"])
    here = load_decoder(decoding.labels, files).decode(log_probs)
    before = {child.pid for child in multiprocessing.active_children()}
    pool = DecodePool(decoding, processes=1)
    try:
        text, _, words = pool.submit(log_probs).result(timeout=120)
        assert len({child.pid for child in multiprocessing.active_children()} - before) == 1
    finally:
        pool.shutdown()
    assert text == here.text
    assert [w["word"] for w in words] == [word for word, _ in here.words]


def test_lm_files_are_found_or_refused_by_name(tmp_path: Path) -> None:
    assert find_language_model(str(tmp_path)) is None
    folder = tmp_path / "language_model"
    folder.mkdir()
    (folder / "attrs.json").write_text(json.dumps({"alpha": 0.5}))
    with pytest.raises(LanguageModelError, match=r"attrs\.json: expected the keys"):
        find_language_model(str(tmp_path))
    (folder / "attrs.json").write_text((LM_DIR / "language_model" / "attrs.json").read_text())
    with pytest.raises(LanguageModelError, match="expected one KenLM file"):
        find_language_model(str(tmp_path))
    (folder / "lm.arpa").write_text("not an arpa file\n")
    files = find_language_model(str(tmp_path))
    with pytest.raises(LanguageModelError, match=r"lm\.arpa: not a KenLM model"):
        NgramLanguageModel.load(files)


def test_a_standalone_arpa_brings_its_unigrams(tmp_path: Path) -> None:
    arpa = next((LM_DIR / "language_model").glob("*.arpa"))
    files = standalone_language_model(str(arpa))
    assert files.unigrams_from_arpa and files.weights == FusionWeights()
    words = NgramLanguageModel.load(files).unigrams
    # transformers saved the list as pyctcdecode keeps it: the words KenLM knows (not <unk>).
    saved = set((LM_DIR / "language_model" / "unigrams.txt").read_text().split())
    assert set(words) == saved
    assert set(arpa_unigrams(str(arpa))) == saved | {"<unk>"}
    binary = tmp_path / "lm.bin"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\n\0")
    with pytest.raises(LanguageModelError, match="needs its word list"):
        standalone_language_model(str(binary))
    with pytest.raises(LanguageModelError, match="no such file"):
        standalone_language_model(str(tmp_path / "missing.arpa"))


def test_a_word_of_any_length_aligns() -> None:
    """Backtracking through a word of 70 characters (140 alignment states)."""
    labels = ("", " ", "A", "B")
    spelled = [("A", 2), ("B", 3)] * 35
    frames = np.full((140, 4), np.log(0.01))
    for index, (_, label) in enumerate(spelled):
        frames[2 * index, label] = np.log(0.97)
        frames[2 * index + 1, 0] = np.log(0.97)
    decoding = BeamDecoding(labels, BeamSearchOptions(), 0.02, "unused", use_lm=False)
    chars, words = word_rows([("AB" * 35, (0, 139))], frames, decoding)
    assert [c["char"] for c in chars] == ["A", "B"] * 35
    assert [round(c["start_s"] / 0.02) for c in chars] == list(range(0, 140, 2))
    assert words[0]["confidence"] == pytest.approx(0.97)


def test_an_item_the_decoder_cannot_decode_becomes_its_error_row() -> None:
    """The stitched item is fine, its decoding fails (here: fewer labels than logit columns)."""
    from wav2vec2_beam.transforms.records import CTC_LOG_PROBS, ErrorRecord, ItemResult
    from wav2vec2_beam.transforms.write.ctc_decode import _DecodeCtc

    labels = tuple(read_alphabet(str(LM_DIR)))[:-1]
    decoding = BeamDecoding(labels, BeamSearchOptions(), 0.02, "unused", use_lm=False)
    decode = _DecodeCtc(str(MODEL_DIR), 320, decoding, 1)
    decode.setup()
    log_probs = log_softmax(LOGITS["heldout/00.flac"])
    item = ItemResult("a.wav", "a.wav", 1.0, 16_000, len(log_probs), {CTC_LOG_PROBS: log_probs})
    item = replace(item, bundle="bundle-7")
    out = [*decode.process(item), *(v.value for v in decode.finish_bundle())]
    assert len(out) == 1 and isinstance(out[0], ErrorRecord), out
    assert (out[0].id, out[0].stage) == ("a.wav", "ctc_decode")
    assert "log-probabilities of shape" in out[0].error
    assert out[0].bundle == "bundle-7"  # a retried bundle's writer finds this row's piece


def test_a_pool_that_was_shut_down_is_replaced() -> None:
    """Another thread, or a dead process, left the shared pool unusable: the next item gets a
    new one, and its decoded row leaves its log-probabilities behind."""
    from wav2vec2_beam.transforms.records import CTC_LOG_PROBS, ItemResult
    from wav2vec2_beam.transforms.write.ctc_decode import _DecodeCtc
    from wav2vec2_beam.transforms.write.lm_decode import shared_pool

    labels = tuple(read_alphabet(str(LM_DIR)))
    decoding = BeamDecoding(labels, BeamSearchOptions(), 0.02, "unused", use_lm=False)
    decode = _DecodeCtc(str(MODEL_DIR), 320, decoding, 1)
    decode.setup()
    shared_pool(decoding, 1).shutdown()
    log_probs = log_softmax(LOGITS["heldout/00.flac"])
    item = ItemResult("a.wav", "a.wav", 1.0, 16_000, len(log_probs), {CTC_LOG_PROBS: log_probs})
    (out,) = [*decode.process(item), *(v.value for v in decode.finish_bundle())]
    expected = CtcBeamSearchDecoder(labels).decode(log_probs)
    assert out.transcript["transcript"] == expected.text
    assert CTC_LOG_PROBS not in out.frames


def test_hotwords_alone_ask_for_beam_search_and_weights_need_an_lm(tmp_path: Path) -> None:
    from wav2vec2_beam.transforms.write.lm_decode import plan_decoding

    plain = tmp_path / "plain"
    plain.mkdir()
    common = {
        "decoder": None,
        "checkpoint": str(plain),
        "lm_path": None,
        "tokens_by_id": TOKENS,
        "word_delimiter": "|",
        "blank": "<pad>",
        "seconds_per_frame": 0.02,
    }
    assert plan_decoding(**common, options=BeamSearchOptions()) is None
    planned = plan_decoding(**common, options=BeamSearchOptions(hotwords=("MARTIN",)))
    assert planned is not None and not planned.use_lm
    with pytest.raises(LanguageModelError, match="--lm_alpha/--lm_beta weigh an LM"):
        plan_decoding(**common, options=BeamSearchOptions(), alpha=0.7)


def test_the_blank_is_the_pad_token_whatever_its_name() -> None:
    assert alphabet_from_vocab(["<blank>", "|", "A", "<unk>"], "|", "<blank>") == [
        "",
        " ",
        "A",
        "⁇",
    ]

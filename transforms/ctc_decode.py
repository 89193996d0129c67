"""Beam stage: stitched `ItemResult`s in, with their transcript rows (text, word and char timings).

Greedy CTC decoding is the reference ASR pipeline's: the per-frame argmax ids (computed at
inference from the stitched logits' frames) are decoded by our `Wav2Vec2CTCTokenizer` exactly as
transformers' pipeline decodes them for a CTC model (`skip_special_tokens=False`, repeats merged,
blanks dropped, the word delimiter turned into a space), so our text equals the pipeline's.

Timings are the tokenizer's frame offsets turned into seconds as the pipeline does it:
`frame * inputs_to_logits_ratio / 16000`, end exclusive. Like the pipeline's, the offsets of a
`do_lower_case` tokenizer keep the vocabulary's case while the transcript is lower-cased.

Confidence: for a character, the mean over the frames where it was emitted (its run of repeated
ids, blanks excluded) of the frame's top softmax probability, which is the probability of that
character; for a word, the same mean over the frames of all of its characters. Blank frames are
left out on purpose: the model is nearly always sure of blanks, and counting them would make
every word look confident. Values are in (0, 1]; a word the model hesitated on scores lower.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import apache_beam as beam
import numpy as np

from transforms.decode_items import REFERENCE
from transforms.records import (
    CTC_CONFIDENCE,
    CTC_IDS,
    TARGET_SAMPLE_RATE,
    ErrorRecord,
    ItemResult,
)


def decode_ctc(
    ids: np.ndarray, confidence: np.ndarray, tokenizer: Any, inputs_to_logits_ratio: int
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """(transcript, chars, words) of one item's greedy ids and per-frame top probabilities.

    `chars` entries are {char, start_s, end_s, confidence}, `words` entries {word, start_s, end_s,
    confidence}; see the module docstring for the formulas.
    """
    decoded = tokenizer.decode(ids, output_char_offsets=True, output_word_offsets=True)
    seconds_per_frame = inputs_to_logits_ratio / TARGET_SAMPLE_RATE
    cumulative = np.concatenate([[0.0], np.cumsum(confidence, dtype=np.float64)])
    delimiter = tokenizer.replace_word_delimiter_char

    chars = []
    for offset in decoded.char_offsets:
        start, end = offset["start_offset"], offset["end_offset"]
        chars.append(
            {
                "char": offset["char"],
                "start_s": start * seconds_per_frame,
                "end_s": end * seconds_per_frame,
                "confidence": float((cumulative[end] - cumulative[start]) / (end - start)),
            }
        )

    words = []
    char_index = 0
    offsets = decoded.char_offsets
    for word in decoded.word_offsets:
        start, end = word["start_offset"], word["end_offset"]
        total = 0.0
        count = 0
        # Characters are ordered and disjoint, and a word's span holds exactly its characters.
        while char_index < len(offsets) and offsets[char_index]["start_offset"] < end:
            offset = offsets[char_index]
            if offset["start_offset"] >= start and offset["char"] != delimiter:
                total += cumulative[offset["end_offset"]] - cumulative[offset["start_offset"]]
                count += offset["end_offset"] - offset["start_offset"]
            char_index += 1
        words.append(
            {
                "word": word["word"],
                "start_s": start * seconds_per_frame,
                "end_s": end * seconds_per_frame,
                "confidence": float(total / count),
            }
        )
    return decoded.text, chars, words


class _DecodeCtc(beam.DoFn):
    def __init__(self, model_dir: str, inputs_to_logits_ratio: int) -> None:
        self._model_dir = model_dir
        self._ratio = inputs_to_logits_ratio

    def setup(self) -> None:
        from models.tokenizer import Wav2Vec2CTCTokenizer

        self._tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(self._model_dir)

    def process(self, item: ItemResult | ErrorRecord) -> Iterator[ItemResult | ErrorRecord]:
        if isinstance(item, ErrorRecord):  # on to the writer as it is
            yield item
            return
        text, chars, words = decode_ctc(
            item.frames[CTC_IDS], item.frames[CTC_CONFIDENCE], self._tokenizer, self._ratio
        )
        yield replace(item, transcript=self._row(item, text, chars, words))

    def _row(
        self, item: ItemResult, text: str, chars: list[dict], words: list[dict]
    ) -> dict[str, Any]:
        return {
            "id": item.id,
            "source": item.source,
            "transcript": text,
            "duration_s": item.duration_s,
            "sample_rate": item.sample_rate,
            "num_frames": item.num_frames,
            "words": words,
            "chars": chars,
            "model": self._model_dir,
            "reference": item.metadata.get(REFERENCE),
        }


class CtcDecode(beam.PTransform):
    """`ItemResult`s (with CTC ids) to the same items with their `transcripts/` row attached.

    The row rides on the item, so that one writer commits every table's rows of an item together;
    the `ErrorRecord`s of the same stream pass through on their way to that writer.
    """

    def __init__(self, model_dir: str, inputs_to_logits_ratio: int) -> None:
        super().__init__()
        self._fn = _DecodeCtc(model_dir, inputs_to_logits_ratio)

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        return items | "Decode" >> beam.ParDo(self._fn)

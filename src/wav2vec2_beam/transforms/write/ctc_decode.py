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

Beam search (`--decoder beam`, the default for a checkpoint that ships a `language_model/`) is
`models.ctc_beam_search`, pyctcdecode's search, run in decoding processes beside the model
(`transforms.write.lm_decode`, which also defines its word timings and confidence). Its rows have the
same fields; their `chars` hold the words' characters only, with no entries for spaces.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from wav2vec2_beam.transforms.read.decode_items import REFERENCE
from wav2vec2_beam.transforms.records import (
    CTC_CONFIDENCE,
    CTC_IDS,
    CTC_LOG_PROBS,
    TARGET_SAMPLE_RATE,
    ErrorRecord,
    ItemResult,
    frame_time,
)
from wav2vec2_beam.transforms.write.lm_decode import (
    BeamDecoding,
    DecodePool,
    discard_pool,
    shared_pool,
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
                "start_s": frame_time(start, seconds_per_frame),
                "end_s": frame_time(end, seconds_per_frame),
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
                "start_s": frame_time(start, seconds_per_frame),
                "end_s": frame_time(end, seconds_per_frame),
                "confidence": float(total / count),
            }
        )
    return decoded.text, chars, words


class _DecodeCtc(beam.DoFn):
    """Greedy decoding inline; beam search handed to the shared pool of decoding processes.

    A beam-searched item waits in `_pending` (oldest first) while the model goes on with the next
    batch; the oldest finished ones leave at each call, and at most `2 x processes + 2` wait per
    DoFn instance (one per harness thread), so memory stays flat however far inference runs
    ahead of decoding.
    """

    def __init__(
        self, model_dir: str, inputs_to_logits_ratio: int, beam: BeamDecoding | None, processes: int
    ) -> None:
        self._model_dir = model_dir
        self._ratio = inputs_to_logits_ratio
        self._beam = beam
        self._processes = processes

    def setup(self) -> None:
        from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer

        self._tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(self._model_dir)
        self._pending: deque[tuple[ItemResult, DecodePool, list[Future]]] = deque()

    def process(self, item: ItemResult | ErrorRecord) -> Iterator[ItemResult | ErrorRecord]:
        if isinstance(item, ErrorRecord):  # on to the writer as it is
            yield item
            return
        if self._beam is None:
            decoded = [
                decode_ctc(ids, confidence, self._tokenizer, self._ratio)
                for ids, confidence in zip(
                    _parts(item, CTC_IDS), _parts(item, CTC_CONFIDENCE), strict=True
                )
            ]
            yield self._with_rows(item, decoded)
            return
        self._pending.append((item, *self._submit(_parts(item, CTC_LOG_PROBS))))
        limit = 2 * self._processes + 2
        while self._pending and (
            all(future.done() for future in self._pending[0][2]) or len(self._pending) > limit
        ):
            yield self._finished(*self._pending.popleft())

    def _submit(self, parts: list[np.ndarray]) -> tuple[DecodePool, list[Future]]:
        """Hand an item's parts to the pool; a pool whose processes died is replaced once."""
        pool = shared_pool(self._beam, self._processes)
        try:
            return pool, [pool.submit(log_probs) for log_probs in parts]
        except (BrokenProcessPool, RuntimeError):  # broken, or shut down by another thread
            discard_pool(pool)
            pool = shared_pool(self._beam, self._processes)
            return pool, [pool.submit(log_probs) for log_probs in parts]

    def finish_bundle(self) -> Iterator[WindowedValue]:
        while self._pending:
            result = self._finished(*self._pending.popleft())
            yield WindowedValue(result, MIN_TIMESTAMP, [GlobalWindow()])

    def _finished(
        self, item: ItemResult, pool: DecodePool, futures: list[Future]
    ) -> ItemResult | ErrorRecord:
        try:
            try:
                decoded = [future.result() for future in futures]
            except CancelledError:  # another item's dead pool was shut down under this one
                pool, futures = self._submit(_parts(item, CTC_LOG_PROBS))
                decoded = [future.result() for future in futures]
        except BrokenProcessPool as error:  # a decoding process died (out of memory, killed)
            discard_pool(pool)
            return self._failed(item, f"decoding process died: {error}")
        except Exception as error:  # one item's failure is its error row
            for future in futures:  # its other segments' searches are not needed any more
                future.cancel()
            return self._failed(item, f"{type(error).__name__}: {error}")
        return replace(self._with_rows(item, decoded), frames=_written(item))

    def _with_rows(self, item: ItemResult, decoded: list[Decoded]) -> ItemResult:
        """The item with its transcripts row, and with `--segment vad` its segments rows and a
        transcript that joins them (their texts, and their words and characters in the item's
        time)."""
        if item.segments is None:
            return replace(item, transcript=self._row(item, *decoded[0]))
        rows, texts, chars, words = [], [], [], []
        for index, (span, (text, segment_chars, segment_words)) in enumerate(
            zip(item.segments, decoded, strict=True)
        ):
            offset = span.start / TARGET_SAMPLE_RATE
            segment_words = _shifted(segment_words, offset)
            chars += _shifted(segment_chars, offset)
            words += segment_words
            texts += [text] if text else []
            confidences = [word["confidence"] for word in segment_words]
            rows.append(
                {
                    "id": item.id,
                    "segment": index,
                    "start_s": round(offset, 7),
                    "end_s": round((span.start + span.num_samples) / TARGET_SAMPLE_RATE, 7),
                    "transcript": text,
                    "words": segment_words,
                    "confidence": float(np.mean(confidences)) if confidences else None,
                }
            )
        transcript = self._row(item, " ".join(texts), chars, words)
        return replace(item, transcript=transcript, segment_rows=rows)

    @staticmethod
    def _failed(item: ItemResult, reason: str) -> ErrorRecord:
        # The bundle names the writer's pieces: a retried bundle must find this row's piece.
        return ErrorRecord(item.id, item.source, "ctc_decode", reason, bundle=item.bundle)

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


#: One part's decoding: (text, chars, words).
Decoded = tuple[str, list[dict[str, Any]], list[dict[str, Any]]]


def _parts(item: ItemResult, name: str) -> list[np.ndarray]:
    """What is decoded on its own: the item's frames, or each voice segment's."""
    if item.segments is None:
        return [item.frames[name]]
    array = item.frames.get(name)
    return [array[s.first_frame : s.first_frame + s.num_frames] for s in item.segments]


def _shifted(timed: list[dict[str, Any]], offset_s: float) -> list[dict[str, Any]]:
    """Word or character entries moved from their segment's time to the item's: a segment
    starts on a sample (62.5 microseconds at 16 kHz), so 7 decimals keep every time exact."""
    return [
        {
            **entry,
            "start_s": round(entry["start_s"] + offset_s, 7),
            "end_s": round(entry["end_s"] + offset_s, 7),
        }
        for entry in timed
    ]


def _written(item: ItemResult) -> dict[str, np.ndarray]:
    """The item's frames without its log-probabilities: decoded, they would only weigh on the
    writer's buffer (vocabulary x 50 floats per second), which `--piece_mb` does not count."""
    return {name: array for name, array in item.frames.items() if name != CTC_LOG_PROBS}


class CtcDecode(beam.PTransform):
    """`ItemResult`s (with CTC ids) to the same items with their `transcripts/` row attached.

    `beam` None decodes greedily; otherwise each item's log-probabilities are beam-searched (with
    the LM `beam` names, if any) in `processes` decoding processes beside the model. The row rides
    on the item, so that one writer commits every table's rows of an item together; the
    `ErrorRecord`s of the same stream pass through on their way to that writer.
    """

    def __init__(
        self,
        model_dir: str,
        inputs_to_logits_ratio: int,
        beam: BeamDecoding | None = None,
        processes: int = 1,
    ) -> None:
        super().__init__()
        self._fn = _DecodeCtc(model_dir, inputs_to_logits_ratio, beam, processes)

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        return items | "Decode" >> beam.ParDo(self._fn)

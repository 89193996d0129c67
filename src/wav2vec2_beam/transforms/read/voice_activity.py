"""Cut a streamed 16 kHz signal at voice activity (`--segment vad`): segments of speech, not
fixed windows.

Long recordings (podcasts, lectures, meetings, sound tracks) hold silence, music and noise that
fixed windows send to the model, and words cut at window edges that strides must repair. Here a
voice-activity detector labels every 30 ms frame, and the segments sent to the model are built
from its speech regions as WhisperX builds them:

1. Regions: a run of speech frames, ended by `MIN_SILENCE_S` of non-speech (shorter pauses stay
   inside it); a region shorter than `MIN_SPEECH_S` is a click, and dropped.
2. Too long: a region reaching `max_segment_s` is cut at its quietest frame (lowest energy) in
   the second half of that span, and goes on from there.
3. Merged: consecutive regions are joined into one segment while the pause between them is at
   most `MAX_MERGED_PAUSE_S` and the whole stays within `max_segment_s`: the model gets whole
   sentences with their short pauses, never a long silence.
4. Padded: each segment gets `MARGIN_S` of audio on each side (never overlapping its
   neighbour, never past the file), since detectors clip the soft starts and ends of words.

The detector is WebRTC's (`webrtcvad-wheels`): a GMM over sub-band energies in C, thousands of
times real time on one core, with no model files. Silero's neural VAD rejects noise better (on 20
minutes of the tests' long recording it sent 3.6% of the gaps against 18%, 583 s against 679 s in
all) but runs at about 190x real time and ships in a package that requires PyTorch; see
docs/PERFORMANCE.md.

Streaming: frames are labelled as blocks arrive, and only the samples a segment may still need
are held: the segment waiting for a neighbour to join it, the pause after it (at most
`MAX_MERGED_PAUSE_S`), the open region, the margins, and the block being read (at most twice
`max_segment_s` and about 20 s more), so memory is flat in the file's length. A segment is at
most `max_segment_s` of speech plus its two margins.
Everything before the segment's start (minus the margin) is dropped as soon as it is known to be
non-speech: none of it reaches the model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import webrtcvad

from wav2vec2_beam.transforms.records import TARGET_SAMPLE_RATE, AudioChunk

#: The detector's frame: 30 ms at 16 kHz.
FRAME = 480
#: A pause this long ends a speech region.
MIN_SILENCE_S = 0.3
#: A region shorter than this is dropped.
MIN_SPEECH_S = 0.25
#: Regions this close are joined into one segment (within the maximum length).
MAX_MERGED_PAUSE_S = 1.0
#: Audio kept on each side of a segment.
MARGIN_S = 0.2
#: WebRTC's aggressiveness (0-3): 3 rejects the most non-speech (noise, music).
AGGRESSIVENESS = 3
#: WebRTC's detector takes steady noise (hiss, hum, a fan) for speech; a frame counts as speech
#: only if it is also this much louder (power ratio: 6 dB) than the quietest frame of the last
#: `FLOOR_S` seconds, the noise floor under the pauses between syllables. Chosen on the tests'
#: long recording (real speech with gaps of noise at -40 dBFS), among floors of 0.6-3 s and
#: 6-10 dB: 98.5% of the speech kept, 16% of the gaps sent (a 3 s floor sends 37% of them: noise
#: right after speech is loud against the floor of the speech's pauses until the floor catches up).
ABOVE_FLOOR = 10 ** (6 / 10)
FLOOR_S = 1.0
#: Default upper bound of a segment's speech, in seconds (WhisperX's default chunk).
DEFAULT_MAX_SEGMENT_S = 30.0
#: The shortest bound that leaves room for a word and the pause after it.
MIN_SEGMENT_S = 2.0


@dataclass(frozen=True)
class Segment:
    """Part of an item to transcribe: its first sample and its samples (16 kHz)."""

    start: int
    samples: np.ndarray

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


def _frames(seconds: float) -> int:
    return max(1, round(seconds * TARGET_SAMPLE_RATE / FRAME))


class VoiceSegmenter:
    """Streams blocks in and segments out (see the module docstring); one per item."""

    def __init__(self, max_segment_s: float = DEFAULT_MAX_SEGMENT_S) -> None:
        self._vad = webrtcvad.Vad(AGGRESSIVENESS)
        self._recent: deque[float] = deque(maxlen=_frames(FLOOR_S))
        margin = round(MARGIN_S * TARGET_SAMPLE_RATE)
        self._margin = margin
        self._max_frames = _frames(max_segment_s)
        self._min_silence = _frames(MIN_SILENCE_S)
        self._min_speech = _frames(MIN_SPEECH_S)
        self._max_pause = _frames(MAX_MERGED_PAUSE_S)
        # Samples held: from absolute index `_held_from` on.
        self._held: list[np.ndarray] = []
        self._held_from = 0
        self._received = 0
        self._frame_count = 0  # frames labelled so far
        self._partial = np.zeros(0, np.float32)  # samples of the next, incomplete frame
        # The open region [start, last speech frame + 1) in frames, and its frames' energies.
        self._region_start: int | None = None
        self._region_end = 0
        self._energies: list[float] = []
        # Regions decided but not yet emitted: one segment being merged, [start, end) in frames.
        self._pending: tuple[int, int] | None = None
        # Where the last emitted segment ended (samples): the next one's padding stops there.
        self._emitted_end = 0

    @property
    def received(self) -> int:
        """Samples fed so far: the item's length once the stream has ended."""
        return self._received

    def feed(self, block: np.ndarray) -> Iterator[Segment]:
        """Label the block's frames and yield the segments that are now decided."""
        if not len(block):
            return
        self._held.append(block)
        self._received += len(block)
        samples = np.concatenate([self._partial, block]) if len(self._partial) else block
        whole = len(samples) // FRAME * FRAME
        self._partial = samples[whole:].copy()
        if whole:
            frames = samples[:whole].reshape(-1, FRAME)
            pcm = (np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")
            energies = np.mean(frames.astype(np.float64) ** 2, axis=1)
            for row, energy in zip(pcm, energies, strict=True):
                self._recent.append(energy)
                floor = min(self._recent)
                speech = energy > floor * ABOVE_FLOOR and self._vad.is_speech(
                    row.tobytes(), TARGET_SAMPLE_RATE
                )
                yield from self._label(speech, energy)
        self._trim()

    def finish(self) -> Iterator[Segment]:
        """Close what is open at the end of the stream and yield the last segments."""
        if self._region_start is not None:
            yield from self._close_region(self._region_end)
        if self._pending is not None:
            yield self._segment(*self._pending)
            self._pending = None

    def _label(self, speech: bool, energy: float) -> Iterator[Segment]:
        frame = self._frame_count
        self._frame_count += 1
        pending = self._pending
        if (
            pending is not None
            and self._region_start is None
            and frame - pending[1] > self._max_pause
        ):
            yield self._segment(*pending)  # nothing can join it any more
            self._pending = None
        if self._region_start is None:
            if speech:
                self._region_start, self._region_end, self._energies = frame, frame + 1, [energy]
            return
        self._energies.append(energy)
        if speech:
            self._region_end = frame + 1
        elif frame + 1 - self._region_end >= self._min_silence:
            yield from self._close_region(self._region_end)
            return
        if frame + 1 - self._region_start >= self._max_frames:
            yield from self._split_region()

    def _split_region(self) -> Iterator[Segment]:
        """Cut the open region at its quietest frame in the second half of its span; the rest
        of it goes on as an open region."""
        start, end, energies = self._region_start, self._region_end, self._energies
        assert start is not None
        half = len(energies) // 2
        cut = start + half + int(np.argmin(energies[half:]))
        yield from self._close_region(min(cut, end))
        if end > cut:
            self._region_start, self._region_end = cut, end
            self._energies = energies[cut - start :]

    def _close_region(self, end: int) -> Iterator[Segment]:
        """End the open region at frame `end`: merge it into the pending segment, or emit that
        one and keep this one pending."""
        start = self._region_start
        assert start is not None
        self._region_start, self._energies = None, []
        if end - start < self._min_speech:
            return
        if self._pending is not None:
            pending_start, pending_end = self._pending
            if start - pending_end <= self._max_pause and end - pending_start <= self._max_frames:
                self._pending = (pending_start, end)
                return
            yield self._segment(pending_start, pending_end)
        self._pending = (start, end)

    def _segment(self, start_frame: int, end_frame: int) -> Segment:
        """The samples of a decided segment, with its margins."""
        start = max(start_frame * FRAME - self._margin, self._emitted_end, 0)
        end = min(end_frame * FRAME + self._margin, self._received)
        held = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
        self._held = [held]
        samples = held[start - self._held_from : end - self._held_from].copy()
        self._emitted_end = end
        return Segment(start, samples)

    def _trim(self) -> None:
        """Drop held samples no segment can still need."""
        if self._pending is not None:
            keep_from = self._pending[0] * FRAME - self._margin
        elif self._region_start is not None:
            keep_from = self._region_start * FRAME - self._margin
        else:
            keep_from = self._frame_count * FRAME - self._margin
        keep_from = max(keep_from, self._emitted_end, self._held_from)
        if keep_from - self._held_from < TARGET_SAMPLE_RATE:  # trim in steps of a second or more
            return
        held = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
        self._held = [held[keep_from - self._held_from :].copy()]
        self._held_from = keep_from


def voice_segments(
    blocks: Iterable[np.ndarray], max_segment_s: float = DEFAULT_MAX_SEGMENT_S
) -> Iterator[Segment]:
    """The segments of a stream of 16 kHz mono blocks, in order, as they are decided."""
    segmenter = VoiceSegmenter(max_segment_s)
    for block in blocks:
        yield from segmenter.feed(np.asarray(block, dtype=np.float32))
    yield from segmenter.finish()


def segment_audio(
    blocks: Iterable[np.ndarray],
    item_id: str,
    source: str,
    max_segment_s: float,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[AudioChunk]:
    """An item's voice segments as the pipeline's `AudioChunk`s (no strides, `segment_start`
    set), the last one marked `is_last` with the item's length: each segment is held back until
    the next is decided or the stream has ended, so that the last one is known. An item without
    speech gives one closing chunk of no samples, so that it still ends in a row."""
    held: Segment | None = None
    index = 0
    segmenter = VoiceSegmenter(max_segment_s)

    def chunk(segment: Segment, is_last: bool) -> AudioChunk:
        return AudioChunk(
            id=item_id,
            source=source,
            index=index,
            is_last=is_last,
            samples=segment.samples,
            stride_left=0,
            stride_right=0,
            sample_rate=TARGET_SAMPLE_RATE,
            total_samples=segmenter.received if is_last else None,
            metadata=dict(metadata or {}),
            segment_start=segment.start,
        )

    def decided(segments: Iterable[Segment]) -> Iterator[AudioChunk]:
        nonlocal held, index
        for segment in segments:
            if held is not None:
                yield chunk(held, is_last=False)
                index += 1
            held = segment

    for block in blocks:
        yield from decided(segmenter.feed(np.asarray(block, dtype=np.float32)))
    yield from decided(segmenter.finish())
    yield chunk(held or Segment(0, np.zeros(0, np.float32)), is_last=True)

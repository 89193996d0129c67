"""FFmpeg (through PyAV) for the audio libsndfile cannot open: AAC/m4a, the sound tracks of
mp4/mov/mkv/webm files, WMA, and whatever else FFmpeg demuxes.

Why PyAV: its wheels carry FFmpeg's libraries, so no system package is needed, and it decodes
from a Python file object, so a tar member, a Parquet cell or a gs:// object is read as a local
file is. `decode_audio.AudioStream` tries libsndfile first (bit-exact for WAV/FLAC, and the
faster path) and comes here only when libsndfile refuses the file.

What this module gives is what libsndfile gives there: the first audio stream's frames at its own
rate, float32, [frames, channels], in blocks of a bounded size. Downmixing and resampling stay in
`decode_audio`, so both paths treat the samples the same way. FFmpeg decodes frames of a few
thousand samples at a time and they are gathered into blocks here, so memory is flat in the
file's length.

Spans (a manifest's offset and duration) are cut from the decoded frames, counting from the
stream's first decoded sample: exact, at the cost of decoding the audio before the offset
(FFmpeg's seeks land on packet boundaries, which would shift the span). A container's header
states its duration only as an estimate, so the frame count in `AudioInfo` is that estimate and
the decoder does not hold the stream to it (a cut file reads as a shorter one, as for Ogg).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import av
import numpy as np

from wav2vec2_beam.transforms.read.decode_audio import AudioDecodeError, AudioInfo


class FFmpegAudio:
    """An open container's first audio stream. Close it (or use it as a context manager)."""

    def __init__(self, file: BinaryIO) -> None:
        try:
            self._container = av.open(file, mode="r", metadata_errors="ignore")
        except av.FFmpegError as error:
            raise AudioDecodeError(
                "decode", "not_audio", f"FFmpeg cannot open it: {error.strerror}"
            ) from error
        streams = self._container.streams.audio
        if not streams:
            kinds = sorted({stream.type for stream in self._container.streams}) or ["no"]
            self.close()
            raise AudioDecodeError(
                "decode",
                "not_audio",
                f"FFmpeg reads it as {self._format_name} with {'/'.join(kinds)} streams and no "
                "audio stream",
            )
        self._stream = streams[0]
        context = self._stream.codec_context
        if not context.sample_rate or not context.layout.nb_channels:
            self.close()
            raise AudioDecodeError(
                "decode",
                "not_audio",
                f"FFmpeg finds no sample rate or channels in its {context.name} stream",
            )
        self.info = AudioInfo(
            sample_rate=context.sample_rate,
            channels=context.layout.nb_channels,
            frames=self._estimated_frames(context.sample_rate),
            format=self._format_name,
            subtype=context.name.upper(),
        )

    @property
    def _format_name(self) -> str:
        """FFmpeg's demuxer name, first alias only (`mov,mp4,m4a,...` is MOV)."""
        return self._container.format.name.split(",")[0].upper()

    def _estimated_frames(self, rate: int) -> int:
        """The duration the header states, in frames; 0 when it states none."""
        stream = self._stream
        if stream.duration is not None and stream.time_base is not None:
            return round(float(stream.duration * stream.time_base) * rate)
        if self._container.duration is not None:  # in AV_TIME_BASE units (microseconds)
            return round(self._container.duration * rate / 1_000_000)
        return 0

    def blocks(self, first: int, count: int | None, block_frames: int) -> Iterator[np.ndarray]:
        """Frames `first` to `first + count` (None: to the end) as float32 [frames, channels]
        arrays of up to `block_frames` frames each; raise `AudioDecodeError` on a decode failure
        or when the stream ends before `first`."""
        info = self.info
        # Every decoded frame converted to packed float32 at the stream's own rate and layout,
        # whatever the codec gives (planar, integer) or a mid-stream change of parameters.
        convert = av.AudioResampler(
            format="flt", layout=self._stream.codec_context.layout, rate=info.sample_rate
        )
        pending: list[np.ndarray] = []
        pending_frames = skipped = taken = 0
        try:
            for frame in self._decoded(convert):
                if skipped < first:
                    drop = min(first - skipped, len(frame))
                    skipped += drop
                    frame = frame[drop:]
                if count is not None:
                    frame = frame[: count - taken]
                if not len(frame):
                    if count is not None and taken >= count:
                        break
                    continue
                taken += len(frame)
                pending.append(frame)
                pending_frames += len(frame)
                while pending_frames >= block_frames:
                    block, pending = _take(pending, block_frames)
                    pending_frames -= block_frames
                    yield block
        except av.FFmpegError as error:
            raise AudioDecodeError(
                "decode",
                "corrupt",
                f"FFmpeg failed after {taken} frames of its {info.subtype} stream: {error}",
            ) from error
        if pending_frames:
            yield np.concatenate(pending)
        if skipped < first or (first and not taken):
            raise AudioDecodeError(
                "decode",
                "bad_span",
                f"offset {first / info.sample_rate} s is at or past the end of the file "
                f"({skipped / info.sample_rate:.3f} s)",
            )

    def _decoded(self, convert: av.AudioResampler) -> Iterator[np.ndarray]:
        """Every decoded frame of the stream as [frames, channels] float32, then the converter's
        flush."""
        channels = self.info.channels
        for packet in self._container.demux(self._stream):
            for frame in packet.decode():
                for converted in convert.resample(frame):
                    yield converted.to_ndarray().reshape(-1, channels)
        for converted in convert.resample(None):
            yield converted.to_ndarray().reshape(-1, channels)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> FFmpegAudio:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def stated_seconds(path: str) -> float:
    """The duration a container's header states (0.0 when none), for the census's total."""
    with open(path, "rb") as file, FFmpegAudio(file) as audio:
        return audio.info.frames / audio.info.sample_rate


def _take(pending: list[np.ndarray], frames: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The first `frames` frames of the queued arrays as one block, and what is left queued."""
    joined = np.concatenate(pending)
    return joined[:frames], [joined[frames:].copy()] if len(joined) > frames else []

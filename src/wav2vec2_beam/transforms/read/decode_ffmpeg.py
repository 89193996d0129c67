"""FFmpeg (through PyAV) for the audio libsndfile cannot open: AAC/m4a, the sound tracks of
mp4/mov/mkv/webm files, WMA, and whatever else FFmpeg demuxes.

Why PyAV: its wheels carry FFmpeg's libraries, so no system package is needed, and it decodes
from a Python file object, so a tar member, a Parquet cell or a gs:// object is read as a local
file is. `decode_audio.AudioStream` tries libsndfile first (bit-exact for WAV/FLAC, and the
faster path) and comes here only when libsndfile refuses the file.

What this module gives is what libsndfile gives there: the first audio stream's frames at its own
rate, float32, in blocks of a bounded size, already averaged over the channels (each decoded frame
by its own layout, which a broadcast may change midway); resampling stays in `decode_audio`.
FFmpeg decodes frames of a few thousand samples at a time and they are gathered into blocks here,
so memory is flat in the file's length.

Times: samples are counted from the stream's first decoded sample. A video whose sound track
starts after its picture (a start time above 0) or has gaps in its timestamps gets times on the
sound track's own clock, not the video's.

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

#: Demuxers whose files name other files or URLs to open: a corpus file is audio, not a list.
_PLAYLISTS = frozenset({"concat", "hls", "applehttp", "dash", "webm_dash_manifest", "image2"})


class FFmpegAudio:
    """An open container's first audio stream. Close it (or use it as a context manager)."""

    def __init__(self, file: BinaryIO) -> None:
        try:
            # No protocol but the (unused) pipe: FFmpeg reads the file object it is given and
            # opens nothing else, not the files or URLs a playlist or a MOV reference names.
            self._container = av.open(
                file, mode="r", metadata_errors="ignore", options={"protocol_whitelist": "pipe"}
            )
        except av.FFmpegError as error:
            raise AudioDecodeError(
                "decode", "not_audio", f"FFmpeg cannot open it: {error.strerror}"
            ) from error
        try:
            self._stream = self._audio_stream()
            context = self._stream.codec_context
            self.info = AudioInfo(
                sample_rate=context.sample_rate,
                channels=context.layout.nb_channels,
                frames=self._estimated_frames(context.sample_rate),
                format=self._format_name,
                subtype=context.name.upper(),
            )
        except BaseException:
            self.close()
            raise

    def _audio_stream(self) -> av.audio.stream.AudioStream:
        """The container's first audio stream, or why it has none that can be read."""
        name = self._container.format.name
        if name.split(",")[0] in _PLAYLISTS:
            raise AudioDecodeError(
                "decode",
                "not_audio",
                f"FFmpeg reads it as a playlist ({name}), which would open other files or URLs",
            )
        streams = self._container.streams.audio
        if not streams:
            kinds = sorted({stream.type for stream in self._container.streams}) or ["no"]
            raise AudioDecodeError(
                "decode",
                "not_audio",
                f"FFmpeg reads it as {self._format_name} with {'/'.join(kinds)} streams and no "
                "audio stream",
            )
        context = streams[0].codec_context
        if not context.sample_rate or not context.layout.nb_channels:
            raise AudioDecodeError(
                "decode",
                "not_audio",
                f"FFmpeg finds no sample rate or channels in its {context.name} stream",
            )
        return streams[0]

    @property
    def _format_name(self) -> str:
        """FFmpeg's demuxer name, first alias only (`mov,mp4,m4a,...` is MOV)."""
        return self._container.format.name.split(",")[0].upper()

    def _estimated_frames(self, rate: int) -> int:
        """The duration the header states, in frames; 0 when it states none (or nonsense)."""
        stream = self._stream
        try:
            if stream.duration is not None and stream.time_base is not None:
                return max(0, round(float(stream.duration * stream.time_base) * rate))
            if self._container.duration is not None:  # in AV_TIME_BASE units (microseconds)
                return max(0, round(self._container.duration * rate / 1_000_000))
        except (OverflowError, ValueError):
            pass
        return 0

    def blocks(self, first: int, count: int | None, block_frames: int) -> Iterator[np.ndarray]:
        """Frames `first` to `first + count` (None: to the end), downmixed, as float32
        [frames, 1] arrays of up to `block_frames` frames each; raise `AudioDecodeError` on a
        decode failure or when the stream ends before `first`."""
        info = self.info
        pending: list[np.ndarray] = []
        pending_frames = skipped = taken = 0
        try:
            for frame in self._decoded():
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

    def _decoded(self) -> Iterator[np.ndarray]:
        """Every decoded frame of the stream, averaged over its channels: [frames, 1] float32.

        Each frame is converted here, by its own format and layout, so a stream whose channel
        layout changes midway (a broadcast's 2.0 then 5.1) is read as it is; the float values
        are libsndfile's for the same integers (x / 2^15 for 16-bit, x / 2^31 for 32-bit), and the
        average is the one `decode_audio` takes, so a block's samples do not depend on the reader.
        """
        rate = self.info.sample_rate
        position = 0
        for packet in self._container.demux(self._stream):
            for frame in packet.decode():
                if frame.sample_rate != rate:
                    raise AudioDecodeError(
                        "decode",
                        "corrupt",
                        f"the stream's sample rate changes from {rate} to {frame.sample_rate} Hz "
                        f"at frame {position}",
                    )
                samples = _as_float(frame)
                position += len(samples)
                yield samples.mean(axis=1, dtype=np.float32, keepdims=True)

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


#: Integer sample formats and the scale libsndfile gives them as float (unsigned 8-bit is offset).
_SCALES = {"u8": 2.0**7, "s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63}


def _as_float(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame as float32 [frames, channels]."""
    array = frame.to_ndarray()
    channels = frame.layout.nb_channels
    array = array.T if frame.format.is_planar else array.reshape(-1, channels)
    name = frame.format.name.removesuffix("p")
    if name == "u8":
        return (array.astype(np.float32) - np.float32(128)) * np.float32(1 / _SCALES["u8"])
    if name in _SCALES:
        return array.astype(np.float32) * np.float32(1 / _SCALES[name])
    return array.astype(np.float32, copy=False)


def _take(pending: list[np.ndarray], frames: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The first `frames` frames of the queued arrays as one block, and what is left queued."""
    joined = np.concatenate(pending)
    return joined[:frames], [joined[frames:].copy()] if len(joined) > frames else []

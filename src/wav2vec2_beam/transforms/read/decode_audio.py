"""Stream-decode one audio file to 16 kHz mono float32 blocks, with memory flat in its length.

Corpora hold hours-long recordings, so a file is never decoded whole: libsndfile (through
soundfile) reads fixed blocks (20 s by default); what libsndfile cannot open (AAC/m4a, the sound
tracks of mp4/mkv/webm, WMA) is read by FFmpeg through PyAV (`decode_ffmpeg`) in blocks of the
same size, and then treated alike: each block is downmixed to mono by averaging its
channels (as the reference pipeline's `_to_mono` does) and fed to one `soxr.ResampleStream` (soxr's
default "HQ" quality, float32), whose state carries the filter across block edges, so the streamed
output equals `soxr.resample` of the whole signal (max abs difference measured 0.0 on sines and
noise at 8/22.05/44.1/48 kHz; see tests) provided the stream is flushed with `last=True` at the end.
A 16 kHz source is passed through unresampled, so its samples come out bit-identical.

A `Span` reads only part of a file (a manifest's `offset`/`duration`): libsndfile seeks to the
span's first frame and reads its frames only, and the span is resampled on its own, so what comes
out equals decoding the whole file at its own rate, slicing those frames and resampling the slice
(bit-identical for WAV, FLAC, Ogg Vorbis and Opus, whose seeks are exact; MP3's decoder restarts at
the seek point, which changes samples by float rounding, measured < 1e-7, not their alignment).

Everything that can be wrong with a file raises one exception, `AudioDecodeError`, whose `stage`
says where it failed ("read": the bytes could not be read; "decode": they are not usable audio) and
whose message is one line naming the problem (`reason` is a short code for counting). Cheap checks
run up front, before any sample is yielded: missing or unreadable path, empty file, not audio
(libsndfile's own message), a WAV whose header declares more data than the file holds, zero
frames, fewer than `MIN_SAMPLES` once resampled (per the header). The rest can only be known while
streaming, so they are raised from the block iterator, possibly after blocks were yielded: I/O
errors, libsndfile decode errors, NaN/Inf samples, fewer frames than the header declared, and the
final length check.

What libsndfile 1.2.2 does with truncated files, and so what this module reports:

* WAV: libsndfile clamps the data length to the bytes present and reads that prefix without
  complaint, so the RIFF header is checked here up front: a `data` chunk declaring more bytes than
  the file holds is reported as truncated (streaming writers' "unknown" sizes 0 and 0xFFFFFFFF
  are accepted).
* FLAC: the frame count comes from STREAMINFO; reading past the cut raises a libsndfile error
  ("Internal psf_fseek() failed." or "flac decoder lost sync") after the readable prefix, reported
  as corrupt/truncated; a cut that libsndfile reads quietly short is caught by the frame count.
* MP3: the frame count comes from the LAME/Xing header; a cut file reads short without an error and
  is reported as truncated by the frame count. (An MP3 without that header gets a length estimated
  from its size, and libsndfile never reads past its estimate, so such a cut goes undetected.)
* Ogg (Vorbis, Opus): the frame count comes from the last page present, so a cut file is a shorter
  valid stream: its readable prefix decodes and is accepted.

libsndfile does not read past the frame count it declared (its `sf_readf_*` clamp to it), so
reading fewer frames than declared is the one length mismatch that can happen, and it means the
data ended early. (mpg123 prints its own warnings about such files to stderr; they are harmless.)
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import soundfile
import soxr

from wav2vec2_beam.transforms.records import TARGET_SAMPLE_RATE

if TYPE_CHECKING:
    from wav2vec2_beam.transforms.read.decode_ffmpeg import FFmpegAudio

#: One model frame: the receptive field of the Wav2Vec2 conv stack. Shorter audio has no logits.
MIN_SAMPLES = 400

#: Lowest sample rate read (Hz). Telephone speech is 8 kHz; a header declaring less is a broken or
#: hostile file, and resampling 1 Hz to 16 kHz would turn a kilobyte into minutes of model input.
MIN_SAMPLE_RATE = 1_000

#: Highest sample rate read (Hz): studio audio goes to 384 kHz, DSD transcodes to 768 kHz; a header
#: declaring more is broken or hostile.
MAX_SAMPLE_RATE = 768_000

#: Default seconds of source audio read per block; bounds memory at ~block_s * rate * channels...
DEFAULT_BLOCK_S = 20.0
#: ... and at most this many samples (all channels; 32 MB of float32) whatever the file declares.
MAX_BLOCK_VALUES = 2**23

#: Frames beyond this (2^53, where float64 stops counting whole frames) are past any real file.
_FAR = 2.0**53

_UNKNOWN_WAV_SIZES = (0, 0xFFFFFFFF)


class AudioDecodeError(Exception):
    """A file that cannot be decoded into usable audio; `str()` is one line for `ErrorRecord`."""

    def __init__(self, stage: str, reason: str, message: str) -> None:
        self.stage = stage
        self.reason = reason
        self.message = " ".join(message.split())
        super().__init__(f"{reason}: {self.message}")


@dataclass(frozen=True)
class Span:
    """The part of a file to read, in seconds of its own audio.

    Seconds become source frames as `round(seconds * sample_rate)`. A span reaching past the end of
    the file is cut at the end (manifests often round durations up); one that starts at or after
    the end is an error.
    """

    offset_s: float = 0.0
    #: None: to the end of the file.
    duration_s: float | None = None


@dataclass(frozen=True)
class AudioInfo:
    """What the file's header says about the source audio."""

    sample_rate: int
    channels: int
    #: Frames (per channel) the header declares; the decoder checks it against what it reads.
    frames: int
    format: str
    subtype: str


class _GuardedFile(io.RawIOBase):
    """Keep I/O errors that soundfile's C callbacks would otherwise swallow.

    soundfile reads file objects through cffi callbacks; an exception raised there is printed and
    turned into a 0-byte read, which libsndfile sees as end of file, so a network or disk error
    would look like a (valid or truncated) short file. The wrapper records the first error and the
    decoder raises it after each libsndfile call. That includes what is not an error of the file:
    a signal's exception (Ctrl-C, the launcher's SIGTERM) raised while libsndfile was in a
    callback would otherwise be swallowed, and the run would go on as if never interrupted.
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        # libsndfile takes a short read for end of file, so fill the buffer unless the data ends.
        filled = 0
        try:
            while filled < len(buffer):
                data = self._raw.read(len(buffer) - filled)
                if not data:
                    break
                buffer[filled : filled + len(data)] = data
                filled += len(data)
        except BaseException as error:
            self.error = self.error or error
        return filled

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self._raw.seek(offset, whence)
        except BaseException as error:
            self.error = self.error or error
            return -1

    def tell(self) -> int:
        try:
            return self._raw.tell()
        except BaseException as error:
            self.error = self.error or error
            return -1

    def raise_error(self) -> None:
        """Raise the recorded I/O error, if any, as a read-stage `AudioDecodeError`; a signal's
        exception (not an `Exception`) as it is."""
        if self.error is not None and not isinstance(self.error, Exception):
            raise self.error
        if self.error is not None:
            raise AudioDecodeError(
                "read", "io_error", f"{type(self.error).__name__}: {self.error}"
            ) from self.error


class _SequentialSoundFile(soundfile.SoundFile):
    """A SoundFile that reads straight on, without soundfile's seek after every read.

    On a seekable file soundfile follows each read with a seek to where the read ended. For MP3,
    libsndfile's seek restarts the decoder (losing the overlap of the previous granule), so every
    block edge would get a glitch of up to the signal's amplitude (measured 0.49 on a 0.4 sine).
    Reporting the file as not seekable makes soundfile skip that seek; this module never seeks.
    """

    def seekable(self) -> bool:
        return False


class AudioStream:
    """An open audio file: its header `info` and its 16 kHz mono float32 blocks, read on demand.

    Use as a context manager (or call `close`); iterate `blocks()` once. `num_samples` counts the
    16 kHz samples yielded so far, i.e. the item's length once the iteration has finished.
    """

    def __init__(
        self, source: str | os.PathLike[str] | BinaryIO, block_s: float, span: Span | None = None
    ) -> None:
        self._owned: BinaryIO | None = None
        self._sound: _SequentialSoundFile | None = None
        self._ffmpeg: FFmpegAudio | None = None
        self._block_s = block_s
        self._span = span
        self.num_samples = 0
        if isinstance(source, (str, os.PathLike)):
            try:
                self._owned = open(source, "rb")  # noqa: SIM115 - closed by close()
            except OSError as error:
                raise AudioDecodeError(
                    "read", "unreadable", f"{type(error).__name__}: {error.strerror}: {source}"
                ) from error
            raw: BinaryIO = self._owned
        else:
            raw = source
        try:
            self._open(raw)
        except BaseException:
            self.close()
            raise

    def _open(self, raw: BinaryIO) -> None:
        """Run the up-front checks and open libsndfile on the file."""
        self._file = _GuardedFile(raw)
        size = self._file.seek(0, io.SEEK_END)
        self._file.raise_error()
        if size == 0:
            raise AudioDecodeError("decode", "empty", "the file has 0 bytes")
        _check_wav_length(self._file, size)
        self._file.raise_error()
        self._file.seek(0)
        try:
            self._sound = _SequentialSoundFile(self._file)
        except soundfile.LibsndfileError as error:
            self._file.raise_error()
            self._open_with_ffmpeg(error.error_string)
            return
        self._file.raise_error()
        sound = self._sound
        self.info = AudioInfo(
            sample_rate=sound.samplerate,
            channels=sound.channels,
            frames=sound.frames,
            format=sound.format,
            subtype=sound.subtype,
        )
        if self.info.frames <= 0:
            raise AudioDecodeError(
                "decode", "zero_frames", f"the {self.info.format} header declares no audio frames"
            )
        _check_sample_rate(self.info.sample_rate)
        self._first, self._count = _span_frames(self._span, self.info)
        # soxr's output length is the rounded rate-scaled input length; the end check is exact.
        expected = self._count * TARGET_SAMPLE_RATE / self.info.sample_rate
        if round(expected) < MIN_SAMPLES:
            raise AudioDecodeError(
                "decode",
                "too_short",
                f"{self._count} frames at {self.info.sample_rate} Hz is ~{expected:.0f} "
                f"samples at {TARGET_SAMPLE_RATE} Hz, under one model frame ({MIN_SAMPLES})",
            )

    def _open_with_ffmpeg(self, libsndfile_message: str) -> None:
        """Open what libsndfile refused with FFmpeg (`decode_ffmpeg`); one `not_audio` error
        naming both readers' reasons when FFmpeg refuses it too."""
        from wav2vec2_beam.transforms.read.decode_ffmpeg import FFmpegAudio  # only when needed

        self._file.seek(0)
        try:
            self._ffmpeg = FFmpegAudio(self._file)
        except AudioDecodeError as error:
            self._file.raise_error()
            raise AudioDecodeError(
                "decode",
                "not_audio",
                f"libsndfile cannot open it ({libsndfile_message}) and {error.message}",
            ) from error
        self._file.raise_error()
        self.info = self._ffmpeg.info
        _check_sample_rate(self.info.sample_rate)
        # The header's length is an estimate here, so a span is cut from what is decoded
        # (`FFmpegAudio.blocks`); only what can be known now is checked now.
        span, rate = self._span or Span(), self.info.sample_rate
        if span.offset_s * rate >= _FAR:
            raise AudioDecodeError(
                "decode", "bad_span", f"offset {span.offset_s} s is past the end of any file"
            )
        self._first = round(span.offset_s * rate)
        self._count = None
        if span.duration_s is not None and span.duration_s * rate < _FAR:
            self._count = round(span.duration_s * rate)
            if round(self._count * TARGET_SAMPLE_RATE / rate) < MIN_SAMPLES:
                raise AudioDecodeError(
                    "decode",
                    "too_short",
                    f"a span of {span.duration_s} s is under one model frame "
                    f"({MIN_SAMPLES} samples at {TARGET_SAMPLE_RATE} Hz)",
                )

    def blocks(self) -> Iterator[np.ndarray]:
        """Yield 16 kHz mono float32 blocks; raise `AudioDecodeError` on a late failure."""
        if self._sound is None and self._ffmpeg is None:
            raise ValueError("the stream is closed")
        info = self.info
        block_frames = max(
            1, min(round(self._block_s * info.sample_rate), MAX_BLOCK_VALUES // info.channels)
        )
        source = (
            self._ffmpeg.blocks(self._first, self._count, block_frames)
            if self._ffmpeg is not None
            else self._libsndfile_blocks(block_frames)
        )
        resampler = (
            None
            if info.sample_rate == TARGET_SAMPLE_RATE
            else soxr.ResampleStream(info.sample_rate, TARGET_SAMPLE_RATE, 1, dtype="float32")
        )
        frames_read = 0
        for block in source:
            self._file.raise_error()  # FFmpeg, as libsndfile, takes a failed read for the end
            finite = np.isfinite(block)
            if not finite.all():
                first = self._first + frames_read + int(np.argmin(finite.all(axis=1)))
                raise AudioDecodeError(
                    "decode",
                    "non_finite",
                    f"NaN or Inf sample at frame {first} ({first / info.sample_rate:.3f} s)",
                )
            frames_read += len(block)
            # The mean of one channel is a copy, so a reused buffer never escapes.
            mono = block.mean(axis=1, dtype=np.float32)
            if resampler is not None:
                mono = resampler.resample_chunk(mono)
            if len(mono):
                self.num_samples += len(mono)
                yield mono
        self._file.raise_error()
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if len(tail):
                self.num_samples += len(tail)
                yield tail
        if self.num_samples < MIN_SAMPLES:
            raise AudioDecodeError(
                "decode",
                "too_short",
                f"{self.num_samples} samples at {TARGET_SAMPLE_RATE} Hz, under one model frame "
                f"({MIN_SAMPLES})",
            )

    def _libsndfile_blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        """The span's source frames from libsndfile, [frames, channels] in one reused buffer;
        raises when the data ends before the frames its header declares."""
        sound, info = self._sound, self.info
        buffer = np.empty((block_frames, info.channels), dtype=np.float32)
        if self._first:
            try:
                sound.seek(self._first)
            except soundfile.LibsndfileError as error:
                self._file.raise_error()
                raise AudioDecodeError(
                    "decode",
                    "corrupt",
                    f"libsndfile cannot seek to frame {self._first} of {info.frames} "
                    f"(truncated or corrupt {info.format}): {error.error_string}",
                ) from error
            self._file.raise_error()
        frames_read = 0
        while frames_read < self._count:
            try:
                count = len(sound.read(out=buffer[: min(block_frames, self._count - frames_read)]))
            except soundfile.LibsndfileError as error:
                self._file.raise_error()
                raise AudioDecodeError(
                    "decode",
                    "corrupt",
                    f"libsndfile failed after {frames_read} of {self._count} frames "
                    f"(truncated or corrupt {info.format}): {error.error_string}",
                ) from error
            self._file.raise_error()
            if count == 0:
                break
            frames_read += count
            yield buffer[:count]
        if frames_read < self._count:
            raise AudioDecodeError(
                "decode",
                "truncated",
                f"read {frames_read} of the {self._count} frames "
                + (
                    f"the {info.format} header declares"
                    if self._span is None
                    else f"of the span from frame {self._first}"
                ),
            )

    def close(self) -> None:
        """Close the decoder and the file this stream opened itself (never a caller's file)."""
        if self._sound is not None:
            self._sound.close()
            self._sound = None
        if self._ffmpeg is not None:
            self._ffmpeg.close()
            self._ffmpeg = None
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_audio(
    source: str | os.PathLike[str] | BinaryIO,
    block_s: float = DEFAULT_BLOCK_S,
    span: Span | None = None,
) -> AudioStream:
    """Open `source` (a local path or a seekable binary file object) and run the up-front checks.

    A file object (e.g. from `FileSystems.open` or `ReadableFile.open()`) stays the caller's to close.
    `span` reads only that part of the file (default: all of it).
    """
    return AudioStream(source, block_s, span)


def decode_audio(
    source: str | os.PathLike[str] | BinaryIO,
    block_s: float = DEFAULT_BLOCK_S,
    span: Span | None = None,
) -> tuple[np.ndarray, AudioInfo]:
    """Decode a whole file at once (for tests and small items); the pipeline streams instead."""
    with open_audio(source, block_s, span) as stream:
        samples = np.concatenate(list(stream.blocks()))
        return samples, stream.info


def _check_sample_rate(rate: int) -> None:
    if rate < MIN_SAMPLE_RATE:
        raise AudioDecodeError(
            "decode",
            "sample_rate_too_low",
            f"the header declares {rate} Hz; below {MIN_SAMPLE_RATE} Hz no speech is recorded, "
            "and resampling it would make minutes of input from bytes",
        )
    if rate > MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            "decode",
            "sample_rate_too_high",
            f"the header declares {rate} Hz; above {MAX_SAMPLE_RATE} Hz no audio is recorded",
        )


def _span_frames(span: Span | None, info: AudioInfo) -> tuple[int, int]:
    """(first frame, frame count) of `span` in the file `info` describes; checks the span."""
    if span is None:
        return 0, info.frames
    # Compared as floats before rounding: an offset of 1e308 s is past the end, not an overflow.
    if span.offset_s * info.sample_rate >= info.frames:
        raise AudioDecodeError(
            "decode",
            "bad_span",
            f"offset {span.offset_s} s is at or past the end of the file "
            f"({info.frames / info.sample_rate:.3f} s)",
        )
    first = round(span.offset_s * info.sample_rate)
    left = info.frames - first
    if span.duration_s is None:
        return first, left
    return first, round(min(span.duration_s * info.sample_rate, left))


def _check_wav_length(file: _GuardedFile, size: int) -> None:
    """Reject a RIFF/WAVE file whose `data` chunk declares more bytes than the file holds.

    libsndfile silently reads the prefix of such a file, so this is the only place a truncated WAV
    can be noticed. Files that are not RIFF/WAVE, or that have no `data` chunk, are left to
    libsndfile.
    """
    file.seek(0)
    header = file.read(12)
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return
    position = 12
    while position + 8 <= size:
        file.seek(position)
        chunk = file.read(8)
        if len(chunk) < 8:
            return
        chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        position += 8
        if chunk_id == b"data":
            present = size - position
            if chunk_size not in _UNKNOWN_WAV_SIZES and chunk_size > present:
                raise AudioDecodeError(
                    "decode",
                    "truncated",
                    f"the WAV header declares {chunk_size} data bytes but the file holds {present}",
                )
            return
        position += chunk_size + (chunk_size & 1)

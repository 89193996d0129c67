"""Beam stage: WebDataset tar shards in, one `AudioItem` per sample (or one `ErrorRecord`) out.

A WebDataset shard is a plain tar whose members are grouped into samples by key: the key is a
member's path up to the first dot of its file name, the rest is the extension (`a/utt1.flac` and
`a/utt1.json` are sample `a/utt1`, extensions `flac` and `json`), and the members of a sample are
adjacent. Members whose file name starts with a dot or has no extension are not part of any sample
and are passed over, as WebDataset does (e.g. macOS `._` files and directory entries). A sample's
audio is its one member with extension `flac`, `wav`, `mp3`, `ogg` or `opus` (libsndfile's), in
any case, or, in a sample that has none of those, its one member with an extension only FFmpeg
reads (`m4a`, `aac`, `mp4`, `m4b`, `mov`, `mkv`, `mka`, `webm`, `wma`): an audio-visual sample
holding `utt.mp4` beside `utt.wav` is read from its wav. Its reference text is its `txt` member (UTF-8), else the text field of its `json` member
(`--text_column`, else the first of `decode_items.TEXT_FIELDS`). Other members are ignored.

Which members are read: regular files, and hard links, which GNU tar writes for a file archived
twice and which are read as the member they link to (the shard is read again from its start to
find it). A symbolic link, device or FIFO is not read: a sample whose audio (or text) member is
one gets an error row (`not_a_regular_file`). A sample with no audio member, or several (`utt.wav`
and `utt.WAV` are two), is an error row (`no_audio`, `several_audio`).

An item's `id` is `<shard uri>#<key>` and its `source` is `<shard uri>#<audio member>`
(`transforms.read.ids`: a member name that is not UTF-8 is escaped).

Shards are streamed: tarfile reads the shard in stream mode (`r|*`, which also takes gzip, bzip2
and xz) straight from Beam's `FileSystems.open`, so `gs://` shards are never copied to disk. Only
one sample's members are held in memory at a time (the audio member is decoded from memory), and
the members of samples already done (`--skip_existing`) are read past, not kept.

Zero blocks do not end the shard: as `tar --ignore-zeros` does, the reader goes on past them, so a
zero-filled block in the middle of a shard and shards concatenated into one file (`cat a.tar b.tar`)
lose no sample. A shard ends at the end of its bytes, which must follow a zero block (every tar
writer ends an archive with two).

A damaged shard keeps what could be read. Every sample whose members were all read before the
damage is processed as usual. What the damage hides becomes error rows (stage `read`):

* the sample being read when the damage was found: `<shard uri>#<key>`, since some of its members
  may be missing;
* what cannot be attributed to a sample: one row `<shard uri>#<unread>`. It is also the id of a
  shard that cannot be opened or is not a tar at all.

A shard counts as damaged when tarfile raises while reading it, when it ends without a zero block
(cut short), or when a header is garbled: the reader skips the garbled block and the member's data
(as `tar --ignore-zeros` does) and goes on with the next header it finds, so the samples after the
damage are still read, and the `#<unread>` row says that a member was lost there.

A key that comes back after other keys (its members not adjacent) would give two items one id. The
first run of its members is the item; the members that come back are an error row
`duplicate_key` whose id is `<shard uri>#<first member that came back>`, so every id is in the
tables once.

Metrics (namespace `read_corpus`): `samples_read`, `damaged_shards`.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from wav2vec2_beam.transforms.read.decode_items import (
    METRICS_NAMESPACE,
    UNREAD,
    AudioItem,
    item_error,
    reference_text,
)
from wav2vec2_beam.transforms.read.ids import escape, file_id
from wav2vec2_beam.transforms.read.resume import SkipList

#: Extensions of a sample's audio member (compared in lower case): libsndfile's formats...
LIBSNDFILE_EXTENSIONS = frozenset({"flac", "wav", "mp3", "ogg", "opus"})
#: ... and those only FFmpeg reads (`transforms.read.decode_ffmpeg`), the audio of a sample
#: only when it has no member of the former.
FFMPEG_EXTENSIONS = frozenset({"m4a", "aac", "mp4", "m4b", "mov", "mkv", "mka", "webm", "wma"})
AUDIO_EXTENSIONS = LIBSNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS

#: Extensions of the members that hold a sample's reference text.
TEXT_EXTENSIONS = frozenset({"txt", "json"})

_END_BLOCK = tarfile.NUL * tarfile.BLOCKSIZE


def _extension(name: str) -> str:
    split = split_member_name(name)
    return split[1].lower() if split else ""


def split_member_name(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name, as WebDataset splits it; None if it is no sample's."""
    directory, slash, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    if not stem or not dot or not extension:
        return None
    return directory + slash + stem, extension


def _member_kind(member: tarfile.TarInfo) -> str:
    """What a member that is neither a file nor a hard link is, for error messages."""
    if member.issym():
        return f"a symbolic link to {member.linkname!r}"
    if member.isdir():
        return "a directory"
    if member.isfifo():
        return "a FIFO"
    if member.ischr() or member.isblk():
        return "a device"
    return "not a regular file"


@dataclass
class _Member:
    """One member of a sample this reader needs: its bytes, or why it has none."""

    name: str
    data: bytes | None = None
    #: Set for a member that is not a regular file (see `_member_kind`).
    problem: str | None = None


@dataclass
class _Sample:
    key: str
    #: The sample is done already (`--skip_existing`): its members are read past.
    skipped: bool
    audio: list[_Member] = field(default_factory=list)
    #: Lower-case extension ("txt", "json") -> member; the first of each.
    text: dict[str, _Member] = field(default_factory=dict)
    #: Every extension met, for error messages.
    extensions: list[str] = field(default_factory=list)
    #: A garbled header was skipped while this sample was being read: members may be missing.
    damaged: bool = False


@dataclass
class _Blocks:
    """What the last header reads were: how a clean end is told from a cut or garbled shard."""

    #: The last full block read as a header was a zero block (an end-of-archive marker).
    at_zero_block: bool = False
    #: Garbled header blocks skipped, and where the first was met (after which member).
    garbled: int = 0
    garbled_after: str | None = None


def _watched_tarinfo(blocks: _Blocks, last: list[str | None]) -> type[tarfile.TarInfo]:
    """A TarInfo class that records each header block tarfile reads into `blocks`.

    tarfile, told to ignore zero blocks, also skips garbled headers without a word; the record
    tells a clean end from damage. A class per shard, so that threads reading shards side by
    side do not share it; `last` holds the name of the member read last.
    """

    class WatchedTarInfo(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
            if len(buf) == tarfile.BLOCKSIZE:
                blocks.at_zero_block = buf == _END_BLOCK
            try:
                return super().frombuf(buf, encoding, errors)
            except tarfile.InvalidHeaderError:
                if blocks.garbled == 0:
                    blocks.garbled_after = last[0]
                blocks.garbled += 1
                raise

    return WatchedTarInfo


def read_shard(
    shard: str, skip: SkipList, text_field: str | None
) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
    """The items and errors of one shard, in shard order (see the module docstring)."""
    reader = _ShardReader(shard, skip, text_field)
    yield from reader.read()


class _ShardReader:
    def __init__(self, shard: str, skip: SkipList, text_field: str | None) -> None:
        self.shard = shard  # the path to open
        self.uri = file_id(shard)  # its name in ids
        self.skip = skip
        self.text_field = text_field
        self.blocks = _Blocks()
        self.last: list[str | None] = [None]

    def read(self) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
        unread = f"{self.uri}#{UNREAD}"
        try:
            raw = FileSystems.open(self.shard, compression_type=CompressionTypes.UNCOMPRESSED)
        except Exception as error:
            yield item_error(
                unread, self.uri, "read", f"unreadable: {type(error).__name__}: {error}"
            )
            return
        with raw:
            try:
                tar = tarfile.open(  # noqa: SIM115 - closed by the `with tar` below
                    fileobj=raw,
                    mode="r|*",
                    tarinfo=_watched_tarinfo(self.blocks, self.last),
                    ignore_zeros=True,
                )
            except Exception as error:
                yield item_error(
                    unread, self.uri, "read", f"not_a_tar: {type(error).__name__}: {error}"
                )
                return
            with tar:
                yield from self._members(tar)

    def _members(self, tar: tarfile.TarFile) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
        sample: _Sample | None = None
        seen: set[str] = set()
        garbled_seen = 0  # garbled blocks already accounted for
        try:
            while (member := tar.next()) is not None:
                tar.members = []  # tarfile keeps every header it read; a shard may hold millions
                # Garbled blocks skipped just now hid a member of the sample in progress or of
                # the one this member belongs to: both may be incomplete.
                lost = self.blocks.garbled > garbled_seen
                garbled_seen = self.blocks.garbled
                if lost and sample is not None:
                    sample.damaged = True
                self.last[0] = member.name
                split = split_member_name(member.name)
                if split is None:
                    continue
                key, extension = split
                if sample is None or key != sample.key:
                    if sample is not None:
                        yield from self._finish(sample)
                    if key in seen:
                        yield self._duplicate(member.name, key)
                        sample = _Sample(key, skipped=True)
                        continue
                    seen.add(key)
                    sample = _Sample(key, skipped=f"{self.uri}#{escape(key)}" in self.skip)
                    if sample.skipped:
                        self.skip.skipped()
                sample.damaged = sample.damaged or lost
                sample.extensions.append(extension)
                if not sample.skipped:
                    self._add(sample, tar, member, extension.lower())
        except Exception as error:
            if self.last[0] is None and self.blocks.garbled:  # not one header could be read
                yield item_error(
                    f"{self.uri}#{UNREAD}",
                    self.uri,
                    "read",
                    f"not_a_tar: no tar header in the file ({type(error).__name__}: {error})",
                )
            else:
                yield from self._damaged(sample, f"{type(error).__name__}: {error}")
            return
        if self.last[0] is None and (self.blocks.garbled or not self.blocks.at_zero_block):
            yield item_error(
                f"{self.uri}#{UNREAD}", self.uri, "read", "not_a_tar: no tar header in the file"
            )
            return
        if sample is not None and self.blocks.garbled > garbled_seen:
            sample.damaged = True  # garbled blocks after its last member
        if not self.blocks.at_zero_block:
            reason = "the shard ends without the tar end-of-archive block (cut short or garbled)"
            yield from self._damaged(sample, reason)
            return
        if self.blocks.garbled:
            yield self._garbled()
        if sample is not None:
            yield from self._finish(sample)

    def _add(
        self, sample: _Sample, tar: tarfile.TarFile, member: tarfile.TarInfo, extension: str
    ) -> None:
        """Keep a member the sample needs: its bytes, or why it cannot be read."""
        if extension not in AUDIO_EXTENSIONS and extension not in TEXT_EXTENSIONS:
            return
        if extension in TEXT_EXTENSIONS and extension in sample.text:
            return
        kept = _Member(member.name)
        if member.isfile():
            kept.data = tar.extractfile(member).read()
        elif member.islnk():
            kept.data = self._linked(member.linkname)
            if kept.data is None:
                kept.problem = f"a hard link to {member.linkname!r}, which the shard lacks"
        else:
            kept.problem = _member_kind(member)
        if extension in AUDIO_EXTENSIONS:
            sample.audio.append(kept)
        else:
            sample.text[extension] = kept

    def _linked(self, target: str) -> bytes | None:
        """The bytes of the regular member `target` (a hard link's), read from the shard's
        start: a stream cannot go back, and keeping every member for a rare link would hold
        the whole shard."""
        uncompressed = CompressionTypes.UNCOMPRESSED
        with (
            FileSystems.open(self.shard, compression_type=uncompressed) as raw,
            tarfile.open(fileobj=raw, mode="r|*", ignore_zeros=True) as tar,
        ):
            while (member := tar.next()) is not None:
                tar.members = []
                if member.name == target and member.isfile():
                    return tar.extractfile(member).read()
        return None

    def _duplicate(self, name: str, key: str) -> beam.pvalue.TaggedOutput:
        return item_error(
            f"{self.uri}#{escape(name)}",
            self.uri,
            "read",
            f"duplicate_key: member {escape(name)!r} comes back to key {escape(key)!r} after "
            "other keys; a WebDataset sample's members must be adjacent",
        )

    def _garbled(self) -> beam.pvalue.TaggedOutput:
        where = self.blocks.garbled_after
        place = f"after member {escape(where)!r}" if where else "at its start"
        return item_error(
            f"{self.uri}#{UNREAD}",
            self.uri,
            "read",
            f"damaged_shard: {self.blocks.garbled} garbled header block(s) {place} were skipped "
            "and reading went on at the next header; the member(s) they described are lost",
        )

    def _damaged(self, sample: _Sample | None, reason: str) -> Iterator[beam.pvalue.TaggedOutput]:
        """The error rows of a shard that could not be read to its end."""
        Metrics.counter(METRICS_NAMESPACE, "damaged_shards").inc()
        last = self.last[0]
        where = f"after member {escape(last)!r}" if last else "at its start"
        if sample is not None and not sample.skipped:
            yield item_error(
                f"{self.uri}#{escape(sample.key)}",
                self.uri,
                "read",
                f"damaged_shard: the shard could not be read {where}, inside this sample, so "
                f"some of its members may be missing: {reason}",
            )
        yield item_error(
            f"{self.uri}#{UNREAD}",
            self.uri,
            "read",
            f"damaged_shard: the shard could not be read {where}; any samples after it are "
            f"lost: {reason}",
        )

    def _finish(self, sample: _Sample) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
        """The item of a sample whose members have all been read, or its error."""
        if sample.skipped:
            return
        item_id = f"{self.uri}#{escape(sample.key)}"
        found = ", ".join(sample.extensions)
        if sample.damaged:
            Metrics.counter(METRICS_NAMESPACE, "damaged_shards").inc()
            yield item_error(
                item_id,
                self.uri,
                "read",
                f"damaged_shard: a garbled header was skipped while this sample was read, so "
                f"some of its members may be missing; its members: {found}",
            )
            return
        preferred = [m for m in sample.audio if _extension(m.name) in LIBSNDFILE_EXTENSIONS]
        if preferred:
            sample.audio = preferred  # an audio-visual sample's video is not its audio
        if len(sample.audio) != 1:
            reason = (
                "no_audio: no audio member"
                if not sample.audio
                else ("several_audio: several audio")
            )
            yield item_error(
                item_id,
                self.uri,
                "read",
                f"{reason} members ({', '.join(sorted(AUDIO_EXTENSIONS))}, any case) in sample "
                f"{escape(sample.key)!r}; its members: {found}",
            )
            return
        audio = sample.audio[0]
        unusable = [m for m in [audio, *sample.text.values()] if m.problem is not None]
        if unusable:
            member = unusable[0]
            yield item_error(
                item_id,
                self.uri,
                "read",
                f"not_a_regular_file: member {escape(member.name)!r} is {member.problem}; "
                "only regular files and hard links are read",
            )
            return
        try:
            reference = self._reference(sample)
        except ValueError as error:
            yield item_error(item_id, self.uri, "read", f"bad_reference: {error}")
            return
        Metrics.counter(METRICS_NAMESPACE, "samples_read").inc()
        yield AudioItem(
            id=item_id,
            source=f"{self.uri}#{audio.name}",
            data=audio.data,
            reference=reference,
        )

    def _reference(self, sample: _Sample) -> str | None:
        """The sample's reference text; ValueError for a text member that cannot be read."""
        key = escape(sample.key)
        if "txt" in sample.text:
            try:
                return sample.text["txt"].data.decode("utf-8").strip()
            except UnicodeDecodeError as error:
                raise ValueError(f"{key}.txt is not UTF-8 text: {error}") from None
        if "json" in sample.text:
            try:
                record: Any = json.loads(sample.text["json"].data)
            except ValueError as error:
                raise ValueError(f"{key}.json is not JSON: {error}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{key}.json holds {type(record).__name__}, not an object")
            return reference_text(record, self.text_field)
        return None

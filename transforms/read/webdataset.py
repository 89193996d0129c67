"""Beam stage: WebDataset tar shards in, one `AudioItem` per sample (or one `ErrorRecord`) out.

A WebDataset shard is a plain tar whose members are grouped into samples by key: the key is a
member's path up to the first dot of its file name, the rest is the extension (`a/utt1.flac` and
`a/utt1.json` are sample `a/utt1`, extensions `flac` and `json`), and the members of a sample are
adjacent. Members whose file name starts with a dot or has no extension are not part of any sample
and are passed over, as WebDataset does (e.g. macOS `._` files). A sample's audio is its one member
with extension `flac`, `wav`, `mp3`, `ogg` or `opus`; its reference text is its `txt` member
(UTF-8), else the text field of its `json` member (`--text_column`, else the first of
`decode_items.TEXT_FIELDS`). Other members are ignored.

An item's `id` is `<shard uri>#<key>` and its `source` is `<shard uri>#<audio member>`.

Shards are streamed: tarfile reads the shard in stream mode (`r|*`, which also takes gzip, bzip2
and xz) straight from Beam's `FileSystems.open`, so `gs://` shards are never copied to disk. Only
one sample's members are held in memory at a time (the audio member is decoded from memory), and
the members of samples already done (`--skip_existing`) are read past, not kept.

A damaged shard keeps what could be read. Every sample whose members were all read before the
damage is processed as usual. What the damage hides becomes error rows (stage `read`):

* the sample being read when the damage was found: `<shard uri>#<key>`, since some of its members
  may be missing;
* the rest of the shard, whose keys cannot be known: one row `<shard uri>#<unread>`. It is also the
  id of a shard that cannot be opened or is not a tar at all.

A shard counts as damaged when tarfile raises while reading it, or when it ends without the
end-of-archive block that every tar writer puts at the end (tarfile itself takes a header that is
cut short or garbled for the end of the archive, so this is checked here, on the last block read).

A key that comes back after other keys (its members not adjacent) would give two items one id. The
first run of its members is the item; the members that come back are an error row
`duplicate_key` whose id is `<shard uri>#<first member that came back>`, so every id is in the
tables once.
A sample with no audio member, or several, is an error row too.

Metrics (namespace `read_corpus`): `samples_read`, `damaged_shards`.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.read.decode_items import (
    METRICS_NAMESPACE,
    UNREAD,
    AudioItem,
    item_error,
    reference_text,
)
from transforms.read.resume import skipped_counter

#: Extensions of a sample's audio member.
AUDIO_EXTENSIONS = frozenset({"flac", "wav", "mp3", "ogg", "opus"})

#: Extensions of the members that hold a sample's reference text.
TEXT_EXTENSIONS = frozenset({"txt", "json"})

_END_BLOCK = tarfile.NUL * tarfile.BLOCKSIZE


def split_member_name(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name, as WebDataset splits it; None if it is no sample's."""
    directory, slash, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    if not stem or not dot or not extension:
        return None
    return directory + slash + stem, extension


@dataclass
class _Sample:
    key: str
    #: The sample is done already (`--skip_existing`): its members are read past.
    skipped: bool
    #: Extension -> bytes, for the members this reader needs.
    members: dict[str, bytes] = field(default_factory=dict)
    #: Every extension met, for error messages.
    extensions: list[str] = field(default_factory=list)


def _watched_tarinfo(last_block: list[bytes]) -> type[tarfile.TarInfo]:
    """A TarInfo class that records the last header block tarfile read into `last_block`.

    tarfile stops quietly at a header that is empty, cut short or garbled, exactly as at the
    end-of-archive block; that block, kept here, tells a clean end from damage. A class per shard,
    so that threads reading shards side by side do not share the record.
    """

    class WatchedTarInfo(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
            last_block[:] = [buf]
            return super().frombuf(buf, encoding, errors)

    return WatchedTarInfo


def read_shard(
    shard: str, skip: Collection[str], text_field: str | None
) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
    """The items and errors of one shard, in shard order (see the module docstring)."""
    unread = f"{shard}#{UNREAD}"
    try:
        raw = FileSystems.open(shard, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as error:
        yield item_error(unread, shard, "read", f"unreadable: {type(error).__name__}: {error}")
        return
    last_block: list[bytes] = []
    with raw:
        try:
            tar = tarfile.open(  # noqa: SIM115 - closed by the `with tar` below
                fileobj=raw, mode="r|*", tarinfo=_watched_tarinfo(last_block)
            )
        except Exception as error:
            yield item_error(unread, shard, "read", f"not_a_tar: {type(error).__name__}: {error}")
            return
        with tar:
            yield from _read_members(tar, shard, skip, text_field, last_block)


def _read_members(
    tar: tarfile.TarFile,
    shard: str,
    skip: Collection[str],
    text_field: str | None,
    last_block: list[bytes],
) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
    sample: _Sample | None = None
    seen: set[str] = set()
    last_member = None
    try:
        while (member := tar.next()) is not None:
            tar.members = []  # tarfile keeps every header it read; a shard may hold millions
            last_member = member.name
            split = split_member_name(member.name) if member.isfile() else None
            if split is None:
                continue
            key, extension = split
            if sample is None or key != sample.key:
                if sample is not None:
                    yield from _finish(sample, shard, text_field)
                item_id = f"{shard}#{key}"
                if key in seen:
                    yield item_error(
                        f"{shard}#{member.name}",
                        shard,
                        "read",
                        f"duplicate_key: member {member.name!r} comes back to key {key!r} after "
                        "other keys; a WebDataset sample's members must be adjacent",
                    )
                    sample = _Sample(key, skipped=True)
                    continue
                seen.add(key)
                sample = _Sample(key, skipped=item_id in skip)
                if sample.skipped:
                    skipped_counter().inc()
            sample.extensions.append(extension)
            wanted = extension.lower() in AUDIO_EXTENSIONS | TEXT_EXTENSIONS
            if wanted and not sample.skipped:
                sample.members[extension.lower()] = tar.extractfile(member).read()
    except Exception as error:
        yield from _damaged(shard, sample, last_member, f"{type(error).__name__}: {error}")
        return
    if last_block != [_END_BLOCK]:
        reason = "the shard ends without the tar end-of-archive block (cut short or garbled)"
        yield from _damaged(shard, sample, last_member, reason)
        return
    if sample is not None:
        yield from _finish(sample, shard, text_field)


def _damaged(
    shard: str, sample: _Sample | None, last_member: str | None, reason: str
) -> Iterator[beam.pvalue.TaggedOutput]:
    """The error rows of a shard that could not be read to its end."""
    Metrics.counter(METRICS_NAMESPACE, "damaged_shards").inc()
    where = f"after member {last_member!r}" if last_member else "at its start"
    if sample is not None and not sample.skipped:
        yield item_error(
            f"{shard}#{sample.key}",
            shard,
            "read",
            f"damaged_shard: the shard could not be read {where}, inside this sample, so some "
            f"of its members may be missing: {reason}",
        )
    yield item_error(
        f"{shard}#{UNREAD}",
        shard,
        "read",
        f"damaged_shard: the shard could not be read {where}; any samples after it are lost: "
        f"{reason}",
    )


def _finish(
    sample: _Sample, shard: str, text_field: str | None
) -> Iterator[AudioItem | beam.pvalue.TaggedOutput]:
    """The item of a sample whose members have all been read, or its error."""
    if sample.skipped:
        return
    item_id = f"{shard}#{sample.key}"
    audio = sorted(extension for extension in sample.members if extension in AUDIO_EXTENSIONS)
    if len(audio) != 1:
        found = ", ".join(sample.extensions)
        reason = "no_audio: no audio member" if not audio else "several_audio: several audio"
        yield item_error(
            item_id,
            shard,
            "read",
            f"{reason} members ({', '.join(sorted(AUDIO_EXTENSIONS))}) in sample "
            f"{sample.key!r}; its members: {found}",
        )
        return
    try:
        reference = _reference(sample, text_field)
    except ValueError as error:
        yield item_error(item_id, shard, "read", f"bad_reference: {error}")
        return
    Metrics.counter(METRICS_NAMESPACE, "samples_read").inc()
    yield AudioItem(
        id=item_id,
        source=f"{shard}#{sample.key}.{audio[0]}",
        data=sample.members[audio[0]],
        reference=reference,
    )


def _reference(sample: _Sample, text_field: str | None) -> str | None:
    """The sample's reference text; ValueError for a text member that cannot be read."""
    if "txt" in sample.members:
        try:
            return sample.members["txt"].decode("utf-8").strip()
        except UnicodeDecodeError as error:
            raise ValueError(f"{sample.key}.txt is not UTF-8 text: {error}") from None
    if "json" in sample.members:
        try:
            record: Any = json.loads(sample.members["json"])
        except ValueError as error:
            raise ValueError(f"{sample.key}.json is not JSON: {error}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{sample.key}.json holds {type(record).__name__}, not an object")
        return reference_text(record, text_field)
    return None

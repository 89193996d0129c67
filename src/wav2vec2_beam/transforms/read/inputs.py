"""What `--input` names: brace ranges, globs, and the kind of corpus each matched file is.

A pattern is first brace-expanded, as WebDataset shard lists are written: `{000..099}` is the
numbers 000 to 099 (zero-padded to the wider end when either end starts with 0, descending when
the first is larger), `{a,b,c}` the alternatives; groups nest and combine. A brace group that is
neither (`{abc}`) stays as it is. Each expanded pattern is then matched by Beam's FileSystems
(local globs, `gs://` wildcards); one that matches nothing is an error row whose id is that
pattern, so a missing shard of a range is reported, not skipped. A matched file is named by its one
spelling (`ids.canonical_path`), so that `./a/f.wav` and `a/f.wav` are one file.

Each matched file's kind is `--input_format`, or, by default (`auto`), inferred from its name:
`.tar`, `.tar.gz`, `.tgz` are WebDataset shards, `.parquet` a Parquet audio dataset, `.jsonl`,
`.json` and `.csv` a manifest, anything else an audio file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from wav2vec2_beam.models.file_cache import StoreUnreachable, store_reachable
from wav2vec2_beam.transforms.read.decode_items import METRICS_NAMESPACE, item_error
from wav2vec2_beam.transforms.read.ids import canonical_path, path_bytes

#: `--input_format` values; `auto` infers each file's kind from its name.
INPUT_FORMATS = ("auto", "audio", "webdataset", "parquet", "manifest")

#: The kinds a file can be (every format but `auto`).
KINDS = INPUT_FORMATS[1:]

_SUFFIXES = (
    ((".tar", ".tar.gz", ".tgz"), "webdataset"),
    ((".parquet",), "parquet"),
    ((".jsonl", ".json", ".csv"), "manifest"),
)

_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")


def infer_kind(path: str) -> str:
    """The kind of corpus file `path` is, from its name (see the module docstring)."""
    name = path.lower()
    for suffixes, kind in _SUFFIXES:
        if name.endswith(suffixes):
            return kind
    return "audio"


def expand_braces(pattern: str) -> list[str]:
    """Every pattern that `pattern`'s brace groups stand for, in order (see the module doc)."""
    start = pattern.find("{")
    while start != -1:
        end = _closing_brace(pattern, start)
        if end is None:
            break
        options = _options(pattern[start + 1 : end])
        if options is not None:
            head, tail = pattern[:start], pattern[end + 1 :]
            return [out for option in options for out in expand_braces(head + option + tail)]
        start = pattern.find("{", start + 1)
    return [pattern]


def shell_variants(pattern: str) -> list[str]:
    """`pattern` and every spelling of it with some of its `**/` left out: together they match
    what the shell's `**/` (zero or more folders) matches, under Beam's (one or more)."""
    head, globstar, tail = pattern.partition("**/")
    if not globstar:
        return [pattern]
    rests = shell_variants(tail)
    return [head + globstar + rest for rest in rests] + [head + rest for rest in rests]


def match_pattern(pattern: str) -> list[FileMetadata]:
    """The files `pattern` matches with the shell's `**/` (see the module docstring), once each."""
    store_reachable(pattern)  # at once, not after the client's two minutes of retries
    found: dict[str, FileMetadata] = {}
    for result in FileSystems.match(shell_variants(pattern)):
        for metadata in result.metadata_list:
            found.setdefault(metadata.path, metadata)
    return list(found.values())


def _closing_brace(text: str, start: int) -> int | None:
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def _options(body: str) -> list[str] | None:
    """A brace group's alternatives or range, or None when it is neither."""
    parts, depth, begin = [], 0, 0
    for index, char in enumerate(body):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(body[begin:index])
            begin = index + 1
    parts.append(body[begin:])
    if len(parts) > 1:
        return parts
    found = _RANGE.fullmatch(body)
    if found is None:
        return None
    first, last = found.groups()
    padded = any(len(end.lstrip("-")) > 1 and end.lstrip("-")[0] == "0" for end in (first, last))
    width = max(len(first), len(last)) if padded else 0
    step = 1 if int(last) >= int(first) else -1
    return [f"{number:0{width}d}" for number in range(int(first), int(last) + step, step)]


class MatchInputs(beam.DoFn):
    """A brace-expanded pattern to `(kind, path, size)` per matched file (the path as
    `ids.path_bytes`), or one error row."""

    def __init__(self, input_format: str) -> None:
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input format {input_format!r} is not one of {INPUT_FORMATS}")
        self._format = input_format
        self._unmatched = Metrics.counter(METRICS_NAMESPACE, "unmatched_patterns")

    def process(self, pattern: str) -> Iterator[object]:
        try:
            matched = match_pattern(pattern)
        except StoreUnreachable as error:
            self._unmatched.inc()
            yield item_error(pattern, pattern, "read", f"store_unreachable: {error}")
            return
        except Exception as error:  # any filesystem's failure to match is this pattern's error
            self._unmatched.inc()
            yield item_error(
                pattern, pattern, "read", f"match_failed: {type(error).__name__}: {error}"
            )
            return
        if not matched:
            self._unmatched.inc()
            yield item_error(pattern, pattern, "read", f"no_match: no file matches {pattern!r}")
            return
        for metadata in matched:
            path = canonical_path(metadata.path)  # one spelling per file: read once, one id
            kind = infer_kind(path) if self._format == "auto" else self._format
            yield kind, path_bytes(path), metadata.size_in_bytes

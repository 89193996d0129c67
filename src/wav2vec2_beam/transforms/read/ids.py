"""Ids, sources and texts as the tables hold them: one spelling per file, always valid UTF-8.

Two rules, applied where the readers form an item's strings, so that every table, the resume
filter (`--skip_existing` compares ids) and the error rows agree:

- A local file's path is made absolute and normalized (`./a/./f.wav`, `a/../a/f.wav` and
  `/cwd/a/f.wav` are one file, one id). Remote URIs (`gs://...`) are kept as the store lists
  them: an object store's names are exact (`a//b` and `a/b` are two objects).
- A string that is not valid Unicode text (a file or tar member name with bytes that are not
  UTF-8, which Python reads as lone surrogates; a lone surrogate written as `\\ud800` in JSON)
  is escaped so that it can be written: each such byte becomes `\\xNN`, any other lone surrogate
  `\\uNNNN`, and a backslash in that string is doubled. The escape is lossless (`unescape`
  recovers the original) and leaves every valid string exactly as it is, so it changes no id
  that could be written before.

And only regular files are read (`special_file`): a FIFO among the inputs would block the job.
"""

from __future__ import annotations

import glob
import os
import re
import stat
import warnings

#: Python reads each byte of a name that is not UTF-8 as one of these (PEP 383).
_ESCAPED_BYTES = range(0xDC80, 0xDD00)
_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")


def is_text(value: str) -> bool:
    """Whether `value` is valid Unicode text (encodes as UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escape(value: str) -> str:
    """`value` as valid text: unchanged when it is, else escaped (see the module docstring)."""
    if is_text(value):
        return value
    out = []
    for char in value:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif code in _ESCAPED_BYTES:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def unescape(value: str) -> str:
    """The string `escape` was given, from what it returned for a string that was not text.

    (For a string that was text, `escape` returned it unchanged; apply this only to strings
    known to have been escaped: ones holding `\\x`, `\\u` or `\\\\` sequences.)
    """

    def original(found: re.Match[str]) -> str:
        body = found.group(1)
        if body == "\\":
            return "\\"
        if body[0] == "x":
            return chr(0xDC00 + int(body[1:], 16))
        return chr(int(body[1:], 16))

    return _ESCAPE.sub(original, value)


def canonical_path(path: str) -> str:
    """A file's one spelling: a local path absolute and normalized, a URI as it is."""
    if "://" in path:
        return path
    return os.path.normpath(os.path.abspath(path))


def file_id(path: str) -> str:
    """The id (and source) of a loose file or a container: its canonical path, escaped."""
    return escape(canonical_path(path))


def special_file(path: str) -> str | None:
    """What a local `path` is when it is not a regular file ("a FIFO", "a directory", ...), else
    None; remote URIs are objects, so None. Reading a FIFO would wait forever for a writer, and
    a device could be endless: neither is audio a corpus holds."""
    if "://" in path:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing or unreadable: the open that follows says so
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "not a regular file"


# Beam turns a glob into a regular expression character by character, so glob.escape's `[[]`
# (a literal `[`) becomes the regex `[[]`, which Python compiles correctly but flags as a
# "possible nested set" on every match: noise on the user's terminal, not a fault.
warnings.filterwarnings(
    "ignore", message="Possible nested set", category=FutureWarning, module="apache_beam"
)


def literal(path: str) -> str:
    """`path` as a match pattern that matches only itself: an output folder named `out[1]` or
    `run?` is a name, not a glob (Beam's local and gs:// matching both read `[x]` as `x`)."""
    return glob.escape(path)


def path_bytes(path: str) -> bytes:
    """A path as Beam can carry it between stages: its coder writes strings as strict UTF-8, and a
    name that is not UTF-8 (lone surrogates in Python) must still reach the stage that opens it."""
    return path.encode("utf-8", "surrogateescape")


def path_text(data: bytes) -> str:
    """The path `path_bytes` carried."""
    return data.decode("utf-8", "surrogateescape")

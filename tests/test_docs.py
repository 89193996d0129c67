"""The README's and docs/' commands that can run offline do run (issue #22), so they cannot drift
from the program again.

A block is marked by the line `<!-- offline: tests/test_docs.py runs this -->` just before its
fence. A document's marked blocks run in order (a later block may read what an earlier one wrote)
in a scratch folder that holds a link to every top-level entry of the checkout, so that relative
paths (`.venv/bin/...`, `src/...`, `./run_local.sh`) work and outputs land in the scratch folder.
Shell blocks run under `bash -euo pipefail`, Python blocks with the project's interpreter.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- offline: tests/test_docs.py runs this -->"
_BLOCK = re.compile(re.escape(MARKER) + r"\n```(\w+)\n(.*?)\n```", re.S)
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def marked_blocks(document: Path) -> list[tuple[str, str]]:
    """(language, code) of each marked block, in order."""
    return _BLOCK.findall(document.read_text())


def test_markers_all_precede_a_block() -> None:
    for document in DOCUMENTS:
        markers = [line for line in document.read_text().splitlines() if line == MARKER]
        assert len(markers) == len(marked_blocks(document)), document.name
    assert sum(len(marked_blocks(d)) for d in DOCUMENTS) >= 10


@pytest.mark.parametrize(
    "document",
    [d for d in DOCUMENTS if marked_blocks(d)],
    ids=lambda d: d.name,
)
def test_the_documents_offline_commands_run(document: Path, tmp_path: Path) -> None:
    for entry in REPO.iterdir():
        if entry.name not in {"output", ".git"}:
            (tmp_path / entry.name).symlink_to(entry)
    for language, code in marked_blocks(document):
        if language in ("sh", "bash"):
            args = ["bash", "-euo", "pipefail", "-c", code]
        elif language == "python":
            args = [sys.executable, "-c", code]
        else:
            raise AssertionError(f"{document.name}: cannot run a {language} block")
        done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (document.name, code, done.stdout[-2000:], done.stderr[-3000:])

"""A run killed with SIGKILL part-way leaves every committed item, and `--skip_existing` finishes
the corpus from exactly there: every id once in each table, nothing committed computed again.

About a minute: 300 short files through the tests' small checkpoint, twice.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import soundfile
from fixtures.synthetic_audio import synthetic_speech

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "tests" / "fixtures" / "checkpoints" / "base"
FILES = 300
TABLES = ("transcripts", "hidden_states", "errors")


def pieces(output: Path, table: str) -> list[Path]:
    return sorted((output / table).glob("*.parquet"))


def ids_by_piece(output: Path, table: str) -> dict[str, list[str]]:
    """Each visible piece's ids; reading a piece whole also checks that it is complete."""
    return {p.name: pq.read_table(p).column("id").to_pylist() for p in pieces(output, table)}


def committed(output: Path) -> set[str]:
    ids: set[str] = set()
    for table in ("transcripts", "errors"):
        for path in pieces(output, table):
            ids.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return ids


def command(inputs: str, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "wav2vec2_beam",
        f"--input={inputs}",
        f"--model_dir={MODEL}",
        f"--output_dir={output}",
        "--outputs=transcripts,hidden_states",
        "--piece_items=5",
        "--batch_size=4",
        *extra,
    ]


def test_a_killed_run_resumes_from_its_last_committed_piece(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index in range(FILES):
        soundfile.write(corpus / f"f{index:03d}.flac", synthetic_speech(3.0, seed=index), 16_000)
    (corpus / "f999.flac").write_bytes(b"not audio")  # one error row among them
    paths = {str(p) for p in corpus.glob("*.flac")}
    output = tmp_path / "out"

    first = subprocess.Popen(
        command(str(corpus / "*.flac"), output),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    try:
        while len(committed(output)) < 0.3 * len(paths):
            assert first.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    assert not (output / "summary.json").exists()  # it really was killed part-way
    before = {table: ids_by_piece(output, table) for table in TABLES}
    done_before = committed(output)
    print(f"killed with {len(done_before)} of {len(paths)} ids committed")
    assert 0.3 * len(paths) <= len(done_before) < len(paths)

    resumed = subprocess.run(
        command(str(corpus / "*.flac"), output, "--skip_existing"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((output / "summary.json").read_text())

    # Nothing committed was computed again: the resumed run skipped exactly those ids ...
    assert summary["skipped_existing"] == len(done_before)
    assert summary["inputs"] == len(paths) - len(done_before)
    assert summary["items_written"] == summary["inputs"]  # each committed once, none lost
    # ... and left the first run's pieces as they were.
    for table in TABLES:
        now = ids_by_piece(output, table)
        assert {name: now[name] for name in before[table]} == before[table]
    # Every id is in exactly one of transcripts and errors, and in hidden_states iff transcribed.
    transcribed = Counter(i for ids in ids_by_piece(output, "transcripts").values() for i in ids)
    failed = Counter(i for ids in ids_by_piece(output, "errors").values() for i in ids)
    hidden = Counter(i for ids in ids_by_piece(output, "hidden_states").values() for i in ids)
    assert set(transcribed.values()) == {1} and set(failed.values()) == {1}
    assert set(transcribed) | set(failed) == paths and not set(transcribed) & set(failed)
    assert list(failed) == [str(corpus / "f999.flac")]
    assert hidden == transcribed

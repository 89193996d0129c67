"""Every table folder loads as it is with the readers users bring (issue #22): Hugging Face
`datasets`, pandas, pyarrow, polars and DuckDB, with the same rows, after a normal run and after a
no-op resume of it (which gives every table a piece without rows).

The expected counts are the corpus's: three utterances (one row each per table; hidden states of
one layer) and one file that is not audio (one error row).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import datasets
import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from wav2vec2_beam.demo import HELDOUT_DIR, MODEL_DIR

HELDOUT = sorted(HELDOUT_DIR.glob("*.flac"))[:3]
EXPECTED = {
    "transcripts": 3,
    "logits": 3,
    "hidden_states": 3,
    "pooled_hidden_states": 3,
    "errors": 1,
}


def run(output: Path, inputs: list[str], *extra: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "wav2vec2_beam",
            "--input",
            *inputs,
            "--model_dir",
            str(MODEL_DIR),
            "--output_dir",
            str(output),
            "--decoder",
            "greedy",
            "--outputs",
            "transcripts,logits,hidden_states",
            "--pool",
            "mean",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def rows_by_reader(folder: Path, cache: Path) -> dict[str, int]:
    pattern = str(folder / "*.parquet")
    loaded = datasets.load_dataset(
        "parquet", data_files=pattern, split="train", cache_dir=str(cache)
    )
    return {
        "datasets": len(loaded),
        "pandas": len(pd.read_parquet(folder)),
        "pyarrow": pq.read_table(folder).num_rows,
        "polars (folder)": len(pl.read_parquet(folder)),
        "polars (glob)": len(pl.read_parquet(pattern)),
        "duckdb": duckdb.execute(f"select count(*) from read_parquet('{pattern}')").fetchone()[0],
    }


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readers")
    not_audio = root / "notes.wav"
    not_audio.write_text("not audio")
    inputs = [*map(str, HELDOUT), str(not_audio)]
    out = root / "out"
    run(out, inputs)
    return out


def test_every_table_loads_alike_after_a_run_and_after_a_no_op_resume(
    output: Path, tmp_path: Path
) -> None:
    datasets.disable_progress_bars()
    for resumed in (False, True):
        if resumed:
            inputs = [*map(str, HELDOUT), str(output.parent / "notes.wav")]
            run(output, inputs, "--skip_existing")
            empty = sorted(output.glob("*/*-empty.parquet"))
            assert len(empty) == len(EXPECTED)  # the resume wrote a row-less piece each
        for table, count in EXPECTED.items():
            found = rows_by_reader(output / table, tmp_path / f"hf-{resumed}")
            assert found == dict.fromkeys(found, count), (table, resumed, found)


def test_a_piece_without_rows_has_no_row_group_but_the_table_schema(output: Path) -> None:
    run(output, [str(HELDOUT[0])], "--skip_existing")  # a no-op: every piece empty
    for table in EXPECTED:
        for piece in (output / table).glob("*-empty.parquet"):
            metadata = pq.ParquetFile(piece).metadata
            assert metadata.num_row_groups == 0 and metadata.num_rows == 0
            assert pq.read_schema(piece) == pq.read_table(output / table).schema


def test_a_table_without_any_row_reads_as_its_columns(tmp_path: Path) -> None:
    """A run in which nothing failed: errors/ holds one row-less piece. Hugging Face `datasets`
    makes no dataset of zero rows (docs/OUTPUTS.md); the others give the empty table."""
    run(tmp_path / "out", [str(HELDOUT[0])])
    folder = tmp_path / "out" / "errors"
    columns = ["id", "source", "stage", "error"]
    assert list(pd.read_parquet(folder).columns) == columns and len(pd.read_parquet(folder)) == 0
    assert pq.read_table(folder).column_names == columns
    assert pl.read_parquet(folder).columns == columns
    pattern = f"{folder}/*.parquet"
    described = duckdb.execute(f"describe select * from read_parquet('{pattern}')").fetchall()
    assert [row[0] for row in described] == columns

"""`run_local.sh`: samples made, pipeline run, output shown; with no arguments (the demo model,
whose transcripts are readable: one sample is a held-out utterance whose transcript by
transformers is on record), and with a checkpoint of another head (the sample audio and output
folder filled in)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHON": sys.executable}


def test_run_local_with_no_arguments() -> None:
    done = subprocess.run(
        ["bash", str(REPO / "run_local.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = re.findall(r"^Tables are in (output/run_local/[\d-]+)/ ", done.stdout, re.M)
    assert done.stdout.count("    words: ") >= 3
    summary = json.loads((REPO / folder / "summary.json").read_text())
    assert summary["failed"] == 0 and summary["succeeded"] >= 3
    assert summary["model_loads"] == 1
    reference = json.loads((REPO / "tests/fixtures/reference/lm_decode.json").read_text())
    # demo_0_16k.wav is held-out utterance 00.flac, sample for sample; the demo model ships an
    # LM, so it is decoded with it, as transformers' Wav2Vec2ProcessorWithLM decodes it.
    expected = reference["expected"]["heldout/00.flac"]["demo_lm"]["text"]
    shown = [line for line in done.stdout.splitlines() if line.startswith("demo_0_16k.wav (")]
    assert len(shown) == 1, done.stdout
    assert shown[0].endswith(f": {expected!r}"), done.stdout


def test_run_local_with_a_classification_checkpoint(tmp_path: Path) -> None:
    checkpoint = REPO / "tests" / "fixtures" / "checkpoints" / "seqcls"
    done = subprocess.run(
        [
            "bash",
            str(REPO / "run_local.sh"),
            "--model_dir",
            str(checkpoint),
            f"--output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Tables are in {tmp_path}/" in done.stdout
    assert done.stdout.count("; probabilities [") >= 3
    assert {path.name for path in tmp_path.iterdir() if path.is_dir()} == {
        "classifications",
        "errors",
    }


def test_each_run_gets_its_own_folder() -> None:
    """Two runs with different checkpoints never share a folder (whose tables would mix)."""
    from wav2vec2_beam.demo.__main__ import demo_arguments

    first, first_output = demo_arguments(["--input", "a.wav"])
    (first_output / "transcripts").mkdir(parents=True)  # as the run would leave it
    try:
        second, second_output = demo_arguments(["--input", "a.wav", "--model_dir", "other"])
    finally:
        first_output.joinpath("transcripts").rmdir()
        first_output.rmdir()
    assert first_output != second_output
    assert first_output.parent == second_output.parent == Path("output/run_local")
    assert first[first.index("--output_dir") + 1] == str(first_output)
    assert second[second.index("--output_dir") + 1] == str(second_output)

"""`run_local.sh` with no arguments: samples made, pipeline run, output shown."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_run_local_with_no_arguments() -> None:
    done = subprocess.run(
        ["bash", str(REPO / "run_local.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Tables are in output/run_local/" in done.stdout
    assert done.stdout.count("    words: ") >= 3
    summary = json.loads((REPO / "output" / "run_local" / "summary.json").read_text())
    assert summary["failed"] == 0 and summary["succeeded"] >= 3
    assert summary["model_loads"] == 1

"""`setup.sh` says what it is doing, one line per step, and names the step that takes minutes
(issue #22). It runs here against stand-ins for apt-get, dpkg, python3 and the venv's pip, which
record what they were asked, so nothing is installed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
{extra}
"""


def stand_in(folder: Path, name: str, log: Path, extra: str = "") -> None:
    path = folder / name
    path.write_text(RECORDER.format(log=log, extra=extra))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_setup_prints_each_step(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(REPO / "setup.sh", checkout / "setup.sh")
    tools = tmp_path / "bin"
    tools.mkdir()
    log = tmp_path / "calls.log"
    stand_in(tools, "dpkg", log, "exit 1")  # the system packages are missing
    stand_in(tools, "apt-get", log)
    stand_in(tools, "id", log, "echo 0")
    # `python3 -m venv .venv` makes the venv's python: a recording stand-in as well.
    make_venv = (
        'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; '
        f'printf \'#!/bin/sh\\necho "python $*" >> {log}\\n\' > "$3/bin/python"; '
        'chmod +x "$3/bin/python"; fi'
    )
    stand_in(tools, "python3", log, make_venv)
    env = {"PATH": f"{tools}:/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(checkout / "setup.sh"), "test"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=checkout,
    )
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stderr.splitlines() if line.startswith("setup: ")]
    assert len(steps) == 4, done.stderr
    assert "apt-get" in steps[0] and "g++" in steps[0]
    assert steps[1] == "setup: creating .venv"
    assert "test extras" in steps[2] and "minutes" in steps[2] and "KenLM" in steps[2]
    assert steps[3].startswith("setup: done")
    calls = log.read_text().splitlines()
    assert any(call.startswith("apt-get install") for call in calls)
    assert any(call.endswith("-m pip install -q -e .[test]") for call in calls), calls
    assert os.path.exists(checkout / ".venv" / "bin" / "python")

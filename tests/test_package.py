"""The distribution as a user installs it (issue #22): one wheel, one top-level package.

The wheel is built from this checkout and installed into a fresh venv, whose dependencies come
from the project's venv (a path entry, so nothing is downloaded). From an empty folder, and from
a folder with its own `models/` and `pipeline/` packages: only `wav2vec2_beam` is ours, the
console script and `python -m wav2vec2_beam` work, and the demo runs and evaluates from the
installed package alone.
"""

from __future__ import annotations

import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its folder."""
    root = tmp_path_factory.mktemp("package")
    wheels = root / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("wav2vec2_beam-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"wav2vec2_beam"}, tops
    assert "wav2vec2_beam/demo/model/model.safetensors" in names
    assert "wav2vec2_beam/demo/heldout/transcripts.json" in names
    assert not any(name.startswith(("bench/", "tests/")) for name in names)

    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)  # ensurepip: offline, from Python's own wheel
    python = env_dir / "bin" / "python"
    packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies from the project's venv, after the fresh venv's own packages. A plain path
    # entry: the project venv's .pth files (its editable install of this checkout) are not run.
    (Path(packages) / "dependencies.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return env_dir


def run(fresh: Path, args: list[str], cwd: Path, timeout: int = 600):
    env = {"PATH": f"{fresh / 'bin'}:/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_only_wav2vec2_beam_is_installed(fresh: Path, tmp_path: Path) -> None:
    python = str(fresh / "bin" / "python")
    done = run(fresh, [python, "-c", "import models"], tmp_path)
    assert done.returncode == 1 and "No module named 'models'" in done.stderr
    for name in ("pipeline", "transforms", "lm", "demo"):
        assert run(fresh, [python, "-c", f"import {name}"], tmp_path).returncode == 1, name
    where = run(
        fresh,
        [python, "-c", "import wav2vec2_beam, wav2vec2_beam.models as m; print(m.__file__)"],
        tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(fresh)), where.stdout  # the wheel's, not the checkout's


def test_a_project_with_its_own_models_package_keeps_it(fresh: Path, tmp_path: Path) -> None:
    for name in ("models", "pipeline"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f'WHO = "the user\'s {name}"\n')
    python = str(fresh / "bin" / "python")
    code = (
        "from models import WHO; from wav2vec2_beam.models import TFWav2Vec2ForCTC; "
        "print(WHO, TFWav2Vec2ForCTC.__name__)"
    )
    done = run(fresh, [python, "-c", code], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["the", "user's", "models", "TFWav2Vec2ForCTC"]
    for entry in ([str(fresh / "bin" / "wav2vec2-beam")], [python, "-m", "wav2vec2_beam"]):
        shown = run(fresh, [*entry, "--help"], tmp_path)
        assert shown.returncode == 0, shown.stderr[-2000:]
        assert shown.stdout.startswith("usage: wav2vec2-beam ")


def test_the_demo_runs_and_evaluates_from_the_wheel(fresh: Path, tmp_path: Path) -> None:
    python = str(fresh / "bin" / "python")
    done = run(fresh, [python, "-m", "wav2vec2_beam.demo"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Tables are in output/run_local/" in done.stdout
    (folder,) = (tmp_path / "output" / "run_local").iterdir()
    assert (folder / "transcripts").is_dir() and (folder / "summary.json").is_file()

    # On a PATH without espeak-ng (/usr/bin left out): the bundled held-out set still evaluates.
    env = {"PATH": str(fresh / "bin"), "HOME": str(tmp_path)}
    evaluated = subprocess.run(
        [python, "-m", "wav2vec2_beam.demo.evaluate", "--count", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "espeak-ng is not installed" in evaluated.stderr
    rows = [line for line in evaluated.stdout.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| bundled held-out speech | 24 |"), rows  # after the header

"""docs/ARCHITECTURE.md against the code, and the layout's rules.

- Every module the document names exists, and every module of the package's folders is named
  there (paths relative to the package, src/wav2vec2_beam/).
- Every stage of its data path is a named step of the job graph (pipeline/graph.py).
- `models/` imports nothing from Beam, `transforms/`, `pipeline/`, `lm/` or `demo/`, and its
  modules do not import each other in a cycle; only its Keras classes import `tf_keras`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from test_dataflow import STAGES  # the job graph's step names, in order

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "wav2vec2_beam"
DOC = (REPO / "docs" / "ARCHITECTURE.md").read_text()
FOLDERS = ("pipeline", "transforms", "models", "lm", "demo")


def _code_modules() -> set[str]:
    return {
        str(path.relative_to(PACKAGE))
        for folder in FOLDERS
        for path in (PACKAGE / folder).rglob("*.py")
        if path.name != "__init__.py" or folder == "models"
    }


def test_every_module_named_exists_and_every_module_is_named() -> None:
    named = set(re.findall(r"`((?:" + "|".join(FOLDERS) + r")/[\w/]+\.py)`", DOC))
    assert named, "the document names no module"
    assert sorted(path for path in named if not (PACKAGE / path).is_file()) == []
    assert sorted(_code_modules() - named) == []


def test_every_stage_of_the_data_path_is_a_step_of_the_graph() -> None:
    graph = (PACKAGE / "pipeline" / "graph.py").read_text()
    for stage in STAGES:
        assert stage in DOC, stage
        assert f'"{stage}"' in graph, stage


def _imports(path: Path) -> set[str]:
    """The modules `path` imports, with the package's own named without `wav2vec2_beam.`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name.removeprefix("wav2vec2_beam.") for name in found}


def test_models_knows_nothing_of_beam_or_the_pipeline() -> None:
    forbidden = ("apache_beam", "transforms", "pipeline", "lm", "demo")
    for path in (PACKAGE / "models").glob("*.py"):
        wrong = [m for m in _imports(path) if m.split(".")[0] in forbidden]
        assert wrong == [], (path.name, wrong)


def test_only_the_keras_classes_import_tf_keras() -> None:
    """Keras 2 is the TF classes' base (modeling_wav2vec2); the layers, the runner and the
    pipeline reach it only through them."""
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for folder in FOLDERS
        for path in (PACKAGE / folder).rglob("*.py")
        if any(m.split(".")[0] == "tf_keras" for m in _imports(path))
    )
    assert importers == ["models/modeling_wav2vec2.py"]


def _models_imported(path: Path, modules: set[str]) -> set[str]:
    """The models/ modules `path` imports, as `wav2vec2_beam.models.x` or
    `from wav2vec2_beam.models import x`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
        if module == "wav2vec2_beam.models":
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif module.startswith("wav2vec2_beam.models."):
            found.add(module.split(".")[2])
    return found


def test_models_modules_import_no_cycle() -> None:
    modules = {path.stem for path in (PACKAGE / "models").glob("*.py")} - {"__init__"}
    graph = {name: _models_imported(PACKAGE / "models" / f"{name}.py", modules) for name in modules}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    assert [name for name in graph if reaches(name, name, {name})] == []


def test_the_documents_links_lead_somewhere() -> None:
    """Every relative link of the README and docs/ names a file that exists."""
    documents = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    broken = [
        (document.name, target)
        for document in documents
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text())
        if "://" not in target and not (document.parent / target).exists()
    ]
    assert broken == []

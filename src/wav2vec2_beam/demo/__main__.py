"""`python -m wav2vec2_beam.demo` (what `run_local.sh` runs): the pipeline on the sample audio
with the bundled demo model, then a few rows of what it wrote.

    python -m wav2vec2_beam.demo                   sample speech + the demo model, transcripts and
                                                   logits, into output/run_local/<start time>/
    python -m wav2vec2_beam.demo --model_dir DIR   the sample audio through any checkpoint, its
                                                   head's default tables
    python -m wav2vec2_beam.demo ARGS...           `wav2vec2-beam ARGS...`, with --input (the
                                                   samples), --model_dir (the demo model) and
                                                   --output_dir (a new folder) filled in when left out

Paths are relative to the working folder: the samples are made once, in output/samples/
(`wav2vec2_beam.demo.samples`), and every run gets its own output folder, so that runs of
different checkpoints never share one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from wav2vec2_beam.demo import MODEL_DIR

SAMPLES = Path("output") / "samples"
RUNS = Path("output") / "run_local"


def given(flag: str, argv: Sequence[str]) -> str | None:
    """The value of `flag` (as `FLAG VALUE` or `FLAG=VALUE`) among `argv`, or None."""
    for index, arg in enumerate(argv):
        if arg == flag:
            return argv[index + 1] if index + 1 < len(argv) else ""
        if arg.startswith(flag + "="):
            return arg.removeprefix(flag + "=")
    return None


def new_run_folder(root: Path = RUNS) -> Path:
    """A folder under `root` named by the time, that no earlier run has used."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, suffix = root / stamp, 1
    while folder.exists():
        suffix += 1
        folder = root / f"{stamp}-{suffix}"
    return folder


def demo_arguments(argv: Sequence[str]) -> tuple[list[str], Path | None]:
    """The pipeline's command line for `argv`, and the output folder to show afterwards (None
    for --help)."""
    argv = list(argv)
    if given("-h", argv) is not None or given("--help", argv) is not None:
        return argv, None
    defaults: list[str] = []
    if not argv:
        defaults += ["--outputs", "transcripts,logits"]
    if given("--input", argv) is None:
        from wav2vec2_beam.demo.samples import make

        make(SAMPLES)
        defaults += ["--input", str(SAMPLES / "audio" / "*")]
    if given("--model_dir", argv) is None:
        defaults += ["--model_dir", str(MODEL_DIR)]
    output = given("--output_dir", argv)
    if output is None:
        output = str(new_run_folder())
        defaults += ["--output_dir", output]
    return defaults + argv, Path(output)


def main(argv: Sequence[str] | None = None) -> int:
    from wav2vec2_beam.pipeline.main import main as run_pipeline

    arguments, output = demo_arguments(sys.argv[1:] if argv is None else argv)
    status = run_pipeline(arguments)
    if output is not None and (output / "summary.json").is_file():
        from wav2vec2_beam.demo.samples import show

        print(f"\nTables are in {output}/ (one folder per table, and summary.json). A few rows:")
        show(output)
    return status


if __name__ == "__main__":
    import gc

    gc.disable()  # as `python -m wav2vec2_beam` starts (wav2vec2_beam/__main__.py)
    from wav2vec2_beam.pipeline.main import exit_now

    exit_now(main())

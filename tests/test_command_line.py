"""The command line as users' habits expect it (issue #22), through `python -m wav2vec2_beam`.

Inputs as the shell writes them (`**/`, unquoted globs), output folders reused, exit statuses,
one-line refusals, signals, the progress display on a terminal and in a pipe, and --help. Each
test runs the real command on the demo model (greedy decoding where the LM is not the point).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from wav2vec2_beam.demo import HELDOUT_DIR, MODEL_DIR
from wav2vec2_beam.transforms.read.inputs import shell_variants

REPO = Path(__file__).resolve().parents[1]
HELDOUT = sorted(HELDOUT_DIR.glob("*.flac"))


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "wav2vec2_beam", *args]


def run(args: list[str], cwd: Path = REPO, env: dict | None = None, timeout: int = 600):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def demo(*args: str) -> list[str]:
    return command("--model_dir", str(MODEL_DIR), "--decoder", "greedy", *args)


def ids(output: Path, table: str = "transcripts") -> list[str]:
    return sorted(pq.read_table(output / table, columns=["id"]).column("id").to_pylist())


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


# --- inputs -----------------------------------------------------------------------------------


def test_globstar_spellings_match_zero_or_more_folders() -> None:
    assert shell_variants("a/*.wav") == ["a/*.wav"]
    assert sorted(shell_variants("c/**/x/**/*.flac")) == sorted(
        ["c/**/x/**/*.flac", "c/**/x/*.flac", "c/x/**/*.flac", "c/x/*.flac"]
    )
    assert shell_variants("gs://b/c/**.flac") == ["gs://b/c/**.flac"]  # Beam's own meaning


def test_globstar_reads_the_top_folder_too_and_counts_are_printed(tmp_path: Path) -> None:
    """`corpus/**/*.flac` as bash's globstar and Python's glob read it: zero or more folders."""
    corpus = tmp_path / "corpus"
    (corpus / "x" / "y").mkdir(parents=True)
    shutil.copy(HELDOUT[0], corpus / "a.flac")
    shutil.copy(HELDOUT[1], corpus / "x" / "b.flac")
    shutil.copy(HELDOUT[2], corpus / "x" / "y" / "c.flac")
    pattern = f"{corpus}/**/*.flac"
    expected = sorted(str(Path(p)) for p in __import__("glob").glob(pattern, recursive=True))
    done = run(demo("--input", pattern, "--output_dir", str(tmp_path / "out")))
    assert done.returncode == 0, done.stderr[-3000:]
    assert ids(tmp_path / "out") == expected and len(expected) == 3
    assert f"input '{pattern}': 3 files" in done.stderr


def test_an_unquoted_glob_gives_several_paths_to_one_input(tmp_path: Path) -> None:
    """`--input corpus/*.flac` unquoted: the shell expands it into several arguments."""
    files = [str(path) for path in HELDOUT[:3]]
    done = run(demo("--input", *files, "--output_dir", str(tmp_path / "out")))
    assert done.returncode == 0, done.stderr[-3000:]
    assert ids(tmp_path / "out") == sorted(files)
    for path in files:
        assert f"input '{path}': 1 file" in done.stderr


# --- outputs ----------------------------------------------------------------------------------


def test_a_reused_output_folder_is_refused_unless_resumed_or_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run(demo("--input", str(HELDOUT[0]), "--output_dir", str(out)))
    assert first.returncode == 0, first.stderr[-3000:]
    before = sorted(path.name for path in out.rglob("*"))

    other_model = run(
        command("--input", str(HELDOUT[1]), "--model_dir", str(MODEL_DIR), "--output_dir", str(out))
    )
    assert other_model.returncode == 2
    (line,) = error_lines(other_model.stderr)
    assert "--skip_existing" in line and "--overwrite" in line and str(out) in line
    assert other_model.stderr.count("\n") == 1  # that line alone
    assert sorted(path.name for path in out.rglob("*")) == before  # nothing touched

    resumed = run(demo("--input", str(HELDOUT[0]), "--output_dir", str(out), "--skip_existing"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 skipped (already in the tables)" in resumed.stdout
    assert ids(out) == [str(HELDOUT[0])]

    (out / "notes.txt").write_text("mine")
    replaced = run(demo("--input", str(HELDOUT[1]), "--output_dir", str(out), "--overwrite"))
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert ids(out) == [str(HELDOUT[1])]  # the first run's rows are gone, the second's alone
    assert (out / "notes.txt").read_text() == "mine"  # what is not ours is left alone
    summaries = sorted(path.name for path in out.glob("summary-*.json"))
    assert len(summaries) == 1


def test_overwrite_and_skip_existing_together_are_refused(tmp_path: Path) -> None:
    done = run(
        [
            *demo("--input", str(HELDOUT[0]), "--output_dir", str(tmp_path), "--overwrite"),
            "--skip_existing",
        ]
    )
    assert done.returncode == 2 and len(error_lines(done.stderr)) == 1


def test_word_and_character_times_are_rounded_to_the_frame(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run(demo("--input", *map(str, HELDOUT[:4]), "--output_dir", str(out)))
    assert done.returncode == 0, done.stderr[-3000:]
    times = [
        value
        for row in pq.read_table(out / "transcripts").to_pylist()
        for timed in (*row["words"], *row["chars"])
        for value in (timed["start_s"], timed["end_s"])
    ]
    assert times
    for value in times:
        frames = value / 0.02  # the demo model's frame: 320 samples at 16 kHz
        assert abs(frames - round(frames)) < 1e-9
        assert len(repr(value).split(".")[-1]) <= 2, value  # 6.56, not 6.5600000000000005


# --- exit statuses and one-line refusals ------------------------------------------------------


def test_a_run_in_which_every_input_failed_exits_4(tmp_path: Path) -> None:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    missing = str(tmp_path / "nothing-*.wav")
    out = tmp_path / "out"
    done = run(demo("--input", missing, str(folder), "--output_dir", str(out)))
    assert done.returncode == 4, done.stderr[-3000:]
    assert "failed: " in done.stdout
    failed = next(line for line in done.stdout.splitlines() if line.startswith("failed: "))
    assert "no_match 1" in failed and "not_a_regular_file 1" in failed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"] == {"no_match": 1, "not_a_regular_file": 1}
    assert summary["succeeded"] == 0 and summary["failed"] == 2
    assert len(error_lines(done.stderr)) == 1


def test_a_run_with_some_failures_exits_0_and_counts_them_by_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 10)
    out = tmp_path / "out"
    done = run(demo("--input", str(HELDOUT[0]), str(bad), "--output_dir", str(out)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "failed: not_audio 1" in done.stdout
    assert json.loads((out / "summary.json").read_text())["failures"] == {"not_audio": 1}


def test_a_resume_whose_new_items_all_fail_exits_0_and_clears_scratch_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 10)
    out = tmp_path / "out"
    first = run(demo("--input", str(HELDOUT[0]), "--output_dir", str(out)))
    assert first.returncode == 0, first.stderr[-3000:]
    scratch = out / "transcripts" / ".a-killed-run-piece.parquet.0123abcd.tmp"
    scratch.write_bytes(b"PAR1 half written")
    # the good item is already in the tables: this run fails all it does, and still delivered
    again = run(
        demo("--input", str(HELDOUT[0]), str(bad), "--output_dir", str(out), "--skip_existing")
    )
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["skipped_existing"], summary["succeeded"], summary["failed"]) == (1, 0, 1)
    assert not scratch.exists()  # what a killed run left is cleared by the next run


@pytest.mark.parametrize("where", ["a_file", "under_a_file", "proc"])
def test_an_output_folder_that_cannot_be_written_is_refused_at_once(tmp_path, where) -> None:
    regular = tmp_path / "file"
    regular.write_text("x")
    output = {
        "a_file": regular,
        "under_a_file": regular / "out",
        "proc": Path("/proc") / f"wav2vec2-{uuid.uuid4().hex}",  # not writable, even by root
    }[where]
    start = time.monotonic()
    done = run(demo("--input", str(HELDOUT[0]), "--output_dir", str(output)))
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: --output_dir ")
    assert time.monotonic() - start < 20  # refused before the model was loaded


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--hidden_layers", "99"], "--hidden_layers"),
        (["--outputs", "transcripts", "--feature_dtype", "float16"], "--feature_dtype"),
        (["--decoder", "greedy", "--lm_alpha", "0.5"], "--lm_alpha"),
        (["--beam_width", "8"], "--beam_width"),  # greedy: the checkpoint's LM is not used
        (["--chunk_length_s", "0", "--stride_length_s", "2"], "--stride_length_s"),
        (["--input_format", "audio", "--audio_column", "sound"], "--audio_column"),
        (["--outputs", "logits", "--hotwords", "BEAM"], "--hotwords"),
    ],
)
def test_a_flag_that_would_have_no_effect_is_refused(tmp_path, flags, named) -> None:
    model = tmp_path / "model"
    shutil.copytree(MODEL_DIR, model, ignore=shutil.ignore_patterns("language_model"))
    for name in ("alphabet.json",):
        (model / name).unlink(missing_ok=True)
    done = run(
        [
            *command("--input", str(HELDOUT[0]), "--model_dir", str(model)),
            "--output_dir",
            str(tmp_path / "out"),
            *flags,
        ]
    )
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = error_lines(done.stderr)
    assert line.startswith(f"error: {named} has no effect"), line
    assert not (tmp_path / "out").exists()


def test_a_text_file_given_as_the_lm_says_how_to_make_one(tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("THE BARN IS RED\nTHE DOG\n")
    done = run(
        [
            *command("--input", str(HELDOUT[0]), "--model_dir", str(MODEL_DIR)),
            "--output_dir",
            str(tmp_path / "out"),
            "--lm",
            str(text),
        ]
    )
    assert done.returncode == 3
    (line,) = error_lines(done.stderr)
    assert "neither an ARPA file nor a KenLM binary" in line
    assert "python -m wav2vec2_beam.lm.build_arpa" in line


def test_build_arpa_normalizes_text_to_the_checkpoint_alphabet(tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text('The barn. "Hello," said the café\u2019s owner.\nA well-known barn!\n')

    def unigrams(*flags: str) -> set[str]:
        arpa = tmp_path / "lm.arpa"
        done = run(
            [
                sys.executable,
                "-m",
                "wav2vec2_beam.lm.build_arpa",
                "--text",
                str(text),
                "--output",
                str(arpa),
                "--order",
                "2",
                *flags,
            ]
        )
        assert done.returncode == 0, done.stderr
        lines = arpa.read_text().split("\\1-grams:")[1].split("\\2-grams:")[0].splitlines()
        return {line.split("\t")[1] for line in lines if "\t" in line} - {"<s>", "</s>", "<unk>"}

    expected = {"THE", "BARN", "HELLO", "SAID", "CAFE'S", "OWNER", "A", "WELL", "KNOWN"}
    assert unigrams("--vocab", str(MODEL_DIR)) == expected
    kept = unigrams("--vocab", str(MODEL_DIR), "--normalize", "none", "--case", "upper")
    assert {"BARN.", '"HELLO,"', "WELL-KNOWN"} <= kept


# --- signals ----------------------------------------------------------------------------------


def corpus_of(folder: Path, copies: int) -> Path:
    """`copies` copies of the held-out set: enough speech to run for a while."""
    folder.mkdir(parents=True, exist_ok=True)
    for copy in range(copies):
        for path in HELDOUT:
            target = folder / f"{copy:03d}_{path.name}"
            if not target.exists():
                os.link(path, target)
    return folder


def processes_marked(mark: str) -> list[int]:
    """Every process whose environment holds `mark` (the run's own and all it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize(
    "sig, status, extra",
    [
        (signal.SIGTERM, 143, []),
        (signal.SIGINT, 130, []),
        (signal.SIGTERM, 143, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]),
    ],
)
def test_an_interrupted_run_says_what_is_on_disk_and_leaves_no_process(
    tmp_path: Path, sig, status, extra
) -> None:
    corpus = corpus_of(tmp_path / "corpus", 12)
    out = tmp_path / "out"
    mark = f"WAV2VEC2_TEST_RUN={uuid.uuid4().hex}"
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    args = command("--input", f"{corpus}/*.flac", "--model_dir", str(MODEL_DIR))
    args += ["--output_dir", str(out), "--piece_items", "10", *extra]  # with the LM: decoders
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not list((out / "transcripts").glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.2)  # until some rows are on disk
    process.send_signal(sig)
    _stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr.decode()[-3000:]
    lines = stderr.decode().splitlines()
    interrupted = [line for line in lines if line.startswith("interrupted: ")]
    assert len(interrupted) == 1 and "--skip_existing" in interrupted[0], lines[-20:]
    assert lines[-1] == interrupted[0]
    assert not any("Traceback" in line for line in lines), lines
    on_disk = int(re.search(r"interrupted: (\d+) items are on disk", interrupted[0]).group(1))
    assert on_disk == len(ids(out)) > 0
    time.sleep(1.0)
    assert processes_marked(mark) == []


# --- progress and help ------------------------------------------------------------------------


def pty_run(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run `args` on a pseudo-terminal of 120 columns; its exit status and everything it drew."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(cwd)
        os.execv(args[0], args)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    drawn = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            drawn += data
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), drawn.decode("utf-8", "replace")


def test_a_terminal_shows_a_live_bar_with_percentage_and_time_left(tmp_path: Path) -> None:
    corpus = corpus_of(tmp_path / "corpus", 12)
    status, drawn = pty_run(
        [
            *demo("--input", f"{corpus}/*.flac", "--output_dir", str(tmp_path / "out")),
            "--batch_size",
            "4",
        ],
        REPO,
    )
    assert status == 0, drawn[-3000:]
    total = 12 * len(HELDOUT)
    frames = re.findall(r"(\d+)%\|[^|]*\| (\d+)/(\d+) items \[([\d:]+)<([\d:?]+)\]", drawn)
    assert frames, drawn[-3000:]
    percentages = [int(frame[0]) for frame in frames]
    assert percentages == sorted(percentages) and len(set(percentages)) >= 3, percentages
    assert percentages[-1] == 100 and {int(frame[2]) for frame in frames} == {total}
    assert any(frame[4] not in ("?", "00:00") for frame in frames)  # a time left was shown
    assert f"{total} on disk" in drawn and "h of audio" in drawn


def test_a_pipe_gets_log_lines_with_percentage_and_time_left(tmp_path: Path) -> None:
    corpus = corpus_of(tmp_path / "corpus", 40)  # past the first line at 5 s
    done = run(
        [
            *demo("--input", f"{corpus}/*.flac", "--output_dir", str(tmp_path / "out")),
            "--batch_size",
            "1",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    total = 40 * len(HELDOUT)
    assert f"to do: {total} items" in done.stderr
    lines = [line for line in done.stderr.splitlines() if " progress: " in line]
    assert lines, done.stderr[-3000:]
    assert re.search(rf"progress: \d+%, \d+ of {total} items \(.*\); \d+ s elapsed", lines[0])
    assert "\r" not in done.stderr  # no bar drawn into a pipe
    assert any(re.search(r"about \d+ s left", line) for line in lines), lines


def test_help_is_grouped_and_names_the_console_script() -> None:
    done = run(command("--help"))
    assert done.returncode == 0
    assert done.stdout.startswith("usage: wav2vec2-beam --input PATH")
    for group in ("inputs:", "model:", "decoding (transcripts):", "outputs:", "performance:"):
        assert f"\n{group}\n" in done.stdout, group
    assert "\nrunner:\n" in done.stdout and "--runner DataflowRunner" in done.stdout
    options = done.stdout.split("\n\n", 2)[2]  # after the usage and the description
    for flag in ("--input PATH", "--model_dir CHECKPOINT", "--output_dir FOLDER"):
        block = options.split(f"  {flag}", 1)[1][:120]
        assert "(required)" in block, flag
    assert "facebook/wav2vec2-base-960h" in done.stdout  # hub ids under --model_dir
    assert "{greedy,beam}" in done.stdout and "(default 16)" in done.stdout
    console = Path(sys.executable).with_name("wav2vec2-beam")
    assert run([str(console), "--help"]).stdout == done.stdout


def test_worker_processes_start_quietly_unless_verbose(tmp_path: Path) -> None:
    noise = ("cuInit", "oneDNN", "semi_persistent_directory", "Resource module")
    for verbose in (False, True):
        done = run(
            demo("--input", *map(str, HELDOUT[:2]), "--output_dir", str(tmp_path / str(verbose)))
            + ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
            + (["--verbose"] if verbose else [])
        )
        assert done.returncode == 0, done.stderr[-3000:]
        shown = [word for word in noise if word in done.stderr]
        assert (shown != []) == verbose, (verbose, done.stderr[-3000:])


def test_the_count_of_the_inputs_never_opens_a_fifo(tmp_path: Path) -> None:
    """The launcher counts the inputs before the job: a FIFO among them would block an open."""
    from wav2vec2_beam.transforms.read.census import take_census

    os.mkfifo(tmp_path / "pipe.wav")
    shutil.copy(HELDOUT[0], tmp_path / "a.flac")
    start = time.monotonic()
    census = take_census([f"{tmp_path}/*"], "auto")
    assert time.monotonic() - start < 5
    assert census.items == 2 and [count.files for count in census.patterns] == [2]


def test_jax_programs_compiled_once_are_loaded_by_the_next_run(tmp_path: Path) -> None:
    cache = tmp_path / "jax"
    files = [str(path) for path in HELDOUT[:4]]
    tables, programs = [], []
    for attempt in ("first", "second"):
        out = tmp_path / attempt
        done = run(
            demo(
                "--input",
                *files,
                "--backend=jax",
                f"--jax_cache_dir={cache}",
                "--output_dir",
                str(out),
            )
        )
        assert done.returncode == 0, done.stderr[-3000:]
        tables.append(pq.read_table(out / "transcripts", columns=["id", "transcript"]).to_pylist())
        programs.append(sorted(path.name for path in cache.glob("jit__outputs-*")))
    assert programs[0]  # the first run kept its programs...
    assert programs[1] == programs[0]  # ...and the second compiled none anew
    assert sorted(tables[1], key=str) == sorted(tables[0], key=str) and len(tables[0]) == 4


_GC_PROBE = """
import gc, json, sys, weakref
import wav2vec2_beam.pipeline.main as main

class Cycle:
    pass

def cycle():
    made = Cycle()
    made.itself = made  # garbage only the cyclic collector frees
    return weakref.ref(made)

seen = {}
load = main.load_checked_model

def probed_load(config):
    seen["loading"] = gc.isenabled()
    seen["start_up_cycle"] = cycle()
    return load(config)

def probed_run_job(*args):
    run_cycle = cycle()
    gc.collect()
    seen.update(
        running=gc.isenabled(),
        frozen=gc.get_freeze_count(),
        start_up_cycle=seen["start_up_cycle"]() is not None,
        run_cycle=run_cycle() is not None,
    )
    print(json.dumps(seen))
    return 0

main.load_checked_model, main.run_job = probed_load, probed_run_job
from wav2vec2_beam.__main__ import cli
cli()
"""


def test_the_command_starts_without_the_garbage_collector_and_runs_with_it(tmp_path: Path) -> None:
    """The console script's entry (`wav2vec2_beam.__main__.cli`) loads the model with the cyclic
    collector off; the run starts with it on and the start-up's objects frozen: its cyclic
    garbage is never collected (no collection scans them), the run's is."""
    done = run(
        [
            sys.executable,
            "-c",
            _GC_PROBE,
            "--model_dir",
            str(MODEL_DIR),
            "--input",
            str(HELDOUT[0]),
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["loading"] is False
    assert seen["running"] is True and seen["frozen"] > 100_000
    assert seen["start_up_cycle"] is True and seen["run_cycle"] is False

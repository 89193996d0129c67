"""Hostile corpora, model folders and runs through the command line (issue #21).

One corpus mixes every hostile input with ordinary files: every item (each loose file, tar sample,
Parquet row, manifest entry) must end exactly once in transcripts or errors, with the reason
expected of it, and so after SIGKILLs at three points and `--skip_existing`. Then what a run
meets around the corpus: a reused, oddly named or shared output folder, broken model folders
(refused before anything is built, in little memory), flags that are not numbers, and a killed
launcher whose decoding processes must not outlive it.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
from fixtures.synthetic_audio import synthetic_speech

from wav2vec2_beam.demo import HELDOUT_DIR, MODEL_DIR

REPO = Path(__file__).resolve().parents[1]
DEMO = MODEL_DIR
BASE = REPO / "tests" / "fixtures" / "checkpoints" / "base"


def wav(seed: int, seconds: float = 1.0, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, synthetic_speech(seconds, seed=seed), rate, format="WAV")
    return buffer.getvalue()


def pipeline(*args: str) -> list[str]:
    return [sys.executable, "-m", "wav2vec2_beam", *args]


def run(args: list[str], cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def table_ids(output: Path, table: str) -> Counter:
    """The ids of a table's pieces (named after their run's UTC start: a digit first)."""
    ids: Counter = Counter()
    for path in (output / table).glob("[0-9]*.parquet"):
        ids.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return ids


def errors_by_id(output: Path) -> dict[str, str]:
    rows: dict[str, str] = {}
    for path in (output / "errors").glob("[0-9]*.parquet"):
        for row in pq.read_table(path).to_pylist():
            rows[row["id"]] = row["error"]
    return rows


# --- the hostile corpus ---------------------------------------------------------------------


def tar_bytes(members: list[tuple[str, bytes | None, bytes, str]]) -> bytes:
    """A GNU tar of (name, data, type, link) members; member names may hold surrogates (bytes
    that are not UTF-8)."""
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT, errors="surrogateescape"
    ) as tar:
        for name, data, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def hostile_corpus(root: Path) -> tuple[list[str], dict[str, str | None]]:
    """The `--input`s (relative to `root`, spelled twice where a file is matched twice) and each
    item's expected outcome: None for a transcript, else the reason its error row starts with."""
    expected: dict[str, str | None] = {}
    loose = root / "loose"
    loose.mkdir()
    for index in range(3):
        (loose / f"ok{index}.wav").write_bytes(wav(index))
        expected[str(loose / f"ok{index}.wav")] = None
    with open(os.path.join(os.fsencode(loose), b"caf\xe9.wav"), "wb") as handle:
        handle.write(wav(3))  # a name with a Latin-1 byte
    expected[f"{loose}/caf\\xe9.wav"] = None
    os.mkfifo(loose / "pipe.wav")
    expected[str(loose / "pipe.wav")] = "not_a_regular_file"
    soundfile.write(loose / "one_hz.wav", np.zeros(1200, np.float32), 1, format="WAV")
    expected[str(loose / "one_hz.wav")] = "sample_rate_too_low"

    shards = root / "shards"
    shards.mkdir()
    first = tar_bytes(
        [
            ("s0.wav", wav(10), tarfile.REGTYPE, ""),
            ("s0.txt", b"a reference", tarfile.REGTYPE, ""),
            ("s1.wav", wav(11), tarfile.REGTYPE, ""),
            ("s1.json", json.dumps({"text": "lone \ud800"}).encode(), tarfile.REGTYPE, ""),
            ("s2.wav", None, tarfile.LNKTYPE, "s0.wav"),
            ("s3.wav", None, tarfile.SYMTYPE, "s0.wav"),
            ("s4.flac", None, tarfile.FIFOTYPE, ""),
            ("s5.wav", wav(12), tarfile.REGTYPE, ""),
            ("s5.WAV", wav(13), tarfile.REGTYPE, ""),
            ("n\udcf6.wav", wav(14), tarfile.REGTYPE, ""),
        ]
    )
    second = tar_bytes(
        [("t0.wav", wav(15), tarfile.REGTYPE, ""), ("t1.wav", wav(16), tarfile.REGTYPE, "")]
    )
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        offset = tar.getmember("s1.wav").offset
    shard = shards / "a.tar"
    # a zero block in the middle, then a second archive concatenated after the first's end
    shard.write_bytes(first[:offset] + bytes(512) + first[offset:] + second)
    for key, outcome in (
        ("s0", None),
        ("s1", None),
        ("s2", None),
        ("s3", "not_a_regular_file"),
        ("s4", "not_a_regular_file"),
        ("s5", "several_audio"),
        ("n\\xf6", None),
        ("t0", None),
        ("t1", None),
    ):
        expected[f"{shard}#{key}"] = outcome

    (root / "m.wav").write_bytes(wav(20))
    os.mkfifo(root / "m_pipe.wav")
    manifest = root / "m.jsonl"
    lines = [
        {"audio_filepath": "m.wav", "id": "m-ok"},
        {"audio_filepath": "m.wav", "id": "m-lone-\ud800", "text": "t\udfff"},
        {"audio_filepath": "m_pipe.wav", "id": "m-fifo"},
        {"audio_filepath": "m.wav", "id": "m-far", "offset": 1e308},
    ]
    manifest.write_text("{not json\n" + "".join(json.dumps(line) + "\n" for line in lines))
    expected.update(
        {
            f"{manifest}#1": "not_json",
            "m-ok": None,
            "m-lone-\\ud800": None,
            "m-fifo": "not_a_regular_file",
            "m-far": "bad_span",
        }
    )
    csv_manifest = root / "c.csv"
    csv_manifest.write_bytes(
        '\ufeffaudio_filepath,text,id\r\nm.wav,"a, ""quoted""\nreference",c-ok\r\nm.wav,x,c-2\r\n'.encode()
    )
    expected.update({"c-ok": None, "c-2": None})

    audio = pa.struct([("bytes", pa.binary()), ("path", pa.binary())])
    rows = [{"bytes": wav(30 + i), "path": None} for i in range(4)]
    rows[1] = {"bytes": None, "path": b"m.wav"}  # a path of bytes, not text
    parquet = root / "d.parquet"
    pq.write_table(pa.table({"audio": pa.array(rows, audio)}), parquet)
    expected.update({f"{parquet}#{row}": None for row in (0, 2, 3)})
    expected[f"{parquet}#1"] = "bad_audio"

    inputs = [
        "loose/*.wav",
        "./loose/*.wav",  # every loose file matched twice, spelled two ways
        "loose/../loose/ok0.wav",
        "shards/*.tar",
        "m.jsonl",
        "c.csv",
        "d.parquet",
    ]
    return inputs, expected


def corpus_command(inputs: list[str], output: Path, *extra: str) -> list[str]:
    return pipeline(
        *(f"--input={pattern}" for pattern in inputs),
        f"--model_dir={DEMO}",
        f"--output_dir={output}",
        "--decoder=greedy",
        "--batch_size=2",
        "--piece_items=2",
        *extra,
    )


def assert_each_item_once(output: Path, expected: dict[str, str | None]) -> None:
    transcribed, failed = table_ids(output, "transcripts"), table_ids(output, "errors")
    assert set(transcribed.values()) <= {1} and set(failed.values()) <= {1}, "an id twice"
    assert not set(transcribed) & set(failed)
    assert set(transcribed) | set(failed) == set(expected)
    reasons = errors_by_id(output)
    for item_id, outcome in expected.items():
        if outcome is None:
            assert item_id in transcribed, (item_id, reasons.get(item_id))
        else:
            assert reasons[item_id].startswith(outcome), (item_id, reasons[item_id])


def test_every_hostile_item_ends_once_and_kills_keep_it_so(tmp_path: Path) -> None:
    inputs, expected = hostile_corpus(tmp_path)
    clean = run(corpus_command(inputs, tmp_path / "clean"), cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert_each_item_once(tmp_path / "clean", expected)

    # SIGKILL the launcher at three points, each resumed by the next run; then finish.
    output = tmp_path / "killed"
    picks = random.Random(21)
    for attempt in range(3):
        extra = ["--skip_existing"] if attempt else []
        started = subprocess.Popen(
            corpus_command(inputs, output, *extra),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        target = len(table_ids(output, "transcripts")) + picks.randint(1, 6)
        deadline = time.monotonic() + 300
        while started.poll() is None and time.monotonic() < deadline:
            done = len(table_ids(output, "transcripts")) if (output / "transcripts").exists() else 0
            if done >= target:
                break
            time.sleep(0.05)
        started.send_signal(signal.SIGKILL)
        started.wait()
        # what is on disk already holds every id at most once
        assert set(table_ids(output, "transcripts").values()) <= {1}
    final = run(corpus_command(inputs, output, "--skip_existing"), cwd=tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    assert_each_item_once(output, expected)


# --- the output folder ----------------------------------------------------------------------


def small_corpus(folder: Path, count: int, seconds: float = 0.6) -> Path:
    folder.mkdir()
    for index in range(count):
        (folder / f"f{index}.wav").write_bytes(wav(index, seconds=seconds))
    return folder


def base_command(corpus: Path, output: Path, *extra: str) -> list[str]:
    return pipeline(
        f"--input={corpus}/*.wav", f"--model_dir={BASE}", f"--output_dir={output}", *extra
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_resuming_an_odd_folder_with_strays_and_other_settings(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path / "corpus", 3)
    output = tmp_path / "out[1]"  # glob characters in the name
    layers = ("--outputs=transcripts,hidden_states", "--hidden_layers=1")
    first = run(base_command(corpus, output, *layers))
    assert first.returncode == 0, first.stderr[-2000:]
    (output / "transcripts" / "junk.parquet").write_bytes(b"")
    pq.write_table(pa.table({"other": [1]}), output / "transcripts" / "noid.parquet")
    again = run(base_command(corpus, output, *layers, "--skip_existing"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "junk.parquet" in again.stderr and "noid.parquet" in again.stderr
    summary = json.loads((output / "summary.json").read_text())
    assert summary["skipped_existing"] == 3 and summary["inputs"] == 0
    assert set(table_ids(output, "transcripts").values()) == {1}
    other = run(base_command(corpus, output, layers[0], "--hidden_layers=1,2", "--skip_existing"))
    assert other.returncode == 2
    assert "hidden_layers" in one_line(other) and str(output) in other.stderr

    sibling = tmp_path / "runA"  # what `run?` would match as a glob
    shutil.copytree(output, sibling)
    (sibling / ".wav2vec2-beam.lock").unlink(missing_ok=True)
    fresh = run(base_command(corpus, tmp_path / "run?", *layers, "--skip_existing"))
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert json.loads((tmp_path / "run?" / "summary.json").read_text())["skipped_existing"] == 0


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path / "corpus", 200, seconds=3.0)  # a run of 20 s or so
    output = tmp_path / "out"
    first = subprocess.Popen(
        base_command(corpus, output, "--batch_size=4", "--piece_items=5"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = output / ".wav2vec2-beam.lock"
        deadline = time.monotonic() + 300
        while not (lock.exists() and lock.read_text()) and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.05)
        second = run(base_command(corpus, output))
        assert first.poll() is None, "the first run ended before the second started"
        assert second.returncode == 2
        assert str(output) in one_line(second) and "another run" in second.stderr
        assert first.wait(timeout=600) == 0
    finally:
        if first.poll() is None:
            first.kill()
    ids = table_ids(output, "transcripts")
    assert len(ids) == 200 and set(ids.values()) == {1}


def test_a_number_flag_that_is_not_finite_is_refused() -> None:
    for flag in ("--max_batch_audio_s=inf", "--chunk_length_s=nan", "--lm_alpha=-inf"):
        result = run(pipeline("--input=x", f"--model_dir={BASE}", "--output_dir=/tmp/o", flag))
        assert result.returncode == 2 and "finite" in one_line(result), flag


# --- broken model folders -------------------------------------------------------------------

#: The command, then its peak resident memory in KiB: VmHWM, this process's own (ru_maxrss
#: would also count the forking test process's, which exec carries over).
_MEASURED = """
import re, sys
from wav2vec2_beam.pipeline.main import main
status = main(sys.argv[1:])
status_file = open("/proc/self/status").read()
print(re.search(r"VmHWM:\\s+(\\d+) kB", status_file).group(1), file=sys.stderr)
sys.exit(status)
"""


def breakages() -> dict:
    def config(**values):
        def change(folder: Path) -> None:
            path = folder / "config.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), **values}))

        return change

    def header(change_header):
        def change(folder: Path) -> None:
            path = folder / "model.safetensors"
            data = path.read_bytes()
            size = int.from_bytes(data[:8], "little")
            parsed = json.loads(data[8 : 8 + size])
            change_header(parsed)
            encoded = json.dumps(parsed).encode()
            path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data[8 + size :])

        return change

    def overlap(parsed: dict) -> None:
        keys = [k for k in parsed if k != "__metadata__" and parsed[k]["shape"] == [32]]
        parsed[keys[1]]["data_offsets"] = parsed[keys[0]]["data_offsets"]

    def no_offsets(parsed: dict) -> None:
        del parsed[next(k for k in parsed if k != "__metadata__")]["data_offsets"]

    def outside(folder: Path) -> None:
        path = folder / "model.safetensors"
        size = int.from_bytes(path.read_bytes()[:8], "little")
        keys = [k for k in json.loads(path.read_bytes()[8 : 8 + size]) if k != "__metadata__"]
        shutil.move(path, folder.parent / "x.safetensors")
        index = {"weight_map": {key: "../x.safetensors" for key in keys}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))

    def vocab(change_vocab):
        def change(folder: Path) -> None:
            path = folder / "vocab.json"
            path.write_text(json.dumps(change_vocab(json.loads(path.read_text()))))

        return change

    return {
        "a million layers": (config(num_hidden_layers=1_000_000), "encoder.layers.2"),
        "2000 layers": (config(num_hidden_layers=2000), "encoder.layers.2"),
        "overlapping tensors": (header(overlap), "overlap"),
        "no data_offsets": (header(no_offsets), "data_offsets"),
        "a shard outside": (outside, "own folder"),
        "duplicate ids": (vocab(lambda v: {**v, "extra": 3}), "same id 3"),
        "an id beyond the logits": (vocab(lambda v: {**v, "far": 400}), "beyond the model's"),
        "an id that is not a number": (vocab(lambda v: {**v, "odd": "5"}), "not a non-negative"),
    }


@pytest.mark.parametrize("case", sorted(breakages()))
def test_a_broken_model_folder_is_refused_before_anything_is_built(tmp_path: Path, case) -> None:
    change, named = breakages()[case]
    folder = tmp_path / "model"
    shutil.copytree(BASE, folder)
    change(folder)
    (tmp_path / "a.wav").write_bytes(wav(1))
    args = [
        f"--input={tmp_path / 'a.wav'}",
        f"--model_dir={folder}",
        f"--output_dir={tmp_path / 'o'}",
    ]
    result = run([sys.executable, "-c", _MEASURED, *args], timeout=120)
    *lines, peak = result.stderr.strip().splitlines()
    assert result.returncode == 3, result.stderr[-2000:]
    assert len(lines) == 1 and named in lines[0], lines
    assert int(peak) * 1024 < 1 << 30, f"peak RSS {int(peak) // 1024} MiB"


# --- a killed launcher's processes ----------------------------------------------------------


def descendants(pid: int) -> set[int]:
    found, queue = set(), [pid]
    while queue:
        parent = queue.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    queue.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited; only its parent has not reaped it


def test_a_killed_launcher_leaves_no_decoding_process_behind(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    heldout = sorted(HELDOUT_DIR.glob("*.flac"))
    for copy in range(8):  # enough speech to keep the LM decoders busy for a while
        for index, path in enumerate(heldout):
            shutil.copy(path, corpus / f"{copy}_{index:02d}.flac")
    launcher = subprocess.Popen(
        pipeline(
            f"--input={corpus}/*.flac", f"--model_dir={DEMO}", f"--output_dir={tmp_path / 'o'}"
        ),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while len(descendants(launcher.pid)) < 2 and time.monotonic() < deadline:
            assert launcher.poll() is None, "the run ended before its decoders started"
            time.sleep(0.05)
        time.sleep(0.5)  # the pool's processes are up and loading the LM
        children = descendants(launcher.pid)
        assert len(children) >= 2  # the decoding processes (and multiprocessing's tracker)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in children if alive(pid)]
    finally:
        if launcher.poll() is None:
            launcher.kill()

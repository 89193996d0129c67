"""gs:// end to end, against a Cloud Storage emulator on 127.0.0.1 (`gcs_emulator`).

Audio, checkpoint (with its language model), WebDataset shards, `--lm` and the output folder all
on gs://, compared with the same run on local files (the oracle: the transcripts must be equal);
a run killed with SIGKILL and resumed, leaving each id once and no scratch object; the local
cache of checkpoint files, one copy per file whatever the number of processes; and the
one-line errors of a store that cannot be reached or a bucket that does not exist; m4a objects
(FFmpeg's path) cut on voice activity, with the segments table and subtitle files on gs://.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile
from fixtures.media import M4A, encode
from gcs_emulator import BUCKET, Storage, closed_port, running_storage

from wav2vec2_beam.demo import HELDOUT_DIR, MODEL_DIR

HELDOUT = sorted(HELDOUT_DIR.glob("*.flac"))
LM_FILE = MODEL_DIR / "language_model" / "demo_trigram.arpa"


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    folder = tmp_path_factory.mktemp("gcs")
    with running_storage(folder / "emulator") as running:
        running.upload(MODEL_DIR, "models/demo")
        for path in HELDOUT[:6]:
            running.upload(path, f"audio/{path.name}")
        yield running


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temp folder and checkpoint cache every process of these tests shares."""
    folder = tmp_path_factory.mktemp("machine")
    (folder / "tmp").mkdir()
    return folder


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "wav2vec2_beam", *args]


def environment(storage: Storage, machine: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **storage.env,
        "WAV2VEC2_BEAM_CACHE": str(machine / "cache"),
        "TMPDIR": str(machine / "tmp"),
        **extra,
    }


def run(args: list[str], env: dict[str, str] | None = None, timeout: int = 600):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def download(storage: Storage, prefix: str, target: Path) -> Path:
    """Copy every object under `prefix` into `target` (the tables, read here with pyarrow)."""
    bucket = storage.client().bucket(BUCKET)
    for name in storage.names(prefix + "/"):
        local = target / name.removeprefix(prefix + "/")
        local.parent.mkdir(parents=True, exist_ok=True)
        bucket.blob(name).download_to_filename(str(local))
    return target


def transcripts(folder: Path) -> dict[str, str]:
    """Each row's transcript by the last part of its id (ids are the inputs' paths or URLs)."""
    rows = pq.read_table(folder / "transcripts", columns=["id", "transcript"]).to_pylist()
    found = Counter(row["id"] for row in rows)
    assert set(found.values()) <= {1}, found.most_common(3)
    return {row["id"].rsplit("/", 1)[-1]: row["transcript"] for row in rows}


def only_final_objects(storage: Storage, prefix: str) -> None:
    """Nothing under `prefix` but committed pieces, summaries and settings: no scratch object,
    no lock."""
    for name in storage.names(prefix + "/"):
        relative = name.removeprefix(prefix + "/")
        folder, _, file = relative.rpartition("/")
        if folder:
            assert folder in ("transcripts", "errors"), name
            assert file.endswith(".parquet") and not file.startswith("."), name
        else:
            assert file in ("summary.json", "settings.json") or (
                file.startswith("summary-") and file.endswith(".json")
            ), name


def test_a_run_on_gs_equals_the_local_run_with_two_worker_processes(storage, machine, tmp_path):
    local = tmp_path / "local"
    files = [str(path) for path in HELDOUT[:6]]
    done = run(
        command("--input", *files, "--model_dir", str(MODEL_DIR), "--output_dir", str(local))
    )
    assert done.returncode == 0, done.stderr[-3000:]

    remote = run(
        command(
            "--input=gs://test-bucket/audio/*.flac",
            "--model_dir=gs://test-bucket/models/demo",  # with its language_model/
            "--output_dir=gs://test-bucket/out",
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        ),
        env=environment(storage, machine),
    )
    assert remote.returncode == 0, remote.stderr[-3000:]
    assert "beam search" in remote.stdout + remote.stderr  # the checkpoint's LM was used
    got = transcripts(download(storage, "out", tmp_path / "from_gs"))
    assert got == transcripts(local) and len(got) == 6
    only_final_objects(storage, "out")


def shard(paths: list[Path], target: Path) -> Path:
    with tarfile.open(target, "w") as tar:
        for path in paths:
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{path.stem}.flac")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


def test_webdataset_shards_through_a_brace_range_and_an_lm_on_gs(storage, machine, tmp_path):
    shards = [shard(HELDOUT[i : i + 2], tmp_path / f"shard-{i // 2:03d}.tar") for i in (0, 2)]
    for path in shards:
        storage.upload(path, f"shards/{path.name}")
    storage.upload(LM_FILE, f"lm/{LM_FILE.name}")
    local = tmp_path / "local"
    done = run(
        command(
            f"--input={tmp_path}/shard-{{000..001}}.tar",
            f"--model_dir={MODEL_DIR}",
            f"--lm={LM_FILE}",
            f"--output_dir={local}",
        )
    )
    assert done.returncode == 0, done.stderr[-3000:]
    remote = run(
        command(
            "--input=gs://test-bucket/shards/shard-{000..001}.tar",
            f"--model_dir={MODEL_DIR}",
            f"--lm=gs://test-bucket/lm/{LM_FILE.name}",
            "--output_dir=gs://test-bucket/shards-out",
        ),
        env=environment(storage, machine),
    )
    assert remote.returncode == 0, remote.stderr[-3000:]
    got = transcripts(download(storage, "shards-out", tmp_path / "from_gs"))
    assert got == transcripts(local) and len(got) == 4


def test_a_killed_run_resumes_with_each_id_once_and_no_scratch_left(storage, machine, tmp_path):
    for copy in range(3):  # 18 items: time to be killed after two pieces and before the end
        for path in HELDOUT[:6]:
            storage.upload(path, f"many/{copy}-{path.name}")
    args = command(
        "--input=gs://test-bucket/many/*.flac",
        "--model_dir=gs://test-bucket/models/demo",
        "--decoder=greedy",
        "--output_dir=gs://test-bucket/killed",
        "--piece_items=1",
    )
    env = environment(storage, machine)
    started = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and started.poll() is None:
        if len(storage.names("killed/transcripts/")) >= 2:
            break
        time.sleep(0.2)
    assert started.poll() is None, "the run ended before it could be killed"
    started.send_signal(signal.SIGKILL)
    started.wait()
    subprocess.run(["pkill", "-9", "-f", "sdk_worker_main"], check=False)  # its orphans, if any
    killed_with = len(storage.names("killed/transcripts/"))
    assert 2 <= killed_with < 18

    resumed = run([*args, "--skip_existing"], env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = transcripts(download(storage, "killed", tmp_path / "killed"))
    assert len(got) == 18
    only_final_objects(storage, "killed")


def test_every_process_shares_one_cached_copy_of_each_checkpoint_file(storage, machine):
    # After the runs above (seven processes, two of them at once, one killed): the temp folder
    # holds no checkpoint file, and the cache one copy of each file read from gs://.
    checkpoint_names = {path.name for path in MODEL_DIR.rglob("*") if path.is_file()}
    in_temp = [path for path in (machine / "tmp").rglob("*") if path.name in checkpoint_names]
    assert in_temp == [] and not list((machine / "tmp").glob("wav2vec2-ckpt-*"))
    per_url = {
        folder.name: [path for path in folder.rglob("*") if path.is_file()]
        for folder in (machine / "cache").iterdir()
    }
    copies = Counter(
        path.name for files in per_url.values() for path in files if path.name != ".lock"
    )
    assert copies["model.safetensors"] == 1 and copies["config.json"] == 1
    assert copies["demo_trigram.arpa"] == 2  # the checkpoint's and the one --lm named: two URLs
    for files in per_url.values():  # one version of each URL, and its lock
        assert sorted(path.name for path in files if path.name != ".lock") in (
            [name] for name in checkpoint_names
        ), files


def test_a_newer_version_of_a_checkpoint_file_replaces_the_cached_one(storage, machine):
    env = environment(storage, machine)
    script = (
        "from wav2vec2_beam.models import _files\n"
        "print(open(_files.local_copy('gs://test-bucket/versioned', 'note.txt')).read())\n"
    )
    seen = []
    for content in ("first", "second"):
        storage.client().bucket(BUCKET).blob("versioned/note.txt").upload_from_string(content)
        done = run([sys.executable, "-c", script], env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        seen.append(done.stdout.strip())
    assert seen == ["first", "second"]
    cached = [p for p in (machine / "cache").rglob("note.txt")]
    assert len(cached) == 1 and cached[0].read_text() == "second"


@pytest.mark.parametrize(
    ("case", "status", "expected"),
    [
        ("model", 3, "no network: cannot connect to 127.0.0.1"),
        ("output", 2, "no network: cannot connect to 127.0.0.1"),
        ("input", 4, "every input failed"),
        ("bucket", 3, "no such bucket gs://no-such-bucket"),
    ],
)
def test_a_store_out_of_reach_is_one_line_within_seconds(
    storage, machine, tmp_path, case, status, expected
):
    # the store at a closed port (no network), or a bucket that does not exist
    closed = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{closed_port()}"}
    env = environment(storage, machine, **({} if case == "bucket" else closed))
    flags = {
        "--input": "gs://test-bucket/audio/*.flac" if case == "input" else str(HELDOUT[0]),
        "--model_dir": {
            "model": "gs://test-bucket/models/demo",
            "bucket": "gs://no-such-bucket/m",
        }.get(case, str(MODEL_DIR)),
        "--output_dir": "gs://test-bucket/unreached" if case == "output" else str(tmp_path / "out"),
    }
    started = time.monotonic()
    done = run(
        command(*(f"{name}={value}" for name, value in flags.items())),
        env={**env, "WAV2VEC2_BEAM_CACHE": str(machine / "other-cache")},
        timeout=120,
    )
    took = time.monotonic() - started
    assert done.returncode == status, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], done.stderr[-3000:]
    assert took < 30, took
    if case == "input":
        assert "failed: store_unreachable 1" in done.stdout


def test_behind_a_proxy_the_proxy_is_what_must_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from wav2vec2_beam.models import file_cache

    with socket.socket() as proxy:  # a listening proxy; no DNS or route to Google from here
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        file_cache.store_reachable("gs://behind-a-proxy/x")  # no error: the proxy answered
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(file_cache.StoreUnreachable, match="no network: cannot connect to 127"):
        file_cache.store_reachable("gs://behind-a-dead-proxy/x")


def test_media_only_ffmpeg_reads_and_files_per_input_on_gs(storage, machine, tmp_path):
    """m4a objects read through FFmpeg from gs://, cut on voice activity, with their segments
    and subtitle files written to gs://: the same rows and files as the local run's."""
    media = tmp_path / "media"
    media.mkdir()
    for path in HELDOUT[:2]:
        audio, rate = soundfile.read(path, dtype="float32")
        encoded = encode(media / f"{path.stem}.m4a", audio, rate, M4A)
        storage.upload(encoded, f"media/{encoded.name}")
    flags = ["--segment=vad", "--formats=srt,ctm"]
    local = tmp_path / "local"
    done = run(
        command(
            f"--input={media}/*.m4a", f"--model_dir={MODEL_DIR}", f"--output_dir={local}", *flags
        )
    )
    assert done.returncode == 0, done.stderr[-3000:]
    remote = run(
        command(
            "--input=gs://test-bucket/media/*.m4a",
            f"--model_dir={MODEL_DIR}",
            "--output_dir=gs://test-bucket/out_media",
            *flags,
        ),
        env=environment(storage, machine),
    )
    assert remote.returncode == 0, remote.stderr[-3000:]
    got = download(storage, "out_media", tmp_path / "from_gs")
    assert transcripts(got) == transcripts(local) and len(transcripts(got)) == 2
    segments = pq.read_table(got / "segments", columns=["transcript", "start_s", "end_s"])
    assert (
        segments.to_pylist()
        == pq.read_table(local / "segments", columns=["transcript", "start_s", "end_s"]).to_pylist()
    )
    for kind in ("srt", "ctm"):
        names = sorted(path.name.rsplit("-", 1)[0] for path in (got / kind).iterdir())
        assert names == [path.stem for path in HELDOUT[:2]], kind
        for path in (got / kind).iterdir():
            (twin,) = (local / kind).glob(f"{path.name.rsplit('-', 1)[0]}-*.{kind}")
            assert path.read_text().replace(path.stem, "") == twin.read_text().replace(
                twin.stem, ""
            )

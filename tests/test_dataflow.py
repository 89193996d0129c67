"""What can be checked of the Dataflow path offline: the job request builds, says what it would
submit, and needs no network; and the image matches the pins.

Dataflow itself is not reachable from here, so nothing is submitted: `--dry_run=True` makes the
DataflowRunner translate the graph, and the launcher writes the request it would send to a file.
The checkpoint is on gs:// (a Dataflow job refuses local paths), served by a Cloud Storage
emulator on 127.0.0.1 (`gcs_emulator`); a second dry run finds the emulator gone and builds the
same request from the local cache of the checkpoint's files.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from gcs_emulator import BUCKET, Storage, closed_port, running_storage

from wav2vec2_beam.models.configuration import Wav2Vec2Config
from wav2vec2_beam.pipeline.graph import build_pipeline
from wav2vec2_beam.pipeline.main import make_pipeline
from wav2vec2_beam.pipeline.options import OptionsError, check_against_model, parse_args

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "tests" / "fixtures" / "checkpoints" / "base"
GS_MODEL = f"gs://{BUCKET}/models/base"
IMAGE = "us-central1-docker.pkg.dev/my-project/wav2vec2/wav2vec2-beam:latest"
STAGES = (
    "Inputs",
    "ReadCorpus",
    "Reshuffle",
    "DecodeItems",
    "BatchAudio",
    "RunInference",
    "Stitch",
    "CtcDecode",
    "ScoreTranscripts",
    "WriteOutputs",
    "WriteReadErrors",
)
GROUPING_URNS = {
    common_urns.primitives.GROUP_BY_KEY.urn,
    common_urns.composites.RESHUFFLE.urn,
    common_urns.combine_components.COMBINE_PER_KEY_PRECOMBINE.urn,
    "beam:transform:combine_per_key:v1",
    "beam:transform:combine_globally:v1",
}


def pins() -> dict[str, str]:
    """setup.py's install_requires, name -> version specifier."""
    tree = ast.parse((REPO / "setup.py").read_text())
    (requires,) = (
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and node.targets[0].id == "INSTALL_REQUIRES"
    )
    found = {}
    for requirement in ast.literal_eval(requires):
        name, spec = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?(.*)", requirement).groups()
        found[name] = spec
    return found


def dockerfile_args() -> dict[str, str]:
    text = (REPO / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.MULTILINE))


def test_the_image_recipe_uses_the_pinned_versions() -> None:
    args, pinned = dockerfile_args(), pins()
    assert pinned["apache-beam"] == f"=={args['BEAM_VERSION']}"
    assert pinned["tensorflow"] == f"=={args['TENSORFLOW_VERSION']}"
    assert args["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    text = (REPO / "Dockerfile").read_text()
    assert "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam_sdk" in text
    assert "COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam" in text
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
    assert "${TENSORFLOW_VERSION}" in text and " ." in text  # TF and this package, its pins
    assert "COPY src ./src" in text  # the one package, wav2vec2_beam


def test_the_environment_has_the_pinned_versions() -> None:
    pinned = pins()
    for name in ("apache-beam", "tensorflow", "pyarrow", "soundfile", "soxr"):
        assert pinned[name] == f"=={version(name)}", name
    numpy = tuple(int(part) for part in version("numpy").split(".")[:2])
    assert pinned["numpy"] == ">=2,<2.5" and (2, 0) <= numpy < (2, 5)
    assert pinned["protobuf"] == "<7" and int(version("protobuf").split(".")[0]) < 7


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    with running_storage(tmp_path_factory.mktemp("gcs")) as running:
        running.upload(MODEL, "models/base")
        yield running


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def dry_run(env: dict[str, str], job_file: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "bash",
            str(REPO / "run_dataflow.sh"),
            "--region=us-central1",
            "--bucket=my-bucket",
            "--input=gs://my-bucket/corpus/**.flac",
            f"--model_dir={GS_MODEL}",
            "--dry_run=True",
            f"--dataflow_job_file={job_file}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, **env},
    )


@pytest.fixture(scope="module")
def submitted(storage: Storage, cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """run_dataflow.sh with --dry_run: it must build the job, and says which flags it used; the
    project comes from GOOGLE_CLOUD_PROJECT."""
    job_file = tmp_path_factory.mktemp("job") / "job.json"
    env = {**storage.env, "GOOGLE_CLOUD_PROJECT": "my-project", "WAV2VEC2_BEAM_CACHE": str(cache)}
    done = dry_run(env, job_file)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run: the job request of run " in done.stdout and str(job_file) in done.stdout
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("command: ")]
    flags = shlex.split(line.removeprefix("command: "))[3:]  # after "python -m wav2vec2_beam"
    return flags, json.loads(job_file.read_text())


@pytest.fixture(scope="module")
def submitted_flags(submitted) -> list[str]:
    return submitted[0]


def test_the_script_asks_for_gpus_and_one_process_per_gpu(submitted_flags: list[str]) -> None:
    assert "--runner=DataflowRunner" in submitted_flags
    assert "--project=my-project" in submitted_flags  # from GOOGLE_CLOUD_PROJECT
    # the image holds the package: nothing to build or stage (no setup file)
    assert not any(flag.startswith("--setup_file") for flag in submitted_flags)
    assert "--sdk_location=container" in submitted_flags
    assert "--experiments=no_use_multiple_sdk_containers" in submitted_flags
    accelerator = [flag for flag in submitted_flags if "worker_accelerator=" in flag]
    assert accelerator and "install-nvidia-driver" in accelerator[0]


def check_job_request(request: dict) -> None:
    """What a user reads in the job file: the image, machine, GPU, and the pipeline's options."""
    (pool,) = request["environment"]["workerPools"]
    assert pool["machineType"] == "g2-standard-8"
    assert pool["diskSizeGb"] == 100
    assert pool["autoscalingSettings"]["maxNumWorkers"] == 10
    assert pool["workerHarnessContainerImage"] == IMAGE
    assert [image["containerImage"] for image in pool["sdkHarnessContainerImages"]] == [IMAGE]
    assert pool.get("packages", []) == []  # nothing staged: the image holds the package
    assert any(
        option.startswith("worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver")
        for option in request["environment"]["serviceOptions"]
    )
    assert "no_use_multiple_sdk_containers" in request["environment"]["experiments"]
    options = request["environment"]["sdkPipelineOptions"]["options"]
    assert options["model_dir"] == GS_MODEL
    assert options["input"] == ["gs://my-bucket/corpus/**.flac"]
    assert options["output_dir"] == "gs://my-bucket/wav2vec2-output"
    assert options["project"] == "my-project" and options["region"] == "us-central1"
    assert options["sdk_container_image"] == IMAGE
    staged = options["pipelineUrl"]  # the staging folder holds a folder per job
    assert staged.startswith("gs://my-bucket/dataflow/staging/") and staged.endswith("/pipeline.pb")
    assert request["type"] == "JOB_TYPE_BATCH" or "type" not in request


def test_the_dry_run_writes_the_job_request(submitted) -> None:
    check_job_request(submitted[1])


def test_the_dry_run_needs_no_network_once_the_checkpoint_is_cached(
    storage: Storage, cache: Path, submitted, tmp_path: Path
) -> None:
    closed = f"127.0.0.1:{closed_port()}"
    env = {
        **storage.env,
        "STORAGE_EMULATOR_HOST": f"http://{closed}",  # the store is gone: no network at all
        "GCE_METADATA_HOST": closed,
        "GCE_METADATA_IP": closed,
        "HTTPS_PROXY": f"http://{closed}",
        "HTTP_PROXY": f"http://{closed}",
        "GOOGLE_CLOUD_PROJECT": "my-project",
        "WAV2VEC2_BEAM_CACHE": str(cache),
    }
    started = time.monotonic()
    done = dry_run(env, tmp_path / "job.json")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert took < 30, took
    request = json.loads((tmp_path / "job.json").read_text())
    check_job_request(request)
    assert "no network: cannot connect to 127.0.0.1" in done.stderr
    assert "; using its cached copy" in done.stderr
    # and without a cached copy, the same dry run says why in one line, at once
    started = time.monotonic()
    empty = dry_run({**env, "WAV2VEC2_BEAM_CACHE": str(tmp_path / "empty")}, tmp_path / "j2.json")
    assert empty.returncode == 3, empty.stderr[-3000:]
    assert time.monotonic() - started < 30
    (error,) = [line for line in empty.stderr.splitlines() if line.startswith("error: ")]
    assert "no network" in error and not (tmp_path / "j2.json").exists()


def test_the_script_shows_its_usage_and_finds_gclouds_project(tmp_path: Path) -> None:
    shown = subprocess.run(
        ["bash", str(REPO / "run_dataflow.sh"), "--help"], capture_output=True, text=True
    )
    assert shown.returncode == 0 and "./run_dataflow.sh [--project P]" in shown.stdout
    assert "GOOGLE_CLOUD_PROJECT" in shown.stdout
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "gcloud").write_text(
        '#!/bin/sh\n[ "$*" = "config get-value project" ] && echo gc-proj\n'
    )
    (fake / "gcloud").chmod(0o755)
    done = subprocess.run(
        ["bash", str(REPO / "run_dataflow.sh"), "--region=r", "--bucket=b", "--input=gs://b/x"],
        capture_output=True,
        text=True,
        env={"PATH": f"{fake}:/usr/bin:/bin", "PYTHON": "/bin/true"},
    )
    assert done.returncode == 0, done.stderr
    assert "--project=gc-proj" in done.stderr
    missing = subprocess.run(
        ["bash", str(REPO / "run_dataflow.sh"), "--region=r", "--bucket=b"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": "/bin/true"},
    )
    assert missing.returncode != 0 and "GOOGLE_CLOUD_PROJECT" in missing.stderr


@pytest.mark.parametrize("flag", ["--input", "--model_dir", "--lm", "--output_dir"])
def test_a_dataflow_job_refuses_local_paths(flag: str, tmp_path: Path) -> None:
    flags = {
        "--input": "gs://b/a/*.flac",
        "--model_dir": GS_MODEL,
        "--output_dir": "gs://b/out",
        "--lm": "gs://b/lm.arpa",
    }
    flags[flag] = str(tmp_path / "here")
    argv = ["--runner=DataflowRunner", "--decoder=beam", *(f"{k}={v}" for k, v in flags.items())]
    with pytest.raises(OptionsError, match=f"{flag} .* Dataflow's workers cannot read it"):
        parse_args(argv)
    remote = {**flags, flag: "gs://b/there"}
    _, config = parse_args([*argv[:2], *(f"{k}={v}" for k, v in remote.items())])
    assert config.model_dir == remote["--model_dir"]  # the same job on gs:// is accepted


def test_the_job_graph_builds_for_dataflow(submitted_flags: list[str]) -> None:
    options, config = parse_args(submitted_flags)
    model = Wav2Vec2Config.from_pretrained(MODEL)  # what the cached gs:// copy holds
    pipeline, local = make_pipeline(options)
    build_pipeline(pipeline, config, model, check_against_model(config, model), "test-run")
    job = pipeline.run().job  # dry run: built, not submitted
    assert not local
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    assert set(STAGES) <= names
    assert "no_use_multiple_sdk_containers" in job.options.view_as(DebugOptions).experiments
    service = job.options.view_as(GoogleCloudOptions).dataflow_service_options
    assert any(option.startswith("worker_accelerator=type:nvidia-l4;count:1") for option in service)
    (environment,) = job.proto_pipeline.components.environments.values()
    image = beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image
    assert image == IMAGE


def downstream_of(components: beam_runner_api_pb2.Components, name: str) -> list[str]:
    """Every transform that consumes, directly or not, what the transform `name` produces."""
    transforms = components.transforms
    consumers: dict[str, list[str]] = {}
    for transform_id, transform in transforms.items():
        for pcollection in transform.inputs.values():
            consumers.setdefault(pcollection, []).append(transform_id)
    (start,) = [t for t in transforms.values() if t.unique_name == name]
    frontier = list(start.outputs.values())
    seen: set[str] = set()
    while frontier:
        for transform_id in consumers.get(frontier.pop(), []):
            if transform_id not in seen:
                seen.add(transform_id)
                frontier.extend(transforms[transform_id].outputs.values())
    return [transforms[t].unique_name for t in seen]


def grouping_transforms(components: beam_runner_api_pb2.Components) -> set[str]:
    """Names of the transforms that group or shuffle their input, composites included."""
    return {
        t.unique_name
        for t in components.transforms.values()
        if t.spec.urn in GROUPING_URNS or t.unique_name.split("/")[-1] in ("CoGroupByKey",)
    }


def dataflow_job_graph(submitted_flags: list[str], *extra: str) -> beam_runner_api_pb2.Components:
    """The job graph the DataflowRunner builds (dry run) for run_dataflow.sh's flags + `extra`."""
    options, config = parse_args([*submitted_flags, *extra])
    model = Wav2Vec2Config.from_pretrained(MODEL)  # what the cached gs:// copy holds
    pipeline, _ = make_pipeline(options)
    build_pipeline(pipeline, config, model, check_against_model(config, model), "test-run")
    return pipeline.run().job.proto_pipeline.components


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("--outputs=transcripts,logits,hidden_states", "--hidden_layers=all", "--pool=mean"),
        ("--skip_existing",),
    ],
    ids=["transcripts", "every-table", "resume"],
)
def test_no_grouping_between_the_model_and_the_writers(
    submitted_flags: list[str], extra: tuple[str, ...]
) -> None:
    components = dataflow_job_graph(submitted_flags, *extra)
    after_model = downstream_of(components, "RunInference")
    assert any(name.startswith("WriteOutputs/") for name in after_model)
    groupings = grouping_transforms(components)
    assert groupings  # the graph does shuffle: before the model (the check below is not vacuous)
    assert not groupings & set(after_model), sorted(groupings & set(after_model))
    # The one shuffle of the data: the corpus's items, on their way to decoding.
    assert "Reshuffle" in groupings and "DecodeItems" in downstream_of(components, "Reshuffle")


def test_the_pipeline_runs_on_beams_portable_path(tmp_path: Path) -> None:
    """Dataflow runs a job through Beam's portability layer (Runner v2): the graph becomes
    protos, DoFns and coders are pickled, an SDK harness runs them. Beam's PortableRunner with
    its embedded job service and a LOOPBACK worker goes the same way, offline; its tables must
    equal the DirectRunner's."""
    from wav2vec2_beam.demo import HELDOUT_DIR

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    inputs = [*map(str, sorted(HELDOUT_DIR.glob("*.flac"))[:3]), str(bad)]
    demo = REPO / "src" / "wav2vec2_beam" / "demo" / "model"
    tables = {}
    for name, runner in (
        ("direct", []),
        (
            "portable",
            ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
        ),
    ):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "wav2vec2_beam",
                "--input",
                *inputs,
                f"--model_dir={demo}",
                f"--output_dir={tmp_path / name}",
                *runner,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "done: 4 files (3 succeeded, 1 failed)" in done.stdout  # Beam's metrics came back
        tables[name] = {
            table: sorted(
                pq.read_table(tmp_path / name / table, columns=columns).to_pylist(),
                key=lambda row: row["id"],
            )
            for table, columns in (
                ("transcripts", ["id", "transcript", "words"]),
                ("errors", ["id", "stage", "error"]),
            )
        }
    assert len(tables["direct"]["transcripts"]) == 3 and len(tables["direct"]["errors"]) == 1
    assert tables["portable"] == tables["direct"]

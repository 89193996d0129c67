"""What can be checked of the Dataflow path offline: the job builds, and the image matches the pins.

Dataflow itself is not reachable from here, so nothing is submitted: `--dry_run=True` makes the
DataflowRunner translate the graph and build the job request, then stop.
"""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from wav2vec2_beam.models.configuration import Wav2Vec2Config
from wav2vec2_beam.pipeline.graph import build_pipeline
from wav2vec2_beam.pipeline.main import make_pipeline
from wav2vec2_beam.pipeline.options import check_against_model, parse_args

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "tests" / "fixtures" / "checkpoints" / "base"
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
def submitted_flags() -> list[str]:
    """run_dataflow.sh with --dry_run: it must build the job, and says which flags it used."""
    done = subprocess.run(
        [
            "bash",
            str(REPO / "run_dataflow.sh"),
            "--project=my-project",
            "--region=us-central1",
            "--bucket=my-bucket",
            "--input=gs://my-bucket/corpus/**.flac",
            f"--model_dir={MODEL}",
            "--dry_run=True",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run: the job for run" in done.stdout
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("submitting: ")]
    return shlex.split(line.removeprefix("submitting: "))[3:]  # after "python -m wav2vec2_beam"


def test_the_script_asks_for_gpus_and_one_process_per_gpu(submitted_flags: list[str]) -> None:
    assert "--runner=DataflowRunner" in submitted_flags
    assert "--setup_file=./setup.py" in submitted_flags
    assert "--experiments=no_use_multiple_sdk_containers" in submitted_flags
    accelerator = [flag for flag in submitted_flags if "worker_accelerator=" in flag]
    assert accelerator and "install-nvidia-driver" in accelerator[0]


def test_the_job_graph_builds_for_dataflow(submitted_flags: list[str]) -> None:
    options, config = parse_args(submitted_flags)
    model = Wav2Vec2Config.from_pretrained(config.model_dir)
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
    assert image == "us-central1-docker.pkg.dev/my-project/wav2vec2/wav2vec2-beam:latest"


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
    model = Wav2Vec2Config.from_pretrained(config.model_dir)
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

"""The request a Dataflow job would be submitted with, built without the network (the dry run's
job file).

Beam's DataflowRunner, given `--dry_run=True`, translates the graph and stops before it builds
the request: the request's environment (worker pool, machine type, container image, service
options such as the GPU, and every pipeline option) is filled in only by the API client, which
first stages files to Cloud Storage and needs credentials. Here the same environment is built
from the options alone, with Beam's own `Environment` class, so a user (or a test) can read
exactly what would be sent, offline. What it leaves out: the files the client would stage
(none for this project's image, which holds the package: run_dataflow.sh passes no setup file)
and the staged pipeline proto, whose URL it names.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions
from apache_beam.runners.dataflow.internal import apiclient
from apache_beam.runners.internal import names


def job_request(job: Any) -> str:
    """The JSON of the `apiclient.Job` a dry run built, with its environment filled in."""
    apiclient.DataflowApplicationClient._apply_sdk_environment_overrides(
        job.proto_pipeline, {}, job.options
    )
    serialized = job.proto_pipeline.SerializeToString()
    staging = job.options.view_as(GoogleCloudOptions).staging_location or ""
    job.proto.environment = apiclient.Environment(
        packages=[],
        options=job.options,
        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
        proto_pipeline_staged_url=f"{staging.rstrip('/')}/{names.STAGED_PIPELINE_FILENAME}",
        proto_pipeline=job.proto_pipeline,
        pipeline_proto_hash=hashlib.sha256(serialized).hexdigest(),
    ).proto
    return job.json()


def job_file_path(options: Any, run_id: str, default_folder: str) -> str:
    """`--dataflow_job_file` if given, else a file named after the run in `default_folder`."""
    given = options.view_as(DebugOptions).dataflow_job_file
    return given or os.path.join(default_folder, f"wav2vec2-beam-job-{run_id}.json")


def write_job_file(job: Any, path: str) -> str:
    """Write the job's request to `path` (local or gs://); returns the path."""
    text = job_request(job).encode("utf-8")
    if "://" in path:
        with FileSystems.create(path) as handle:
            handle.write(text)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(text)
    return path

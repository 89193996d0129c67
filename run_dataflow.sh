#!/usr/bin/env bash
# Submit the pipeline to Google Cloud Dataflow, on GPU workers running this repository's image.
#
#   ./run_dataflow.sh [--project P] [--region R] [--bucket B] [--image URI] \
#       --input 'gs://B/corpus/**.flac' --model_dir gs://B/models/wav2vec2-base-960h \
#       [--output_dir gs://B/out] [any pipeline or Beam flag...]
#
# The project comes from --project, else PROJECT, else GOOGLE_CLOUD_PROJECT, else gcloud's
# configured project; region, bucket and worker image from the flags or from REGION, BUCKET and
# IMAGE. GPU_TYPE (nvidia-l4), MACHINE_TYPE (g2-standard-8), MAX_WORKERS (10) and ACCELERATOR
# come from the environment. ACCELERATOR replaces the GPU's worker_accelerator value, e.g. TPUs
# for --backend jax (docs/DATAFLOW.md):
#   ACCELERATOR="type:tpu-v5-lite-podslice;topology:1x1" MACHINE_TYPE=ct5lp-hightpu-1t
# Inputs, model, LM and output must be on gs:// (the workers cannot read this machine's files).
# Build and push the image first (see Dockerfile); it holds the package, so nothing else is staged:
#   docker build -t "$IMAGE" . && docker push "$IMAGE"
# Add --dry_run=True to build the job request and write it to a JSON file instead of submitting
# it (--dataflow_job_file=PATH names the file); that needs no network once the checkpoint's files
# are in the local cache (docs/DATAFLOW.md).
#
# One GPU per worker VM and one SDK process per VM (no_use_multiple_sdk_containers), so each
# GPU holds exactly one copy of the model, shared by the process's threads.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

PASS=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^[^#]/p' run_dataflow.sh | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --project=*) PROJECT="${1#*=}"; shift ;;
    --region) REGION="$2"; shift 2 ;;
    --region=*) REGION="${1#*=}"; shift ;;
    --bucket) BUCKET="$2"; shift 2 ;;
    --bucket=*) BUCKET="${1#*=}"; shift ;;
    --image) IMAGE="$2"; shift 2 ;;
    --image=*) IMAGE="${1#*=}"; shift ;;
    *) PASS+=("$1"); shift ;;
  esac
done
PROJECT="${PROJECT:-${GOOGLE_CLOUD_PROJECT:-}}"
if [ -z "$PROJECT" ] && command -v gcloud >/dev/null 2>&1; then
  PROJECT="$(gcloud config get-value project 2>/dev/null || true)"
fi
: "${PROJECT:?pass --project, or set PROJECT or GOOGLE_CLOUD_PROJECT (or gcloud config set project)}"
: "${REGION:?set REGION or pass --region}"
: "${BUCKET:?set BUCKET or pass --bucket (a GCS bucket name, without gs://)}"
IMAGE="${IMAGE:-$REGION-docker.pkg.dev/$PROJECT/wav2vec2/wav2vec2-beam:latest}"
GPU_TYPE="${GPU_TYPE:-nvidia-l4}"
MACHINE_TYPE="${MACHINE_TYPE:-g2-standard-8}"
ACCELERATOR="${ACCELERATOR:-type:$GPU_TYPE;count:1;install-nvidia-driver}"
MAX_WORKERS="${MAX_WORKERS:-10}"

ARGS=(
  --runner=DataflowRunner
  --project="$PROJECT"
  --region="$REGION"
  --temp_location="gs://$BUCKET/dataflow/tmp"
  --staging_location="gs://$BUCKET/dataflow/staging"
  --output_dir="gs://$BUCKET/wav2vec2-output"
  --sdk_container_image="$IMAGE"
  --sdk_location=container
  --machine_type="$MACHINE_TYPE"
  --disk_size_gb=100
  --max_num_workers="$MAX_WORKERS"
  --dataflow_service_options="worker_accelerator=$ACCELERATOR"
  --experiments=no_use_multiple_sdk_containers
)
# Flags given later win (argparse keeps the last), so --output_dir and the rest can be overridden.
echo "command: $PYTHON -m wav2vec2_beam ${ARGS[*]} ${PASS[*]}" >&2
exec "$PYTHON" -m wav2vec2_beam "${ARGS[@]}" "${PASS[@]}"

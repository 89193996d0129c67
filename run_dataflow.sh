#!/usr/bin/env bash
# Submit the pipeline to Google Cloud Dataflow, on GPU workers running this repository's image.
#
#   ./run_dataflow.sh [--project P] [--region R] [--bucket B] [--image URI] \
#       --input 'gs://B/corpus/**.flac' --model_dir gs://B/models/wav2vec2-base-960h \
#       [--output_dir gs://B/out] [any pipeline or Beam flag...]
#
# Project, region, bucket and worker image come from these flags or from the environment
# (PROJECT, REGION, BUCKET, IMAGE); GPU_TYPE (nvidia-l4), MACHINE_TYPE (g2-standard-8),
# MAX_WORKERS (10) and ACCELERATOR from the environment. ACCELERATOR replaces the GPU's
# worker_accelerator value, e.g. TPUs for --backend jax (docs/DATAFLOW.md):
#   ACCELERATOR="type:tpu-v5-lite-podslice;topology:1x1" MACHINE_TYPE=ct5lp-hightpu-1t
# Build and push the image first (see Dockerfile):
#   docker build -t "$IMAGE" . && docker push "$IMAGE"
# Add --dry_run=True to build the job request without submitting it (works offline).
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
: "${PROJECT:?set PROJECT or pass --project}"
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
  --setup_file=./setup.py
  --machine_type="$MACHINE_TYPE"
  --disk_size_gb=100
  --max_num_workers="$MAX_WORKERS"
  --dataflow_service_options="worker_accelerator=$ACCELERATOR"
  --experiments=no_use_multiple_sdk_containers
)
# Flags given later win (argparse keeps the last), so --output_dir and the rest can be overridden.
echo "submitting: $PYTHON -m wav2vec2_beam ${ARGS[*]} ${PASS[*]}" >&2
exec "$PYTHON" -m wav2vec2_beam "${ARGS[@]}" "${PASS[@]}"

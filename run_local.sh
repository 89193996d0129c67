#!/usr/bin/env bash
# Run the pipeline on the DirectRunner (Beam's local engine).
#
#   ./run_local.sh              bundled sample audio + bundled small checkpoint -> output/run_local
#   ./run_local.sh ARGS...      python -m pipeline ARGS... (e.g. --input, --model_dir, --output_dir,
#                               --direct_running_mode=multi_processing --direct_num_workers=4)
#
# The samples are made on first use by scripts/samples.py (espeak-ng speech and pocketsphinx
# recordings when installed, the repository's own synthetic speech always).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

if [ "$#" -gt 0 ]; then
  exec "$PYTHON" -m pipeline "$@"
fi

SAMPLES=output/samples
OUT=output/run_local
"$PYTHON" scripts/samples.py make "$SAMPLES"
"$PYTHON" -m pipeline \
  --input "$SAMPLES/audio/*" \
  --model_dir "$SAMPLES/checkpoint" \
  --output_dir "$OUT" \
  --outputs transcripts,logits
echo
echo "Tables are in $OUT/ (transcripts/, logits/, errors/ and summary.json). A few rows:"
"$PYTHON" scripts/samples.py show "$OUT"

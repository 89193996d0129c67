#!/usr/bin/env bash
# Run the pipeline on the DirectRunner (Beam's local engine).
#
#   ./run_local.sh                  bundled sample speech + the bundled demo model -> output/run_local
#   ./run_local.sh --model_dir DIR  the sample audio through any checkpoint, its head's default
#                                   tables, e.g. each kind of test checkpoint in
#                                   tests/fixtures/checkpoints/: seqcls (classifications),
#                                   pretrain (codes), bare (hidden states), base (transcripts)
#   ./run_local.sh ARGS...          python -m pipeline ARGS...; --input, --model_dir and --output_dir
#                                   default to the samples, the demo model (demo_model/) and
#                                   output/run_local (then a few rows of the run are shown), e.g.
#                                   --direct_running_mode=multi_processing --direct_num_workers=4
#
# The samples are made on first use by scripts/samples.py: the demo model's held-out speech in
# several formats and rates, and pocketsphinx recordings when installed.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

SAMPLES=output/samples
OUT=output/run_local

# given FLAG ARGS...: whether FLAG (as "FLAG VALUE" or "FLAG=VALUE") is among ARGS.
given() {
  local flag=$1 arg
  shift
  for arg in "$@"; do
    case "$arg" in "$flag" | "$flag"=*) return 0 ;; esac
  done
  return 1
}

if given -h "$@" || given --help "$@" ||
  { given --input "$@" && given --model_dir "$@" && given --output_dir "$@"; }; then
  exec "$PYTHON" -m pipeline "$@"
fi

defaults=()
[ "$#" -eq 0 ] && defaults+=(--outputs transcripts,logits)
given --input "$@" || "$PYTHON" scripts/samples.py make "$SAMPLES"
given --input "$@" || defaults+=(--input "$SAMPLES/audio/*")
given --model_dir "$@" || defaults+=(--model_dir demo_model)
if given --output_dir "$@"; then
  previous=""
  for arg in "$@"; do
    case "$arg" in --output_dir=*) OUT="${arg#--output_dir=}" ;; esac
    [ "$previous" = --output_dir ] && OUT="$arg"
    previous="$arg"
  done
else
  defaults+=(--output_dir "$OUT")
fi

"$PYTHON" -m pipeline "${defaults[@]}" "$@"
echo
echo "Tables are in $OUT/ (one folder per table, and summary.json). A few rows of this run:"
"$PYTHON" scripts/samples.py show "$OUT"

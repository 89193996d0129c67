#!/usr/bin/env bash
# Run the pipeline on the DirectRunner (Beam's local engine): `python -m wav2vec2_beam.demo`.
#
#   ./run_local.sh                  bundled sample speech + the bundled demo model
#                                   -> output/run_local/<start time>/
#   ./run_local.sh --model_dir DIR  the sample audio through any checkpoint, its head's default
#                                   tables, e.g. each kind of test checkpoint in
#                                   tests/fixtures/checkpoints/: seqcls (classifications),
#                                   pretrain (codes), bare (hidden states), base (transcripts)
#   ./run_local.sh ARGS...          wav2vec2-beam ARGS...; --input, --model_dir and --output_dir
#                                   default to the samples, the demo model and a new folder under
#                                   output/run_local/ (then a few rows of the run are shown), e.g.
#                                   --direct_running_mode=multi_processing --direct_num_workers=4
#
# The samples are made on first use (wav2vec2_beam/demo/samples.py): the demo model's held-out
# speech in several formats and rates, and pocketsphinx recordings when installed. Each run
# writes to a folder of its own, so runs of different checkpoints never mix.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" -m wav2vec2_beam.demo "$@"

#!/usr/bin/env bash
# Install the benchmark's peers, each in its own venv under bench/ (ignored by git):
#   bench/.venv-torch  transformers (PyTorch, CPU build of torch 2.13.0): fp32 and bf16 autocast;
#                      ONNX Runtime with onnx, the exporter's output format (bench.pipeline_speed --onnx)
#   bench/.venv-tf457  transformers 4.57.6 TFWav2Vec2ForCTC on TensorFlow 2.21 + tf-keras
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv-torch/bin/python ]; then
  python3 -m venv .venv-torch
  .venv-torch/bin/pip install -q torch==2.13.0 transformers safetensors numpy
fi
.venv-torch/bin/python -c "import onnxruntime, onnx" 2>/dev/null \
  || .venv-torch/bin/pip install -q onnxruntime onnx
if [ ! -x .venv-tf457/bin/python ]; then
  python3 -m venv .venv-tf457
  .venv-tf457/bin/pip install -q tensorflow==2.21.0 'tf-keras==2.21.*' transformers==4.57.6 safetensors numpy
fi

#!/usr/bin/env bash
# The GPU bench in one call (bench/gpu/measure.py says what it measures). On the GPU machine, from
# the repository root, after `bash bench/gpu/fetch_wheels.sh` here and with bench/gpu/wheels
# carried along:
#   bash bench/gpu/run.sh
# On a CPU, to prove it end to end (jax in the project venv, torch in the peers' venv from
# bench/setup_peers.sh):
#   PYTHON=.venv/bin/python bash bench/gpu/run.sh --cpu --torch-python bench/.venv-torch/bin/python
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c "import apache_beam" 2>/dev/null && compgen -G "bench/gpu/wheels/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gpu-bench-site bench/gpu/wheels/*.whl
  export PYTHONPATH=/tmp/gpu-bench-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
# The project is not installed there: its package from src/, bench/ from the root.
export PYTHONPATH="$PWD:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m bench.gpu.measure "$@"

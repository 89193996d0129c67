#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine (Python 3.11), then run them.
# System packages: real speech recordings (pocketsphinx-testdata) and a speech synthesizer
# (espeak-ng) used by the tests' generated audio. Then setup.sh: the build tools KenLM's Python
# module needs, and the project with its test extras in .venv.
set -euo pipefail
cd "$(dirname "$0")"

if ! dpkg -s pocketsphinx-testdata espeak-ng >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pocketsphinx-testdata espeak-ng >/dev/null
fi

./setup.sh test
# One worker per core, at most 4 (each imports TensorFlow and runs its own pipelines); a test
# file's tests stay on one worker, so its module fixtures (an emulated bucket, a shared run) are
# made once.
exec .venv/bin/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile "$@"

#!/usr/bin/env bash
# Set up the project on a fresh Debian machine with Python 3.11: the system packages its Python
# packages need to build, then .venv with the project installed (`./setup.sh test` adds the test
# extras). One line per step; the pip step takes minutes on a fresh machine.
#
# System packages: g++ and the Python headers, because PyPI has KenLM's Python module (`kenlm`,
# the n-gram LM scorer of beam-search decoding) as source only: pip compiles it, in about a
# minute; python3-venv for the venv itself.
set -euo pipefail
cd "$(dirname "$0")"

step() { echo "setup: $*" >&2; }

if ! dpkg -s g++ python3-dev python3-venv >/dev/null 2>&1; then
  step "installing system packages (g++, python3-dev, python3-venv) with apt-get"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ python3-dev python3-venv >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
step "installing wav2vec2-beam${1:+ with its $1 extras} and its dependencies into .venv" \
  "(TensorFlow, Apache Beam; KenLM compiles from source: 3-5 minutes on a fresh machine)"
.venv/bin/python -m pip install -q -e ".${1:+[$1]}"
step "done: .venv/bin/wav2vec2-beam --help"

#!/usr/bin/env bash
# Set up the project on a fresh Debian machine with Python 3.11: the system packages its Python
# packages need to build, then .venv with the project installed (`./setup.sh test` adds the test
# extras).
#
# System packages: g++ and the Python headers, because PyPI has KenLM's Python module (`kenlm`,
# the n-gram LM scorer of beam-search decoding) as source only: pip compiles it, in about a
# minute; python3-venv for the venv itself.
set -euo pipefail
cd "$(dirname "$0")"

if ! dpkg -s g++ python3-dev python3-venv >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ python3-dev python3-venv >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${1:+[$1]}"

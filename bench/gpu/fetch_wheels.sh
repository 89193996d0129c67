#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks for the pipeline part of the GPU bench, into
# bench/gpu/wheels/ (ignored by git; carried to the machine by the call that runs run.sh).
# That machine runs Python 3.12 and already has torch, transformers, jax, flax, numpy, pyarrow,
# protobuf, grpcio, requests and pyyaml; Apache Beam's other needs, soundfile, soxr and rapidfuzz
# come from here (about 40 MB; cryptography because Beam's transforms import it at start).
# Beam's GCP and MongoDB needs are not used by a local run.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d wheels \
  apache-beam==2.77.0 "fastavro<2" "fasteners<1" "httplib2<1" "jsonpickle<5" "objsize<0.8" \
  "proto-plus<2" "zstandard<1" "beartype<0.23" "cryptography<51" pyparsing sortedcontainers \
  python-dateutil pytz \
  cffi pycparser soundfile==0.14.0 soxr==1.1.0 "rapidfuzz>=3,<4"
du -sh wheels

# Worker image for Dataflow GPU workers: CUDA, Python 3.11, TensorFlow 2.21 with its CUDA
# libraries, this package and its pinned dependencies (setup.py), and the Beam SDK harness boot
# entrypoint from the matching Beam SDK image.
#
#   docker build -t "$IMAGE" . && docker push "$IMAGE"
#
# The NVIDIA driver is not in the image: Dataflow installs it on the VM
# (worker_accelerator=...;install-nvidia-driver, see run_dataflow.sh) and mounts it in.
# The versions below must equal setup.py's pins (tests/test_dataflow.py checks it).
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
ARG TENSORFLOW_VERSION=2.21.0
ARG CUDA_IMAGE=nvidia/cuda:12.5.1-base-ubuntu22.04

FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam_sdk

FROM ${CUDA_IMAGE}
ARG PYTHON_VERSION
ARG TENSORFLOW_VERSION
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Ubuntu 22.04 ships Python 3.10; the deadsnakes archive has 3.11 for it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      python${PYTHON_VERSION} python${PYTHON_VERSION}-venv python${PYTHON_VERSION}-dev \
      g++ \
 && rm -rf /var/lib/apt/lists/*

# A venv first on PATH: the Beam boot entrypoint runs `python` and `pip` from PATH.
RUN python${PYTHON_VERSION} -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/wav2vec2-beam
COPY setup.py ./
COPY src ./src
# tensorflow[and-cuda] brings the CUDA and cuDNN libraries TensorFlow was built against; g++
# (above) builds kenlm, which PyPI has as source only.
RUN pip install --upgrade pip setuptools wheel \
 && pip install "tensorflow[and-cuda]==${TENSORFLOW_VERSION}" . \
 && python -c "import apache_beam, tensorflow, soundfile, soxr, av, pyarrow, kenlm; import wav2vec2_beam.pipeline.graph"

COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]

"""Package for the launcher, the Dataflow workers (`--setup_file ./setup.py`) and the worker image.

Pins: Beam 2.77 caps numpy, protobuf and pyarrow, and TensorFlow 2.21 must agree with them, so
the versions below are the set the project is tested with; the Dockerfile installs this same
package, and a test checks that the image recipe names the same versions.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

VERSION = next(
    line.split('"')[1]
    for line in Path("src/wav2vec2_beam/__init__.py").read_text().splitlines()
    if line.startswith("__version__")
)

INSTALL_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.0",
    # Keras 2, which transformers' TF classes subclass and TensorFlow 2.21 ships beside Keras 3:
    # our TFWav2Vec2* classes are its Models, so users' Keras 2 code (fit, SavedModel, the
    # functional API) works with them as with transformers'. Imported by those classes only.
    "tf-keras==2.21.0",
    "numpy>=2,<2.5",
    # TensorFlow's (and JAX's) numpy types for bfloat16 and the float8s. 0.7.0 registers its
    # ufunc loops in 0.6 s at every import (numpy's loop list searched linearly), against 5 ms
    # for 0.6.0, which has every type TensorFlow 2.21 and JAX use: 0.6 s of each run's start-up.
    "ml_dtypes>=0.5.1,<0.7",
    "protobuf<7",
    "pyarrow==25.0.1",
    "soundfile==0.14.0",
    "soxr==1.1.0",
    # What libsndfile cannot read (AAC/m4a, the sound tracks of mp4/mov/mkv/webm, WMA): FFmpeg
    # decodes them all, and PyAV's wheels carry FFmpeg's libraries, so no system package is
    # needed; it decodes from Python file objects (tar members, gs:// objects) as a stream.
    "av>=14,<19",
    # `--segment vad`: WebRTC's voice-activity detector, a 100 kB C extension with wheels for
    # every platform; Silero's (measured in docs/PERFORMANCE.md) ships in a package that
    # requires PyTorch.
    "webrtcvad-wheels>=2.0.14,<3",
    "gcsfs",
    "rapidfuzz>=3,<4",
    # KenLM's own Python module scores n-grams for LM beam search (ARPA and binary models, as
    # Hugging Face checkpoints ship them). PyPI has only its source: pip builds it with the
    # machine's C++ compiler (about a minute; `g++` and the Python headers must be installed).
    "kenlm==0.3.0",
    # Hub ids as checkpoint paths (`from_pretrained("facebook/wav2vec2-base-960h")`, --model_dir
    # org/name): its cache layout, revisions, offline mode and downloads are the ecosystem's.
    "huggingface_hub>=0.30,<3",
    # The live progress bar on a terminal (items of the total, rate, time left), redrawn with
    # worker messages above it: tqdm does that well and is already pulled in by huggingface_hub.
    "tqdm>=4.66,<5",
    # The launcher stops every process a run started (Beam's workers, the LM decoders, their
    # children) when interrupted: psutil lists a process's descendants on every platform.
    "psutil>=5.9,<8",
]

# The JAX backend (`--backend jax`, the Flax classes): XLA programs for GPUs and TPUs, and the
# backend of machines without TensorFlow. `pip install -e .[jax]`; about 630 MB with what it pulls.
JAX = ["jax>=0.10,<0.13", "flax>=0.12,<0.13"]

# The tests: pytest and ruff; jiwer, the independent oracle of WER and CER; the readers users load the tables with, each checked to read every
# table folder (pandas, polars, DuckDB, Hugging Face datasets); gcp-storage-emulator, a Cloud
# Storage on 127.0.0.1 that both Beam's GCS client and gcsfs talk to (fake-gcs-server cannot do
# the client's batch copies, and is a Go binary); pytest-xdist, because most tests run the
# command in a fresh process whose start-up (imports, model load) is single-threaded, so two
# workers on CI's two cores overlap them (the suite took 739 s instead of 1160 s); and the JAX
# backend.
TEST = [
    "pytest",
    "pytest-xdist>=3.6,<4",
    "ruff",
    "jiwer",
    "pandas",
    "polars",
    "duckdb",
    "datasets",
    "gcp-storage-emulator",
    # Independent readers of the subtitles --formats writes.
    "srt>=3.5,<4",
    "webvtt-py>=0.5,<1",
    *JAX,
]

setup(
    name="wav2vec2-beam",
    version=VERSION,
    description="Apache Beam batch pipeline running a TensorFlow Wav2Vec2 over audio corpora",
    python_requires=">=3.11",
    # One top-level package, in a src/ layout (PyPA's recommendation): the tests run against
    # what is installed, never against the checkout's folders by accident.
    package_dir={"": "src"},
    packages=find_namespace_packages("src", include=["wav2vec2_beam", "wav2vec2_beam.*"]),
    # The demo checkpoint and its held-out speech ship in the wheel (docs/ARCHITECTURE.md).
    package_data={
        "wav2vec2_beam.demo": [
            "model/*.json",
            "model/*.safetensors",
            "model/language_model/*",
            "heldout/*",
            "out_of_domain.txt",
        ]
    },
    install_requires=INSTALL_REQUIRES,
    extras_require={"jax": JAX, "test": TEST},
    entry_points={"console_scripts": ["wav2vec2-beam = wav2vec2_beam.__main__:cli"]},
)

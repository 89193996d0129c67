"""wav2vec2-beam: Wav2Vec2 speech recognition and feature extraction over whole corpora with
Apache Beam.

- `wav2vec2_beam.models`: the model in TensorFlow and Flax, transformers' classes and API
  (`from wav2vec2_beam.models import TFWav2Vec2ForCTC`); it knows nothing of Beam.
- `wav2vec2_beam.pipeline`: the job's options, graph and entry point (`python -m wav2vec2_beam`,
  the console script `wav2vec2-beam`), wiring the stages of `wav2vec2_beam.transforms`.
- `wav2vec2_beam.lm`: n-gram language models for beam-search decoding.
- `wav2vec2_beam.demo`: the bundled demo model, its sample corpus and its evaluation.

Importing this package imports none of them, so neither TensorFlow nor Beam.
"""

__version__ = "0.1.0"

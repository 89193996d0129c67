"""Our own TensorFlow Wav2Vec2, loading Hugging Face checkpoints without torch or transformers.

The public names mirror transformers' TFWav2Vec2 documentation, so its examples run with only
the import changed. This package knows nothing of Beam.

Importing it turns on TensorFlow's oneDNN kernels unless TF_ENABLE_ONEDNN_OPTS is already set:
TensorFlow leaves them off on CPUs without AVX512-VNNI, AVX512-BF16 or AMX, where its own GEMM is
slower (measured on a 2-core AVX2 EPYC: 113 GFLOP/s without oneDNN, 136-145 with it; the whole
base model 1.4x faster). It takes effect only if TensorFlow is not imported yet.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


from models.configuration import UnsupportedConfigError, Wav2Vec2Config
from models.feature_extraction import Wav2Vec2FeatureExtractor
from models.inference import Wav2Vec2Runner
from models.masking import compute_mask_indices
from models.modeling_wav2vec2 import (
    MODEL_CLASSES,
    TFWav2Vec2ForCTC,
    TFWav2Vec2ForPreTraining,
    TFWav2Vec2ForSequenceClassification,
    TFWav2Vec2Model,
    Wav2Vec2Output,
    Wav2Vec2PreTrainedModel,
)
from models.processing import Wav2Vec2Processor
from models.tokenizer import Wav2Vec2CTCTokenizer
from models.weights import CheckpointError


def load_model(path: str) -> Wav2Vec2PreTrainedModel:
    """The model class that config.json's `architectures` names, loaded from `path`."""
    config = Wav2Vec2Config.from_pretrained(path)
    return MODEL_CLASSES[config.architecture].from_pretrained(path)


__all__ = [
    "MODEL_CLASSES",
    "CheckpointError",
    "TFWav2Vec2ForCTC",
    "TFWav2Vec2ForPreTraining",
    "TFWav2Vec2ForSequenceClassification",
    "TFWav2Vec2Model",
    "UnsupportedConfigError",
    "Wav2Vec2CTCTokenizer",
    "Wav2Vec2Config",
    "Wav2Vec2FeatureExtractor",
    "Wav2Vec2Output",
    "Wav2Vec2PreTrainedModel",
    "Wav2Vec2Processor",
    "Wav2Vec2Runner",
    "compute_mask_indices",
    "load_model",
]

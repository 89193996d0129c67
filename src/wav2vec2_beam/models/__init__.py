"""Our own Wav2Vec2, in TensorFlow and in JAX/Flax, loading Hugging Face checkpoints without torch
or transformers.

The public names mirror transformers' TFWav2Vec2 and FlaxWav2Vec2 documentation, so its examples
run with only the import changed. This package knows nothing of Beam. Each backend is imported
only when one of its names is first used, so the Flax classes work where TensorFlow is not
installed, and the TF ones where JAX is not.

Importing it turns on TensorFlow's oneDNN kernels unless TF_ENABLE_ONEDNN_OPTS is already set:
TensorFlow leaves them off on CPUs without AVX512-VNNI, AVX512-BF16 or AMX, where its own GEMM is
slower (measured on a 2-core AVX2 EPYC: 113 GFLOP/s without oneDNN, 136-145 with it; the whole
base model 1.4x faster). It takes effect only if TensorFlow is not imported yet.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from typing import Any

# Names resolve on first use (PEP 562): the decoding processes import `models.ctc_beam_search`
# and the LM, and should not pay for TensorFlow (`modeling_wav2vec2`) or JAX
# (`modeling_flax_wav2vec2`); neither backend needs the other installed.
_HOMES = {
    "UnsupportedConfigError": "configuration",
    "Wav2Vec2Config": "configuration",
    "Wav2Vec2FeatureExtractor": "feature_extraction",
    "Wav2Vec2Runner": "inference",
    "compute_mask_indices": "masking",
    "FLAX_MODEL_CLASSES": "modeling_flax_wav2vec2",
    "FlaxWav2Vec2ForCTC": "modeling_flax_wav2vec2",
    "FlaxWav2Vec2ForPreTraining": "modeling_flax_wav2vec2",
    "FlaxWav2Vec2ForSequenceClassification": "modeling_flax_wav2vec2",
    "FlaxWav2Vec2Model": "modeling_flax_wav2vec2",
    "FlaxWav2Vec2PreTrainedModel": "modeling_flax_wav2vec2",
    "FlaxWav2Vec2Runner": "inference_flax",
    "_compute_mask_indices": "modeling_flax_wav2vec2",
    "MODEL_CLASSES": "modeling_wav2vec2",
    "TFWav2Vec2ForCTC": "modeling_wav2vec2",
    "TFWav2Vec2ForPreTraining": "modeling_wav2vec2",
    "TFWav2Vec2ForSequenceClassification": "modeling_wav2vec2",
    "TFWav2Vec2Model": "modeling_wav2vec2",
    "CausalLMOutput": "outputs",
    "ModelOutput": "outputs",
    "SequenceClassifierOutput": "outputs",
    "Wav2Vec2BaseModelOutput": "outputs",
    "Wav2Vec2ForPreTrainingOutput": "outputs",
    "TFWav2Vec2MainLayer": "modeling_wav2vec2",
    "TFWav2Vec2PreTrainedModel": "modeling_wav2vec2",
    "Wav2Vec2Processor": "processing",
    "Wav2Vec2ProcessorWithLM": "processing_with_lm",
    "Wav2Vec2DecoderWithLMOutput": "processing_with_lm",
    "Wav2Vec2CTCTokenizer": "tokenizer",
    "CheckpointError": "weights",
    "AutoConfig": "auto",
    "AutoFeatureExtractor": "auto",
    "AutoModelForCTC": "auto",
    "AutoProcessor": "auto",
    "AutoTokenizer": "auto",
    "TFAutoModel": "auto",
    "TFAutoModelForCTC": "auto",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


#: The model backends: TensorFlow, and JAX/Flax.
BACKENDS = ("tf", "jax")


def load_model(path: str, revision: str | None = None, backend: str = "tf") -> Any:
    """The model class that config.json's `architectures` names, loaded from `path` (a folder,
    a gs:// URL or a hub id), in `backend` ("tf" or "jax")."""
    from wav2vec2_beam.models import hub
    from wav2vec2_beam.models.configuration import load_checked_config

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "jax":
        from wav2vec2_beam.models.modeling_flax_wav2vec2 import FLAX_MODEL_CLASSES as classes
    else:
        from wav2vec2_beam.models.modeling_wav2vec2 import MODEL_CLASSES as classes

    path = hub.resolve(str(path), revision)
    config = load_checked_config(path)
    return classes[config.architecture].from_pretrained(path)


__all__ = [
    "BACKENDS",
    "FLAX_MODEL_CLASSES",
    "MODEL_CLASSES",
    "AutoConfig",
    "AutoFeatureExtractor",
    "AutoModelForCTC",
    "AutoProcessor",
    "AutoTokenizer",
    "CausalLMOutput",
    "CheckpointError",
    "FlaxWav2Vec2ForCTC",
    "FlaxWav2Vec2ForPreTraining",
    "FlaxWav2Vec2ForSequenceClassification",
    "FlaxWav2Vec2Model",
    "FlaxWav2Vec2PreTrainedModel",
    "FlaxWav2Vec2Runner",
    "ModelOutput",
    "SequenceClassifierOutput",
    "TFAutoModel",
    "TFAutoModelForCTC",
    "TFWav2Vec2ForCTC",
    "TFWav2Vec2ForPreTraining",
    "TFWav2Vec2ForSequenceClassification",
    "TFWav2Vec2MainLayer",
    "TFWav2Vec2Model",
    "TFWav2Vec2PreTrainedModel",
    "UnsupportedConfigError",
    "Wav2Vec2BaseModelOutput",
    "Wav2Vec2CTCTokenizer",
    "Wav2Vec2Config",
    "Wav2Vec2DecoderWithLMOutput",
    "Wav2Vec2FeatureExtractor",
    "Wav2Vec2ForPreTrainingOutput",
    "Wav2Vec2Processor",
    "Wav2Vec2ProcessorWithLM",
    "Wav2Vec2Runner",
    "_compute_mask_indices",
    "compute_mask_indices",
    "load_model",
]

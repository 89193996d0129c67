"""transformers' `Auto*` entry points, for the calls the seed's examples make.

`AutoProcessor.from_pretrained("facebook/wav2vec2-base-960h")` and friends return our classes;
the model entry points read config.json's `architectures` and refuse a checkpoint of another
head in one line, as transformers does.
"""

from __future__ import annotations

from typing import Any

from wav2vec2_beam.models import hub


class AutoConfig:
    @staticmethod
    def from_pretrained(path: str, revision: str | None = None) -> Any:
        from wav2vec2_beam.models.configuration import Wav2Vec2Config

        return Wav2Vec2Config.from_pretrained(path, revision)


class AutoFeatureExtractor:
    @staticmethod
    def from_pretrained(path: str, revision: str | None = None, **overrides: Any) -> Any:
        from wav2vec2_beam.models.feature_extraction import Wav2Vec2FeatureExtractor

        return Wav2Vec2FeatureExtractor.from_pretrained(path, revision, **overrides)


class AutoTokenizer:
    @staticmethod
    def from_pretrained(path: str, revision: str | None = None, **overrides: Any) -> Any:
        from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer

        return Wav2Vec2CTCTokenizer.from_pretrained(path, revision, **overrides)


class AutoProcessor:
    @staticmethod
    def from_pretrained(path: str, revision: str | None = None, **overrides: Any) -> Any:
        from wav2vec2_beam.models.processing import Wav2Vec2Processor

        return Wav2Vec2Processor.from_pretrained(path, revision, **overrides)


class TFAutoModel:
    """The class config.json's `architectures` names (any head)."""

    @staticmethod
    def from_pretrained(path: str, revision: str | None = None) -> Any:
        from wav2vec2_beam.models import load_model

        return load_model(path, revision)


class TFAutoModelForCTC:
    """A CTC checkpoint (`Wav2Vec2ForCTC`); any other head is refused."""

    @staticmethod
    def from_pretrained(path: str, revision: str | None = None) -> Any:
        from wav2vec2_beam.models.configuration import Wav2Vec2Config
        from wav2vec2_beam.models.modeling_wav2vec2 import TFWav2Vec2ForCTC

        path = hub.resolve(str(path), revision)
        architecture = Wav2Vec2Config.from_pretrained(path).architecture
        if architecture != "Wav2Vec2ForCTC":
            raise ValueError(f"{path}: a {architecture} checkpoint, not Wav2Vec2ForCTC")
        return TFWav2Vec2ForCTC.from_pretrained(path)


#: transformers names the PyTorch class so; the seed's examples use either spelling.
AutoModelForCTC = TFAutoModelForCTC

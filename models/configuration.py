"""`Wav2Vec2Config`: the fields of a Hugging Face config.json that change what the model computes.

The config is read from a checkpoint's config.json. Every field that changes the computation is
checked, and a config that asks for something this implementation does not do (adapter layers,
an unknown activation, a norm type we do not know) is refused at load with a message naming the
field: a silently different model is worse than no model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from models import _files, hub

#: Activations config.json may name, as transformers' ACT2FN spells them.
SUPPORTED_ACTIVATIONS = frozenset(
    {"gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "relu", "swish", "silu", "tanh"}
)

#: Head classes (`architectures` in config.json) this package implements.
SUPPORTED_ARCHITECTURES = frozenset(
    {
        "Wav2Vec2Model",
        "Wav2Vec2ForCTC",
        "Wav2Vec2ForSequenceClassification",
        "Wav2Vec2ForPreTraining",
    }
)


class UnsupportedConfigError(ValueError):
    """A config.json field asks for a computation this implementation does not perform."""


@dataclass
class Wav2Vec2Config:
    """Architecture of a Wav2Vec2 checkpoint; defaults are transformers' (facebook/wav2vec2-base)."""

    vocab_size: int = 32
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    activation_dropout: float = 0.1
    attention_dropout: float = 0.1
    feat_proj_dropout: float = 0.0
    feat_quantizer_dropout: float = 0.0
    final_dropout: float = 0.1
    layerdrop: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.05
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    num_codevectors_per_group: int = 320
    num_codevector_groups: int = 2
    contrastive_logits_temperature: float = 0.1
    num_negatives: int = 100
    codevector_dim: int = 256
    proj_codevector_dim: int = 256
    diversity_loss_weight: float = 0.1
    ctc_loss_reduction: str = "sum"
    ctc_zero_infinity: bool = False
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 256
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    label2id: dict[str, int] = field(default_factory=lambda: {"LABEL_0": 0, "LABEL_1": 1})
    architectures: list[str] | None = None
    model_type: str = "wav2vec2"
    #: Fields of config.json we keep but that do not change the computation.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def num_feat_extract_layers(self) -> int:
        return len(self.conv_dim)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Input samples per output frame: the product of the conv strides (320 for 16 kHz models)."""
        ratio = 1
        for stride in self.conv_stride:
            ratio *= stride
        return ratio

    @property
    def receptive_field(self) -> int:
        """Fewest input samples that give one output frame (400 for the usual conv stack)."""
        length = 1
        for kernel, stride in zip(
            reversed(self.conv_kernel), reversed(self.conv_stride), strict=True
        ):
            length = (length - 1) * stride + kernel
        return length

    @property
    def architecture(self) -> str:
        """The head this checkpoint was saved with (first of `architectures`), or the bare model."""
        return self.architectures[0] if self.architectures else "Wav2Vec2Model"

    def output_frames(self, num_samples: int) -> int:
        """Frames the conv feature encoder gives for `num_samples` input samples (0 if too short)."""
        length = num_samples
        for kernel, stride in zip(self.conv_kernel, self.conv_stride, strict=True):
            length = (length - kernel) // stride + 1
            if length <= 0:
                return 0
        return length

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Wav2Vec2Config:
        """Build and validate a config from the parsed config.json; see `validate`."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {k: v for k, v in raw.items() if k in known}
        extra = {k: v for k, v in raw.items() if k not in known}
        for name in ("conv_dim", "conv_stride", "conv_kernel"):
            if name in values:
                values[name] = tuple(int(v) for v in values[name])
        if "id2label" in values:
            values["id2label"] = {int(k): str(v) for k, v in values["id2label"].items()}
        if "label2id" in values:
            values["label2id"] = {str(k): int(v) for k, v in values["label2id"].items()}
        elif "id2label" in values:
            values["label2id"] = {v: k for k, v in values["id2label"].items()}
        if "num_labels" in raw and "id2label" not in values:
            n = int(raw["num_labels"])
            values["id2label"] = {i: f"LABEL_{i}" for i in range(n)}
            values["label2id"] = {f"LABEL_{i}": i for i in range(n)}
        config = cls(**values, extra=extra)
        config.validate()
        return config

    @classmethod
    def from_pretrained(cls, path: str, revision: str | None = None) -> Wav2Vec2Config:
        """Read config.json from a local folder, a gs:// URL or a hub id (`models.hub`)."""
        path = hub.resolve(str(path), revision)
        raw = _files.read_json(path, "config.json")
        try:
            return cls.from_dict(raw)
        except UnsupportedConfigError as error:
            raise UnsupportedConfigError(f"{_files.join(path, 'config.json')}: {error}") from None

    def validate(self) -> None:
        """Refuse configs whose computation this implementation would get wrong, naming the field."""
        if self.model_type not in ("wav2vec2", ""):
            raise UnsupportedConfigError(
                f"model_type={self.model_type!r} is not supported (only 'wav2vec2')"
            )
        for name in ("add_adapter", "use_intermediate_ffn_before_adapter"):
            if self.extra.get(name):
                raise UnsupportedConfigError(f"{name}=true (adapter layers) is not supported")
        if self.extra.get("adapter_attn_dim") is not None:
            raise UnsupportedConfigError(
                "adapter_attn_dim is set (MMS attention adapters) and is not supported"
            )
        if self.extra.get("position_embeddings_type") not in (None, "absolute"):
            raise UnsupportedConfigError(
                f"position_embeddings_type={self.extra['position_embeddings_type']!r} is not supported"
            )
        if self.feat_extract_norm not in ("group", "layer"):
            raise UnsupportedConfigError(
                f"feat_extract_norm={self.feat_extract_norm!r} is not supported ('group' or 'layer')"
            )
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) not in SUPPORTED_ACTIVATIONS:
                raise UnsupportedConfigError(
                    f"{name}={getattr(self, name)!r} is not supported "
                    f"(one of {sorted(SUPPORTED_ACTIVATIONS)})"
                )
        if not (len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel)):
            raise UnsupportedConfigError(
                "conv_dim, conv_stride and conv_kernel must have the same length "
                f"(got {len(self.conv_dim)}, {len(self.conv_stride)}, {len(self.conv_kernel)})"
            )
        if self.hidden_size % self.num_attention_heads:
            raise UnsupportedConfigError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise UnsupportedConfigError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_conv_pos_embedding_groups={self.num_conv_pos_embedding_groups}"
            )
        if self.ctc_loss_reduction not in ("sum", "mean"):
            raise UnsupportedConfigError(
                f"ctc_loss_reduction={self.ctc_loss_reduction!r} is not supported ('sum' or 'mean')"
            )
        unknown = [a for a in self.architectures or [] if a not in SUPPORTED_ARCHITECTURES]
        if unknown:
            raise UnsupportedConfigError(
                f"architectures={unknown} is not supported (one of {sorted(SUPPORTED_ARCHITECTURES)})"
            )
        if self.codevector_dim % self.num_codevector_groups:
            raise UnsupportedConfigError(
                f"codevector_dim={self.codevector_dim} is not divisible by "
                f"num_codevector_groups={self.num_codevector_groups}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as config.json holds it (unknown fields kept as they were read)."""
        out = asdict(self)
        extra = out.pop("extra")
        out["conv_dim"], out["conv_stride"], out["conv_kernel"] = (
            list(self.conv_dim),
            list(self.conv_stride),
            list(self.conv_kernel),
        )
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["num_feat_extract_layers"] = self.num_feat_extract_layers
        return {**extra, **out}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

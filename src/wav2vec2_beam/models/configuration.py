"""`Wav2Vec2Config`: a checkpoint's config.json, with the behaviour of transformers' config class.

Users build configs the way transformers' documentation and tests do (`Wav2Vec2Config(
hidden_size=..., hidden_dropout_prob=0.1)`), so the class follows `PretrainedConfig`'s rules: every
keyword argument is kept as an attribute and written back to config.json, whether or not this
implementation reads it; `num_labels` and `id2label` stay in step; `save_pretrained`,
`from_pretrained`, `to_json_file` and `to_dict` round-trip.

Building a config never refuses it: a half-edited config is legal, as in transformers. What this
implementation cannot compute is refused when a model is built from the config (`validate`,
called by every model class and by the pipeline's checkpoint check), naming the field: a silently
different model is worse than no model.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from wav2vec2_beam.models import _files, hub

CONFIG_NAME = "config.json"

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

#: The attributes every transformers config has besides its model's own, with their defaults
#: (`PretrainedConfig.__init__`). Kept so that code written against transformers' configs reads
#: them (`config.use_return_dict`, `config.output_attentions`) and so that config.json files
#: written by either library round-trip.
COMMON_DEFAULTS: dict[str, Any] = {
    "return_dict": True,
    "output_hidden_states": False,
    "output_attentions": False,
    "torchscript": False,
    "torch_dtype": None,
    "use_bfloat16": False,
    "tf_legacy_loss": False,
    "pruned_heads": {},
    "tie_word_embeddings": True,
    "chunk_size_feed_forward": 0,
    "is_encoder_decoder": False,
    "is_decoder": False,
    "cross_attention_hidden_size": None,
    "add_cross_attention": False,
    "tie_encoder_decoder": False,
    "architectures": None,
    "finetuning_task": None,
    "tokenizer_class": None,
    "prefix": None,
    "sep_token_id": None,
    "decoder_start_token_id": None,
    "task_specific_params": None,
    "problem_type": None,
}

_PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


class UnsupportedConfigError(ValueError):
    """A config.json field asks for a computation this implementation does not perform."""


class Wav2Vec2Config:
    """Architecture of a Wav2Vec2 checkpoint; the defaults are transformers' (wav2vec2-base).

    The keyword arguments are transformers' `Wav2Vec2Config` arguments, with its defaults; any
    other keyword (a `PretrainedConfig` attribute such as `return_dict`, or anything a
    config.json carries) becomes an attribute too.
    """

    model_type = "wav2vec2"
    #: transformers' `ConfigTester` asks these of every config class.
    sub_configs: ClassVar[dict[str, type]] = {}
    has_no_defaults_at_init = False

    def __init__(
        self,
        vocab_size: int = 32,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        attention_dropout: float = 0.1,
        feat_proj_dropout: float = 0.0,
        feat_quantizer_dropout: float = 0.0,
        final_dropout: float = 0.1,
        layerdrop: float = 0.1,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-5,
        feat_extract_norm: str = "group",
        feat_extract_activation: str = "gelu",
        conv_dim: Sequence[int] = (512, 512, 512, 512, 512, 512, 512),
        conv_stride: Sequence[int] = (5, 2, 2, 2, 2, 2, 2),
        conv_kernel: Sequence[int] = (10, 3, 3, 3, 3, 2, 2),
        conv_bias: bool = False,
        num_conv_pos_embeddings: int = 128,
        num_conv_pos_embedding_groups: int = 16,
        do_stable_layer_norm: bool = False,
        apply_spec_augment: bool = True,
        mask_time_prob: float = 0.05,
        mask_time_length: int = 10,
        mask_time_min_masks: int = 2,
        mask_feature_prob: float = 0.0,
        mask_feature_length: int = 10,
        mask_feature_min_masks: int = 0,
        num_codevectors_per_group: int = 320,
        num_codevector_groups: int = 2,
        contrastive_logits_temperature: float = 0.1,
        num_negatives: int = 100,
        codevector_dim: int = 256,
        proj_codevector_dim: int = 256,
        diversity_loss_weight: float = 0.1,
        ctc_loss_reduction: str = "sum",
        ctc_zero_infinity: bool = False,
        use_weighted_layer_sum: bool = False,
        classifier_proj_size: int = 256,
        tdnn_dim: Sequence[int] = (512, 512, 512, 512, 1500),
        tdnn_kernel: Sequence[int] = (5, 3, 3, 1, 1),
        tdnn_dilation: Sequence[int] = (1, 2, 3, 1, 1),
        xvector_output_dim: int = 512,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        add_adapter: bool = False,
        adapter_kernel_size: int = 3,
        adapter_stride: int = 2,
        num_adapter_layers: int = 3,
        output_hidden_size: int | None = None,
        adapter_attn_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout = hidden_dropout
        self.activation_dropout = activation_dropout
        self.attention_dropout = attention_dropout
        self.feat_proj_dropout = feat_proj_dropout
        self.feat_quantizer_dropout = feat_quantizer_dropout
        self.final_dropout = final_dropout
        self.layerdrop = layerdrop
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.feat_extract_norm = feat_extract_norm
        self.feat_extract_activation = feat_extract_activation
        self.conv_dim = [int(v) for v in conv_dim]
        self.conv_stride = [int(v) for v in conv_stride]
        self.conv_kernel = [int(v) for v in conv_kernel]
        self.conv_bias = conv_bias
        self.num_conv_pos_embeddings = num_conv_pos_embeddings
        self.num_conv_pos_embedding_groups = num_conv_pos_embedding_groups
        self.do_stable_layer_norm = do_stable_layer_norm
        self.apply_spec_augment = apply_spec_augment
        self.mask_time_prob = mask_time_prob
        self.mask_time_length = mask_time_length
        self.mask_time_min_masks = mask_time_min_masks
        self.mask_feature_prob = mask_feature_prob
        self.mask_feature_length = mask_feature_length
        self.mask_feature_min_masks = mask_feature_min_masks
        self.num_codevectors_per_group = num_codevectors_per_group
        self.num_codevector_groups = num_codevector_groups
        self.contrastive_logits_temperature = contrastive_logits_temperature
        self.num_negatives = num_negatives
        self.codevector_dim = codevector_dim
        self.proj_codevector_dim = proj_codevector_dim
        self.diversity_loss_weight = diversity_loss_weight
        self.ctc_loss_reduction = ctc_loss_reduction
        self.ctc_zero_infinity = ctc_zero_infinity
        self.use_weighted_layer_sum = use_weighted_layer_sum
        self.classifier_proj_size = classifier_proj_size
        self.tdnn_dim = list(tdnn_dim)
        self.tdnn_kernel = list(tdnn_kernel)
        self.tdnn_dilation = list(tdnn_dilation)
        self.xvector_output_dim = xvector_output_dim
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.add_adapter = add_adapter
        self.adapter_kernel_size = adapter_kernel_size
        self.adapter_stride = adapter_stride
        self.num_adapter_layers = num_adapter_layers
        self.output_hidden_size = output_hidden_size or hidden_size
        self.adapter_attn_dim = adapter_attn_dim
        self._set_common(kwargs)

    def _set_common(self, kwargs: dict[str, Any]) -> None:
        """`PretrainedConfig`'s attributes, labels and name, then every other keyword as given."""
        # A class attribute; the file's own value is kept to refuse other models' checkpoints.
        self._declared_model_type = kwargs.pop("model_type", self.model_type)
        kwargs.pop("num_feat_extract_layers", None)  # follows conv_dim
        for name, default in COMMON_DEFAULTS.items():
            setattr(self, name, copy.deepcopy(kwargs.pop(name, default)))
        if self.problem_type not in (None, *_PROBLEM_TYPES):
            raise ValueError(
                f"problem_type must be one of {_PROBLEM_TYPES}, got {self.problem_type!r}"
            )
        id2label = kwargs.pop("id2label", None)
        label2id = kwargs.pop("label2id", None)
        num_labels = kwargs.pop("num_labels", None)
        if id2label is not None:
            if not isinstance(id2label, dict):
                raise ValueError("id2label must be a dictionary")
            # JSON keys are strings; ids are ints.
            self.id2label = {int(key): value for key, value in id2label.items()}
        else:
            self.id2label = {}
            self.num_labels = 2 if num_labels is None else int(num_labels)
        if label2id is not None:
            if not isinstance(label2id, dict):
                raise ValueError("label2id must be a dictionary")
            self.label2id = dict(label2id)
        elif id2label is not None:
            self.label2id = {label: index for index, label in self.id2label.items()}
        self._name_or_path = str(kwargs.pop("name_or_path", kwargs.pop("_name_or_path", "")))
        for name, value in kwargs.items():
            setattr(self, name, value)

    # --- derived values -------------------------------------------------------------------

    @property
    def num_feat_extract_layers(self) -> int:
        return len(self.conv_dim)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, count: int) -> None:
        if len(getattr(self, "id2label", {}) or {}) != count:
            self.id2label = {index: f"LABEL_{index}" for index in range(count)}
            self.label2id = {label: index for index, label in self.id2label.items()}

    @property
    def use_return_dict(self) -> bool:
        """Whether models return output objects rather than tuples (transformers' rule)."""
        return bool(self.return_dict) and not self.torchscript

    @property
    def name_or_path(self) -> str:
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value: str) -> None:
        self._name_or_path = str(value)

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

    # --- reading and writing ----------------------------------------------------------------

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Wav2Vec2Config:
        """A config from config.json's parsed content; `kwargs` override its values."""
        return cls(**{**config_dict, **kwargs})

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike[str]) -> Wav2Vec2Config:
        with open(json_file, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        revision: str | None = None,
        subfolder: str = "",
        return_unused_kwargs: bool = False,
        **kwargs: Any,
    ) -> Wav2Vec2Config | tuple[Wav2Vec2Config, dict[str, Any]]:
        """Read config.json from a local folder, a gs:// URL or a hub id (`models.hub`).

        `kwargs` naming config attributes override the file's values, as in transformers; the
        others are returned with `return_unused_kwargs=True` (and ignored otherwise).
        """
        path = hub.resolve(str(pretrained_model_name_or_path), revision)
        folder = _files.join(path, subfolder) if subfolder else path
        raw = _files.read_json(folder, CONFIG_NAME)
        if not isinstance(raw, dict):
            raise ValueError(f"{_files.join(folder, CONFIG_NAME)}: not a JSON object")
        config = cls.from_dict(raw)
        config.name_or_path = str(pretrained_model_name_or_path)
        unused = {}
        for key, value in kwargs.items():
            if hasattr(config, key):
                setattr(config, key, value)
            else:
                unused[key] = value
        return (config, unused) if return_unused_kwargs else config

    def save_pretrained(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> str:
        """Write config.json into `save_directory` (created if needed); returns its path."""
        if os.path.isfile(save_directory):
            raise ValueError(f"{save_directory}: is a file, not a folder")
        return _files.write_json(str(save_directory), CONFIG_NAME, self.to_diff_dict())

    def to_dict(self) -> dict[str, Any]:
        """Every attribute, as config.json holds it (ids of `id2label` as strings)."""
        out = {
            key: copy.deepcopy(value)
            for key, value in vars(self).items()
            if not key.startswith("_")
        }
        out["model_type"] = self.model_type
        out["num_feat_extract_layers"] = self.num_feat_extract_layers
        out["id2label"] = {str(key): value for key, value in self.id2label.items()}
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        """`to_dict` without the common attributes left at their defaults: what config.json
        needs (every Wav2Vec2 field is kept, so that the file states the architecture)."""
        return {
            key: value
            for key, value in self.to_dict().items()
            if key not in COMMON_DEFAULTS or value != COMMON_DEFAULTS[key]
        }

    def to_json_string(self, use_diff: bool = True) -> str:
        content = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(content, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike[str], use_diff: bool = True) -> None:
        with open(json_file_path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json_string(use_diff))

    def update(self, config_dict: dict[str, Any]) -> None:
        for key, value in config_dict.items():
            setattr(self, key, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Wav2Vec2Config) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string(use_diff=False)}"

    # --- what this implementation computes ------------------------------------------------------

    def validate(self) -> None:
        """Refuse configs whose computation this implementation would get wrong, naming the field."""
        if self._declared_model_type not in ("wav2vec2", ""):
            raise UnsupportedConfigError(
                f"model_type={self._declared_model_type!r} is not supported (only 'wav2vec2')"
            )
        if self.add_adapter or getattr(self, "use_intermediate_ffn_before_adapter", False):
            name = "add_adapter" if self.add_adapter else "use_intermediate_ffn_before_adapter"
            raise UnsupportedConfigError(f"{name}=true (adapter layers) is not supported")
        if self.adapter_attn_dim is not None:
            raise UnsupportedConfigError(
                "adapter_attn_dim is set (MMS attention adapters) and is not supported"
            )
        position = getattr(self, "position_embeddings_type", None)
        if position not in (None, "absolute"):
            raise UnsupportedConfigError(f"position_embeddings_type={position!r} is not supported")
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


def load_checked_config(path: str, revision: str | None = None, **kwargs: Any) -> Wav2Vec2Config:
    """The config of checkpoint `path` (kwargs override its values), refused with the file named
    when this implementation cannot compute it (`Wav2Vec2Config.validate`)."""
    config = Wav2Vec2Config.from_pretrained(path, revision, **kwargs)
    try:
        config.validate()
    except UnsupportedConfigError as error:
        location = _files.join(hub.resolve(str(path), revision), CONFIG_NAME)
        raise UnsupportedConfigError(f"{location}: {error}") from None
    return config

"""transformers' TFWav2Vec2 classes: Keras 2 models over our own layers (`models.tf_layers`).

The classes subclass the Keras `Model` that transformers' TF classes subclass, Keras 2
(`tf_keras`, which TensorFlow 2.21 ships beside Keras 3 for exactly this), so a user's Keras 2
code works with them as it does with transformers': inputs as keywords or as one dict, list or
tuple; `output_attentions`, `output_hidden_states` and `return_dict` falling back to the config;
`compile` and `fit` with the model's own loss (no `loss=` needed) or a Keras loss on the logits;
the functional API; `save_pretrained(saved_model=True)` and `model.save()`; `get_config` and
`from_config`. Only this module imports `tf_keras`.

Weights load from the same checkpoints with the same names as before: each class hands its
Hugging Face-named parameters (`named_parameters`) to `models/weights.py`. The inference runner
(`models.inference`) traces `forward` directly, outside Keras' call machinery.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import tensorflow as tf
import tf_keras as keras

from wav2vec2_beam.models import hub
from wav2vec2_beam.models.batching import check_model_inputs
from wav2vec2_beam.models.configuration import Wav2Vec2Config, load_checked_config
from wav2vec2_beam.models.outputs import (
    CausalLMOutput,
    ModelOutput,
    SequenceClassifierOutput,
    Wav2Vec2BaseModelOutput,
    Wav2Vec2ForPreTrainingOutput,
)
from wav2vec2_beam.models.parameters import Parameter
from wav2vec2_beam.models.tf_layers import (
    Encoder,
    FeatureEncoder,
    FeatureProjection,
    GumbelVectorQuantizer,
    Init,
    Linear,
    Named,
    compute_mask_indices,
    conv_output_lengths,
    ctc_loss,
    dropout,
    frame_mask,
)

#: transformers' TF module has its SpecAugment draw under this name (TF tensors in and out).
_compute_mask_indices = compute_mask_indices


@dataclass
class Forward:
    """Everything one pass computes, before a head's output class is chosen from it."""

    last_hidden_state: tf.Tensor
    extract_features: tf.Tensor
    hidden_states: list[tf.Tensor]
    attentions: list[tf.Tensor]
    #: (B, T) 1.0 on each item's valid frames, when an attention mask was given.
    frame_mask: tf.Tensor | None
    logits: tf.Tensor | None = None
    projected_states: tf.Tensor | None = None
    projected_quantized_states: tf.Tensor | None = None
    codevector_perplexity: tf.Tensor | None = None
    codevector_ids: tf.Tensor | None = None


def unpack_inputs(call: Callable[..., Any]) -> Callable[..., Any]:
    """Let `call` take its inputs as transformers' TF models do: as keywords, or as one dict,
    list or tuple in the first argument (Keras hands `fit`'s and the functional API's inputs over
    that way), the list or tuple in the order of `call`'s parameters."""
    signature = inspect.signature(call)
    names = list(signature.parameters)[1:]

    @functools.wraps(call)
    def unpacked(self: Any, *args: Any, **kwargs: Any) -> Any:
        values = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name in values:
                raise TypeError(f"{type(self).__name__}.call got {name!r} twice")
            values[name] = value
        first = values.get(names[0])
        if isinstance(first, Mapping):
            del values[names[0]]
            for name, value in first.items():
                if name not in names:
                    raise TypeError(f"{type(self).__name__}.call takes no input {name!r}")
                values[name] = value
        elif _is_packed(first):
            del values[names[0]]
            values.update(zip(names, first, strict=False))
        return call(self, **values)

    # Keras reads `call`'s parameters with getfullargspec, which sees this, not __wrapped__.
    unpacked.__signature__ = signature  # type: ignore[attr-defined]
    return unpacked


def _is_packed(first: Any) -> bool:
    """Whether a list or tuple first argument packs several inputs (tensors, arrays, None), as
    opposed to being the audio itself written as nested Python lists of numbers."""
    return isinstance(first, list | tuple) and not all(
        isinstance(element, list | tuple | int | float) for element in first
    )


class _Flags:
    """The output switches of one call: the arguments, else the config's values."""

    def __init__(
        self,
        config: Wav2Vec2Config,
        output_attentions: bool | None,
        output_hidden_states: bool | None,
        return_dict: bool | None,
    ) -> None:
        pick = lambda given, default: bool(default if given is None else given)  # noqa: E731
        self.attentions = pick(output_attentions, config.output_attentions)
        self.hidden_states = pick(output_hidden_states, config.output_hidden_states)
        self.return_dict = pick(return_dict, config.use_return_dict)

    def shape(self, output: ModelOutput) -> ModelOutput | tuple[Any, ...]:
        """`output` without what was not asked for, as an output object or a tuple."""
        if not self.hidden_states:
            output.hidden_states = None
        if not self.attentions:
            output.attentions = None
        return output if self.return_dict else output.to_tuple()


def check_inputs(
    config: Wav2Vec2Config, input_values: Any, attention_mask: Any
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Tensors of the inputs (float32 values, int32 mask), refusing with a clear error what the
    convolution stack cannot take (shapes always; each item's length when known eagerly)."""
    values = tf.convert_to_tensor(input_values)
    if values.dtype != tf.float32:
        values = tf.cast(values, tf.float32)
    if attention_mask is None:
        check_model_inputs(config, tuple(values.shape))
        return values, None
    mask = tf.cast(tf.convert_to_tensor(attention_mask), tf.int32)
    lengths = None
    if tf.executing_eagerly() and tuple(mask.shape) == tuple(values.shape):
        lengths = tf.reduce_sum(mask, axis=-1).numpy().tolist()
    check_model_inputs(config, tuple(values.shape), tuple(mask.shape), lengths)
    return values, mask


class TFWav2Vec2MainLayer(Named, keras.layers.Layer):
    """The bare encoder (conv features -> projection -> transformer) as a Keras layer.

    Serializable as Keras expects (`get_config`, construction from its config dict), so a model
    of the functional API built around it saves to and loads from Keras files.
    """

    config_class = Wav2Vec2Config
    _keras_serializable = True

    def __init__(
        self, config: Wav2Vec2Config | Mapping[str, Any], seed: int | Init | None = 0, **kwargs: Any
    ) -> None:
        if isinstance(config, Mapping):
            config = Wav2Vec2Config.from_dict(dict(config))
        kwargs.setdefault("name", "wav2vec2")
        super().__init__(**kwargs)
        config.validate()
        self.config = config
        init = seed if isinstance(seed, Init) else Init(seed)
        self._init_named(init)
        with tf.name_scope(self.name):
            self.feature_extractor = self._child("feature_extractor", FeatureEncoder, init, config)
            self.feature_projection = self._child(
                "feature_projection", FeatureProjection, init, config
            )
            self.masked_spec_embed = None
            if config.mask_time_prob > 0 or config.mask_feature_prob > 0:
                self.masked_spec_embed = self._param(
                    "masked_spec_embed",
                    (config.hidden_size,),
                    "same",
                    Init.uniform((config.hidden_size,), 1.0),
                )
            self.encoder = self._child("encoder", Encoder, init, config)
        self.built = True  # every variable exists from construction

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "config": self.config.to_dict()}

    @unpack_inputs
    def call(
        self,
        input_values: Any,
        attention_mask: Any = None,
        mask_time_indices: Any = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        training: bool = False,
    ) -> Wav2Vec2BaseModelOutput | tuple[Any, ...]:
        flags = _Flags(self.config, output_attentions, output_hidden_states, return_dict)
        values, mask = check_inputs(self.config, input_values, attention_mask)
        result = self.forward(values, mask, mask_time_indices, bool(training))
        return flags.shape(base_model_output(result))

    def forward(
        self,
        input_values: tf.Tensor,
        attention_mask: tf.Tensor | None,
        mask_time_indices: Any,
        training: bool,
    ) -> Forward:
        """The traceable computation (tensors in, tensors out): safe inside tf.function and XLA."""
        sample_lengths = None
        if attention_mask is not None:
            sample_lengths = tf.reduce_sum(tf.cast(attention_mask, tf.int32), axis=-1)
        features = self.feature_extractor(input_values, sample_lengths)
        mask = None
        if sample_lengths is not None:
            frames = self.feature_extractor_lengths(sample_lengths)
            mask = frame_mask(frames, tf.shape(features)[1])
        hidden, extract_features = self.feature_projection(features)
        hidden = dropout(hidden, self.config.feat_proj_dropout, training)
        hidden = self._spec_augment(hidden, mask_time_indices, training)
        states = self.encoder(hidden, mask, training)
        return Forward(
            last_hidden_state=states.last,
            extract_features=extract_features,
            hidden_states=states.hidden_states,
            attentions=states.attentions,
            frame_mask=mask,
        )

    def _spec_augment(self, hidden: tf.Tensor, mask_time_indices: Any, training: bool) -> tf.Tensor:
        """SpecAugment as the reference applies it: the given time mask, else in training a
        drawn one (`mask_time_prob`), replaced by `masked_spec_embed`; in training, masked
        feature channels (`mask_feature_prob`) set to zero. Nothing unless `apply_spec_augment`."""
        config = self.config
        if not config.apply_spec_augment:
            return hidden
        if mask_time_indices is None and training and config.mask_time_prob > 0:
            shape = tf.shape(hidden)[:2]
            mask_time_indices = compute_mask_indices(
                shape, config.mask_time_prob, config.mask_time_length, config.mask_time_min_masks
            )
        if mask_time_indices is not None:
            if self.masked_spec_embed is None:
                raise ValueError(
                    "mask_time_indices needs masked_spec_embed, which this checkpoint does not "
                    "have (mask_time_prob and mask_feature_prob are 0 in its config)"
                )
            chosen = tf.cast(mask_time_indices, tf.bool)[:, :, None]
            hidden = tf.where(chosen, tf.cast(self.masked_spec_embed, hidden.dtype), hidden)
        if training and config.mask_feature_prob > 0:
            channels = compute_mask_indices(
                tf.stack([tf.shape(hidden)[0], tf.shape(hidden)[2]]),
                config.mask_feature_prob,
                config.mask_feature_length,
                config.mask_feature_min_masks,
            )
            hidden = hidden * tf.cast(1 - channels, hidden.dtype)[:, None, :]
        return hidden

    def feature_extractor_lengths(self, sample_lengths: tf.Tensor) -> tf.Tensor:
        """Valid output frames for items of `sample_lengths` samples."""
        lengths = sample_lengths
        for layer in self.feature_extractor.conv_layers:
            lengths = layer.output_lengths(lengths)
        return lengths

    def _get_feat_extract_output_lengths(self, input_lengths: Any) -> tf.Tensor:
        """Output frames for `input_lengths` samples (transformers' name)."""
        return conv_output_lengths(self.config, tf.convert_to_tensor(input_lengths))


def base_model_output(result: Forward) -> Wav2Vec2BaseModelOutput:
    return Wav2Vec2BaseModelOutput(
        last_hidden_state=result.last_hidden_state,
        extract_features=result.extract_features,
        hidden_states=tuple(result.hidden_states),
        attentions=tuple(result.attentions),
    )


class TFWav2Vec2PreTrainedModel(Named, keras.Model):
    """Shared loading, calling and Keras plumbing; subclasses add a head on the bare encoder.

    `from_pretrained` builds the model from config.json and copies every weight of
    model.safetensors (or tf_model.h5, or flax_model.msgpack) into it by name; see
    `models/weights.py` for the rules.
    """

    config_class = Wav2Vec2Config
    base_model_prefix = "wav2vec2"
    main_input_name = "input_values"
    #: Prefix of the encoder's weights in the checkpoint ("" for the bare model).
    base_prefix: str = "wav2vec2."
    #: The reference's class name, as `architectures` in config.json spells it.
    architecture: str = ""

    def __init__(self, config: Wav2Vec2Config, seed: int | None = 0, **kwargs: Any) -> None:
        """A model with seeded random weights (`seed` None: zeros, to be loaded over)."""
        super().__init__(**kwargs)
        config.validate()
        self.config = config
        init = Init(seed)
        self._init_named(init)
        self.wav2vec2 = TFWav2Vec2MainLayer(config, init, name="wav2vec2")
        self.build_head(init)
        # Keras saves a subclassed model's weights layer by layer plus its own; the head's
        # layers are not Keras layers, so their weights are registered as the model's own.
        self._head_weights = [param.variable for _, param in Named.named_parameters(self)]
        self.built = True

    def build_head(self, init: Init) -> None:
        """Create the head's layers (`self._child`); none for the bare encoder."""

    # --- calling -----------------------------------------------------------------------------

    @unpack_inputs
    def call(
        self,
        input_values: Any,
        attention_mask: Any = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        labels: Any = None,
        training: bool = False,
        mask_time_indices: Any = None,
    ) -> ModelOutput | tuple[Any, ...]:
        """Run the model on (batch, samples) normalized 16 kHz audio.

        `attention_mask` (batch, samples) marks real samples with 1 and padding with 0. Inputs
        may be tensors, numpy arrays or lists; as keywords or as one dict, list or tuple. `loss`
        is computed when `labels` are given; `hidden_states` and `attentions` are returned when
        asked for (here or in the config), and a tuple instead of an output object with
        `return_dict=False`.
        """
        flags = _Flags(self.config, output_attentions, output_hidden_states, return_dict)
        values, mask = check_inputs(self.config, input_values, attention_mask)
        if mask_time_indices is not None:
            mask_time_indices = tf.convert_to_tensor(mask_time_indices)
        result = self.forward(values, mask, mask_time_indices, bool(training))
        loss = None if labels is None else self.head_loss(result, labels, values, mask)
        return flags.shape(self.output_of(result, loss))

    def forward(
        self,
        input_values: tf.Tensor,
        attention_mask: tf.Tensor | None,
        mask_time_indices: tf.Tensor | None,
        training: bool,
    ) -> Forward:
        """The traceable computation (tensors in, tensors out): safe inside tf.function and XLA."""
        return self.wav2vec2.forward(input_values, attention_mask, mask_time_indices, training)

    def output_of(self, result: Forward, loss: tf.Tensor | None) -> ModelOutput:
        """The head's output object."""
        return base_model_output(result)

    def head_loss(
        self,
        result: Forward,
        labels: Any,
        input_values: tf.Tensor,
        attention_mask: tf.Tensor | None,
    ) -> tf.Tensor:
        raise ValueError(f"{type(self).__name__} has no loss; call it without labels")

    def feature_lengths(
        self, input_values: tf.Tensor, attention_mask: tf.Tensor | None
    ) -> tf.Tensor:
        """Valid output frames per item."""
        if attention_mask is None:
            samples = tf.fill([tf.shape(input_values)[0]], tf.shape(input_values)[1])
        else:
            samples = tf.reduce_sum(tf.cast(attention_mask, tf.int32), axis=-1)
        return self.wav2vec2.feature_extractor_lengths(samples)

    def _get_feat_extract_output_lengths(self, input_lengths: Any) -> tf.Tensor:
        """Output frames for `input_lengths` samples (transformers' name)."""
        return self.wav2vec2._get_feat_extract_output_lengths(input_lengths)

    # --- parameters --------------------------------------------------------------------------

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        yield from self.wav2vec2.named_parameters(prefix + self.base_prefix)
        yield from super().named_parameters(prefix)

    def keep_weights_in(self, dtype: tf.DType) -> None:
        self.wav2vec2.keep_weights_in(dtype)
        super().keep_weights_in(dtype)

    def freeze_feature_encoder(self) -> None:
        """Keep the convolution stack's weights out of training (`fit` and `trainable_weights`)."""
        self.wav2vec2.feature_extractor.trainable = False

    def freeze_feature_extractor(self) -> None:
        """Deprecated name of `freeze_feature_encoder`, as in transformers."""
        warnings.warn(
            "freeze_feature_extractor is deprecated; use freeze_feature_encoder",
            FutureWarning,
            stacklevel=2,
        )
        self.freeze_feature_encoder()

    # --- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        *,
        config: Wav2Vec2Config | None = None,
        revision: str | None = None,
        ignore_mismatched_sizes: bool = False,
        from_pt: bool = False,
        **kwargs: Any,
    ) -> TFWav2Vec2PreTrainedModel:
        """Load a Hugging Face checkpoint: a folder, a gs:// URL or a hub id (`models.hub`).

        Keywords naming config attributes override config.json (`num_labels=5`). A checkpoint
        of another head loads its encoder and initializes this head anew (logged), as
        transformers does to fine-tune; with `ignore_mismatched_sizes`, weights whose shape
        differs are initialized anew too. `from_pt` is accepted for transformers' examples:
        the PyTorch-named safetensors weights are what this class always reads (never pickled
        pytorch_model.bin).
        """
        from wav2vec2_beam.models.loading import apply_plan, plan_checkpoint
        from wav2vec2_beam.models.parameter_shapes import expected_parameters

        del from_pt
        path = hub.resolve(str(pretrained_model_name_or_path), revision)
        saved = load_checked_config(path)
        config = _overridden(config if config is not None else saved, kwargs)
        config.validate()
        # Checked against what the config implies before any variable exists (models.loading).
        plan = plan_checkpoint(
            path,
            expected_parameters(config, cls.architecture),
            cls.__name__,
            cls.architecture,
            cls.base_prefix,
            saved.architecture,
            ignore_mismatched_sizes,
        )
        model = cls(config, seed=None)  # every weight is loaded over, or drawn if missing
        apply_plan(model, plan)
        return model

    def save_pretrained(
        self, save_directory: str | os.PathLike[str], saved_model: bool = False, version: int = 1
    ) -> None:
        """Write config.json and model.safetensors in the Hugging Face layout; with
        `saved_model`, also a TensorFlow SavedModel (the `serving` signature) in
        `saved_model/<version>`."""
        from wav2vec2_beam.models.weights import save_checkpoint

        save_checkpoint(self, str(save_directory))
        if saved_model:
            target = os.path.join(str(save_directory), "saved_model", str(version))
            tf.saved_model.save(self, target, signatures=self.serving)

    @staticmethod
    def can_generate() -> bool:
        """Wav2Vec2 classifies frames or clips; it generates no sequences (transformers' API)."""
        return False

    # --- Keras -------------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    @classmethod
    def from_config(
        cls, config: Wav2Vec2Config | Mapping[str, Any], custom_objects: Any = None
    ) -> TFWav2Vec2PreTrainedModel:
        if isinstance(config, Mapping):
            config = Wav2Vec2Config.from_dict(dict(config))
        return cls(config)

    def build(self, input_shape: Any = None) -> None:
        """Nothing to build: every variable exists from construction."""
        self.built = True

    @property
    def input_signature(self) -> dict[str, tf.TensorSpec]:
        return {
            "input_values": tf.TensorSpec((None, None), tf.float32, name="input_values"),
            "attention_mask": tf.TensorSpec((None, None), tf.int32, name="attention_mask"),
        }

    @property
    def dummy_inputs(self) -> dict[str, tf.Tensor]:
        """A small valid batch (two receptive fields of samples)."""
        length = 2 * self.config.receptive_field
        return {
            "input_values": tf.random.uniform((1, length), -1.0, 1.0, seed=0),
            "attention_mask": tf.ones((1, length), tf.int32),
        }

    @property
    def serving(self) -> Any:
        """The SavedModel signature: `input_signature` in, `serving_output` as a dict out."""
        function = self._cache.serving
        if function is None:

            def serve(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
                output = self.call(inputs, training=False, return_dict=True)
                return dict(self.serving_output(output))

            function = tf.function(serve, input_signature=[self.input_signature])
            self._cache.serving = function
        return function

    def serving_output(self, output: ModelOutput) -> ModelOutput:
        """`output` with its per-layer tuples stacked into one tensor each, as signatures need."""
        fields = {
            key: tf.stack(value) if isinstance(value, tuple) else value
            for key, value in output.items()
        }
        return type(output)(**fields)

    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, **kwargs: Any) -> None:
        """Keras' compile; with no `loss`, `fit` and `evaluate` minimize and report the
        model's own loss (CTC or cross-entropy on `labels` given in the inputs or as targets)."""
        self._own_loss = loss is None
        if self._own_loss and getattr(self, "_own_loss_tracker", None) is None:
            self._own_loss_tracker = keras.metrics.Mean(name="loss")
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def train_step(self, data: Any) -> dict[str, Any]:
        return super().train_step(self._labels_in_inputs(data))

    def test_step(self, data: Any) -> dict[str, Any]:
        return super().test_step(self._labels_in_inputs(data))

    def _labels_in_inputs(self, data: Any) -> Any:
        """With the model's own loss, targets given apart (`fit(x, y)`) join the inputs as
        `labels`; they stay targets too, for compiled metrics."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if not getattr(self, "_own_loss", False) or y is None:
            return data
        inputs = dict(x) if isinstance(x, Mapping) else {self.main_input_name: x}
        inputs["labels"] = y["labels"] if isinstance(y, Mapping) else y
        return keras.utils.pack_x_y_sample_weight(inputs, y, sample_weight)

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None
    ) -> tf.Tensor:
        if not getattr(self, "_own_loss", False):
            return super().compute_loss(x, y, _logits(y_pred), sample_weight)
        if sample_weight is not None:
            raise ValueError(
                "sample_weight needs a compiled loss: the model's own loss is already reduced "
                "over the batch (compile with loss=... to weight samples)"
            )
        if "loss" not in y_pred:
            raise ValueError("the model's own loss needs `labels`, in the inputs or as targets")
        loss = tf.reduce_mean(y_pred["loss"])
        if self.losses:
            loss += tf.add_n(self.losses)
        self._own_loss_tracker.update_state(loss)
        return loss

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any) -> dict[str, Any]:
        return super().compute_metrics(x, y, _logits(y_pred), sample_weight)


def _logits(y_pred: Any) -> Any:
    """What Keras losses and metrics compare with the targets: the logits of a model output."""
    if isinstance(y_pred, Mapping) and "logits" in y_pred:
        return y_pred["logits"]
    return y_pred


def _overridden(config: Wav2Vec2Config, overrides: dict[str, Any]) -> Wav2Vec2Config:
    """`config` with config attributes set from `overrides`; TypeError for other keywords."""
    unknown = sorted(key for key in overrides if not hasattr(config, key))
    if unknown:
        raise TypeError(f"from_pretrained got unexpected keyword arguments {unknown}")
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


class TFWav2Vec2Model(TFWav2Vec2PreTrainedModel):
    """The bare encoder: last_hidden_state, extract_features and hidden_states."""

    base_prefix = ""
    architecture = "Wav2Vec2Model"


class TFWav2Vec2ForCTC(TFWav2Vec2PreTrainedModel):
    """Encoder + linear CTC head over the vocabulary (speech recognition)."""

    architecture = "Wav2Vec2ForCTC"

    def build_head(self, init: Init) -> None:
        config = self.config
        self.lm_head = self._child(
            "lm_head", Linear, init, config.hidden_size, config.vocab_size, config.initializer_range
        )

    def forward(
        self,
        input_values: tf.Tensor,
        attention_mask: tf.Tensor | None,
        mask_time_indices: tf.Tensor | None,
        training: bool,
    ) -> Forward:
        result = self.wav2vec2.forward(input_values, attention_mask, mask_time_indices, training)
        hidden = dropout(result.last_hidden_state, self.config.final_dropout, training)
        result.logits = self.lm_head(hidden)
        return result

    def output_of(self, result: Forward, loss: tf.Tensor | None) -> ModelOutput:
        return CausalLMOutput(
            loss=loss,
            logits=result.logits,
            hidden_states=tuple(result.hidden_states),
            attentions=tuple(result.attentions),
        )

    def head_loss(
        self,
        result: Forward,
        labels: Any,
        input_values: tf.Tensor,
        attention_mask: tf.Tensor | None,
    ) -> tf.Tensor:
        labels = tf.convert_to_tensor(labels)
        message = f"label values must be < vocab_size ({self.config.vocab_size})"
        if not tf.executing_eagerly():
            # Inside tf.function (a training step) the values are not known while tracing.
            tf.debugging.assert_less(tf.cast(labels, tf.int32), self.config.vocab_size, message)
        elif int(tf.reduce_max(labels)) >= self.config.vocab_size:
            raise ValueError(message)
        return ctc_loss(
            result.logits,
            labels,
            self.feature_lengths(input_values, attention_mask),
            blank=self.config.pad_token_id,
            reduction=self.config.ctc_loss_reduction,
            zero_infinity=self.config.ctc_zero_infinity,
        )


class TFWav2Vec2ForSequenceClassification(TFWav2Vec2PreTrainedModel):
    """Encoder + mean-pooled projection + classifier (keyword spotting, emotion, language id)."""

    architecture = "Wav2Vec2ForSequenceClassification"

    def build_head(self, init: Init) -> None:
        config = self.config
        if config.use_weighted_layer_sum:
            layers = config.num_hidden_layers + 1
            self.layer_weights = self._param(
                "layer_weights", (layers,), "same", Init.constant((layers,), 1.0 / layers)
            )
        std = config.initializer_range
        self.projector = self._child(
            "projector", Linear, init, config.hidden_size, config.classifier_proj_size, std
        )
        self.classifier = self._child(
            "classifier", Linear, init, config.classifier_proj_size, config.num_labels, std
        )

    def freeze_base_model(self) -> None:
        """Train the classification head only."""
        self.wav2vec2.trainable = False

    def forward(
        self,
        input_values: tf.Tensor,
        attention_mask: tf.Tensor | None,
        mask_time_indices: tf.Tensor | None,
        training: bool,
    ) -> Forward:
        result = self.wav2vec2.forward(input_values, attention_mask, mask_time_indices, training)
        if self.config.use_weighted_layer_sum:
            stacked = tf.stack(result.hidden_states, axis=0)
            weights = tf.nn.softmax(self.layer_weights)
            hidden = tf.tensordot(tf.cast(weights, stacked.dtype), stacked, axes=[[0], [0]])
        else:
            hidden = result.last_hidden_state
        projected = self.projector(hidden)
        if result.frame_mask is None:
            pooled = tf.reduce_mean(projected, axis=1)
        else:
            # In float32: bfloat16 counts frames exactly only up to 256.
            mask = result.frame_mask[:, :, None]
            total = tf.reduce_sum(tf.cast(projected, tf.float32) * mask, axis=1)
            pooled = tf.cast(total / tf.reduce_sum(mask, axis=1), projected.dtype)
        result.logits = self.classifier(pooled)
        return result

    def output_of(self, result: Forward, loss: tf.Tensor | None) -> ModelOutput:
        return SequenceClassifierOutput(
            loss=loss,
            logits=result.logits,
            hidden_states=tuple(result.hidden_states),
            attentions=tuple(result.attentions),
        )

    def head_loss(
        self,
        result: Forward,
        labels: Any,
        input_values: tf.Tensor,
        attention_mask: tf.Tensor | None,
    ) -> tf.Tensor:
        labels = tf.reshape(tf.cast(tf.convert_to_tensor(labels), tf.int32), [-1])
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=tf.cast(result.logits, tf.float32)
        )
        return tf.reduce_mean(losses)


class TFWav2Vec2ForPreTraining(TFWav2Vec2PreTrainedModel):
    """Encoder + quantizer + projections: the discrete codevector ids of each frame (inference)."""

    architecture = "Wav2Vec2ForPreTraining"

    def build_head(self, init: Init) -> None:
        config = self.config
        self.quantizer = self._child("quantizer", GumbelVectorQuantizer, init, config)
        self.project_hid = self._child(
            "project_hid", Linear, init, config.hidden_size, config.proj_codevector_dim
        )
        self.project_q = self._child(
            "project_q", Linear, init, config.codevector_dim, config.proj_codevector_dim
        )

    def forward(
        self,
        input_values: tf.Tensor,
        attention_mask: tf.Tensor | None,
        mask_time_indices: tf.Tensor | None,
        training: bool,
    ) -> Forward:
        result = self.wav2vec2.forward(input_values, attention_mask, mask_time_indices, training)
        result.projected_states = self.project_hid(result.last_hidden_state)
        quantized, perplexity, ids = self.quantizer(result.extract_features, mask_time_indices)
        result.projected_quantized_states = self.project_q(quantized)
        result.codevector_perplexity = perplexity
        result.codevector_ids = ids
        return result

    def output_of(self, result: Forward, loss: tf.Tensor | None) -> ModelOutput:
        return Wav2Vec2ForPreTrainingOutput(
            loss=loss,
            projected_states=result.projected_states,
            projected_quantized_states=result.projected_quantized_states,
            codevector_perplexity=result.codevector_perplexity,
            hidden_states=tuple(result.hidden_states),
            attentions=tuple(result.attentions),
            codevector_ids=result.codevector_ids,
        )


#: Our class for each `architectures` entry of config.json.
MODEL_CLASSES: dict[str, type[TFWav2Vec2PreTrainedModel]] = {
    cls.architecture: cls
    for cls in (
        TFWav2Vec2Model,
        TFWav2Vec2ForCTC,
        TFWav2Vec2ForSequenceClassification,
        TFWav2Vec2ForPreTraining,
    )
}

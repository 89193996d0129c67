"""Wav2Vec2 in JAX/Flax: transformers' FlaxWav2Vec2 classes, on our checkpoints and parity bar.

Why a second backend: JAX runs where TensorFlow cannot be brought (a GPU machine with JAX and no
TensorFlow, Dataflow TPU workers), and XLA compiles one program per bucket for any accelerator.

The computation is the TF model's (`models.tf_layers`), step for step: the same exact-padding
rules (group norm over valid frames, padded frames zeroed before the positional convolution, no
attention to padded keys), norms and softmax in float32, and a `dtype` for everything else
("bfloat16" halves the matmuls' cost on GPUs and TPUs; parameters stay float32).

The classes follow transformers' Flax classes wherever a user's code touches them: the `params`
pytree, with transformers' Flax paths (params["wav2vec2"]["encoder"]["layers"]["0"]["attention"]
["q_proj"]["kernel"], the positional convolution weight-normed as "weight_v"/"weight_g"), so
their checkpoints (flax_model.msgpack) and ours load either way; `_do_init=False` and
`init_weights`; `to_bf16`/`to_fp16`/`to_fp32`; `enable_gradient_checkpointing`; calls inside the
user's own `jax.jit`, `jax.grad` and `jax.vmap`, returning output objects that are pytrees.
Flax calls a matrix "kernel" and a norm's weight "scale", and lays kernels out as (in, out) and
(kernel, in, out) just as TensorFlow does, so `named_parameters` hands the pytree to
`models/weights.py`, which loads and saves it exactly as it does the TF model's variables.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from wav2vec2_beam.models import hub
from wav2vec2_beam.models.batching import check_model_inputs
from wav2vec2_beam.models.configuration import Wav2Vec2Config, load_checked_config
from wav2vec2_beam.models.masking import compute_mask_indices
from wav2vec2_beam.models.outputs import (
    OUTPUT_CLASSES,
    CausalLMOutput,
    ModelOutput,
    SequenceClassifierOutput,
    Wav2Vec2BaseModelOutput,
    Wav2Vec2ForPreTrainingOutput,
)
from wav2vec2_beam.models.parameters import Layout, Parameter

#: The seed's name for the mask draw (`modeling_flax_wav2vec2._compute_mask_indices`), so that
#: its pretraining example runs with only the import changed.
_compute_mask_indices = compute_mask_indices

_NEG_INF = -1e9  # additive attention bias for padded keys; finite so all-padded rows stay finite
#: The reference's guard against log(0) in the codevector perplexity.
_PERPLEXITY_EPS = 1e-7

#: Hugging Face's leaf name for each Flax leaf name.
_HF_LEAF = {"kernel": "weight", "scale": "weight"}

_log = logging.getLogger(__name__)


def _register_outputs_as_pytrees() -> None:
    """Output objects pass in and out of `jax.jit` and `jax.grad` as their set fields."""

    def flatten(output: ModelOutput) -> tuple[tuple[Any, ...], tuple[str, ...]]:
        return tuple(output.values()), tuple(output.keys())

    for cls in OUTPUT_CLASSES:
        unflatten = partial(
            lambda kind, keys, values: kind(**dict(zip(keys, values, strict=True))), cls
        )
        jax.tree_util.register_pytree_node(cls, flatten, unflatten)


_register_outputs_as_pytrees()


def _precision(dtype: Any) -> jax.lax.Precision:
    """float32 means float32: XLA would otherwise use TF32 tensor cores for float32 matmuls on
    GPUs (about 1e-3 relative error), which would break the parity bar of the float32 mode."""
    return (
        jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else jax.lax.Precision.DEFAULT
    )


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation transformers' ACT2FN gives for `name`, computed in float32 (exact GELU for
    "gelu"); XLA fuses the casts into the elementwise kernel, so this costs nothing."""
    functions: dict[str, Callable[[jax.Array], jax.Array]] = {
        "gelu": partial(jax.nn.gelu, approximate=False),
        "gelu_new": partial(jax.nn.gelu, approximate=True),
        "gelu_fast": partial(jax.nn.gelu, approximate=True),
        "gelu_pytorch_tanh": partial(jax.nn.gelu, approximate=True),
        "relu": jax.nn.relu,
        "swish": jax.nn.silu,
        "silu": jax.nn.silu,
        "tanh": jnp.tanh,
    }
    if name not in functions:
        raise ValueError(f"unsupported activation {name!r}")
    function = functions[name]
    return lambda x: function(x.astype(jnp.float32)).astype(x.dtype)


def _uniform(bound: float) -> Callable[..., jax.Array]:
    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Dense(nn.Module):
    """x @ kernel + bias, kernel (in, out): PyTorch's nn.Linear with TensorFlow's layout."""

    features: int
    dtype: Any = jnp.float32
    std: float | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d_in = x.shape[-1]
        init = nn.initializers.normal(self.std) if self.std else _uniform(1 / math.sqrt(d_in))
        kernel = self.param("kernel", init, (d_in, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jnp.matmul(
            x.astype(self.dtype), kernel.astype(self.dtype), precision=_precision(self.dtype)
        )
        return y + bias.astype(self.dtype)


class Conv(nn.Module):
    """A 1-D valid convolution over time, channels last; kernel (kernel, in / groups, out)."""

    features: int
    kernel_size: int
    stride: int = 1
    groups: int = 1
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d_in = x.shape[-1] // self.groups
        std = math.sqrt(2.0 / (d_in * self.kernel_size))
        kernel = self.param(
            "kernel", nn.initializers.normal(std), (self.kernel_size, d_in, self.features)
        )
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(self.stride,),
            padding="VALID",
            dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=self.groups,
            precision=_precision(self.dtype),
        )
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,))
            y = y + bias.astype(self.dtype)
        return y


def _normalized(
    x: jax.Array,
    mean: jax.Array,
    variance: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    eps: float,
) -> jax.Array:
    return (x - mean) * jax.lax.rsqrt(variance + eps) * scale + bias


class LayerNorm(nn.Module):
    """Normalization over the last axis in float32 (PyTorch's nn.LayerNorm: biased variance)."""

    eps: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        mean = x32.mean(axis=-1, keepdims=True)
        variance = jnp.square(x32 - mean).mean(axis=-1, keepdims=True)
        return _normalized(x32, mean, variance, scale, bias, self.eps).astype(x.dtype)


class GroupNormOverTime(nn.Module):
    """GroupNorm with one group per channel: each channel normalized over time, in float32.

    With `lengths`, the statistics come from each item's valid frames only, so that padding does
    not change an item's features (the reference includes the padding in its statistics).
    """

    eps: float

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        if lengths is None:
            mean = x32.mean(axis=1, keepdims=True)
            variance = jnp.square(x32 - mean).mean(axis=1, keepdims=True)
        else:
            mask = frame_mask(lengths, x.shape[1])[:, :, None]
            count = jnp.maximum(lengths.astype(jnp.float32), 1.0)[:, None, None]
            mean = (x32 * mask).sum(axis=1, keepdims=True) / count
            variance = jnp.square((x32 - mean) * mask).sum(axis=1, keepdims=True) / count
        return _normalized(x32, mean, variance, scale, bias, self.eps).astype(x.dtype)


def frame_mask(lengths: jax.Array, num_frames: int) -> jax.Array:
    """(B, T) float mask, 1 where the frame index is below the item's length."""
    return (jnp.arange(num_frames)[None, :] < lengths[:, None]).astype(jnp.float32)


def _layer_output_lengths(lengths: Any, kernel: int, stride: int) -> Any:
    lengths = (lengths - kernel) // stride + 1
    return max(lengths, 0) if isinstance(lengths, int) else jnp.maximum(lengths, 0)


def conv_output_lengths(config: Wav2Vec2Config, lengths: Any) -> Any:
    """Frames out of the convolution stack for `lengths` samples (ints or integer arrays)."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        lengths = _layer_output_lengths(lengths, kernel, stride)
    return lengths


class ConvLayer(nn.Module):
    """One layer of the feature encoder: conv, optional norm ("group", "layer" or none), activation."""

    config: Wav2Vec2Config
    index: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None) -> jax.Array:
        config, i = self.config, self.index
        x = Conv(
            config.conv_dim[i],
            config.conv_kernel[i],
            config.conv_stride[i],
            use_bias=config.conv_bias,
            dtype=self.dtype,
            name="conv",
        )(x)
        # PyTorch's GroupNorm / LayerNorm in the conv stack keep their default eps (1e-5).
        if config.feat_extract_norm == "layer":
            x = LayerNorm(1e-5, name="layer_norm")(x)
        elif config.feat_extract_norm == "group" and i == 0:
            x = GroupNormOverTime(1e-5, name="layer_norm")(x, lengths)
        return _activation(config.feat_extract_activation)(x)


class ConvLayers(nn.Module):
    """The convolution stack that turns 16 kHz samples into 50 Hz feature frames."""

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None) -> jax.Array:
        for i, (kernel, stride) in enumerate(
            zip(self.config.conv_kernel, self.config.conv_stride, strict=True)
        ):
            if lengths is not None:
                lengths = _layer_output_lengths(lengths, kernel, stride)
            x = ConvLayer(self.config, i, self.dtype, name=str(i))(x, lengths)
        return x


class FeatureEncoder(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_values: jax.Array, lengths: jax.Array | None) -> jax.Array:
        return ConvLayers(self.config, self.dtype, name="conv_layers")(
            input_values[:, :, None], lengths
        )


class FeatureProjection(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        normed = LayerNorm(self.config.layer_norm_eps, name="layer_norm")(x)
        projected = Dense(self.config.hidden_size, self.dtype, name="projection")(normed)
        projected = nn.Dropout(self.config.feat_proj_dropout)(projected, deterministic=not train)
        return projected, normed


class WeightNormConv(nn.Module):
    """The positional convolution as the reference parametrizes it (PyTorch's weight norm, dim 2):
    `weight_v` (out, in / groups, kernel) and `weight_g` (1, 1, kernel), the kernel being
    g * v / ||v|| with the norm over all but the kernel axis; "same" padded, grouped."""

    features: int
    kernel_size: int
    groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d_in = x.shape[-1] // self.groups
        std = 2 * math.sqrt(1 / (self.kernel_size * self.features))
        weight_v = self.param(
            "weight_v", nn.initializers.normal(std), (self.features, d_in, self.kernel_size)
        )
        weight_g = self.param("weight_g", lambda key, shape: _v_norm(weight_v), (1, 1, 1))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        v32 = weight_v.astype(jnp.float32)
        kernel = weight_g.astype(jnp.float32) * v32 / _v_norm(v32)
        pad = self.kernel_size // 2
        y = jax.lax.conv_general_dilated(
            jnp.pad(x, ((0, 0), (pad, pad), (0, 0))).astype(self.dtype),
            kernel.transpose(2, 1, 0).astype(self.dtype),
            window_strides=(1,),
            padding="VALID",
            dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=self.groups,
            precision=_precision(self.dtype),
        )
        return y + bias.astype(self.dtype)


def _v_norm(weight_v: jax.Array) -> jax.Array:
    """||v|| over all but the kernel axis, shaped (1, 1, kernel) as `weight_g`."""
    return jnp.sqrt(jnp.sum(jnp.square(weight_v), axis=(0, 1), keepdims=True))


class PositionalConvEmbedding(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = WeightNormConv(
            self.config.hidden_size,
            self.config.num_conv_pos_embeddings,
            self.config.num_conv_pos_embedding_groups,
            self.dtype,
            name="conv",
        )(x)
        # An even kernel gives one frame too many (PyTorch's SamePad drops the last).
        return _activation(self.config.feat_extract_activation)(y[:, : x.shape[1]])


class Attention(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, key_bias: jax.Array | None, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """The attended output and the attention probabilities (B, heads, T, T) before dropout."""
        config = self.config
        heads = config.num_attention_heads
        head_dim = config.hidden_size // heads
        batch, frames = x.shape[0], x.shape[1]

        def project(name: str) -> jax.Array:  # (B, T, D) -> (B, T, H, D/H)
            dense = Dense(config.hidden_size, self.dtype, config.initializer_range, name=name)
            return dense(x).reshape(batch, frames, heads, head_dim)

        q, k, v = project("q_proj"), project("k_proj"), project("v_proj")
        scores = jnp.einsum(
            "bqhd,bkhd->bhqk",
            q,
            k,
            precision=_precision(self.dtype),
            preferred_element_type=jnp.float32,
        ) * (head_dim**-0.5)
        if key_bias is not None:
            scores = scores + key_bias  # float32: the large negative must not overflow to -inf
        probabilities = jax.nn.softmax(scores, axis=-1)
        weights = nn.Dropout(config.attention_dropout)(probabilities, deterministic=not train)
        context = jnp.einsum(
            "bhqk,bkhd->bqhd", weights.astype(self.dtype), v, precision=_precision(self.dtype)
        )
        out_proj = Dense(config.hidden_size, self.dtype, config.initializer_range, name="out_proj")
        return out_proj(context.reshape(batch, frames, heads * head_dim)), probabilities


class FeedForward(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        config = self.config
        std = config.initializer_range
        x = Dense(config.intermediate_size, self.dtype, std, name="intermediate_dense")(x)
        x = _activation(config.hidden_act)(x)
        x = nn.Dropout(config.activation_dropout)(x, deterministic=not train)
        x = Dense(config.hidden_size, self.dtype, std, name="output_dense")(x)
        return nn.Dropout(config.hidden_dropout)(x, deterministic=not train)


class EncoderLayer(nn.Module):
    """A transformer block: post-norm (base) or pre-norm ("stable layer norm", lv60)."""

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, key_bias: jax.Array | None, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """The block's output and its attention probabilities."""
        config = self.config
        attention = Attention(config, self.dtype, name="attention")
        layer_norm = LayerNorm(config.layer_norm_eps, name="layer_norm")
        feed_forward = FeedForward(config, self.dtype, name="feed_forward")
        final_layer_norm = LayerNorm(config.layer_norm_eps, name="final_layer_norm")
        dropout = nn.Dropout(config.hidden_dropout)
        if config.do_stable_layer_norm:
            attended, probabilities = attention(layer_norm(x), key_bias, train)
            x = x + dropout(attended, deterministic=not train)
            return x + feed_forward(final_layer_norm(x), train), probabilities
        attended, probabilities = attention(x, key_bias, train)
        x = layer_norm(x + dropout(attended, deterministic=not train))
        return final_layer_norm(x + feed_forward(x, train)), probabilities


class EncoderLayers(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32
    #: Recompute each layer's activations in the backward pass instead of keeping them (less
    #: memory for training; the same numbers).
    gradient_checkpointing: bool = False

    @nn.compact
    def __call__(
        self, x: jax.Array, key_bias: jax.Array | None, train: bool
    ) -> tuple[list[jax.Array], list[jax.Array]]:
        """The input of the first layer followed by each layer's output, and each layer's
        attention probabilities."""
        layer = (
            nn.remat(EncoderLayer, static_argnums=(3,))
            if self.gradient_checkpointing
            else (EncoderLayer)
        )
        states, attentions = [x], []
        for i in range(self.config.num_hidden_layers):
            x, probabilities = layer(self.config, self.dtype, name=str(i))(x, key_bias, train)
            states.append(x)
            attentions.append(probabilities)
        return states, attentions


class Encoder(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32
    gradient_checkpointing: bool = False

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array | None, train: bool
    ) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
        """The last hidden state, the reference's `hidden_states` and the attention
        probabilities; for the pre-norm encoder the final layer norm is applied to the last
        hidden state only."""
        config = self.config
        key_bias = None
        if mask is not None:
            x = x * mask[:, :, None].astype(x.dtype)
            key_bias = ((1.0 - mask) * _NEG_INF)[:, None, None, :]
        x = x + PositionalConvEmbedding(config, self.dtype, name="pos_conv_embed")(x)
        layer_norm = LayerNorm(config.layer_norm_eps, name="layer_norm")
        if not config.do_stable_layer_norm:
            x = layer_norm(x)
        x = nn.Dropout(config.hidden_dropout)(x, deterministic=not train)
        layers = EncoderLayers(config, self.dtype, self.gradient_checkpointing, name="layers")
        states, attentions = layers(x, key_bias, train)
        last = layer_norm(states[-1]) if config.do_stable_layer_norm else states[-1]
        return last, states, attentions


class FlaxWav2Vec2Module(nn.Module):
    """The bare encoder (transformers' Wav2Vec2Model): conv features -> projection -> transformer.

    Returns a dict of arrays (a pytree, so that it passes out of `jax.jit`).
    """

    config: Wav2Vec2Config
    dtype: Any = jnp.float32
    gradient_checkpointing: bool = False

    @nn.compact
    def __call__(
        self,
        input_values: jax.Array,
        attention_mask: jax.Array | None = None,
        mask_time_indices: jax.Array | None = None,
        train: bool = False,
        freeze_feature_encoder: bool = False,
        gumbel_temperature: Any = 1.0,
    ) -> dict[str, Any]:
        config = self.config
        sample_lengths = None
        if attention_mask is not None:
            sample_lengths = attention_mask.astype(jnp.int32).sum(axis=-1)
        features = FeatureEncoder(config, self.dtype, name="feature_extractor")(
            input_values.astype(self.dtype), sample_lengths
        )
        if freeze_feature_encoder:
            features = jax.lax.stop_gradient(features)
        mask = None
        if sample_lengths is not None:
            mask = frame_mask(conv_output_lengths(config, sample_lengths), features.shape[1])
        hidden, extract_features = FeatureProjection(config, self.dtype, name="feature_projection")(
            features, train
        )
        if config.mask_time_prob > 0 or config.mask_feature_prob > 0:
            embed = self.param("masked_spec_embed", _uniform(1.0), (config.hidden_size,)).astype(
                hidden.dtype
            )
            if mask_time_indices is not None and config.apply_spec_augment:
                hidden = jnp.where(mask_time_indices.astype(bool)[:, :, None], embed, hidden)
        elif mask_time_indices is not None and config.apply_spec_augment:
            raise ValueError(
                "mask_time_indices needs masked_spec_embed, which this checkpoint does not have "
                "(mask_time_prob and mask_feature_prob are 0 in its config)"
            )
        encoder = Encoder(config, self.dtype, self.gradient_checkpointing, name="encoder")
        last, states, attentions = encoder(hidden, mask, train)
        return {
            "last_hidden_state": last,
            "extract_features": extract_features,
            "hidden_states": tuple(states),
            "attentions": tuple(attentions),
            "frame_mask": mask,
        }


class _HeadModule(nn.Module):
    """The encoder (its parameters under "wav2vec2"), then the head's `head`: one call for all."""

    config: Wav2Vec2Config
    dtype: Any = jnp.float32
    gradient_checkpointing: bool = False

    @nn.compact
    def __call__(
        self,
        input_values: jax.Array,
        attention_mask: jax.Array | None = None,
        mask_time_indices: jax.Array | None = None,
        train: bool = False,
        freeze_feature_encoder: bool = False,
        gumbel_temperature: Any = 1.0,
    ) -> dict[str, Any]:
        encoder = FlaxWav2Vec2Module(
            self.config, self.dtype, self.gradient_checkpointing, name="wav2vec2"
        )
        output = encoder(
            input_values, attention_mask, mask_time_indices, train, freeze_feature_encoder
        )
        return {**output, **self.head(output, mask_time_indices, train, gumbel_temperature)}

    def head(
        self,
        output: dict[str, Any],
        mask_time_indices: jax.Array | None,
        train: bool,
        gumbel_temperature: Any,
    ) -> dict[str, Any]:
        """The head's outputs from the encoder's (its submodules are created here, by name)."""
        raise NotImplementedError


class FlaxWav2Vec2ForCTCModule(_HeadModule):
    def head(
        self,
        output: dict[str, Any],
        mask_time_indices: jax.Array | None,
        train: bool,
        gumbel_temperature: Any,
    ) -> dict[str, Any]:
        config = self.config
        hidden = nn.Dropout(config.final_dropout)(
            output["last_hidden_state"], deterministic=not train
        )
        lm_head = Dense(config.vocab_size, self.dtype, config.initializer_range, name="lm_head")
        return {"logits": lm_head(hidden)}


class FlaxWav2Vec2ForSequenceClassificationModule(_HeadModule):
    """Encoder + mean-pooled projection + classifier (keyword spotting, emotion, language id)."""

    def head(
        self,
        output: dict[str, Any],
        mask_time_indices: jax.Array | None,
        train: bool,
        gumbel_temperature: Any,
    ) -> dict[str, Any]:
        config = self.config
        if config.use_weighted_layer_sum:
            layers = config.num_hidden_layers + 1
            weights = jax.nn.softmax(
                self.param("layer_weights", nn.initializers.constant(1.0 / layers), (layers,))
            )
            stacked = jnp.stack(output["hidden_states"], axis=0)
            hidden = jnp.tensordot(
                weights.astype(stacked.dtype), stacked, axes=1, precision=_precision(self.dtype)
            )
        else:
            hidden = output["last_hidden_state"]
        std = config.initializer_range
        projected = Dense(config.classifier_proj_size, self.dtype, std, name="projector")(hidden)
        if output["frame_mask"] is None:
            pooled = projected.mean(axis=1)
        else:
            # In float32: bfloat16 counts frames exactly only up to 256.
            mask = output["frame_mask"][:, :, None]
            total = (projected.astype(jnp.float32) * mask).sum(axis=1)
            pooled = (total / mask.sum(axis=1)).astype(projected.dtype)
        classifier = Dense(config.num_labels, self.dtype, std, name="classifier")
        return {"logits": classifier(pooled)}


class FlaxWav2Vec2GumbelVectorQuantizer(nn.Module):
    """Product quantizer of the pretraining head: one codevector per group for each frame.

    At inference the hard argmax choice, as the reference makes it in eval mode. In training
    (`train=True`, with a "gumbel" rng) the reference's straight-through Gumbel-softmax: a hard
    one-hot choice forward, the soft distribution's gradient backward, at `temperature`.
    """

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @staticmethod
    def _compute_perplexity(probs: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """exp(entropy) of the codevector distribution averaged over frames (those of `mask`
        only), summed over groups; `probs` is (frames, groups, codevectors per group)."""
        probs = jnp.asarray(probs)
        if mask is None:
            marginal = probs.mean(axis=0)
        else:
            chosen = jnp.asarray(mask).reshape(-1).astype(probs.dtype)[:, None, None]
            marginal = (probs * chosen).sum(axis=0) / chosen.sum()
        entropy = -(marginal * jnp.log(marginal + _PERPLEXITY_EPS)).sum(axis=-1)
        return jnp.exp(entropy).sum()

    @nn.compact
    def __call__(
        self,
        features: jax.Array,
        mask_time_indices: jax.Array | None,
        train: bool = False,
        temperature: Any = 1.0,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Returns (quantized features, perplexity, codevector ids (B, T, groups))."""
        config = self.config
        groups, per_group = config.num_codevector_groups, config.num_codevectors_per_group
        width = config.codevector_dim // groups
        codevectors = self.param("codevectors", _uniform(1.0), (1, groups * per_group, width))
        scores = Dense(groups * per_group, self.dtype, 1.0, name="weight_proj")(features)
        batch, frames = features.shape[0], features.shape[1]
        scores = scores.astype(jnp.float32).reshape(batch, frames, groups, per_group)
        if train:
            noise = jax.random.gumbel(self.make_rng("gumbel"), scores.shape)
            soft = jax.nn.softmax((scores + noise) / temperature, axis=-1)
            ids = jnp.argmax(soft, axis=-1).astype(jnp.int32)
            hard = jax.nn.one_hot(ids, per_group, dtype=jnp.float32)
            probs = hard - jax.lax.stop_gradient(soft) + soft
            spread = jax.nn.softmax(scores, axis=-1)
        else:
            ids = jnp.argmax(scores, axis=-1).astype(jnp.int32)
            probs = spread = jax.nn.one_hot(ids, per_group, dtype=jnp.float32)
        mask = None if mask_time_indices is None else mask_time_indices.reshape(-1)
        perplexity = self._compute_perplexity(spread.reshape(-1, groups, per_group), mask)
        table = codevectors.reshape(groups, per_group, width)
        quantized = jnp.einsum("btgv,gvd->btgd", probs, table, precision=jax.lax.Precision.HIGHEST)
        return quantized.reshape(batch, frames, -1), perplexity, ids


#: The name this module had before it took transformers' (the hf-suite's imports use it).
GumbelVectorQuantizer = FlaxWav2Vec2GumbelVectorQuantizer


class FlaxWav2Vec2ForPreTrainingModule(_HeadModule):
    """Encoder + quantizer + projections: the discrete codevector ids of each frame."""

    def head(
        self,
        output: dict[str, Any],
        mask_time_indices: jax.Array | None,
        train: bool,
        gumbel_temperature: Any,
    ) -> dict[str, Any]:
        config = self.config
        quantizer = FlaxWav2Vec2GumbelVectorQuantizer(config, self.dtype, name="quantizer")
        features = nn.Dropout(config.feat_quantizer_dropout)(
            output["extract_features"], deterministic=not train
        )
        quantized, perplexity, ids = quantizer(
            features, mask_time_indices, train, gumbel_temperature
        )
        project_hid = Dense(config.proj_codevector_dim, self.dtype, name="project_hid")
        # The quantized states are float32 codevectors (as in the TF model), projected in float32.
        project_q = Dense(config.proj_codevector_dim, jnp.float32, name="project_q")
        return {
            "projected_states": project_hid(output["last_hidden_state"]),
            "projected_quantized_states": project_q(quantized),
            "codevector_perplexity": perplexity,
            "codevector_ids": ids,
        }


def _sample_negative_indices(
    features_shape: tuple[int, int, int],
    num_negatives: int,
    attention_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the negatives of the contrastive pretraining loss: for every frame,
    `num_negatives` other frames of the same item (never the frame itself, never padding),
    uniformly; (batch, frames * num_negatives) indices into the (batch * frames) flattened
    features. Drawn from numpy's global generator, as transformers' function does."""
    batch, frames = int(features_shape[0]), int(features_shape[1])
    if frames <= 1:
        raise ValueError(f"features need more than one frame to sample negatives, got {frames}")
    lengths = (
        np.asarray(attention_mask).sum(-1).astype(int)
        if attention_mask is not None
        else np.full(batch, frames)
    )
    own = np.repeat(np.arange(frames), num_negatives)  # the frame each draw is for
    indices = np.empty((batch, frames * num_negatives), np.int32)
    for item in range(batch):
        # Draw among the item's other valid frames: one fewer, then skip past the frame itself.
        drawn = np.random.randint(0, max(lengths[item] - 1, 1), size=frames * num_negatives)
        drawn[drawn >= own] += 1
        indices[item] = drawn + item * frames
    return indices


class _Slot:
    """One leaf of a nested parameter dict, seen as the variable `models/weights.py` assigns."""

    def __init__(self, tree: dict[str, Any], path: tuple[str, ...]) -> None:
        self._tree, self._path = tree, path

    def _parent(self) -> dict[str, Any]:
        node = self._tree
        for key in self._path[:-1]:
            node = node[key]
        return node

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._parent()[self._path[-1]].shape)

    def assign(self, value: np.ndarray) -> None:
        self._parent()[self._path[-1]] = value

    def numpy(self) -> np.ndarray:
        return np.asarray(self._parent()[self._path[-1]])


def _layout(path: tuple[str, ...], ndim: int) -> Layout:
    if path[-1] != "kernel":
        return "same"
    return "linear" if ndim == 2 else "conv"


class _ParamTree:
    """A params pytree as `models/weights.py` loads into and saves from (`NamedParameters`)."""

    def __init__(self, tree: dict[str, Any], model: FlaxWav2Vec2PreTrainedModel) -> None:
        self.tree = tree
        self.config = model.config
        self.architecture = model.architecture
        self.base_prefix = model.base_prefix
        self.keeps_checkpoint_dtype = True  # fp16/bf16 checkpoints stay so, as in transformers

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(Hugging Face name, parameter) for every leaf (see the module docstring)."""
        for path in flatten_dict(self.tree):
            slot = _Slot(self.tree, path)
            yield prefix + _hf_name(path), Parameter(slot, _layout(path, len(slot.shape)))


def _hf_name(path: tuple[str, ...]) -> str:
    return ".".join([*path[:-1], _HF_LEAF.get(path[-1], path[-1])])


def _mutable(tree: Any) -> Any:
    """A plain nested dict copy (flax may hand back frozen mappings)."""
    if isinstance(tree, Mapping):
        return {key: _mutable(value) for key, value in tree.items()}
    return tree


def _apply(
    module: nn.Module,
    params: dict[str, Any],
    input_values: jax.Array,
    attention_mask: jax.Array | None,
    mask_time_indices: jax.Array | None,
    gumbel_temperature: jax.Array,
    rngs: dict[str, jax.Array],
    train: bool,
    freeze_feature_encoder: bool,
    output_hidden_states: bool,
    output_attentions: bool,
) -> dict[str, Any]:
    output = module.apply(
        {"params": params},
        input_values,
        attention_mask,
        mask_time_indices,
        train,
        freeze_feature_encoder,
        gumbel_temperature,
        rngs=rngs,
    )
    # Inside the program, so that unrequested states never reach the device's memory.
    return {
        **output,
        "hidden_states": output["hidden_states"] if output_hidden_states else None,
        "attentions": output["attentions"] if output_attentions else None,
    }


def _cast_floats(params: Any, dtype: Any, mask: Any = None) -> Any:
    """`params` with its floating leaves cast to `dtype`, those where `mask` is True only."""
    flat = flatten_dict(_mutable(params))
    chosen = flatten_dict(_mutable(mask)) if mask is not None else {}

    def cast(path: tuple[str, ...], value: Any) -> Any:
        if not chosen.get(path, True) or not jnp.issubdtype(value.dtype, jnp.floating):
            return value
        return jnp.asarray(value, dtype)

    return unflatten_dict({path: cast(path, value) for path, value in flat.items()})


class FlaxWav2Vec2PreTrainedModel:
    """Shared loading and calling of the Flax heads: a linen module and its `params` pytree.

    As in transformers' Flax classes, the model object holds the parameters and calling it runs
    the module on them; `params=` runs it on other ones (a training step's), and `dtype` is the
    computation type ("bfloat16" on GPUs and TPUs) while the parameters stay float32. Built with
    `_do_init=False`, it holds none (`params` raises): every call takes `params=`. Each call is
    compiled (`jax.jit`) once per input shape and option set, and also runs inside the caller's
    own `jax.jit`, `jax.grad` or `jax.vmap`.
    """

    config_class = Wav2Vec2Config
    module_class: type[nn.Module] = FlaxWav2Vec2Module
    #: The key of the encoder's params in a head's `params`.
    base_model_prefix: str | None = "wav2vec2"
    main_input_name = "input_values"
    #: Prefix of the encoder's weights in the checkpoint ("" for the bare model).
    base_prefix: str = "wav2vec2."
    #: The reference's class name, as `architectures` in config.json spells it.
    architecture: str = ""

    def __init__(
        self,
        config: Wav2Vec2Config,
        input_shape: tuple[int, int] | None = None,
        seed: int = 0,
        dtype: Any = jnp.float32,
        _do_init: bool = True,
        gradient_checkpointing: bool = False,
    ) -> None:
        config.validate()
        self.config = config
        self.dtype = jnp.dtype(dtype)
        self.key = jax.random.PRNGKey(seed)
        self.input_shape = input_shape or (1, max(1024, config.receptive_field))
        self._do_init = _do_init
        self._build(gradient_checkpointing)
        self.params_shape_tree = _mutable(
            jax.eval_shape(lambda key: self.init_weights(key, self.input_shape), self.key)
        )
        self.required_params = frozenset(flatten_dict(self.params_shape_tree))
        self._params = self.init_weights(self.key, self.input_shape) if _do_init else None

    def _build(self, gradient_checkpointing: bool) -> None:
        self.module = self.module_class(
            config=self.config, dtype=self.dtype, gradient_checkpointing=gradient_checkpointing
        )
        # A function of the module, not a bound method: a jitted method would keep the model
        # (and its device arrays) alive in a reference cycle.
        self._apply = jax.jit(
            partial(_apply, self.module),
            static_argnames=(
                "train",
                "freeze_feature_encoder",
                "output_hidden_states",
                "output_attentions",
            ),
        )

    # --- parameters --------------------------------------------------------------------------

    @property
    def params(self) -> dict[str, Any]:
        if not self._do_init:
            raise ValueError(
                "this model holds no parameters (built with _do_init=False): pass params= to "
                "each call, or init_weights(model.key, model.input_shape)"
            )
        return self._params

    @params.setter
    def params(self, params: dict[str, Any]) -> None:
        if not self._do_init:
            raise ValueError(
                "this model holds no parameters (built with _do_init=False): pass params= to "
                "each call instead of setting them"
            )
        missing = self.required_params - set(flatten_dict(_mutable(params)))
        if missing:
            raise ValueError(
                f"params lack {len(missing)} required leaves, e.g. {sorted(missing)[0]}"
            )
        self._params = params

    def init_weights(
        self, rng: jax.Array, input_shape: tuple[int, int], params: Any = None
    ) -> dict[str, Any]:
        """Freshly drawn parameters; with `params`, only the leaves `params` lacks are drawn."""
        values = jnp.zeros(input_shape, jnp.float32)
        mask = jnp.ones(input_shape, jnp.int32)
        params_rng, dropout_rng = jax.random.split(rng)
        drawn = self.module.init({"params": params_rng, "dropout": dropout_rng}, values, mask)
        drawn = _mutable(drawn["params"])
        if params is None:
            return drawn
        given = flatten_dict(_mutable(params))
        filled = {path: given.get(path, value) for path, value in flatten_dict(drawn).items()}
        return unflatten_dict(filled)

    def to_bf16(self, params: Any, mask: Any = None) -> Any:
        """`params` with float leaves in bfloat16 (those where `mask` is True)."""
        return _cast_floats(params, jnp.bfloat16, mask)

    def to_fp16(self, params: Any, mask: Any = None) -> Any:
        """`params` with float leaves in float16 (those where `mask` is True)."""
        return _cast_floats(params, jnp.float16, mask)

    def to_fp32(self, params: Any, mask: Any = None) -> Any:
        """`params` with float leaves in float32 (those where `mask` is True)."""
        return _cast_floats(params, jnp.float32, mask)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each encoder layer in the backward pass (training memory), as
        transformers' method of that name does."""
        self._build(gradient_checkpointing=True)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(Hugging Face name, parameter) for every leaf of `params` (see the module docstring)."""
        return _ParamTree(self.params, self).named_parameters(prefix)

    @staticmethod
    def can_generate() -> bool:
        """Wav2Vec2 classifies frames or clips; it generates no sequences (transformers' API)."""
        return False

    # --- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        *,
        config: Wav2Vec2Config | None = None,
        revision: str | None = None,
        dtype: Any = jnp.float32,
        _do_init: bool = True,
        ignore_mismatched_sizes: bool = False,
        from_pt: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Load a Hugging Face checkpoint (safetensors, tf_model.h5 or flax_model.msgpack; a
        folder, a gs:// URL or a hub id) with our TensorFlow-free loader; no torch, no
        transformers. The parameters keep the checkpoint's type (float16 stays float16; see
        `to_fp32`). Keywords naming config attributes override config.json; a checkpoint of
        another head initializes this head anew, as in transformers. With `_do_init=False` the
        model holds no parameters and `(model, params)` is returned, `params` lacking what the
        checkpoint lacks (`init_weights(model.key, model.input_shape, params)` draws it).
        `from_pt` is accepted for transformers' examples: PyTorch-named weights are what this
        loader reads anyway."""
        from wav2vec2_beam.models.loading import apply_plan, plan_checkpoint
        from wav2vec2_beam.models.parameter_shapes import expected_parameters

        del from_pt
        path = hub.resolve(str(pretrained_model_name_or_path), revision)
        saved = load_checked_config(path)
        config = _overridden(config if config is not None else saved, kwargs)
        config.validate()
        # Checked against what the config implies before the module is traced (models.loading).
        plan = plan_checkpoint(
            path,
            expected_parameters(config, cls.architecture, weight_norm_pair=True),
            cls.__name__,
            cls.architecture,
            cls.base_prefix,
            saved.architecture,
            ignore_mismatched_sizes,
            allow_missing=not _do_init,
            keep_dtype=True,
        )
        model = cls(config, dtype=dtype, _do_init=False)
        tree = _mutable(model.params_shape_tree)
        fresh = apply_plan(_ParamTree(tree, model), plan)
        loaded = {
            path: jnp.asarray(value)
            for path, value in flatten_dict(tree).items()
            if _hf_name(path) not in fresh
        }
        params = unflatten_dict(loaded)
        if not _do_init:
            return model, params
        if fresh:
            params = model.init_weights(model.key, model.input_shape, params)
        model._do_init = True
        model._params = params
        return model

    def save_pretrained(self, save_directory: str | os.PathLike[str], params: Any = None) -> None:
        """Write config.json and model.safetensors in the Hugging Face layout, from `params`
        (default: the model's own), each tensor in its own type."""
        from wav2vec2_beam.models.weights import save_checkpoint

        tree = _mutable(params if params is not None else self.params)
        save_checkpoint(_ParamTree(tree, self), str(save_directory))

    # --- calling -----------------------------------------------------------------------------

    def _get_feat_extract_output_lengths(self, input_lengths: Any) -> Any:
        """Output frames for `input_lengths` samples (the seed's name; ints or arrays)."""
        if isinstance(input_lengths, int | np.integer):
            return conv_output_lengths(self.config, int(input_lengths))
        return conv_output_lengths(self.config, jnp.asarray(input_lengths))

    def __call__(
        self,
        input_values: Any,
        attention_mask: Any = None,
        mask_time_indices: Any = None,
        params: dict[str, Any] | None = None,
        dropout_rng: jax.Array | None = None,
        train: bool = False,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        freeze_feature_encoder: bool = False,
        return_dict: bool | None = None,
        gumbel_rng: jax.Array | None = None,
        gumbel_temperature: float = 1.0,
    ) -> ModelOutput | tuple[Any, ...]:
        """Run the model on a (batch, samples) array of normalized 16 kHz audio.

        `attention_mask` (batch, samples) marks real samples with 1 and padding with 0.
        `train=True` applies the config's dropouts and needs `dropout_rng` (and, for the
        pretraining head, `gumbel_rng` for its Gumbel-softmax quantizer). `hidden_states` and
        `attentions` are returned when asked for (here or in the config), a tuple instead of an
        output object with `return_dict=False`.
        """
        config = self.config
        values = jnp.asarray(input_values, jnp.float32)
        mask = None if attention_mask is None else jnp.asarray(attention_mask, jnp.int32)
        if mask is None:
            check_model_inputs(config, values.shape)
        else:
            # Lengths are checked when known: not inside the caller's jax.jit.
            concrete = not isinstance(mask, jax.core.Tracer)
            lengths = (
                mask.sum(axis=-1).tolist() if concrete and mask.shape == values.shape else None
            )
            check_model_inputs(config, values.shape, mask.shape, lengths)
        if mask_time_indices is not None:
            mask_time_indices = jnp.asarray(mask_time_indices, bool)
        rngs = {}
        if train:
            if dropout_rng is None:
                raise ValueError(
                    "train=True applies dropout: pass dropout_rng=jax.random.PRNGKey(...)"
                )
            rngs["dropout"] = dropout_rng
            if isinstance(self, FlaxWav2Vec2ForPreTraining):
                if gumbel_rng is None:
                    raise ValueError(
                        "train=True draws the quantizer's Gumbel noise: pass gumbel_rng=..."
                    )
                rngs["gumbel"] = gumbel_rng
        pick = lambda given, default: bool(default if given is None else given)  # noqa: E731
        raw = self._apply(
            self.params if params is None else params,
            values,
            mask,
            mask_time_indices,
            jnp.asarray(gumbel_temperature, jnp.float32),
            rngs,
            train=train,
            freeze_feature_encoder=freeze_feature_encoder,
            output_hidden_states=pick(output_hidden_states, config.output_hidden_states),
            output_attentions=pick(output_attentions, config.output_attentions),
        )
        output = self.output_of(raw)
        return output if pick(return_dict, config.use_return_dict) else output.to_tuple()

    def output_of(self, raw: dict[str, Any]) -> ModelOutput:
        """The head's output object from the module's arrays."""
        return Wav2Vec2BaseModelOutput(
            last_hidden_state=raw["last_hidden_state"],
            extract_features=raw["extract_features"],
            hidden_states=raw["hidden_states"],
            attentions=raw["attentions"],
        )


def _overridden(config: Wav2Vec2Config, overrides: dict[str, Any]) -> Wav2Vec2Config:
    """`config` with config attributes set from `overrides`; TypeError for other keywords."""
    unknown = sorted(key for key in overrides if not hasattr(config, key))
    if unknown:
        raise TypeError(f"from_pretrained got unexpected keyword arguments {unknown}")
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


class FlaxWav2Vec2Model(FlaxWav2Vec2PreTrainedModel):
    """The bare encoder: last_hidden_state, extract_features and hidden_states."""

    module_class = FlaxWav2Vec2Module
    #: Its params are the encoder's own, under no prefix (the heads keep them under "wav2vec2").
    base_model_prefix = None
    base_prefix = ""
    architecture = "Wav2Vec2Model"


class FlaxWav2Vec2ForCTC(FlaxWav2Vec2PreTrainedModel):
    """Encoder + linear CTC head over the vocabulary (speech recognition)."""

    module_class = FlaxWav2Vec2ForCTCModule
    architecture = "Wav2Vec2ForCTC"

    def output_of(self, raw: dict[str, Any]) -> ModelOutput:
        return CausalLMOutput(
            logits=raw["logits"], hidden_states=raw["hidden_states"], attentions=raw["attentions"]
        )


class FlaxWav2Vec2ForSequenceClassification(FlaxWav2Vec2PreTrainedModel):
    """Encoder + mean-pooled projection + classifier (beyond the seed, which has no Flax one)."""

    module_class = FlaxWav2Vec2ForSequenceClassificationModule
    architecture = "Wav2Vec2ForSequenceClassification"

    def output_of(self, raw: dict[str, Any]) -> ModelOutput:
        return SequenceClassifierOutput(
            logits=raw["logits"], hidden_states=raw["hidden_states"], attentions=raw["attentions"]
        )


class FlaxWav2Vec2ForPreTraining(FlaxWav2Vec2PreTrainedModel):
    """Encoder + quantizer + projections: projected and quantized states, codevector ids."""

    module_class = FlaxWav2Vec2ForPreTrainingModule
    architecture = "Wav2Vec2ForPreTraining"

    def output_of(self, raw: dict[str, Any]) -> ModelOutput:
        return Wav2Vec2ForPreTrainingOutput(
            projected_states=raw["projected_states"],
            projected_quantized_states=raw["projected_quantized_states"],
            codevector_perplexity=raw["codevector_perplexity"],
            hidden_states=raw["hidden_states"],
            attentions=raw["attentions"],
            codevector_ids=raw["codevector_ids"],
        )


#: Our Flax class for each `architectures` entry of config.json.
FLAX_MODEL_CLASSES: dict[str, type[FlaxWav2Vec2PreTrainedModel]] = {
    cls.architecture: cls
    for cls in (
        FlaxWav2Vec2Model,
        FlaxWav2Vec2ForCTC,
        FlaxWav2Vec2ForSequenceClassification,
        FlaxWav2Vec2ForPreTraining,
    )
}

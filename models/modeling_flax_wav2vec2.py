"""Wav2Vec2 in JAX/Flax: transformers' FlaxWav2Vec2 classes, on our checkpoints and parity bar.

Why a second backend: JAX runs where TensorFlow cannot be brought (a GPU machine with JAX and no
TensorFlow, Dataflow TPU workers), and XLA compiles one program per bucket for any accelerator.

The computation is the TF model's (`modeling_wav2vec2`), step for step: the same exact-padding
rules (group norm over valid frames, padded frames zeroed before the positional convolution, no
attention to padded keys), norms and softmax in float32, and a `dtype` for everything else
("bfloat16" halves the matmuls' cost on GPUs and TPUs; parameters stay float32).

Parameters form one nested dict (the `params` pytree), whose paths are the Hugging Face names:
"wav2vec2.encoder.layers.0.attention.q_proj.weight" lives at
params["wav2vec2"]["encoder"]["layers"]["0"]["attention"]["q_proj"]["kernel"]. Flax calls a
matrix "kernel" and a norm's weight "scale", and lays kernels out as (in, out) and (kernel, in, out)
just as TensorFlow does, so `named_parameters` hands the pytree to `models/weights.py`, which loads
and saves it exactly as it does the TF model's variables.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import hub
from models.batching import check_model_inputs
from models.configuration import Wav2Vec2Config
from models.masking import compute_mask_indices
from models.outputs import Wav2Vec2Output
from models.parameters import Layout, Parameter

#: The seed's name for the mask draw (`modeling_flax_wav2vec2._compute_mask_indices`), so that
#: its pretraining example runs with only the import changed.
_compute_mask_indices = compute_mask_indices

_NEG_INF = -1e9  # additive attention bias for padded keys; finite so all-padded rows stay finite

#: Hugging Face's leaf name for each Flax leaf name.
_HF_LEAF = {"kernel": "weight", "scale": "weight"}


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


class PositionalConvEmbedding(nn.Module):
    """Grouped convolution over time, "same" padded; weight norm is folded into `conv.kernel`."""

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_size = self.config.num_conv_pos_embeddings
        pad = kernel_size // 2
        padded = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)))
        y = Conv(
            self.config.hidden_size,
            kernel_size,
            groups=self.config.num_conv_pos_embedding_groups,
            dtype=self.dtype,
            name="conv",
        )(padded)
        # An even kernel gives one frame too many (PyTorch's SamePad drops the last).
        return _activation(self.config.feat_extract_activation)(y[:, : x.shape[1]])


class Attention(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, key_bias: jax.Array | None, train: bool) -> jax.Array:
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
        weights = jax.nn.softmax(scores, axis=-1)
        weights = nn.Dropout(config.attention_dropout)(weights, deterministic=not train)
        context = jnp.einsum(
            "bhqk,bkhd->bqhd", weights.astype(self.dtype), v, precision=_precision(self.dtype)
        )
        return Dense(config.hidden_size, self.dtype, config.initializer_range, name="out_proj")(
            context.reshape(batch, frames, heads * head_dim)
        )


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
    def __call__(self, x: jax.Array, key_bias: jax.Array | None, train: bool) -> jax.Array:
        config = self.config
        attention = Attention(config, self.dtype, name="attention")
        layer_norm = LayerNorm(config.layer_norm_eps, name="layer_norm")
        feed_forward = FeedForward(config, self.dtype, name="feed_forward")
        final_layer_norm = LayerNorm(config.layer_norm_eps, name="final_layer_norm")
        dropout = nn.Dropout(config.hidden_dropout)
        if config.do_stable_layer_norm:
            attended = attention(layer_norm(x), key_bias, train)
            x = x + dropout(attended, deterministic=not train)
            return x + feed_forward(final_layer_norm(x), train)
        attended = attention(x, key_bias, train)
        x = layer_norm(x + dropout(attended, deterministic=not train))
        return final_layer_norm(x + feed_forward(x, train))


class EncoderLayers(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, key_bias: jax.Array | None, train: bool) -> list[jax.Array]:
        """The input of the first layer followed by each layer's output."""
        states = [x]
        for i in range(self.config.num_hidden_layers):
            x = EncoderLayer(self.config, self.dtype, name=str(i))(x, key_bias, train)
            states.append(x)
        return states


class Encoder(nn.Module):
    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array | None, train: bool
    ) -> tuple[jax.Array, list[jax.Array]]:
        """The last hidden state and the reference's `hidden_states`; for the pre-norm encoder
        the final layer norm is applied to the last hidden state only."""
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
        states = EncoderLayers(config, self.dtype, name="layers")(x, key_bias, train)
        last = layer_norm(states[-1]) if config.do_stable_layer_norm else states[-1]
        return last, states


class Wav2Vec2Module(nn.Module):
    """The bare encoder (transformers' Wav2Vec2Model): conv features -> projection -> transformer.

    Returns a dict of arrays (a pytree, so that it passes out of `jax.jit`).
    """

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        input_values: jax.Array,
        attention_mask: jax.Array | None = None,
        mask_time_indices: jax.Array | None = None,
        train: bool = False,
        freeze_feature_encoder: bool = False,
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
            if mask_time_indices is not None:
                hidden = jnp.where(mask_time_indices.astype(bool)[:, :, None], embed, hidden)
        elif mask_time_indices is not None:
            raise ValueError(
                "mask_time_indices needs masked_spec_embed, which this checkpoint does not have "
                "(mask_time_prob and mask_feature_prob are 0 in its config)"
            )
        last, states = Encoder(config, self.dtype, name="encoder")(hidden, mask, train)
        return {
            "last_hidden_state": last,
            "extract_features": extract_features,
            "hidden_states": tuple(states),
            "frame_mask": mask,
        }


class _HeadModule(nn.Module):
    """The encoder (its parameters under "wav2vec2"), then the head's `head`: one call for all."""

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        input_values: jax.Array,
        attention_mask: jax.Array | None = None,
        mask_time_indices: jax.Array | None = None,
        train: bool = False,
        freeze_feature_encoder: bool = False,
    ) -> dict[str, Any]:
        config = self.config
        output = Wav2Vec2Module(config, self.dtype, name="wav2vec2")(
            input_values, attention_mask, mask_time_indices, train, freeze_feature_encoder
        )
        return {**output, **self.head(output, mask_time_indices, train)}

    def head(
        self, output: dict[str, Any], mask_time_indices: jax.Array | None, train: bool
    ) -> dict[str, Any]:
        """The head's outputs from the encoder's (its submodules are created here, by name)."""
        raise NotImplementedError


class Wav2Vec2ForCTCModule(_HeadModule):
    def head(
        self, output: dict[str, Any], mask_time_indices: jax.Array | None, train: bool
    ) -> dict[str, Any]:
        config = self.config
        hidden = nn.Dropout(config.final_dropout)(
            output["last_hidden_state"], deterministic=not train
        )
        lm_head = Dense(config.vocab_size, self.dtype, config.initializer_range, name="lm_head")
        return {"logits": lm_head(hidden)}


class Wav2Vec2ForSequenceClassificationModule(_HeadModule):
    """Encoder + mean-pooled projection + classifier (keyword spotting, emotion, language id)."""

    def head(
        self, output: dict[str, Any], mask_time_indices: jax.Array | None, train: bool
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


class GumbelVectorQuantizer(nn.Module):
    """Product quantizer of the pretraining head: one codevector per group for each frame.

    The hard argmax choice, as the reference makes it in eval mode (and as we do in training too:
    the Gumbel-softmax draw of pretraining from scratch is not provided).
    """

    config: Wav2Vec2Config
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, features: jax.Array, mask_time_indices: jax.Array | None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Returns (quantized features, perplexity, codevector ids (B, T, groups))."""
        config = self.config
        groups, per_group = config.num_codevector_groups, config.num_codevectors_per_group
        width = config.codevector_dim // groups
        codevectors = self.param("codevectors", _uniform(1.0), (1, groups * per_group, width))
        scores = Dense(groups * per_group, self.dtype, 1.0, name="weight_proj")(features)
        batch, frames = features.shape[0], features.shape[1]
        scores = scores.astype(jnp.float32).reshape(batch, frames, groups, per_group)
        ids = jnp.argmax(scores, axis=-1).astype(jnp.int32)
        probs = jax.nn.one_hot(ids, per_group, dtype=jnp.float32)
        flat = probs.reshape(-1, groups, per_group)
        if mask_time_indices is None:
            marginal = flat.mean(axis=0)
        else:
            chosen = mask_time_indices.reshape(-1).astype(jnp.float32)[:, None, None]
            marginal = (flat * chosen).sum(axis=0) / chosen.sum()
        entropy = -jax.scipy.special.xlogy(marginal, marginal).sum(axis=-1)
        perplexity = jnp.exp(entropy).sum()
        table = codevectors.reshape(groups, per_group, width)
        quantized = jnp.einsum("btgv,gvd->btgd", probs, table, precision=jax.lax.Precision.HIGHEST)
        return quantized.reshape(batch, frames, -1), perplexity, ids


class Wav2Vec2ForPreTrainingModule(_HeadModule):
    """Encoder + quantizer + projections: the discrete codevector ids of each frame."""

    def head(
        self, output: dict[str, Any], mask_time_indices: jax.Array | None, train: bool
    ) -> dict[str, Any]:
        config = self.config
        quantized, perplexity, ids = GumbelVectorQuantizer(config, self.dtype, name="quantizer")(
            output["extract_features"], mask_time_indices
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


def _flat_paths(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat_paths(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _layout(path: tuple[str, ...], ndim: int) -> Layout:
    if path[-1] != "kernel":
        return "same"
    return "linear" if ndim == 2 else "conv"


def _mutable(tree: Any) -> Any:
    """A plain nested dict copy (flax may hand back frozen mappings)."""
    if hasattr(tree, "items"):
        return {key: _mutable(value) for key, value in tree.items()}
    return tree


def _apply(
    module: nn.Module,
    params: dict[str, Any],
    input_values: jax.Array,
    attention_mask: jax.Array | None,
    mask_time_indices: jax.Array | None,
    rngs: dict[str, jax.Array],
    train: bool,
    freeze_feature_encoder: bool,
    output_hidden_states: bool,
) -> dict[str, Any]:
    output = module.apply(
        {"params": params},
        input_values,
        attention_mask,
        mask_time_indices,
        train,
        freeze_feature_encoder,
        rngs=rngs,
    )
    # Inside the program, so that unrequested hidden states never reach the device's memory.
    return output if output_hidden_states else {**output, "hidden_states": None}


class FlaxWav2Vec2PreTrainedModel:
    """Shared loading and calling of the Flax heads: a linen module and its `params` pytree.

    As in transformers' Flax classes, the model object holds the parameters and calling it runs
    the module on them; `params=` runs it on other ones (a training step's), and `dtype` is the
    computation type ("bfloat16" on GPUs and TPUs) while the parameters stay float32. Each call
    is compiled (`jax.jit`) once per input shape and option set.
    """

    module_class: type[nn.Module] = Wav2Vec2Module
    #: Prefix of the encoder's weights in the checkpoint ("" for the bare model).
    base_prefix: str = "wav2vec2."
    #: The reference's class name, as `architectures` in config.json spells it.
    architecture: str = ""

    def __init__(
        self, config: Wav2Vec2Config, seed: int = 0, dtype: Any = jnp.float32, _do_init: bool = True
    ) -> None:
        self.config = config
        self.dtype = jnp.dtype(dtype)
        self.module = self.module_class(config=config, dtype=self.dtype)
        sample = jnp.zeros((1, config.receptive_field), jnp.float32)
        if _do_init:
            params = self.module.init(jax.random.PRNGKey(seed), sample)["params"]
            self.params = jax.tree_util.tree_map(np.asarray, _mutable(params))
        else:  # shapes only: the caller fills every leaf (from_pretrained)
            shapes = jax.eval_shape(self.module.init, jax.random.PRNGKey(seed), sample)["params"]
            self.params = _mutable(shapes)
        # A function of the module, not a bound method: a jitted method would keep the model
        # (and its device arrays) alive in a reference cycle.
        self._apply = jax.jit(
            partial(_apply, self.module),
            static_argnames=("train", "freeze_feature_encoder", "output_hidden_states"),
        )

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(Hugging Face name, parameter) for every leaf of `params` (see the module docstring)."""
        for path in _flat_paths(self.params):
            name = ".".join([*path[:-1], _HF_LEAF.get(path[-1], path[-1])])
            slot = _Slot(self.params, path)
            yield prefix + name, Parameter(slot, _layout(path, len(slot.shape)))

    @classmethod
    def from_pretrained(
        cls, path: str, revision: str | None = None, dtype: Any = jnp.float32
    ) -> FlaxWav2Vec2PreTrainedModel:
        """Load a Hugging Face checkpoint (safetensors or tf_model.h5; a folder, a gs:// URL or a
        hub id) with our TensorFlow-free loader; no torch, no transformers."""
        from models.weights import load_checkpoint_into

        path = hub.resolve(str(path), revision)
        config = Wav2Vec2Config.from_pretrained(path)
        model = cls(config, dtype=dtype, _do_init=False)
        load_checkpoint_into(model, path)
        model.params = jax.tree_util.tree_map(jnp.asarray, model.params)
        return model

    def save_pretrained(self, path: str) -> None:
        """Write config.json and model.safetensors in the Hugging Face layout."""
        from models.weights import save_checkpoint

        save_checkpoint(self, path)

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
        output_hidden_states: bool = False,
        freeze_feature_encoder: bool = False,
    ) -> Wav2Vec2Output:
        """Run the model on a (batch, samples) array of normalized 16 kHz audio.

        `attention_mask` (batch, samples) marks real samples with 1 and padding with 0.
        `train=True` applies the config's dropouts and needs `dropout_rng`. `hidden_states` is
        filled only when `output_hidden_states`.
        """
        values = jnp.asarray(input_values, jnp.float32)
        mask = None if attention_mask is None else jnp.asarray(attention_mask, jnp.int32)
        if mask is None:
            check_model_inputs(self.config, values.shape)
        else:
            lengths = mask.sum(axis=-1).tolist() if mask.shape == values.shape else None
            check_model_inputs(self.config, values.shape, mask.shape, lengths)
        if mask_time_indices is not None:
            mask_time_indices = jnp.asarray(mask_time_indices, bool)
        if train and dropout_rng is None:
            raise ValueError("train=True applies dropout: pass dropout_rng=jax.random.PRNGKey(...)")
        rngs = {"dropout": dropout_rng} if train else {}
        raw = self._apply(
            self.params if params is None else params,
            values,
            mask,
            mask_time_indices,
            rngs,
            train=train,
            freeze_feature_encoder=freeze_feature_encoder,
            output_hidden_states=output_hidden_states,
        )
        return Wav2Vec2Output(**raw)


class FlaxWav2Vec2Model(FlaxWav2Vec2PreTrainedModel):
    """The bare encoder: last_hidden_state, extract_features and hidden_states."""

    module_class = Wav2Vec2Module
    base_prefix = ""
    architecture = "Wav2Vec2Model"


class FlaxWav2Vec2ForCTC(FlaxWav2Vec2PreTrainedModel):
    """Encoder + linear CTC head over the vocabulary (speech recognition)."""

    module_class = Wav2Vec2ForCTCModule
    architecture = "Wav2Vec2ForCTC"


class FlaxWav2Vec2ForSequenceClassification(FlaxWav2Vec2PreTrainedModel):
    """Encoder + mean-pooled projection + classifier (beyond the seed, which has no Flax one)."""

    module_class = Wav2Vec2ForSequenceClassificationModule
    architecture = "Wav2Vec2ForSequenceClassification"


class FlaxWav2Vec2ForPreTraining(FlaxWav2Vec2PreTrainedModel):
    """Encoder + quantizer + projections: projected and quantized states, codevector ids."""

    module_class = Wav2Vec2ForPreTrainingModule
    architecture = "Wav2Vec2ForPreTraining"


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

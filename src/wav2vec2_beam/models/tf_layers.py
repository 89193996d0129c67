"""Wav2Vec2's computation in TensorFlow: the layers, with Hugging Face's parameter names.

Every layer is a small `tf.Module` whose parameters are registered under the exact name the
PyTorch checkpoint uses ("encoder.layers.0.attention.q_proj.weight"), together with the layout
change from PyTorch to TensorFlow. Loading a checkpoint is then a name-for-name copy that can name
every missing, unexpected or mis-shaped weight (see `models/weights.py`). Each variable is also
created under its path as a TensorFlow name ("encoder/layers.0/attention/q_proj/weight"), so that
Keras' weight files, which key weights by name, hold each one once.

This module knows nothing of Keras: the Keras classes users call (`models.modeling_wav2vec2`) own
these layers, and the inference runner (`models.inference`) traces them directly.

Tensors are batch-major and channels-last throughout: audio (B, samples), features (B, T, C).

Padding. The reference (transformers' Wav2Vec2) gives a padded batch the same answers as single
utterances only for layer-norm ("lv60") models. Here every step that mixes time steps respects the
attention mask: the group norm of the first convolution takes its statistics over the valid frames
only, padded frames are zeroed before the positional convolution, and attention never looks at
padded keys. So with a mask, any item of a padded batch gets what it gets alone, for both
architectures; without a mask the computation is exactly the reference's.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from wav2vec2_beam.models.configuration import Wav2Vec2Config
from wav2vec2_beam.models.parameters import Layout, Parameter

_SQRT_HALF = math.sqrt(0.5)
#: transformers' names for GELU's tanh approximation
_TANH_GELUS = ("gelu_new", "gelu_fast", "gelu_pytorch_tanh")
_NEG_INF = -1e9  # additive attention bias for padded keys; finite so all-padded rows stay finite
#: The reference's guard against log(0) in the codevector perplexity.
_PERPLEXITY_EPS = 1e-7


def _activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The activation transformers' ACT2FN gives for `name` (exact erf GELU for "gelu"), as an
    element-wise function of its own (see `_fusable_activation` for one after a matrix product)."""
    if name == "gelu":
        return _gelu_erf
    if name in _TANH_GELUS:
        return lambda x: _in_float32(lambda y: tf.nn.gelu(y, approximate=True), x)
    if name == "relu":
        return tf.nn.relu
    if name in ("swish", "silu"):
        return tf.nn.silu
    if name == "tanh":
        return tf.tanh
    raise ValueError(f"unsupported activation {name!r}")


def _fusable_activation(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The activation `name` written as the ops Grappler's remapper folds into the matrix product
    and bias before it (one oneDNN kernel that applies it to the float32 accumulator, so a
    bfloat16 pass computes it in float32 too): `tf.nn.gelu` in the tensor's own type. Measured
    on a Zen 4 CPU with AVX512-BF16, one feed-forward product of 8 x 10 s of base in bfloat16:
    105 ms with its GELU as separate ops, 50 ms fused (the product alone: 46 ms)."""
    if name == "gelu":
        return lambda x: tf.nn.gelu(x, approximate=False)
    if name in _TANH_GELUS:
        return lambda x: tf.nn.gelu(x, approximate=True)
    return _activation(name)


def _gelu_erf(x: tf.Tensor) -> tf.Tensor:
    """Exact GELU as the reference computes it, x * (1 + erf(x / sqrt 2)) / 2, in float32.

    Not `tf.nn.gelu`: it takes `erfc`, which TensorFlow's CPU kernels compute four times slower
    than `erf` (66 vs 17 ms on 8 x 16000 x 512 floats, Zen 4), and which the convolutions
    cannot fuse anyway; this whole GELU takes 44 ms there against 88 ms for `tf.nn.gelu`.
    """
    return _in_float32(lambda y: y * (0.5 + 0.5 * tf.math.erf(y * _SQRT_HALF)), x)


def _in_float32(function: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor) -> tf.Tensor:
    """`function` computed in float32 whatever `x`'s type, returned in it: TensorFlow's bfloat16
    transcendental kernels are slower than casting to float32 and back (bench/model_profile.py)
    and less accurate."""
    if x.dtype == tf.float32:
        return function(x)
    return tf.cast(function(tf.cast(x, tf.float32)), x.dtype)


#: Draws a parameter's value: from the generator, or (None) without drawing (see `Init`).
Draw = Callable[[tf.random.Generator | None], tf.Tensor]


class Init:
    """Initializers shaped like transformers' `_init_weights`, seeded for training from scratch.

    With no seed the random ones give zeros instead: `from_pretrained` overwrites every weight,
    and drawing 95M random numbers first took over a second of each start-up (base, 2 vCPUs).
    A parameter that a checkpoint turns out not to have is drawn afterwards
    (`Parameter.initialize`), from a generator of its own.
    """

    def __init__(self, seed: int | None) -> None:
        self.generator = None if seed is None else tf.random.Generator.from_seed(seed)

    @staticmethod
    def normal(shape: tuple[int, ...], std: float) -> Draw:
        def draw(generator: tf.random.Generator | None) -> tf.Tensor:
            return tf.zeros(shape) if generator is None else generator.normal(shape, stddev=std)

        return draw

    @staticmethod
    def uniform(shape: tuple[int, ...], bound: float) -> Draw:
        def draw(generator: tf.random.Generator | None) -> tf.Tensor:
            if generator is None:
                return tf.zeros(shape)
            return generator.uniform(shape, -bound, bound)

        return draw

    @staticmethod
    def constant(shape: tuple[int, ...], value: float) -> Draw:
        return lambda generator: tf.fill(shape, tf.constant(value, tf.float32))


class _Untracked:
    """A holder that TensorFlow's object tracking does not look into: the bfloat16 copies of the
    weights (`keep_weights_in`) are a cache of the inference runner, not weights of the model,
    so they must not appear in `trainable_variables`, Keras weight files or SavedModels; nor
    must a traced function."""

    def __init__(self) -> None:
        self.copies: dict[tuple[Any, tf.DType], tf.Variable] = {}
        #: The Keras classes' SavedModel signature, traced once (`serving`).
        self.serving: Any = None


class Named:
    """Hugging Face names for a layer's parameters and children; mixed into the `tf.Module`
    layers below and into the Keras classes that own them (`models.modeling_wav2vec2`)."""

    def _init_named(self, init: Init) -> None:
        self._init = init
        self._params: dict[str, Parameter] = {}
        self._children_by_name: dict[str, Named] = {}
        self._cache = _Untracked()

    def _param(self, name: str, shape: tuple[int, ...], layout: Layout, draw: Draw) -> tf.Variable:
        """A float32 variable named `name` ("weight", or "conv.weight" inside this layer)."""
        *scopes, leaf = name.split(".")
        scope = tf.name_scope("/".join(scopes)) if scopes else contextlib.nullcontext()
        with scope:
            variable = tf.Variable(draw(self._init.generator), name=leaf, dtype=tf.float32)
        assert tuple(variable.shape) == shape, (name, variable.shape, shape)

        def initialize() -> None:
            variable.assign(draw(_late_generator()))

        self._params[name] = Parameter(variable, layout, initialize)
        return variable

    def _child(self, name: str, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`factory(*args, **kwargs)`, built under `name` (its variables' TensorFlow names too)."""
        with tf.name_scope(name):
            layer = factory(*args, **kwargs)
        self._children_by_name[name] = layer
        return layer

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(Hugging Face name, parameter) for every parameter of this layer and its children."""
        for name, param in self._params.items():
            yield prefix + name, param
        for name, child in self._children_by_name.items():
            yield from child.named_parameters(f"{prefix}{name}.")

    def keep_weights_in(self, dtype: tf.DType) -> None:
        """Keep a copy of every weight of this layer and its children in `dtype`, which the
        forward pass then reads instead of casting the float32 weight on every call.

        For inference in bfloat16: casting base's 95M weights took 27 ms of every forward pass
        (Zen 4, 2 vCPUs), a third of a pass over a 1 s clip, and a corpus run has many small
        batches. The copies are of the weights as they are now; they cost half the float32
        weights' memory again.
        """
        for param in self._params.values():
            key = (param.variable.ref(), dtype)
            if key not in self._cache.copies:
                copy = tf.Variable(tf.cast(param.variable, dtype), trainable=False)
                self._cache.copies[key] = copy
        for child in self._children_by_name.values():
            child.keep_weights_in(dtype)

    def _typed(self, variable: tf.Variable, dtype: tf.DType) -> tf.Tensor:
        """`variable` in `dtype`: the copy `keep_weights_in` made, or a cast."""
        copy = self._cache.copies.get((variable.ref(), dtype))
        return tf.cast(variable, dtype) if copy is None else copy


_LATE_SEED = 0
_late: list[tf.random.Generator] = []


def _late_generator() -> tf.random.Generator:
    """The generator of parameters drawn after construction (one per process, seeded)."""
    if not _late:
        _late.append(tf.random.Generator.from_seed(_LATE_SEED))
    return _late[0]


class Layer(Named, tf.Module):
    """A `tf.Module` with named parameters, which can be frozen as a Keras layer can.

    `trainable = False` moves its variables out of `trainable_variables` (so out of Keras'
    `trainable_weights`, and out of what `fit` updates): `freeze_feature_encoder()`.
    """

    def __init__(self, init: Init) -> None:
        super().__init__()
        self._init_named(init)
        self.trainable = True

    @property
    def trainable_variables(self) -> tuple[tf.Variable, ...]:
        return super().trainable_variables if self.trainable else ()

    @property
    def non_trainable_variables(self) -> tuple[tf.Variable, ...]:
        return super().non_trainable_variables if self.trainable else self.variables


class Linear(Layer):
    def __init__(
        self, init: Init, d_in: int, d_out: int, std: float | None = None, bias: bool = True
    ) -> None:
        super().__init__(init)
        bound = 1 / math.sqrt(d_in)
        weight_init = (
            Init.normal((d_in, d_out), std)
            if std is not None
            else Init.uniform((d_in, d_out), bound)
        )
        self.weight = self._param("weight", (d_in, d_out), "linear", weight_init)
        self.bias = None
        if bias:
            bias_init = (
                Init.constant((d_out,), 0.0) if std is not None else Init.uniform((d_out,), bound)
            )
            self.bias = self._param("bias", (d_out,), "same", bias_init)

    def __call__(
        self, x: tf.Tensor, activation: Callable[[tf.Tensor], tf.Tensor] | None = None
    ) -> tf.Tensor:
        """`x @ weight + bias`, then `activation`, over the last axis of any rank.

        The product is taken on `x` flattened to a matrix with `tf.nn.bias_add`, the one shape
        that Grappler's remapper fuses with its bias and activation into one oneDNN kernel (a
        batched product followed by `+` runs as three passes over the output).
        """
        d_in, d_out = self.weight.shape
        y = tf.matmul(tf.reshape(x, [-1, d_in]), self._typed(self.weight, x.dtype))
        if self.bias is not None:
            y = tf.nn.bias_add(y, self._typed(self.bias, x.dtype))
        if activation is not None:
            y = activation(y)
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [d_out]], axis=0))


class LayerNorm(Layer):
    """Normalization over the last axis (PyTorch's nn.LayerNorm: biased variance)."""

    def __init__(self, init: Init, dim: int, eps: float) -> None:
        super().__init__(init)
        self.eps = eps
        self.weight = self._param("weight", (dim,), "same", Init.constant((dim,), 1.0))
        self.bias = self._param("bias", (dim,), "same", Init.constant((dim,), 0.0))

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return _layer_norm(x, self.weight, self.bias, self.eps)


def frame_mask(lengths: tf.Tensor, num_frames: tf.Tensor | int) -> tf.Tensor:
    """(B, T) float mask, 1 where the frame index is below the item's length."""
    return tf.sequence_mask(lengths, num_frames, dtype=tf.float32)


def conv_output_lengths(config: Wav2Vec2Config, lengths: tf.Tensor) -> tf.Tensor:
    """Frames out of the convolution stack for `lengths` samples (0 when too short)."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        lengths = tf.maximum((lengths - kernel) // stride + 1, 0)
    return lengths


class ConvLayer(Layer):
    """One layer of the feature encoder: conv, optional norm ("group", "layer" or none), activation."""

    def __init__(self, init: Init, config: Wav2Vec2Config, index: int) -> None:
        super().__init__(init)
        d_in = config.conv_dim[index - 1] if index > 0 else 1
        d_out = config.conv_dim[index]
        self.kernel_size = config.conv_kernel[index]
        self.stride = config.conv_stride[index]
        self.kernel = self._param(
            "conv.weight",
            (self.kernel_size, d_in, d_out),
            "conv",
            Init.normal(
                (self.kernel_size, d_in, d_out), math.sqrt(2.0 / (d_in * self.kernel_size))
            ),
        )
        self.bias = None
        if config.conv_bias:
            bound = 1 / math.sqrt(d_in * self.kernel_size)
            self.bias = self._param("conv.bias", (d_out,), "same", Init.uniform((d_out,), bound))
        self.norm = None
        if config.feat_extract_norm == "layer":
            self.norm = "layer"
        elif config.feat_extract_norm == "group" and index == 0:
            self.norm = "group"
        if self.norm is not None:
            # PyTorch's GroupNorm / LayerNorm in the conv stack keep their default eps (1e-5).
            self.norm_weight = self._param(
                "layer_norm.weight", (d_out,), "same", Init.constant((d_out,), 1.0)
            )
            self.norm_bias = self._param(
                "layer_norm.bias", (d_out,), "same", Init.constant((d_out,), 0.0)
            )
        self.activation_name = config.feat_extract_activation
        self.activation = _activation(config.feat_extract_activation)
        self.fusable_activation = _fusable_activation(config.feat_extract_activation)

    def output_lengths(self, lengths: tf.Tensor) -> tf.Tensor:
        return tf.maximum((lengths - self.kernel_size) // self.stride + 1, 0)

    def __call__(self, x: tf.Tensor, lengths: tf.Tensor | None, dtype: tf.DType) -> tf.Tensor:
        """`x` is (B, T, C), or (B, samples) for the first layer; `lengths` are the valid output
        frames of each item (None: all of them); the output is in `dtype`."""
        if self.norm == "group":
            return self._group_normed(x, lengths, dtype)
        if len(x.shape) == 2:
            x = x[:, :, None]
        kernel = self._typed(self.kernel, x.dtype)
        if kernel.shape[1] == 1 or x.dtype != tf.float32 or not _one_item_products_pay():
            x = tf.nn.conv1d(x, kernel, stride=self.stride, padding="VALID")
        else:
            x = tf.cond(
                tf.shape(x)[0] == 1,
                lambda: _convolved_as_products(x, kernel, self.stride),
                lambda: tf.nn.conv1d(x, kernel, stride=self.stride, padding="VALID"),
            )
        return self.epilogue(x, dtype)

    def epilogue(self, x: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        """What follows the convolution (its bias, layer norm, activation), on its output `x`,
        returned in `dtype` (not for the group-norm layer, whose epilogue is in its product)."""
        bias = None if self.bias is None else self._typed(self.bias, x.dtype)
        norm = (self.norm_weight, self.norm_bias) if self.norm == "layer" else None
        if _cpu_forms_pay():
            epilogue = _compiled_epilogue(self.activation_name, dtype)
            return _in_row_chunks(lambda rows: epilogue(rows, bias, norm), x, dtype)
        return _conv_epilogue(x, bias, norm, self.activation, dtype)

    def _group_normed(
        self, samples: tf.Tensor, lengths: tf.Tensor | None, dtype: tf.DType
    ) -> tf.Tensor:
        """(B, samples) in; the convolution followed by GroupNorm with one group per channel (each channel
        normalized over time), as one product of each item's frames with its own kernel.

        With `lengths`, the statistics come from each item's valid frames only, so that padding
        does not change an item's features (the reference includes the padding in them).

        This layer makes the widest tensor of the model (512 channels at 3.2 kHz: 0.5 GB for 8 x
        10 s), and a norm over its time axis would take six passes over it. But with one input
        channel the output is linear in each frame's `kernel_size` samples, so its mean and
        variance per channel follow from the mean and covariance of those samples (k x k per
        item, in float64), and the norm folds into a per-item kernel and shift: one product per
        item writes the normalized, activated output (`_per_item_products`; on a GPU one batched
        product). (The convolution's bias cancels in the norm.) Measured on a Zen 4 CPU, 8 x 10 s
        of base with masks, this layer and its cast to bfloat16: 0.37 s as a convolution followed
        by the norm, 0.16 s as a batched product.
        """
        frames = tf.signal.frame(tf.cast(samples, tf.float32), self.kernel_size, self.stride)
        frames64 = tf.cast(frames, tf.float64)  # (B, T, k)
        count = tf.shape(frames)[1]
        if lengths is None:
            lengths = tf.fill(tf.shape(frames)[:1], count)
        over_valid = (
            tf.sequence_mask(lengths, count, dtype=tf.float64)
            / tf.maximum(tf.cast(lengths, tf.float64), 1.0)[:, None]
        )  # (B, T): 1/length on valid frames, 0 on padding
        mean = tf.matmul(over_valid[:, None, :], frames64)  # (B, 1, k)
        centered = frames64 - mean
        covariance = tf.matmul(centered * over_valid[:, :, None], centered, transpose_a=True)
        kernel = tf.cast(self.kernel[:, 0, :], tf.float64)  # (k, C)
        variance = tf.reduce_sum(kernel * tf.matmul(covariance, kernel), axis=1)  # (B, C)
        scale = tf.cast(self.norm_weight, tf.float64) * tf.math.rsqrt(variance + 1e-5)
        shift = tf.cast(self.norm_bias, tf.float64) - tf.matmul(mean, kernel)[:, 0] * scale
        item_kernels = tf.cast(kernel[None] * scale[:, None, :], tf.float32)  # (B, k, C)
        shift = tf.cast(shift, tf.float32)
        if _cpu_forms_pay():
            return _per_item_products(frames, item_kernels, shift, self.fusable_activation, dtype)
        products = tf.matmul(frames, item_kernels) + shift[:, None, :]
        return tf.cast(self.activation(products), dtype)


def _conv_epilogue(
    x: tf.Tensor,
    bias: tf.Tensor | None,
    norm: tuple[tf.Variable, tf.Variable] | None,
    activation: Callable[[tf.Tensor], tf.Tensor],
    dtype: tf.DType,
) -> tf.Tensor:
    """What follows a convolution of the stack, row by row: its bias, its layer norm (weight,
    bias), its activation, and the cast to `dtype`."""
    if bias is not None:
        x = x + bias
    if norm is not None:
        x = _layer_norm(x, *norm, 1e-5)
    return tf.cast(activation(x), dtype)


@functools.cache
def _compiled_epilogue(activation: str, dtype: tf.DType) -> Callable[..., tf.Tensor]:
    """`_conv_epilogue` compiled by XLA into one pass over its input (`_in_row_chunks`)."""

    def epilogue(
        rows: tf.Tensor, bias: tf.Tensor | None, norm: tuple[tf.Variable, tf.Variable] | None
    ) -> tf.Tensor:
        return _conv_epilogue(rows, bias, norm, _activation(activation), dtype)

    return tf.function(epilogue, jit_compile=True, autograph=False)


#: Rows `_in_row_chunks` hands XLA at a time: 2 MB of base's 512 channels in bfloat16 (4 MB in
#: float32); 1024 and 4096 rows measured the same.
_CHUNK_ROWS = 2048


def _in_row_chunks(
    function: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, dtype: tf.DType
) -> tf.Tensor:
    """`function`, which works row by row on (rows, C) and returns `dtype`, applied to x
    (..., C) in chunks of `_CHUNK_ROWS` rows (the last one zero-padded).

    For an XLA-compiled `function`: XLA compiles once per input shape, and a corpus brings a new
    shape with every bucket and batch size; chunks of one shape compile once per process. Each
    chunk is one fused pass, where TensorFlow's own kernels take a pass over the whole tensor
    per operation (a GELU in float32 on a bfloat16 tensor is six: two casts, four arithmetic).
    """
    channels = x.shape[-1]
    rows = tf.reshape(x, [-1, channels])
    count = tf.shape(rows)[0]
    if tf.get_static_value(count) == 0:  # an eager TensorArray cannot concatenate no chunks
        return tf.zeros(tf.shape(x), dtype)
    chunks = (count + _CHUNK_ROWS - 1) // _CHUNK_ROWS
    outputs = tf.TensorArray(dtype, size=chunks, element_shape=[_CHUNK_ROWS, channels])

    def one_chunk(index: tf.Tensor, done: tf.TensorArray) -> tuple[tf.Tensor, tf.TensorArray]:
        chunk = rows[index * _CHUNK_ROWS : (index + 1) * _CHUNK_ROWS]
        chunk = tf.pad(chunk, [[0, _CHUNK_ROWS - tf.shape(chunk)[0]], [0, 0]])
        return index + 1, done.write(index, function(chunk))

    _, outputs = tf.while_loop(lambda index, _: index < chunks, one_chunk, (0, outputs))
    return tf.reshape(outputs.concat()[:count], tf.shape(x))


@functools.cache
def _cpu_forms_pay() -> bool:
    """Whether the convolution stack takes its CPU forms: the first layer one item at a time
    (`_per_item_products`) and the other layers' epilogues XLA-compiled in chunks
    (`_in_row_chunks`). On the CPU each of TensorFlow's element-wise kernels is a pass over
    memory: on 2 vCPUs of a Xeon with AMX, GELU over 8 x 8000 x 512 bfloat16 took 88 ms as
    TensorFlow's kernels and 40 ms compiled. Where a GPU takes the work nothing was measured, so
    the graph stays as it was."""
    return not tf.config.list_logical_devices("GPU")


def _per_item_products(
    frames: tf.Tensor,
    kernels: tf.Tensor,
    shifts: tf.Tensor,
    activation: Callable[[tf.Tensor], tf.Tensor],
    dtype: tf.DType,
) -> tf.Tensor:
    """activation(frames[b] @ kernels[b] + shifts[b]) for each item b, (B, T, k) x (B, k, C),
    in `dtype`.

    One item at a time, so that each product is a matrix product with its shift as a bias, the
    shape Grappler's remapper folds with the activation into one oneDNN kernel (the batch size
    is not known when the model is traced, hence the loop). The batched product followed by its
    shift and a separate activation wrote and read the widest tensor of the model six more times:
    8 x 10 s, 2 vCPUs of a Xeon with AMX, 389 ms batched against 198 ms this way (with the cast
    to bfloat16 after it).
    """
    items, count = tf.shape(frames)[0], tf.shape(frames)[1]
    channels = kernels.shape[-1]
    if tf.get_static_value(items) == 0:  # an eager TensorArray cannot concatenate no items
        return tf.zeros([0, count, channels], dtype)
    outputs = tf.TensorArray(dtype, size=items, element_shape=[None, channels])

    def one_item(index: tf.Tensor, done: tf.TensorArray) -> tuple[tf.Tensor, tf.TensorArray]:
        product = tf.nn.bias_add(tf.matmul(frames[index], kernels[index]), shifts[index])
        return index + 1, done.write(index, tf.cast(activation(product), dtype))

    _, outputs = tf.while_loop(lambda index, _: index < items, one_item, (0, outputs))
    # (concatenated and reshaped: a traced stack of no items needs the time axis's size)
    return tf.reshape(outputs.concat(), [items, count, channels])


@functools.cache
def _one_item_products_pay() -> bool:
    """Whether a one-item float32 batch runs its multi-channel convolutions as products: only
    where oneDNN runs AVX2 kernels (an AVX2-only CPU, or one capped with ONEDNN_MAX_CPU_ISA) and
    no GPU takes the work. With AVX-512 oneDNN's own convolution was faster over base's stack (one
    item of 10 s, 2 vCPUs of a Zen 4: the four 3-tap layers 16.9 ms each against 19.5 as products
    in float32, 7.1 against 12.1 in bfloat16; only the two 2-tap layers in float32 were faster as
    products, 9.8 against 12.1 ms), and elsewhere nothing was measured, so the graph stays as it
    was."""
    if tf.config.list_logical_devices("GPU"):
        return False
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap not in ("", "ALL", "DEFAULT"):
        return cap.startswith("AVX2")
    flags = _cpu_flags()
    return "avx2" in flags and "avx512f" not in flags


def _cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags as Linux lists them (none elsewhere: not measured)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def _convolved_as_products(x: tf.Tensor, kernel: tf.Tensor, stride: int) -> tf.Tensor:
    """`tf.nn.conv1d(x, kernel, stride, "VALID")` as matrix products over all frames at once.

    For a batch of one item on an AVX2 CPU (`_one_item_products_pay`): there oneDNN's AVX2
    convolution (im2col and a GEMM per item) keeps one of two cores idle for much of the time,
    and the feature encoder took 1.6x its per-item time in a batch of two (0.46 against 0.29 s
    per 10 s of base, AMD EPYC capped to AVX2; the transformer layers cost the same either way).
    As products, each group of `stride` taps reads consecutive frames side by side (a reshape of
    the frames it spans); a group with fewer taps takes each tap's frames with a strided slice.
    The 3-tap, stride-2 layers ran 1.47x faster so.
    """
    taps_total, d_in, d_out = kernel.shape
    rows = tf.shape(x)[0]
    count = tf.maximum((tf.shape(x)[1] - taps_total) // stride + 1, 0)
    pieces: list[tuple[tf.Tensor, tf.Tensor]] = []
    for first in range(0, taps_total, stride):
        taps = min(stride, taps_total - first)
        if taps == stride:
            frames = tf.reshape(x[:, first : first + stride * count], [-1, stride * d_in])
            pieces.append((frames, tf.reshape(kernel[first : first + stride], [-1, d_out])))
        else:
            for tap in range(first, first + taps):
                frames = x[:, tap : tap + stride * (count - 1) + 1 : stride]
                pieces.append((tf.reshape(frames, [-1, d_in]), kernel[tap]))
    total = tf.add_n([tf.matmul(frames, weights) for frames, weights in pieces])
    return tf.reshape(total, [rows, count, d_out])


def _layer_norm(x: tf.Tensor, weight: tf.Variable, bias: tf.Variable, eps: float) -> tf.Tensor:
    dtype = x.dtype
    x = tf.cast(x, tf.float32)
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return tf.cast((x - mean) * tf.math.rsqrt(variance + eps) * weight + bias, dtype)


class FeatureEncoder(Layer):
    """The convolution stack that turns 16 kHz samples into 50 Hz feature frames."""

    def __init__(self, init: Init, config: Wav2Vec2Config) -> None:
        super().__init__(init)
        self.conv_layers = [
            self._child(f"conv_layers.{i}", ConvLayer, init, config, i)
            for i in range(config.num_feat_extract_layers)
        ]

    def __call__(self, input_values: tf.Tensor, lengths: tf.Tensor | None) -> tf.Tensor:
        """The first layer always runs in float32: its convolution is cheap (one input channel),
        while its norm and activation run in float32 anyway, so in a bfloat16 pass computing it in
        bfloat16 only adds casts over the widest tensor of the model (measured on a Zen 4 CPU with
        AVX512-BF16: 0.65 -> 0.55 s for 8 x 10 s of base; bench/model_profile.py)."""
        x = tf.cast(input_values, tf.float32)
        for layer in self.conv_layers:
            if lengths is not None:
                lengths = layer.output_lengths(lengths)
            x = layer(x, lengths, input_values.dtype)
        return x


class FeatureProjection(Layer):
    def __init__(self, init: Init, config: Wav2Vec2Config) -> None:
        super().__init__(init)
        self.layer_norm = self._child(
            "layer_norm", LayerNorm, init, config.conv_dim[-1], config.layer_norm_eps
        )
        self.projection = self._child(
            "projection", Linear, init, config.conv_dim[-1], config.hidden_size
        )

    def __call__(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        normed = self.layer_norm(x)
        return self.projection(normed), normed


class PositionalConvEmbedding(Layer):
    """Grouped convolution over time, "same" padded; weight norm is folded into `conv.weight`."""

    def __init__(self, init: Init, config: Wav2Vec2Config) -> None:
        super().__init__(init)
        self.kernel_size = config.num_conv_pos_embeddings
        self.groups = groups = config.num_conv_pos_embedding_groups
        d = config.hidden_size
        std = 2 * math.sqrt(1 / (self.kernel_size * d))
        self.kernel = self._param(
            "conv.weight",
            (self.kernel_size, d // groups, d),
            "conv",
            Init.normal((self.kernel_size, d // groups, d), std),
        )
        self.bias = self._param("conv.bias", (d,), "same", Init.constant((d,), 0.0))
        self.activation = _activation(config.feat_extract_activation)

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        pad = self.kernel_size // 2
        padded = tf.pad(x, [[0, 0], [pad, pad], [0, 0]])
        kernel = self._typed(self.kernel, x.dtype)
        if training and self.groups > 1:
            # TensorFlow has no CPU gradient for grouped convolutions, so training convolves each
            # group on its own (same result; inference keeps the single grouped convolution).
            y = tf.concat(
                [
                    tf.nn.conv1d(part, group_kernel, stride=1, padding="VALID")
                    for part, group_kernel in zip(
                        tf.split(padded, self.groups, axis=-1),
                        tf.split(kernel, self.groups, axis=-1),
                        strict=True,
                    )
                ],
                axis=-1,
            )
        else:
            y = tf.nn.conv1d(padded, kernel, stride=1, padding="VALID")
        # An even kernel gives one frame too many (PyTorch's SamePad drops the last).
        y = y[:, : tf.shape(x)[1]] + self._typed(self.bias, x.dtype)
        return self.activation(y)


class Attention(Layer):
    def __init__(self, init: Init, config: Wav2Vec2Config) -> None:
        super().__init__(init)
        d = config.hidden_size
        std = config.initializer_range
        self.num_heads = config.num_attention_heads
        self.head_dim = d // self.num_heads
        self.q_proj = self._child("q_proj", Linear, init, d, d, std)
        self.k_proj = self._child("k_proj", Linear, init, d, d, std)
        self.v_proj = self._child("v_proj", Linear, init, d, d, std)
        self.out_proj = self._child("out_proj", Linear, init, d, d, std)
        self.dropout = config.attention_dropout

    def __call__(
        self, x: tf.Tensor, key_bias: tf.Tensor | None, training: bool
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The attended output and the attention probabilities (B, heads, T, T), as the
        reference returns them (before dropout); the caller drops them unless asked for."""
        batch, frames = tf.shape(x)[0], tf.shape(x)[1]

        def heads(projected: tf.Tensor) -> tf.Tensor:  # (B, T, D) -> (B, H, T, D/H)
            split = tf.reshape(projected, [batch, frames, self.num_heads, self.head_dim])
            return tf.transpose(split, [0, 2, 1, 3])

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        scale = tf.constant(self.head_dim**-0.5, x.dtype)
        # Batched matmuls rather than einsum: TF's CPU einsum has no fast bfloat16 kernel. With
        # a key bias, the product, its scale and the bias are the pattern Grappler's remapper
        # fuses into one oneDNN kernel, in the compute type (as PyTorch's bf16 autocast, the
        # scores are rounded to bfloat16; softmax computes in float32 inside its kernel). The
        # remapper fuses no product followed by a scale alone, and that scale is a pass over
        # the (B, heads, T, T) scores, so without a bias the queries are scaled instead: one
        # 64th of the elements for a head of 64 (whose 1/8 is exact either way). Measured on a
        # Zen 4 CPU, base, 2 x 30 s, one layer's scores, softmax and context: 76 -> 67 ms in
        # bfloat16; 8 x 10 s: 35 -> 31 ms in bfloat16, 57 -> 52 ms in float32.
        if key_bias is None:
            scores = tf.matmul(q * scale, k, transpose_b=True)
        else:  # -1e9 stays finite in bfloat16
            scores = tf.matmul(q, k, transpose_b=True) * scale + tf.cast(key_bias, x.dtype)
        probabilities = tf.nn.softmax(scores, axis=-1)
        weights = probabilities
        if training and self.dropout > 0:
            weights = tf.nn.dropout(weights, self.dropout)
        context = tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3])
        attended = self.out_proj(
            tf.reshape(context, [batch, frames, self.num_heads * self.head_dim])
        )
        return attended, probabilities


class FeedForward(Layer):
    def __init__(self, init: Init, config: Wav2Vec2Config) -> None:
        super().__init__(init)
        std = config.initializer_range
        self.intermediate_dense = self._child(
            "intermediate_dense", Linear, init, config.hidden_size, config.intermediate_size, std
        )
        self.output_dense = self._child(
            "output_dense", Linear, init, config.intermediate_size, config.hidden_size, std
        )
        self.activation = _fusable_activation(config.hidden_act)
        self.activation_dropout = config.activation_dropout
        self.hidden_dropout = config.hidden_dropout

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        x = self.intermediate_dense(x, self.activation)
        x = dropout(x, self.activation_dropout, training)
        return dropout(self.output_dense(x), self.hidden_dropout, training)


def dropout(x: tf.Tensor, rate: float, training: bool) -> tf.Tensor:
    return tf.nn.dropout(x, rate) if training and rate > 0 else x


class EncoderLayer(Layer):
    """A transformer block: post-norm (base) or pre-norm ("stable layer norm", lv60)."""

    def __init__(self, init: Init, config: Wav2Vec2Config) -> None:
        super().__init__(init)
        self.pre_norm = config.do_stable_layer_norm
        self.attention = self._child("attention", Attention, init, config)
        self.layer_norm = self._child(
            "layer_norm", LayerNorm, init, config.hidden_size, config.layer_norm_eps
        )
        self.feed_forward = self._child("feed_forward", FeedForward, init, config)
        self.final_layer_norm = self._child(
            "final_layer_norm", LayerNorm, init, config.hidden_size, config.layer_norm_eps
        )
        self.hidden_dropout = config.hidden_dropout

    def __call__(
        self, x: tf.Tensor, key_bias: tf.Tensor | None, training: bool
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The block's output and its attention probabilities."""
        if self.pre_norm:
            attended, probabilities = self.attention(self.layer_norm(x), key_bias, training)
            x = x + dropout(attended, self.hidden_dropout, training)
            return x + self.feed_forward(self.final_layer_norm(x), training), probabilities
        attended, probabilities = self.attention(x, key_bias, training)
        x = self.layer_norm(x + dropout(attended, self.hidden_dropout, training))
        return self.final_layer_norm(x + self.feed_forward(x, training)), probabilities


@dataclass
class EncoderStates:
    """The transformer's outputs: the last hidden state, the reference's `hidden_states` and each
    layer's attention probabilities."""

    last: tf.Tensor
    hidden_states: list[tf.Tensor]
    attentions: list[tf.Tensor]


class Encoder(Layer):
    def __init__(self, init: Init, config: Wav2Vec2Config) -> None:
        super().__init__(init)
        self.pre_norm = config.do_stable_layer_norm
        self.pos_conv_embed = self._child("pos_conv_embed", PositionalConvEmbedding, init, config)
        self.layer_norm = self._child(
            "layer_norm", LayerNorm, init, config.hidden_size, config.layer_norm_eps
        )
        self.layers = [
            self._child(f"layers.{i}", EncoderLayer, init, config)
            for i in range(config.num_hidden_layers)
        ]
        self.hidden_dropout = config.hidden_dropout

    def __call__(self, x: tf.Tensor, mask: tf.Tensor | None, training: bool) -> EncoderStates:
        """`hidden_states` is the input of the first layer followed by each layer's output, as
        transformers records them; for the pre-norm encoder the final layer norm is applied to the
        last hidden state only. (Attention probabilities the caller does not return are pruned
        from the traced graph.)"""
        key_bias = None
        if mask is not None:
            x = x * tf.cast(mask[:, :, None], x.dtype)
            key_bias = ((1.0 - mask) * _NEG_INF)[:, None, None, :]
        x = x + self.pos_conv_embed(x, training)
        if not self.pre_norm:
            x = self.layer_norm(x)
        x = dropout(x, self.hidden_dropout, training)
        states, attentions = [x], []
        for layer in self.layers:
            x, probabilities = layer(x, key_bias, training)
            states.append(x)
            attentions.append(probabilities)
        if self.pre_norm:
            x = self.layer_norm(x)
        return EncoderStates(x, states, attentions)


class GumbelVectorQuantizer(Layer):
    """Product quantizer of the pretraining head: one codevector per group for each frame.

    Inference only: the hard argmax choice, as the reference does in eval mode.
    """

    def __init__(self, init: Init, config: Wav2Vec2Config) -> None:
        super().__init__(init)
        self.groups = config.num_codevector_groups
        self.per_group = config.num_codevectors_per_group
        width = config.codevector_dim // self.groups
        self.codevectors = self._param(
            "codevectors",
            (1, self.groups * self.per_group, width),
            "same",
            Init.uniform((1, self.groups * self.per_group, width), 1.0),
        )
        self.weight_proj = self._child(
            "weight_proj", Linear, init, config.conv_dim[-1], self.groups * self.per_group, 1.0
        )

    def __call__(
        self, features: tf.Tensor, mask_time_indices: tf.Tensor | None
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Returns (quantized features, perplexity, codevector ids (B, T, groups))."""
        batch, frames = tf.shape(features)[0], tf.shape(features)[1]
        scores = tf.reshape(
            tf.cast(self.weight_proj(features), tf.float32),
            [batch, frames, self.groups, self.per_group],
        )
        ids = tf.argmax(scores, axis=-1, output_type=tf.int32)
        probs = tf.one_hot(ids, self.per_group, dtype=tf.float32)
        flat = tf.reshape(probs, [-1, self.groups, self.per_group])
        if mask_time_indices is None:
            marginal = tf.reduce_mean(flat, axis=0)
        else:
            chosen = tf.cast(tf.reshape(mask_time_indices, [-1]), tf.float32)[:, None, None]
            marginal = tf.reduce_sum(flat * chosen, axis=0) / tf.reduce_sum(chosen)
        entropy = -tf.reduce_sum(marginal * tf.math.log(marginal + _PERPLEXITY_EPS), axis=-1)
        perplexity = tf.reduce_sum(tf.exp(entropy))
        table = tf.reshape(self.codevectors, [self.groups, self.per_group, -1])
        quantized = tf.einsum("btgv,gvd->btgd", probs, table)
        return tf.reshape(quantized, [batch, frames, -1]), perplexity, ids


def ctc_loss(
    logits: tf.Tensor,
    labels: tf.Tensor,
    frame_lengths: tf.Tensor,
    blank: int,
    reduction: str,
    zero_infinity: bool,
) -> tf.Tensor:
    """CTC loss with transformers' TF conventions, shape (1,).

    Labels equal to -100 or to the blank are padding. An item whose labels cannot be aligned to its
    frames (too few frames for the labels and their repeats) has an infinite loss, zeroed when
    `zero_infinity`. "sum" adds the items' losses; "mean" averages them over the batch, as
    transformers' TF class does (its PyTorch class also divides each item by its label count).
    """
    labels = tf.cast(labels, tf.int32)
    keep = tf.logical_and(labels != -100, labels != blank)
    target_lengths = tf.reduce_sum(tf.cast(keep, tf.int32), axis=-1)
    dense = tf.ragged.boolean_mask(labels, keep).to_tensor(default_value=0)
    dense = tf.pad(dense, [[0, 0], [0, 1]])  # at least one column, also for empty labels
    position = tf.range(tf.shape(dense)[1] - 1)[None, :]
    repeats = tf.logical_and(
        dense[:, 1:] == dense[:, :-1], position < (target_lengths - 1)[:, None]
    )
    needed = target_lengths + tf.reduce_sum(tf.cast(repeats, tf.int32), axis=-1)
    feasible = tf.cast(frame_lengths, tf.int32) >= needed
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    # Sparse labels select TensorFlow's CTC kernel (dense ones a several times slower one built
    # from TF ops, a third of a training step on CPU). The kernel refuses empty labels and items
    # it cannot align, so those pass one stand-in label and get their loss below: for empty
    # labels, every valid frame is blank.
    stand_in = tf.logical_or(target_lengths == 0, tf.logical_not(feasible))
    used = tf.where(stand_in, 1, target_lengths)
    dense = tf.where(stand_in[:, None], (blank + 1) % tf.shape(logits)[-1], dense)
    indices = tf.where(tf.range(tf.shape(dense)[1])[None, :] < used[:, None])
    sparse = tf.SparseTensor(
        indices, tf.gather_nd(dense, indices), tf.shape(dense, out_type=tf.int64)
    )
    per_item = tf.nn.ctc_loss(
        labels=sparse,
        logits=log_probs,
        label_length=None,
        logit_length=frame_lengths,
        logits_time_major=False,
        blank_index=blank,
    )
    valid = frame_mask(frame_lengths, tf.shape(logits)[1])
    all_blank = -tf.reduce_sum(log_probs[:, :, blank] * valid, axis=1)
    per_item = tf.where(target_lengths == 0, all_blank, per_item)
    per_item = tf.where(feasible, per_item, tf.constant(np.inf, tf.float32))
    if zero_infinity:
        per_item = tf.where(feasible, per_item, tf.zeros_like(per_item))
    total = tf.reduce_mean(per_item) if reduction == "mean" else tf.reduce_sum(per_item)
    return tf.reshape(total, (1,))


def compute_mask_indices(
    shape: tuple[int, int] | tf.Tensor,
    mask_prob: float,
    mask_length: int,
    min_masks: int = 0,
    seed: tf.random.Generator | None = None,
) -> tf.Tensor:
    """SpecAugment spans in TensorFlow ops: a (batch, length) int32 mask, 1 on masked steps.

    transformers' TF rule (its `_compute_mask_indices`): every item gets the same number of
    spans, `mask_prob * length / mask_length` rounded at random (at least `min_masks`, at most
    `length // mask_length`), whose starts are drawn without replacement (the Gumbel top-k trick);
    spans may overlap, so `mask_prob` bounds the masked fraction from above. Traceable: the
    shape may be dynamic. `seed` draws from that generator instead of the global one.
    """
    if mask_length < 1:
        raise ValueError("mask_length must be at least 1")
    batch, length = shape[0], shape[1]
    uniform = seed.uniform if seed is not None else tf.random.uniform
    spans = tf.cast(mask_prob * tf.cast(length, tf.float32) / mask_length + uniform([]), tf.int32)
    spans = tf.minimum(tf.maximum(spans, min_masks), length // mask_length)
    starts_range = length - (mask_length - 1)
    noise = -tf.math.log(uniform(tf.stack([batch, starts_range]), 1e-12, 1.0))
    _, starts = tf.nn.top_k(noise, spans)  # (B, spans): distinct random starts per item
    steps = starts[:, :, None] + tf.range(mask_length)[None, None, :]
    hits = tf.one_hot(tf.reshape(steps, tf.stack([batch, -1])), length, dtype=tf.int32)
    return tf.minimum(tf.reduce_sum(hits, axis=1), 1)

"""Checkpoint files in, model variables out (and back): safetensors, Keras tf_model.h5 and
Flax flax_model.msgpack.

No torch, no transformers and no pickle: model.safetensors is parsed here (an 8-byte header
length, a JSON header, raw little-endian tensors), tf_model.h5 is read with h5py and
flax_model.msgpack with flax. Each is turned into one PyTorch-named, PyTorch-layout state dict,
then copied into the model by name.

The copy is strict, unlike the reference's: for a checkpoint of the model's own head, a missing,
unexpected or mis-shaped weight is an error that names the key, because a silently random weight
gives plausible-looking garbage. Only a checkpoint of another head (the start of fine-tuning)
gets this head's weights drawn anew, as transformers does, and says so.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from models import _files
from models.parameters import NamedParameters, torch_to_tf

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
TF_WEIGHTS_NAME = "tf_model.h5"
FLAX_WEIGHTS_NAME = "flax_model.msgpack"

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}

_log = logging.getLogger(__name__)

#: Keys of the heads' weights (what a model of another head drops, or draws anew).
_HEAD_KEYS = re.compile(
    r"^(lm_head|projector|classifier|layer_weights|quantizer|project_hid|project_q)\b"
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is; the message names the file or key."""


def read_safetensors(
    data: bytes | memoryview, name: str = SAFETENSORS_NAME, keep_dtype: bool = False
) -> dict[str, np.ndarray]:
    """Parse a safetensors file's bytes into arrays of the stored types, bfloat16 widened to
    float32 unless `keep_dtype` (then an `ml_dtypes.bfloat16` array, as JAX takes it)."""
    view = memoryview(data)
    if len(view) < 8:
        raise CheckpointError(f"{name}: too short to be a safetensors file")
    header_size = int.from_bytes(view[:8], "little")
    if header_size <= 0 or 8 + header_size > len(view):
        raise CheckpointError(f"{name}: not a safetensors file (bad header length)")
    try:
        header = json.loads(bytes(view[8 : 8 + header_size]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{name}: not a safetensors file (header is not JSON)") from None
    body = view[8 + header_size :]
    tensors: dict[str, np.ndarray] = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        dtype = info["dtype"]
        if end > len(body):
            raise CheckpointError(f"{name}: tensor {key!r} runs past the end of the file")
        raw = body[start:end]
        if dtype == "BF16" and keep_dtype:
            import ml_dtypes

            array = np.frombuffer(raw, dtype="<u2").view(ml_dtypes.bfloat16)
        elif dtype == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif dtype in _SAFETENSORS_DTYPES:
            array = np.frombuffer(raw, dtype=np.dtype(_SAFETENSORS_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise CheckpointError(f"{name}: tensor {key!r} has unsupported dtype {dtype}")
        tensors[key] = array.reshape(shape)
    return tensors


def _tf_name_to_torch(name: str) -> str:
    """'tf_wav2_vec2_for_ctc/wav2vec2/encoder/layers.0/attention/q_proj/kernel:0' ->
    'wav2vec2.encoder.layers.0.attention.q_proj.weight' (layout changed separately)."""
    name = name.split(":")[0]
    parts = name.split("/")[1:]  # drop the Keras model's own name
    leaf = {"kernel": "weight", "gamma": "weight", "beta": "bias"}.get(parts[-1], parts[-1])
    return ".".join([*parts[:-1], leaf])


def read_tf_h5(path: str) -> dict[str, np.ndarray]:
    """Read a transformers TF checkpoint (Keras h5 weights) as a PyTorch-named, PyTorch-layout dict."""
    import h5py

    tensors: dict[str, np.ndarray] = {}
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise CheckpointError(f"{path}: not a readable HDF5 file ({error})") from None
    with handle:
        for layer_name in handle.attrs.get("layer_names", []):
            group = handle[_decode(layer_name)]
            for weight_name in group.attrs.get("weight_names", []):
                weight_name = _decode(weight_name)
                array = np.asarray(group[weight_name])
                key = _tf_name_to_torch(weight_name)
                leaf = weight_name.split("/")[-1].split(":")[0]
                if leaf == "kernel" and array.ndim == 2:
                    array = array.T
                elif leaf == "kernel" and array.ndim == 3:
                    array = np.transpose(array, (2, 1, 0))
                elif leaf == "weight_g":
                    # TF keeps the weight norm's g as (kernel, 1, 1); v is already (out, in, kernel).
                    array = np.transpose(array, (2, 1, 0))
                tensors[key] = array
    if not tensors:
        raise CheckpointError(f"{path}: holds no Keras weights (no layer_names attribute)")
    return tensors


def _decode(value: bytes | str) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else value


#: PyTorch's two spellings of a weight-normed weight's (g, v): `torch.nn.utils.weight_norm` and
#: the parametrization API (which transformers 5 writes).
_WEIGHT_NORM_SPELLINGS = (
    ("weight_g", "weight_v"),
    ("parametrizations.weight.original0", "parametrizations.weight.original1"),
)


def weight_norm_pairs(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`state` with every weight-normed pair named `<stem>weight_g` / `<stem>weight_v`."""
    renamed = dict(state)
    g_old, v_old = _WEIGHT_NORM_SPELLINGS[1]
    for key in state:
        if key.endswith(g_old):
            stem = key[: -len(g_old)]
            if stem + v_old not in state:
                raise CheckpointError(f"weight-normed {key!r} has no matching {stem + v_old!r}")
            renamed[stem + "weight_g"] = renamed.pop(key)
            renamed[stem + "weight_v"] = renamed.pop(stem + v_old)
    return renamed


def fold_weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The plain weight g * v / ||v||, the norm over every axis where g has size 1 (all but the
    kernel axis for the positional convolution's weight norm, dim=2)."""
    g = g.astype(np.float32)
    v = v.astype(np.float32)
    axes = tuple(a for a in range(v.ndim) if g.shape[a] == 1)
    norm = np.sqrt(np.sum(np.square(v), axis=axes, keepdims=True))
    return (g * v / norm).astype(np.float32)


def _as_model_names(state: dict[str, np.ndarray], params: set[str]) -> dict[str, np.ndarray]:
    """Weight-normed pairs as the model holds them: the pair itself (the Flax classes, as
    transformers' Flax classes do) or folded into `<stem>weight` (the TF classes)."""
    state = weight_norm_pairs(state)
    for key in [k for k in state if k.endswith("weight_g")]:
        stem = key[: -len("weight_g")]
        if stem + "weight" in params and stem + "weight_g" not in params:
            state[stem + "weight"] = fold_weight_norm(state.pop(key), state.pop(stem + "weight_v"))
    return state


def read_checkpoint(path: str, keep_dtype: bool = False) -> tuple[dict[str, np.ndarray], str]:
    """The PyTorch-named, PyTorch-layout state dict of the checkpoint folder `path`, and the file
    it came from: model.safetensors (or its shards), else tf_model.h5, else flax_model.msgpack."""
    if _files.exists(path, SAFETENSORS_NAME):
        name = _files.join(path, SAFETENSORS_NAME)
        data = _read_mapped(path, SAFETENSORS_NAME)
        return read_safetensors(data, name, keep_dtype), name
    if _files.exists(path, SAFETENSORS_INDEX_NAME):
        index = _files.read_json(path, SAFETENSORS_INDEX_NAME)
        state: dict[str, np.ndarray] = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            data = _read_mapped(path, shard)
            state.update(read_safetensors(data, _files.join(path, shard), keep_dtype))
        return state, _files.join(path, SAFETENSORS_INDEX_NAME)
    if _files.exists(path, TF_WEIGHTS_NAME):
        return read_tf_h5(_files.local_copy(path, TF_WEIGHTS_NAME)), _files.join(
            path, TF_WEIGHTS_NAME
        )
    if _files.exists(path, FLAX_WEIGHTS_NAME):
        name = _files.join(path, FLAX_WEIGHTS_NAME)
        return read_flax_msgpack(_files.read_bytes(path, FLAX_WEIGHTS_NAME), name), name
    found = ", ".join(_listing(path)) or "nothing"
    raise CheckpointError(
        f"{path}: no weights to load: expected {SAFETENSORS_NAME}, {TF_WEIGHTS_NAME} or "
        f"{FLAX_WEIGHTS_NAME} (found {found}; pickled pytorch_model.bin is never loaded: "
        "convert it to safetensors)"
    )


def read_flax_msgpack(data: bytes, name: str = FLAX_WEIGHTS_NAME) -> dict[str, np.ndarray]:
    """A transformers Flax checkpoint (the params pytree, msgpack-serialized by flax) as a
    PyTorch-named, PyTorch-layout state dict; needs flax to decode."""
    try:
        from flax.serialization import msgpack_restore
    except ImportError:
        raise CheckpointError(f"{name}: reading Flax checkpoints needs flax installed") from None
    try:
        tree = msgpack_restore(data)
    except Exception as error:  # msgpack raises several unrelated types for bad bytes
        raise CheckpointError(f"{name}: not a Flax msgpack checkpoint ({error})") from None
    state: dict[str, np.ndarray] = {}
    for path, array in _leaves(tree):
        leaf = {"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])
        array = np.asarray(array)
        if path[-1] == "kernel":
            array = np.transpose(array, tuple(reversed(range(array.ndim))))
        state[".".join([*path[:-1], leaf])] = array
    return state


def _leaves(tree: Any, prefix: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key)), value


def _read_mapped(folder: str, name: str) -> bytes | memoryview:
    """The file's bytes, memory-mapped when local so that a 1 GB checkpoint is not copied twice."""
    local = _files.local_copy(folder, name)
    if os.path.getsize(local) == 0:
        raise CheckpointError(f"{local}: empty file")
    return memoryview(np.memmap(local, dtype=np.uint8, mode="r"))


def _listing(path: str) -> list[str]:
    try:
        if "://" in path:
            import fsspec

            filesystem, inner = fsspec.core.url_to_fs(path)
            return sorted(os.path.basename(p) for p in filesystem.ls(inner))
        return sorted(os.listdir(path))
    except OSError:
        return []


def load_checkpoint_into(
    model: NamedParameters,
    path: str,
    checkpoint_architecture: str | None = None,
    ignore_mismatched_sizes: bool = False,
    allow_missing: bool = False,
) -> list[str]:
    """Read the weights in folder `path` and copy them into `model` (see `load_state_dict`);
    returns the names of the parameters the checkpoint did not provide."""
    keep_dtype = getattr(model, "keeps_checkpoint_dtype", False)
    state, source = read_checkpoint(path, keep_dtype)
    try:
        return load_state_dict(
            model, state, checkpoint_architecture, ignore_mismatched_sizes, allow_missing
        )
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None


def load_state_dict(
    model: NamedParameters,
    state: dict[str, np.ndarray],
    checkpoint_architecture: str | None = None,
    ignore_mismatched_sizes: bool = False,
    allow_missing: bool = False,
) -> list[str]:
    """Copy a PyTorch-named, PyTorch-layout state dict into `model` by name; returns the names
    of the parameters left to initialize (drawn already where the parameter can draw itself).

    Strict where a silent difference would give plausible garbage: a checkpoint of the model's
    own architecture (`checkpoint_architecture`, from its config.json; None: the same) must
    hold exactly the model's weights, with the config's shapes, else `CheckpointError` names the
    key. Loading a checkpoint of another head is how fine-tuning starts, so there, as in
    transformers: the encoder is still loaded strictly; the other head's weights are dropped
    and this head's are initialized anew, both logged. A bare encoder's weights (no "wav2vec2."
    prefix) load into a head's encoder, and the reverse. With `ignore_mismatched_sizes`,
    weights of another shape are initialized anew (logged) instead of refused; with
    `allow_missing` (a caller that initializes what is missing itself, as Flax's
    `_do_init=False` does), missing weights are returned rather than refused.
    """
    params = dict(model.named_parameters())
    if model.base_prefix and not any(k.startswith(model.base_prefix) for k in state):
        state = {model.base_prefix + k: v for k, v in state.items()}  # a bare encoder's weights
    elif not model.base_prefix and any(k.startswith("wav2vec2.") for k in state):
        state = {
            k.removeprefix("wav2vec2."): v for k, v in state.items() if not _HEAD_KEYS.match(k)
        }
    state = _as_model_names(state, set(params))
    other_head = checkpoint_architecture not in (None, model.architecture)
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    fresh: list[str] = []
    if other_head:
        fresh = [k for k in missing if _HEAD_KEYS.match(k)]
        dropped = [k for k in unexpected if _HEAD_KEYS.match(k)]
        missing = [k for k in missing if k not in fresh]
        unexpected = [k for k in unexpected if k not in dropped]
        if dropped:
            _log.warning(
                "%s head weights not used by %s: %s",
                checkpoint_architecture,
                type(model).__name__,
                _some(dropped),
            )
    if allow_missing:
        fresh, missing = fresh + missing, []
    if missing:
        raise CheckpointError(f"missing weight {_some(missing)} for {type(model).__name__}")
    if unexpected:
        raise CheckpointError(f"unexpected weight {_some(unexpected)} for {type(model).__name__}")
    keep_dtype = getattr(model, "keeps_checkpoint_dtype", False)
    for key, param in params.items():
        if key in fresh:
            continue
        array = state[key]
        if tuple(array.shape) != param.torch_shape:
            if not ignore_mismatched_sizes:
                raise CheckpointError(
                    f"weight {key!r} has shape {tuple(array.shape)}, "
                    f"the config needs {param.torch_shape}"
                )
            _log.warning(
                "%s: the shapes did not match (checkpoint %s, model %s); initialized anew",
                key,
                tuple(array.shape),
                param.torch_shape,
            )
            fresh.append(key)
            continue
        value = np.asarray(array) if keep_dtype else np.asarray(array, dtype=np.float32)
        param.variable.assign(torch_to_tf(value, param.layout))
    drawn = [key for key in fresh if params[key].initialize is not None]
    for key in drawn:
        params[key].initialize()
    if fresh:
        _log.warning(
            "%s weights not in the checkpoint, %s: %s",
            type(model).__name__,
            "initialized anew" if drawn else "left to initialize",
            _some(sorted(fresh)),
        )
    return sorted(fresh)


def _some(keys: Iterable[str], limit: int = 3) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


#: numpy type -> safetensors dtype name, for the types `save_pretrained` writes.
_WRITTEN_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


def write_safetensors(tensors: dict[str, np.ndarray], path: str) -> None:
    """Write tensors as a safetensors file (what `save_pretrained` produces), each in its own
    floating type (float32, float16 or bfloat16); anything else as float32."""
    header: dict[str, dict[str, object]] = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for key in sorted(tensors):
        array = np.asarray(tensors[key])
        dtype = _WRITTEN_DTYPES.get(array.dtype.name)
        if dtype is None:
            array, dtype = array.astype(np.float32), "F32"
        array = np.ascontiguousarray(array)
        blob = (
            array.view(np.uint16).astype("<u2").tobytes()
            if dtype == "BF16"
            else (array.astype(array.dtype.newbyteorder("<")).tobytes())
        )
        header[key] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        offset += len(blob)
        blobs.append(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf8")
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for blob in blobs:
            handle.write(blob)


def save_checkpoint(model: NamedParameters, folder: str) -> None:
    """Write config.json and model.safetensors the way transformers' save_pretrained does:
    PyTorch names and layout, the positional convolution weight-normed under the names
    transformers 5 writes."""
    os.makedirs(folder, exist_ok=True)
    tensors = {}
    g_name, v_name = _WEIGHT_NORM_SPELLINGS[1]
    for key, param in model.named_parameters():
        # torch_to_tf is its own inverse: both re-layings are axis reversals.
        value = torch_to_tf(param.variable.numpy(), param.layout)
        if key.endswith("pos_conv_embed.conv.weight"):
            # The reference keeps this convolution weight-normed (norm over all but the kernel
            # axis); ours is folded, so it is saved as g = ||w|| and v = w.
            stem = key.removesuffix("weight")
            tensors[stem + g_name] = np.sqrt(np.sum(value**2, axis=(0, 1), keepdims=True))
            tensors[stem + v_name] = value
        elif key.endswith(("conv.weight_g", "conv.weight_v")):
            stem, which = key.rsplit("weight_", 1)
            tensors[stem + (g_name if which == "g" else v_name)] = value
        else:
            tensors[key] = value
    write_safetensors(tensors, os.path.join(folder, SAFETENSORS_NAME))
    config = copy.deepcopy(model.config)
    config.architectures = [model.architecture]
    config.save_pretrained(folder)

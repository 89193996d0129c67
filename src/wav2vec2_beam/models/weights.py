"""Checkpoint files in, one state dict out (and back): safetensors, Keras tf_model.h5 and Flax
flax_model.msgpack.

No torch, no transformers and no pickle: model.safetensors is parsed here (an 8-byte header
length, a JSON header, raw little-endian tensors), tf_model.h5 is read with h5py and
flax_model.msgpack with flax. Each is turned into one PyTorch-named, PyTorch-layout state dict,
which `models.loading` checks against the model and copies into it by name.

A file is checked as it is read: a safetensors header whose tensors overlap, leave no room for
their shape, run past the file or lack a field, and a shard index that names a file outside the
checkpoint's folder, are refused with a `CheckpointError` naming the file and the tensor.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from wav2vec2_beam.models import _files
from wav2vec2_beam.models.parameters import NamedParameters, torch_to_tf

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
    if not isinstance(header, dict):
        raise CheckpointError(f"{name}: not a safetensors file (the header is not an object)")
    tensors: dict[str, np.ndarray] = {}
    spans = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        dtype, shape, (start, end) = _tensor_entry(name, key, info, len(body))
        spans.append((start, end, key))
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
    _check_disjoint(name, spans)
    return tensors


_ITEM_SIZES = {"BF16": 2, **{k: np.dtype(v).itemsize for k, v in _SAFETENSORS_DTYPES.items()}}


def _tensor_entry(
    name: str, key: str, info: Any, body_size: int
) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    """(dtype, shape, data offsets) of one header entry, refused unless they make a tensor."""

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(f"{name}: tensor {key!r} {what}")

    if not isinstance(info, dict):
        raise refuse("has no header entry object")
    for field in ("dtype", "shape", "data_offsets"):
        if field not in info:
            raise refuse(f"has no {field}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in _ITEM_SIZES:
        raise refuse(f"has unsupported dtype {dtype}")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise refuse(f"has shape {shape!r}, not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise refuse(f"has data_offsets {offsets!r}, not [start, end]")
    start, end = offsets
    if not start <= end <= body_size:
        raise refuse(f"has data_offsets {offsets!r} outside the file's {body_size} data bytes")
    if end - start != math.prod(shape) * _ITEM_SIZES[dtype]:
        raise refuse(f"has {end - start} bytes for shape {shape} of {dtype}")
    return dtype, tuple(shape), (start, end)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_disjoint(name: str, spans: list[tuple[int, int, str]]) -> None:
    """Refuse tensors whose bytes overlap: each would read another's data."""
    spans.sort()
    for (_, end, first), (start, _, second) in itertools.pairwise(spans):
        if start < end:
            raise CheckpointError(f"{name}: tensors {first!r} and {second!r} overlap")


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


def fold_weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The plain weight g * v / ||v||, the norm over every axis where g has size 1 (all but the
    kernel axis for the positional convolution's weight norm, dim=2)."""
    g = g.astype(np.float32)
    v = v.astype(np.float32)
    axes = tuple(a for a in range(v.ndim) if g.shape[a] == 1)
    norm = np.sqrt(np.sum(np.square(v), axis=axes, keepdims=True))
    return (g * v / norm).astype(np.float32)


def read_checkpoint(path: str, keep_dtype: bool = False) -> tuple[dict[str, np.ndarray], str]:
    """The PyTorch-named, PyTorch-layout state dict of the checkpoint folder `path`, and the file
    it came from: model.safetensors (or its shards), else tf_model.h5, else flax_model.msgpack."""
    if _files.exists(path, SAFETENSORS_NAME):
        name = _files.join(path, SAFETENSORS_NAME)
        data = _read_mapped(path, SAFETENSORS_NAME)
        return read_safetensors(data, name, keep_dtype), name
    if _files.exists(path, SAFETENSORS_INDEX_NAME):
        state: dict[str, np.ndarray] = {}
        for shard in _shards(path):
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


def _shards(path: str) -> list[str]:
    """The shard files a safetensors index names: plain names of files in the checkpoint's own
    folder (an index naming `../x.safetensors` would read outside it)."""
    where = _files.join(path, SAFETENSORS_INDEX_NAME)
    index = _files.read_json(path, SAFETENSORS_INDEX_NAME)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{where}: no weight_map object")
    shards = sorted(set(weight_map.values()), key=str)
    for shard in shards:
        if (
            not isinstance(shard, str)
            or not shard
            or "/" in shard
            or "\\" in shard
            or shard in (".", "..")
        ):
            raise CheckpointError(
                f"{where}: shard {shard!r} is not a file of the checkpoint's own folder"
            )
    return shards


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
    g_name, v_name = "parametrizations.weight.original0", "parametrizations.weight.original1"
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

"""Checkpoint files in, model variables out (and back): safetensors and Keras tf_model.h5.

No torch, no transformers and no pickle: model.safetensors is parsed here (an 8-byte header
length, a JSON header, raw little-endian tensors), tf_model.h5 is read with h5py. Both are turned
into one PyTorch-named, PyTorch-layout state dict, then copied into the model by name.

The copy is strict, unlike the reference's: a missing, unexpected or mis-shaped weight is an
error that names the key, because a silently random weight gives plausible-looking garbage.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable

import numpy as np

from models import _files
from models.parameters import NamedParameters, torch_to_tf

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
TF_WEIGHTS_NAME = "tf_model.h5"

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

#: Keys of heads that a bare `Wav2Vec2Model` may drop when loading a checkpoint with a head.
_HEAD_KEYS = re.compile(
    r"^(lm_head|projector|classifier|layer_weights|quantizer|project_hid|project_q)\b"
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is; the message names the file or key."""


def read_safetensors(
    data: bytes | memoryview, name: str = SAFETENSORS_NAME
) -> dict[str, np.ndarray]:
    """Parse a safetensors file's bytes into float32/int arrays (bf16 widened to float32)."""
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
        if dtype == "BF16":
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


def fold_weight_norm(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Replace each weight-normed (g, v) pair by the plain weight g * v / ||v||.

    Both of PyTorch's spellings: `weight_g`/`weight_v` (torch.nn.utils.weight_norm) and
    `parametrizations.weight.original0`/`original1` (the parametrization API). The norm is over
    every axis but the kernel axis (weight norm with dim=2, as the positional convolution uses).
    """
    folded = dict(state)
    for key in list(state):
        for g_suffix, v_suffix in (
            ("weight_g", "weight_v"),
            ("parametrizations.weight.original0", "parametrizations.weight.original1"),
        ):
            if not key.endswith(g_suffix):
                continue
            stem = key[: -len(g_suffix)]
            v_key = stem + v_suffix
            if v_key not in state:
                raise CheckpointError(f"weight-normed {key!r} has no matching {v_key!r}")
            g = state[key].astype(np.float32)
            v = state[v_key].astype(np.float32)
            axes = tuple(a for a in range(v.ndim) if g.shape[a] == 1)
            norm = np.sqrt(np.sum(np.square(v), axis=axes, keepdims=True))
            folded[stem + "weight"] = (g * v / norm).astype(np.float32)
            del folded[key], folded[v_key]
    return folded


def read_checkpoint(path: str) -> tuple[dict[str, np.ndarray], str]:
    """The state dict of the checkpoint folder `path`, and the file it came from."""
    if _files.exists(path, SAFETENSORS_NAME):
        name = _files.join(path, SAFETENSORS_NAME)
        return read_safetensors(_read_mapped(path, SAFETENSORS_NAME), name), name
    if _files.exists(path, SAFETENSORS_INDEX_NAME):
        index = _files.read_json(path, SAFETENSORS_INDEX_NAME)
        state: dict[str, np.ndarray] = {}
        for shard in sorted(set(index.get("weight_map", {}).values())):
            state.update(read_safetensors(_read_mapped(path, shard), _files.join(path, shard)))
        return state, _files.join(path, SAFETENSORS_INDEX_NAME)
    if _files.exists(path, TF_WEIGHTS_NAME):
        return read_tf_h5(_files.local_copy(path, TF_WEIGHTS_NAME)), _files.join(
            path, TF_WEIGHTS_NAME
        )
    found = ", ".join(_listing(path)) or "nothing"
    raise CheckpointError(
        f"{path}: no weights to load: expected {SAFETENSORS_NAME} or {TF_WEIGHTS_NAME} "
        f"(found {found}; pickled pytorch_model.bin is never loaded: convert it to safetensors)"
    )


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


def load_checkpoint_into(model: NamedParameters, path: str) -> None:
    """Read the weights in folder `path` and copy them into `model`, strictly."""
    state, source = read_checkpoint(path)
    try:
        load_state_dict(model, state)
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None


def load_state_dict(model: NamedParameters, state: dict[str, np.ndarray]) -> None:
    """Copy a PyTorch-named, PyTorch-layout state dict into `model` by name.

    A bare model (no head) loading a checkpoint saved with a head drops the "wav2vec2." prefix
    and the head's weights, as the reference does; any other difference is an error.
    """
    state = fold_weight_norm(state)
    params = dict(model.named_parameters())
    if model.base_prefix == "" and any(k.startswith("wav2vec2.") for k in state):
        state = {
            k.removeprefix("wav2vec2."): v for k, v in state.items() if not _HEAD_KEYS.match(k)
        }
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing:
        raise CheckpointError(f"missing weight {_some(missing)} for {type(model).__name__}")
    if unexpected:
        raise CheckpointError(f"unexpected weight {_some(unexpected)} for {type(model).__name__}")
    for key, param in params.items():
        array = state[key]
        if tuple(array.shape) != param.torch_shape:
            raise CheckpointError(
                f"weight {key!r} has shape {tuple(array.shape)}, the config needs {param.torch_shape}"
            )
        param.variable.assign(torch_to_tf(np.asarray(array, dtype=np.float32), param.layout))


def _some(keys: Iterable[str], limit: int = 3) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def write_safetensors(tensors: dict[str, np.ndarray], path: str) -> None:
    """Write float32 tensors as a safetensors file (what `save_pretrained` produces)."""
    header: dict[str, dict[str, object]] = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for key in sorted(tensors):
        array = np.ascontiguousarray(tensors[key], dtype="<f4")
        blob = array.tobytes()
        header[key] = {
            "dtype": "F32",
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
    """Write config.json and model.safetensors the way transformers' save_pretrained does."""
    os.makedirs(folder, exist_ok=True)
    tensors = {}
    for key, param in model.named_parameters():
        # torch_to_tf is its own inverse: both re-layings are axis reversals.
        value = torch_to_tf(param.variable.numpy(), param.layout)
        if key.endswith("pos_conv_embed.conv.weight"):
            # The reference keeps this convolution weight-normed (norm over all but the kernel axis).
            stem = key.removesuffix("weight") + "parametrizations.weight."
            tensors[stem + "original0"] = np.sqrt(np.sum(value**2, axis=(0, 1), keepdims=True))
            tensors[stem + "original1"] = value
        else:
            tensors[key] = value
    write_safetensors(tensors, os.path.join(folder, SAFETENSORS_NAME))
    config = model.config.to_dict()
    config["architectures"] = [model.architecture]
    with open(os.path.join(folder, "config.json"), "w") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
        handle.write("\n")

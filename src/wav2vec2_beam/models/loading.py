"""A checkpoint's weights onto a model's parameters: checked by name and shape before the model is
built, then copied.

The check is strict, unlike the reference's: for a checkpoint of the model's own head, a missing,
unexpected or mis-shaped weight is a `CheckpointError` that names the key, because a silently
random weight gives plausible-looking garbage. Only a checkpoint of another head (the start of
fine-tuning) gets this head's weights drawn anew, as transformers does, and says so; and a bare
encoder's weights (no "wav2vec2." prefix) load into a head's encoder, and the reverse.

The check runs on the checkpoint's names and shapes against the parameters the config implies
(`models.parameter_shapes`), before any variable exists: a config.json asking for a million
layers, or sizes the weights do not have, is refused at once, without allocating anything. The
config's parameters are walked lazily, so the walk stops at the first weight the checkpoint lacks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from wav2vec2_beam.models.configuration import Wav2Vec2Config
from wav2vec2_beam.models.parameters import NamedParameters, torch_to_tf
from wav2vec2_beam.models.weights import CheckpointError, fold_weight_norm, read_checkpoint

_log = logging.getLogger(__name__)

#: Keys of the heads' weights (what a model of another head drops, or draws anew).
_HEAD_KEYS = re.compile(
    r"^(lm_head|projector|classifier|layer_weights|quantizer|project_hid|project_q)\b"
)
#: PyTorch's two spellings of a weight-normed weight's (g, v) pair: `torch.nn.utils.weight_norm`
#: and the parametrization API (which transformers 5 writes).
_PARAMETRIZED = ("parametrizations.weight.original0", "parametrizations.weight.original1")

Shape = tuple[int, ...]


@dataclass(frozen=True)
class _Source:
    """Where a parameter's value is in the checkpoint: one key, or a weight-norm (g, v) pair
    to fold into the plain weight; and the PyTorch shape it gives."""

    keys: tuple[str, ...]
    shape: Shape


@dataclass
class LoadPlan:
    """A checked checkpoint: its tensors, what each parameter takes, and what is drawn anew."""

    state: dict[str, np.ndarray]
    #: The file the tensors came from, for messages.
    source: str
    values: dict[str, _Source] = field(default_factory=dict)
    #: Parameters the checkpoint does not provide (another head's model, or `allow_missing`).
    fresh: list[str] = field(default_factory=list)


def plan_checkpoint(
    path: str,
    expected: Iterable[tuple[str, Shape]],
    model: str,
    architecture: str,
    base_prefix: str,
    checkpoint_architecture: str | None = None,
    ignore_mismatched_sizes: bool = False,
    allow_missing: bool = False,
    keep_dtype: bool = False,
) -> LoadPlan:
    """Read the checkpoint in folder `path` and check it against `expected`, the (name, PyTorch
    shape) of every parameter of the model `model` (a class name, for messages) will have.

    `architecture` and `base_prefix` are the model's (`architectures` name, "wav2vec2." or "");
    `checkpoint_architecture` is the checkpoint's, from its config.json (None: the model's own).
    `ignore_mismatched_sizes` draws weights of another shape anew instead of refusing them;
    `allow_missing` (a caller that initializes what is missing itself, as Flax's
    `_do_init=False` does) returns missing weights as fresh rather than refusing them.
    """
    state, source = read_checkpoint(path, keep_dtype)
    try:
        plan = _plan(
            {key: tuple(array.shape) for key, array in state.items()},
            expected,
            model,
            architecture,
            base_prefix,
            checkpoint_architecture,
            ignore_mismatched_sizes,
            allow_missing,
        )
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None
    plan.state, plan.source = state, source
    return plan


def _names(shapes: Mapping[str, Shape], base_prefix: str) -> tuple[dict[str, str], bool]:
    """The model's name for each checkpoint key (weight-norm pairs as `weight_g`/`weight_v`, the
    encoder's prefix added or removed as the model needs), and whether the prefix changed: the
    checkpoint is then of another head (or none)."""
    names: dict[str, str] = {}
    for key in shapes:
        name = key
        for spelled, plain in zip(_PARAMETRIZED, ("weight_g", "weight_v"), strict=True):
            if name.endswith(spelled):
                name = name[: -len(spelled)] + plain
        names[name] = key
    if base_prefix and not any(name.startswith(base_prefix) for name in names):
        return {base_prefix + name: key for name, key in names.items()}, True
    if not base_prefix and any(name.startswith("wav2vec2.") for name in names):
        return {name.removeprefix("wav2vec2."): key for name, key in names.items()}, True
    return names, False


def _source(name: str, names: Mapping[str, str], shapes: Mapping[str, Shape]) -> _Source | None:
    """Where parameter `name` comes from: its own key, or (a folded weight) its g and v."""
    key = names.get(name)
    if key is not None:
        return _Source((key,), shapes[key])
    if name.endswith(".weight"):
        stem = name.removesuffix("weight")
        g, v = names.get(stem + "weight_g"), names.get(stem + "weight_v")
        if g is not None and v is not None:
            return _Source((g, v), shapes[v])
    return None


def _plan(
    shapes: Mapping[str, Shape],
    expected: Iterable[tuple[str, Shape]],
    model: str,
    architecture: str,
    base_prefix: str,
    checkpoint_architecture: str | None,
    ignore_mismatched_sizes: bool,
    allow_missing: bool,
) -> LoadPlan:
    names, reprefixed = _names(shapes, base_prefix)
    other_head = reprefixed or checkpoint_architecture not in (None, architecture)
    plan = LoadPlan({}, "")
    used: set[str] = set()
    missing: list[str] = []
    for name, shape in expected:
        source = _source(name, names, shapes)
        if source is None:
            if allow_missing or (other_head and _HEAD_KEYS.match(name.removeprefix(base_prefix))):
                plan.fresh.append(name)
                continue
            missing.append(name)
            if len(missing) > 3:  # enough to name; the config may imply millions more
                break
            continue
        used.update(source.keys)
        if source.shape != tuple(shape):
            if not ignore_mismatched_sizes:
                raise CheckpointError(
                    f"weight {name!r} has shape {source.shape}, the config needs {tuple(shape)}"
                )
            _log.warning(
                "%s: the shapes did not match (checkpoint %s, model %s); initialized anew",
                name,
                source.shape,
                tuple(shape),
            )
            plan.fresh.append(name)
            continue
        plan.values[name] = source
    if missing:
        more = " and more" if len(missing) > 3 else ""
        raise CheckpointError(f"missing weight {_some(missing[:3])}{more} for {model}")
    unexpected = sorted(name for name, key in names.items() if key not in used)
    if other_head:
        dropped = [n for n in unexpected if _HEAD_KEYS.match(n.removeprefix("wav2vec2."))]
        unexpected = [n for n in unexpected if n not in dropped]
        if dropped:
            _log.warning("head weights not used by %s: %s", model, _some(dropped))
    if unexpected:
        raise CheckpointError(f"unexpected weight {_some(unexpected)} for {model}")
    return plan


def apply_plan(model: NamedParameters, plan: LoadPlan) -> list[str]:
    """Copy a checked checkpoint into `model`, whose parameters are the ones it was checked
    against; draws the fresh ones where the parameter can draw itself. Returns the fresh names."""
    params = dict(model.named_parameters())
    keep_dtype = getattr(model, "keeps_checkpoint_dtype", False)
    for name, source in plan.values.items():
        arrays = [plan.state[key] for key in source.keys]
        value = arrays[0] if len(arrays) == 1 else fold_weight_norm(*arrays)
        value = np.asarray(value) if keep_dtype else np.asarray(value, dtype=np.float32)
        params[name].variable.assign(torch_to_tf(value, params[name].layout))
    drawn = [name for name in plan.fresh if params[name].initialize is not None]
    for name in drawn:
        params[name].initialize()
    if plan.fresh:
        _log.warning(
            "%s weights not in the checkpoint, %s: %s",
            type(model).__name__,
            "initialized anew" if drawn else "left to initialize",
            _some(sorted(plan.fresh)),
        )
    return sorted(plan.fresh)


def check_checkpoint(path: str, config: Wav2Vec2Config) -> None:
    """Check the checkpoint in folder `path` against what `config` implies for its own head,
    without building anything: the cheap refusal a job runs before it loads TensorFlow."""
    from wav2vec2_beam.models.parameter_shapes import expected_parameters

    architecture = config.architecture
    prefix = "" if architecture == "Wav2Vec2Model" else "wav2vec2."
    plan_checkpoint(
        path, expected_parameters(config, architecture), architecture, architecture, prefix
    )


def load_checkpoint_into(model: NamedParameters, path: str) -> list[str]:
    """Check and copy the checkpoint in folder `path` into an already built `model`."""
    expected = [(name, param.torch_shape) for name, param in model.named_parameters()]
    plan = plan_checkpoint(
        path,
        expected,
        type(model).__name__,
        model.architecture,
        model.base_prefix,
        keep_dtype=getattr(model, "keeps_checkpoint_dtype", False),
    )
    return apply_plan(model, plan)


def _some(keys: Iterable[str], limit: int = 3) -> str:
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")

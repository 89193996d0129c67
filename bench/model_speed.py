"""Model-only speed: audio-seconds per second of one implementation on one batch shape.

Runs in whichever venv holds the implementation (ours, TF, and "jax", our Flax model: the project
venv; "torch": transformers' PyTorch Wav2Vec2ForCTC; "tf457": transformers 4.57's
TFWav2Vec2ForCTC with tf-keras), loads the
same random-weight checkpoint, and prints one JSON line per batch size: median, min and max of
`--runs` timed forward passes after `--warmup` untimed ones, and the peak accelerator memory. `bench/run.sh` calls it for every peer and mode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

SAMPLE_RATE = 16_000


def _ours(checkpoint: str, mode: str, device: str) -> Callable[[np.ndarray], object]:
    # models first: importing it sets TensorFlow's oneDNN option, which must precede TensorFlow.
    from wav2vec2_beam.models import TFWav2Vec2ForCTC  # isort: skip

    import tensorflow as tf

    model = TFWav2Vec2ForCTC.from_pretrained(checkpoint)
    precision = "bfloat16" if mode.startswith("bf16") else "float32"
    if mode == "eager":
        return lambda values: model(values).logits.numpy()
    dtype = tf.dtypes.as_dtype(precision)

    @tf.function(jit_compile="xla" in mode, reduce_retracing=True)
    def forward(values: tf.Tensor) -> tf.Tensor:
        return tf.cast(model.forward(tf.cast(values, dtype), None, None, False).logits, tf.float32)

    return lambda values: forward(tf.constant(values)).numpy()


def _torch(checkpoint: str, mode: str, device: str) -> Callable[[np.ndarray], object]:
    """transformers' model; on a GPU, "bf16" is the model cast to bfloat16 with SDPA attention
    (its fastest inference there), on a CPU "bf16-autocast" is autocast (its fastest there)."""
    import torch
    from transformers import Wav2Vec2ForCTC

    torch.set_num_threads(os.cpu_count() or 1)
    # fp32 means fp32 on both sides: cuDNN would run the convolutions in TF32 by default, which
    # our JAX fp32 (Precision.HIGHEST) does not.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    target = "cuda" if device == "gpu" else "cpu"
    model = Wav2Vec2ForCTC.from_pretrained(checkpoint, attn_implementation="sdpa").eval()
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    model = model.to(target, dtype)

    def forward(values: np.ndarray) -> object:
        with torch.inference_mode():
            inputs = torch.from_numpy(values).to(target, dtype)
            if mode == "bf16-autocast":
                with torch.autocast(target, dtype=torch.bfloat16):
                    return model(inputs).logits.float().cpu().numpy()
            return model(inputs).logits.float().cpu().numpy()

    return forward


def _peak_memory_mb(impl: str) -> float | None:
    """Peak accelerator memory of this process so far (None on a CPU)."""
    if impl == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
        return None
    if impl == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None
    return None


def _jax(checkpoint: str, mode: str, device: str) -> Callable[[np.ndarray], object]:
    """Our Flax model, jitted; JAX runs on its default device (the GPU where there is one)."""
    import jax
    import jax.numpy as jnp

    from wav2vec2_beam.models import FlaxWav2Vec2ForCTC

    model = FlaxWav2Vec2ForCTC.from_pretrained(checkpoint)
    module = FlaxWav2Vec2ForCTC.module_class(
        config=model.config, dtype=jnp.bfloat16 if mode == "bf16" else jnp.float32
    )
    params = jax.device_put(model.params)

    @jax.jit
    def forward(params: object, values: jax.Array) -> jax.Array:
        return module.apply({"params": params}, values)["logits"].astype(jnp.float32)

    return lambda values: np.asarray(forward(params, values))


def _tf457(checkpoint: str, mode: str, device: str) -> Callable[[np.ndarray], object]:
    import tensorflow as tf
    from safetensors.numpy import load_file
    from transformers import TFWav2Vec2ForCTC, Wav2Vec2Config
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    model = TFWav2Vec2ForCTC(Wav2Vec2Config.from_pretrained(checkpoint))
    model(tf.zeros((1, SAMPLE_RATE)))  # build the variables
    state = load_file(os.path.join(checkpoint, "model.safetensors"))
    load_pytorch_state_dict_in_tf2_model(model, state)

    @tf.function(jit_compile=mode == "xla", reduce_retracing=True)
    def forward(values: tf.Tensor) -> tf.Tensor:
        return model(values, training=False).logits

    return lambda values: forward(tf.constant(values)).numpy()


IMPLEMENTATIONS = {"ours": _ours, "jax": _jax, "torch": _torch, "tf457": _tf457}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--impl", choices=sorted(IMPLEMENTATIONS), required=True)
    parser.add_argument("--mode", default="fp32")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--batch", default="8", help="Batch size, or sizes comma-separated.")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--device",
        choices=["cpu", "gpu"],
        default="cpu",
        help="gpu: torch's CUDA device (JAX takes its default device, the GPU where there is one).",
    )
    args = parser.parse_args()

    forward = IMPLEMENTATIONS[args.impl](args.checkpoint, args.mode, args.device)
    rng = np.random.default_rng(0)
    # Several batch sizes in one process, smallest first, so that each row's peak memory is its own.
    for batch in sorted(int(b) for b in str(args.batch).split(",")):
        values = rng.standard_normal((batch, int(args.seconds * SAMPLE_RATE))).astype(np.float32)
        for _ in range(args.warmup):
            forward(values)
        durations = []
        for _ in range(args.runs):
            start = time.perf_counter()
            forward(values)
            durations.append(time.perf_counter() - start)
        rates = sorted(batch * args.seconds / d for d in durations)
        row = {
            "impl": args.impl,
            "mode": args.mode,
            "arch": os.path.basename(os.path.normpath(args.checkpoint)),
            "batch": batch,
            "seconds": args.seconds,
            "median": statistics.median(rates),
            "min": rates[0],
            "max": rates[-1],
            "runs": args.runs,
            "device": args.device,
            "peak_memory_mb": _peak_memory_mb(args.impl),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

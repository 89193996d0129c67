"""Model-only speed: audio-seconds per second of one implementation on one batch shape.

Runs in whichever venv holds the implementation (ours: the project venv; "torch": transformers'
PyTorch Wav2Vec2ForCTC; "tf457": transformers 4.57's TFWav2Vec2ForCTC with tf-keras), loads the
same random-weight checkpoint, and prints one JSON line: median, min and max of `--runs` timed
forward passes after `--warmup` untimed ones. `bench/run.sh` calls it for every peer and mode.
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


def _ours(checkpoint: str, mode: str) -> Callable[[np.ndarray], object]:
    # models first: importing it sets TensorFlow's oneDNN option, which must precede TensorFlow.
    from models import TFWav2Vec2ForCTC  # isort: skip

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


def _torch(checkpoint: str, mode: str) -> Callable[[np.ndarray], object]:
    import torch
    from transformers import Wav2Vec2ForCTC

    torch.set_num_threads(os.cpu_count() or 1)
    model = Wav2Vec2ForCTC.from_pretrained(checkpoint).eval()

    def forward(values: np.ndarray) -> object:
        with torch.inference_mode():
            if mode == "bf16-autocast":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return model(torch.from_numpy(values)).logits.float().numpy()
            return model(torch.from_numpy(values)).logits.numpy()

    return forward


def _tf457(checkpoint: str, mode: str) -> Callable[[np.ndarray], object]:
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


IMPLEMENTATIONS = {"ours": _ours, "torch": _torch, "tf457": _tf457}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--impl", choices=sorted(IMPLEMENTATIONS), required=True)
    parser.add_argument("--mode", default="fp32")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    forward = IMPLEMENTATIONS[args.impl](args.checkpoint, args.mode)
    rng = np.random.default_rng(0)
    values = rng.standard_normal((args.batch, int(args.seconds * SAMPLE_RATE))).astype(np.float32)
    for _ in range(args.warmup):
        forward(values)
    durations = []
    for _ in range(args.runs):
        start = time.perf_counter()
        forward(values)
        durations.append(time.perf_counter() - start)
    audio = args.batch * args.seconds
    rates = sorted(audio / d for d in durations)
    print(
        json.dumps(
            {
                "impl": args.impl,
                "mode": args.mode,
                "arch": os.path.basename(os.path.normpath(args.checkpoint)),
                "batch": args.batch,
                "seconds": args.seconds,
                "median": statistics.median(rates),
                "min": rates[0],
                "max": rates[-1],
                "runs": args.runs,
            }
        )
    )


if __name__ == "__main__":
    main()

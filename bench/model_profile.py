"""Where our model's time goes: each stage of the forward pass timed on its own, fp32 and bf16.

    .venv/bin/python -m bench.model_profile [--checkpoint bench/checkpoints/base] [--batch 8]
        [--seconds 10] [--runs 3] [--precision float32 bfloat16]

Each stage runs as its own `tf.function` on the input it gets inside the model (captured from one
forward pass of random audio), once to trace and then `--runs` times; the best time is kept. The
stages: the convolution stack (and, inside it, its epilogues and its first layer), the
feature projection, the positional convolution, attention, the feed-forward blocks
(and their activation), the layer norms, the CTC head, and the whole model in one function. Parts
timed alone do not add up exactly to the whole (one function fuses and schedules across them), so
each is reported as seconds per batch and as a share of the whole. Prints one JSON object, and a
table on stderr, with the CPU's model name and its bf16/AMX flags: bf16 without hardware support
is emulated and says nothing about a machine that has it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.lm_speed import machine

REPO = Path(__file__).resolve().parents[1]


def _best_seconds(function: Callable[[], object], runs: int) -> float:
    function()  # trace (and, for XLA, compile)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def profile(checkpoint: str, batch: int, seconds: float, precision: str, runs: int) -> dict:
    from wav2vec2_beam.models import load_model  # isort: skip  (first: it sets TensorFlow's oneDNN option)

    import tensorflow as tf

    from wav2vec2_beam.models.tf_layers import _fusable_activation

    model = load_model(checkpoint)
    config = model.config
    main = model.wav2vec2
    dtype = tf.dtypes.as_dtype(precision)
    audio = np.random.default_rng(0).standard_normal((batch, int(seconds * 16_000)))
    values = tf.cast(tf.constant(audio, tf.float32), dtype)

    # The tensors each stage sees inside the model (one forward pass, stage by stage).
    conv_outputs = []
    x = tf.cast(values, tf.float32)
    for layer in main.feature_extractor.conv_layers:
        x = layer(x, None, dtype)  # as the model does: the first layer takes float32
        conv_outputs.append(x)
    projected, _ = main.feature_projection(x)
    hidden = projected + main.encoder.pos_conv_embed(projected)
    layers = main.encoder.layers
    intermediate_dense = layers[0].feed_forward.intermediate_dense
    gelu = _fusable_activation(config.hidden_act)
    conv_layers = main.feature_extractor.conv_layers
    first = conv_layers[0]

    def timed(call: Callable[[], object]) -> float:
        return _best_seconds(tf.function(call), runs)

    stages: dict[str, float] = {
        "whole model": timed(lambda: model.forward(values, None, None, False).logits),
        "conv stack (7 convolutions, norm, activations)": timed(
            lambda: main.feature_extractor(values, None)
        ),
        # on each layer's output rather than its convolution's: the same shape and type
        "  its epilogues alone (layers after the first)": timed(
            lambda: [
                layer.epilogue(out, dtype)
                for layer, out in zip(conv_layers[1:], conv_outputs[1:], strict=True)
            ]
        ),
    }
    stages["  its first layer (convolution, norm, activation)"] = timed(
        lambda: first(tf.cast(values, tf.float32), None, dtype)
    )
    stages.update(
        {
            "feature projection (layer norm, linear)": timed(lambda: main.feature_projection(x)[0]),
            "positional convolution (grouped, activation)": timed(
                lambda: main.encoder.pos_conv_embed(projected)
            ),
            f"attention x {len(layers)}": timed(
                lambda: [layer.attention(hidden, None, False) for layer in layers]
            ),
            f"feed-forward x {len(layers)}": timed(
                lambda: [layer.feed_forward(hidden, False) for layer in layers]
            ),
            # The activation runs inside the product's kernel: its cost is the product with it
            # less the product alone, one call each, multiplied (twelve identical calls in one
            # function would be merged by TensorFlow's common-subexpression elimination).
            f"  its activation (fused into the product) x {len(layers)}": len(layers)
            * (
                timed(lambda: intermediate_dense(hidden, gelu))
                - timed(lambda: intermediate_dense(hidden))
            ),
            f"layer norms x {2 * len(layers) + 1}": timed(
                lambda: (
                    [layer.layer_norm(hidden) for layer in layers]
                    + [layer.final_layer_norm(hidden) for layer in layers]
                    + [main.encoder.layer_norm(hidden)]
                )
            ),
        }
    )
    if getattr(model, "lm_head", None) is not None:
        stages["CTC head"] = timed(lambda: model.lm_head(hidden))
    whole = stages["whole model"]
    return {
        "precision": precision,
        "batch": batch,
        "seconds_each": seconds,
        "audio_s_per_s": batch * seconds / whole,
        "stages_s": stages,
        "stages_share": {name: value / whole for name, value in stages.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default=str(REPO / "bench" / "checkpoints" / "base"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    report = {
        "machine": machine(),
        "checkpoint": args.checkpoint,
        "profiles": [
            profile(args.checkpoint, args.batch, args.seconds, precision, args.runs)
            for precision in args.precision
        ],
    }
    for result in report["profiles"]:
        print(
            f"{result['precision']}: {result['audio_s_per_s']:.1f} audio-s/s "
            f"({args.batch} x {args.seconds:g} s)",
            file=sys.stderr,
        )
        for name, value in result["stages_s"].items():
            share = result["stages_share"][name]
            print(f"  {name:<50} {value:7.3f} s  {share:6.1%}", file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

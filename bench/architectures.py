"""The two architectures in the wild, as config.json dicts (values of the public checkpoints).

facebook/wav2vec2-base-960h: group-norm conv stack, post-norm encoder, 12 x 768.
facebook/wav2vec2-large-960h-lv60-self: layer-norm conv stack with bias, pre-norm encoder, 24 x 1024.
Benchmarks use random weights in these shapes: speed does not depend on the values.
"""

from __future__ import annotations

from typing import Any

_COMMON: dict[str, Any] = {
    "architectures": ["Wav2Vec2ForCTC"],
    "model_type": "wav2vec2",
    "vocab_size": 32,
    "pad_token_id": 0,
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "hidden_act": "gelu",
    "feat_extract_activation": "gelu",
    "mask_time_prob": 0.05,
    "ctc_loss_reduction": "sum",
}

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "base": {
        **_COMMON,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "feat_extract_norm": "group",
        "do_stable_layer_norm": False,
        "conv_bias": False,
        "layer_norm_eps": 1e-5,
    },
    "lv60": {
        **_COMMON,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "conv_bias": True,
        "layer_norm_eps": 1e-5,
    },
}

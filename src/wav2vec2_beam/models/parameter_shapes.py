"""The parameters a config implies, by name and PyTorch shape, without building a model.

A checkpoint is checked against these before any variable exists (`models.weights`): a config
that asks for a million layers, or a hidden size a weights file does not have, is refused while it
is still a few numbers, not after gigabytes were allocated. They are yielded lazily, layer by
layer, so that the check stops at the first weight the checkpoint lacks.

They are the names both backends' `named_parameters` yield (tests/test_checkpoint_errors.py holds
them to it for every head): Hugging Face's, with the positional convolution's weight folded
(`conv.weight`, the TF classes) or as its weight-norm pair (`conv.weight_g`/`conv.weight_v`,
the Flax classes, as transformers' Flax classes hold it).
"""

from __future__ import annotations

from collections.abc import Iterator

from wav2vec2_beam.models.configuration import Wav2Vec2Config

Shape = tuple[int, ...]


def expected_parameters(
    config: Wav2Vec2Config, architecture: str, weight_norm_pair: bool = False
) -> Iterator[tuple[str, Shape]]:
    """(name, PyTorch shape) of every parameter of `architecture` built from `config`."""
    prefix = "" if architecture == "Wav2Vec2Model" else "wav2vec2."
    for name, shape in _encoder(config, weight_norm_pair):
        yield prefix + name, shape
    yield from _head(config, architecture)


def _linear(name: str, d_in: int, d_out: int) -> Iterator[tuple[str, Shape]]:
    yield f"{name}.weight", (d_out, d_in)
    yield f"{name}.bias", (d_out,)


def _norm(name: str, dim: int) -> Iterator[tuple[str, Shape]]:
    yield f"{name}.weight", (dim,)
    yield f"{name}.bias", (dim,)


def _encoder(config: Wav2Vec2Config, weight_norm_pair: bool) -> Iterator[tuple[str, Shape]]:
    hidden = config.hidden_size
    for index, (width, kernel) in enumerate(zip(config.conv_dim, config.conv_kernel, strict=True)):
        layer = f"feature_extractor.conv_layers.{index}"
        d_in = config.conv_dim[index - 1] if index > 0 else 1
        yield f"{layer}.conv.weight", (width, d_in, kernel)
        if config.conv_bias:
            yield f"{layer}.conv.bias", (width,)
        if config.feat_extract_norm == "layer" or index == 0:
            yield from _norm(f"{layer}.layer_norm", width)
    yield from _norm("feature_projection.layer_norm", config.conv_dim[-1])
    yield from _linear("feature_projection.projection", config.conv_dim[-1], hidden)
    if config.mask_time_prob > 0 or config.mask_feature_prob > 0:
        yield "masked_spec_embed", (hidden,)
    groups, taps = config.num_conv_pos_embedding_groups, config.num_conv_pos_embeddings
    conv = "encoder.pos_conv_embed.conv"
    if weight_norm_pair:
        yield f"{conv}.weight_g", (1, 1, taps)
        yield f"{conv}.weight_v", (hidden, hidden // groups, taps)
    else:
        yield f"{conv}.weight", (hidden, hidden // groups, taps)
    yield f"{conv}.bias", (hidden,)
    yield from _norm("encoder.layer_norm", hidden)
    for index in range(config.num_hidden_layers):
        layer = f"encoder.layers.{index}"
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield from _linear(f"{layer}.attention.{projection}", hidden, hidden)
        yield from _norm(f"{layer}.layer_norm", hidden)
        feed_forward = f"{layer}.feed_forward"
        yield from _linear(f"{feed_forward}.intermediate_dense", hidden, config.intermediate_size)
        yield from _linear(f"{feed_forward}.output_dense", config.intermediate_size, hidden)
        yield from _norm(f"{layer}.final_layer_norm", hidden)


def _head(config: Wav2Vec2Config, architecture: str) -> Iterator[tuple[str, Shape]]:
    hidden = config.hidden_size
    if architecture == "Wav2Vec2ForCTC":
        yield from _linear("lm_head", hidden, config.vocab_size)
    elif architecture == "Wav2Vec2ForSequenceClassification":
        if config.use_weighted_layer_sum:
            yield "layer_weights", (config.num_hidden_layers + 1,)
        yield from _linear("projector", hidden, config.classifier_proj_size)
        yield from _linear("classifier", config.classifier_proj_size, config.num_labels)
    elif architecture == "Wav2Vec2ForPreTraining":
        groups, per_group = config.num_codevector_groups, config.num_codevectors_per_group
        width = config.codevector_dim // groups
        yield "quantizer.codevectors", (1, groups * per_group, width)
        yield from _linear("quantizer.weight_proj", config.conv_dim[-1], groups * per_group)
        yield from _linear("project_hid", hidden, config.proj_codevector_dim)
        yield from _linear("project_q", config.codevector_dim, config.proj_codevector_dim)

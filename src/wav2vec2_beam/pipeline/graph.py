"""The job graph: each stage of the data's path is one named transform from transforms/.

    Inputs -> ReadCorpus -> Reshuffle (remote runners) -> DecodeItems -> BatchAudio
        -> RunInference -> Stitch -> CtcDecode -> ScoreTranscripts (transcripts)
        -> WriteFiles (--formats) -> WriteOutputs
    (CtcDecode's beam search runs in processes beside the model: transforms/write/lm_decode.py)
    ReadCorpus's errors -> WriteReadErrors
    ExistingIds (--skip_existing) -> ReadCorpus, as the ids to leave out; -> the writers

The Reshuffle moves work units (file paths, one utterance's encoded bytes) and is the job's only
shuffle of data. From DecodeItems to the writers there is no grouping, so the stage fuses: an
item's windows stream through the model and its rows reach disk, piece by piece, as it completes.
Model outputs never cross a shuffle. There is no Flatten there either (the local runner
materializes a Flatten whole): the stitcher's one output carries every item's result or error row
to one writer.

Which tables `WriteOutputs` writes depends on `config.outputs`, resolved against the checkpoint's
head. Only wiring lives here; what each stage does, and why, is in its module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from wav2vec2_beam.models.configuration import Wav2Vec2Config
from wav2vec2_beam.pipeline.options import RunConfig, resolve_outputs
from wav2vec2_beam.transforms.infer.batch import BatchAudio, ladder_for
from wav2vec2_beam.transforms.infer.model_handler import InferenceSpec, Wav2Vec2ModelHandler
from wav2vec2_beam.transforms.infer.stitch import StitchItems
from wav2vec2_beam.transforms.read.corpus import ITEMS_TAG, CorpusOptions, ReadCorpus
from wav2vec2_beam.transforms.read.decode_items import DecodeItems
from wav2vec2_beam.transforms.read.resume import ReadExistingIds, done_ids
from wav2vec2_beam.transforms.records import ERRORS_TAG
from wav2vec2_beam.transforms.write.ctc_decode import CtcDecode
from wav2vec2_beam.transforms.write.lm_decode import BeamDecoding
from wav2vec2_beam.transforms.write.pool import TABLE as POOLED_TABLE
from wav2vec2_beam.transforms.write.pool import pooled_table
from wav2vec2_beam.transforms.write.score import ScoreTranscripts
from wav2vec2_beam.transforms.write.subtitles import WriteFiles
from wav2vec2_beam.transforms.write.tables import (
    TableSpec,
    WriteOutputs,
    classifications_table,
    codes_table,
    hidden_states_table,
    logits_table,
    segments_table,
    transcripts_table,
)


def inference_spec(
    config: RunConfig, model: Wav2Vec2Config, hidden_layers: Sequence[int]
) -> InferenceSpec:
    """What the model handler computes for this run."""
    config = resolve_outputs(config, model)
    return InferenceSpec(
        model_dir=config.model_dir,
        ctc="transcripts" in config.outputs,
        logits="logits" in config.outputs,
        hidden_layers=tuple(hidden_layers),
        ladder=run_ladder(config, model.inputs_to_logits_ratio),
        precision=config.precision,
        jit_compile=config.jit_compile,
        backend=config.backend,
        jax_cache=config.jax_cache and config.backend == "jax",
        jax_cache_dir=config.jax_cache_dir,
        classify="classifications" in config.outputs,
        codes="codes" in config.outputs,
    )


def run_ladder(config: RunConfig, align_to: int) -> tuple[int, ...]:
    """The batches' lengths: the model traces and batches by the same ladder."""
    return ladder_for(config.longest_model_input_s, align_to, config.segment == "vad")


def item_tables(config: RunConfig) -> list[str]:
    """The tables every succeeded item has a row in (one per layer in the per-layer tables)."""
    return [*config.outputs] + ([POOLED_TABLE] if config.pool == "mean" else [])


def written_tables(config: RunConfig) -> list[str]:
    """The tables a run writes ids into; `--skip_existing` reads the ids they hold. (An item
    without speech has no `segments` row, so that table is not among `item_tables`.)"""
    return ["errors", *item_tables(config)] + (["segments"] if config.segment == "vad" else [])


def table_specs(
    config: RunConfig, model: Wav2Vec2Config, hidden_layers: Sequence[int]
) -> list[TableSpec]:
    """How each table of `item_tables(config)` is built, in that order."""
    dtype = config.feature_dtype
    specs = {
        "transcripts": transcripts_table,
        "logits": lambda: logits_table(dtype, model.vocab_size),
        "hidden_states": lambda: hidden_states_table(dtype, model.hidden_size, hidden_layers),
        "classifications": lambda: classifications_table(model.id2label, config.model_dir),
        "codes": lambda: codes_table(model.num_codevector_groups),
        POOLED_TABLE: lambda: pooled_table(dtype, model.hidden_size, hidden_layers),
    }
    segments = [segments_table()] if config.segment == "vad" else []
    return [specs[name]() for name in item_tables(config)] + segments


def build_pipeline(
    pipeline: beam.Pipeline,
    config: RunConfig,
    model: Wav2Vec2Config,
    hidden_layers: Sequence[int],
    run_id: str,
    progress_dir: str | None = None,
    reshuffle: bool = True,
    decoding: BeamDecoding | None = None,
) -> None:
    """Add the whole job to `pipeline`; `hidden_layers` as `check_against_model` resolved them.

    `reshuffle` puts a fusion break between reading and decoding, so that a cluster spreads the
    corpus's items over its workers; it moves work units only (paths, or one utterance's encoded
    bytes). Local runs leave it out: on the DirectRunner it spreads nothing and would hold every
    item of the corpus in memory at once. Everything after it, decoding to writing, is one fused
    stage with no grouping, so each item's windows stream from the decoder to the model and its
    rows from the stitcher to disk. `--outputs` left out means the head's default tables
    (`resolve_outputs`). `decoding` is the beam search transcripts are decoded with (None:
    greedy), as the launcher checked it (`transforms.write.lm_decode.plan_decoding`).
    """
    config = resolve_outputs(config, model)
    align_to = model.inputs_to_logits_ratio
    existing = done = None
    if config.skip_existing:
        existing = pipeline | "ExistingIds" >> ReadExistingIds(
            config.output_dir, written_tables(config)
        )
        tables = item_tables(config)
        done = existing | "DoneIds" >> beam.Map(done_ids, tables)
    corpus = CorpusOptions(
        config.input_format, config.audio_column, config.text_column, config.id_column
    )
    read = (
        pipeline
        | "Inputs" >> beam.Create(list(config.inputs))
        | "ReadCorpus" >> ReadCorpus(corpus, done=done, progress_dir=progress_dir)
    )
    items = read[ITEMS_TAG]
    if reshuffle:
        items = items | "Reshuffle" >> beam.Reshuffle()
    spec = inference_spec(config, model, hidden_layers)
    handler = Wav2Vec2ModelHandler(
        replace(spec, ctc_log_probs=decoding is not None),
        share_across_processes=config.share_model_across_processes,
        progress_dir=progress_dir,
    )
    results = (
        items
        | "DecodeItems"
        >> DecodeItems(config.chunking(align_to), max_segment_s=config.voice_segments_s)
        | "BatchAudio"
        >> BatchAudio(
            run_ladder(config, align_to),
            config.batch_size,
            config.max_batch_samples,
        )
        | "RunInference" >> RunInference(handler)
        | "Stitch" >> StitchItems(align_to, config.feature_dtype)
    )
    if "transcripts" in config.outputs:
        results = (
            results
            | "CtcDecode"
            >> CtcDecode(config.model_dir, align_to, decoding, config.decoding_processes)
            | "ScoreTranscripts" >> ScoreTranscripts()
        )
    out, limits = config.output_dir, config.piece_limits
    specs = table_specs(config, model, hidden_layers)
    if config.formats:  # before the tables: an item's files exist once its rows do
        results = results | "WriteFiles" >> WriteFiles(config.formats, out)
    # Each writer's name is in its pieces' names (see transforms/write/tables.py).
    _ = results | "WriteOutputs" >> WriteOutputs(
        specs, out, run_id, limits, "out", existing, progress_dir
    )
    _ = read[ERRORS_TAG] | "WriteReadErrors" >> WriteOutputs(
        [], out, run_id, limits, "read", existing, progress_dir
    )

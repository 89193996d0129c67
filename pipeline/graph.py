"""The job graph: each stage of the data's path is one named transform from transforms/.

    Inputs -> ReadCorpus -> Reshuffle (remote runners) -> BatchAudio -> RunInference -> Stitch
        -> CtcDecode -> ScoreTranscripts -> WriteTranscripts
        -> WriteLogits, WriteHiddenStates, WriteClassifications, WriteCodes
        -> WritePooledHiddenStates (--pool mean)
    (ReadCorpus errors, Stitch errors) -> WriteErrors
    ExistingIds (--skip_existing) -> ReadCorpus, as the ids to leave out

Which writers are wired depends on `config.outputs`, resolved against the checkpoint's head.

Only wiring lives here; what each stage does, and why, is in its module.
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from models.configuration import Wav2Vec2Config
from pipeline.options import RunConfig, resolve_outputs
from transforms.batch_audio import BatchAudio, ladder_for
from transforms.ctc_decode import CtcDecode
from transforms.infer import InferenceSpec, Wav2Vec2ModelHandler
from transforms.pool import TABLE as POOLED_TABLE
from transforms.pool import pooled_table
from transforms.read_audio import CHUNKS_TAG
from transforms.read_corpus import CorpusOptions, ReadCorpus
from transforms.records import ERRORS_TAG
from transforms.resume import ReadExistingIds
from transforms.score import ScoreTranscripts
from transforms.stitch import ITEMS_TAG, StitchItems
from transforms.write_outputs import (
    WriteTable,
    classifications_table,
    codes_table,
    errors_table,
    hidden_states_table,
    logits_table,
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
        ladder=ladder_for(config.chunk_length_s, model.inputs_to_logits_ratio),
        precision=config.precision,
        jit_compile=config.jit_compile,
        classify="classifications" in config.outputs,
        codes="codes" in config.outputs,
    )


def written_tables(config: RunConfig) -> list[str]:
    """The tables a run writes ids into; `--skip_existing` leaves out the ids they hold."""
    return ["errors", *config.outputs] + ([POOLED_TABLE] if config.pool == "mean" else [])


def build_pipeline(
    pipeline: beam.Pipeline,
    config: RunConfig,
    model: Wav2Vec2Config,
    hidden_layers: Sequence[int],
    run_id: str,
    progress_dir: str | None = None,
    reshuffle: bool = True,
) -> None:
    """Add the whole job to `pipeline`; `hidden_layers` as `check_against_model` resolved them.

    `reshuffle` puts a fusion break between reading and inference, so that a cluster spreads one
    file's windows over many workers. Local runs leave it out: on the DirectRunner it spreads
    nothing and would hold every window of the corpus in memory at once, where without it
    windows stream from the decoder to the model and memory stays flat in file length.
    `--outputs` left out means the head's default tables (`resolve_outputs`).
    """
    config = resolve_outputs(config, model)
    align_to = model.inputs_to_logits_ratio
    done = None
    if config.skip_existing:
        tables = written_tables(config)
        done = pipeline | "ExistingIds" >> ReadExistingIds(config.output_dir, tables)
    corpus = CorpusOptions(
        config.input_format, config.audio_column, config.text_column, config.id_column
    )
    read = (
        pipeline
        | "Inputs" >> beam.Create(list(config.inputs))
        | "ReadCorpus"
        >> ReadCorpus(
            corpus, config.chunk_length_s, config.stride_length_s, align_to=align_to, done=done
        )
    )
    handler = Wav2Vec2ModelHandler(
        inference_spec(config, model, hidden_layers),
        share_across_processes=config.share_model_across_processes,
        progress_dir=progress_dir,
    )
    chunks = read[CHUNKS_TAG]
    if reshuffle:
        chunks = chunks | "Reshuffle" >> beam.Reshuffle()
    inferred = (
        chunks
        | "BatchAudio"
        >> BatchAudio(
            ladder_for(config.chunk_length_s, align_to),
            config.batch_size,
            config.max_batch_samples,
        )
        | "RunInference" >> RunInference(handler)
    )
    stitched = (inferred, read[ERRORS_TAG]) | "Stitch" >> StitchItems(
        align_to, config.feature_dtype, progress_dir
    )
    items = stitched[ITEMS_TAG]
    out = config.output_dir
    if "transcripts" in config.outputs:
        _ = (
            items
            | "CtcDecode" >> CtcDecode(config.model_dir, align_to)
            | "ScoreTranscripts" >> ScoreTranscripts()
            | "WriteTranscripts" >> WriteTable(transcripts_table(), out, run_id)
        )
    if "logits" in config.outputs:
        table = logits_table(config.feature_dtype, model.vocab_size)
        _ = items | "WriteLogits" >> WriteTable(table, out, run_id)
    if "hidden_states" in config.outputs:
        table = hidden_states_table(config.feature_dtype, model.hidden_size, hidden_layers)
        _ = items | "WriteHiddenStates" >> WriteTable(table, out, run_id)
    if "classifications" in config.outputs:
        table = classifications_table(model.id2label, config.model_dir)
        _ = items | "WriteClassifications" >> WriteTable(table, out, run_id)
    if "codes" in config.outputs:
        table = codes_table(model.num_codevector_groups)
        _ = items | "WriteCodes" >> WriteTable(table, out, run_id)
    if config.pool == "mean":
        table = pooled_table(config.feature_dtype, model.hidden_size, hidden_layers)
        _ = items | "WritePooledHiddenStates" >> WriteTable(table, out, run_id)
    _ = stitched[ERRORS_TAG] | "WriteErrors" >> WriteTable(errors_table(), out, run_id)

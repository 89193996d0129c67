"""Beam stage: batches of `AudioChunk`s through our Wav2Vec2, via `RunInference` and our handler.

`Wav2Vec2ModelHandler` is a Beam `ModelHandler`, so RunInference gives it Beam's model sharing:
`load_model` runs once per worker process (`shared.Shared`, and every thread of the process uses
that copy), or, with `share_across_processes`, once per machine in a model server process that all
SDK processes of the machine call (`multi_process_shared`): on a one-GPU worker that is one model
per GPU however many SDK processes Dataflow starts. Everything TensorFlow or JAX (the model, the
traced tf.function, the jitted program) is built inside `load_model`, because neither is
picklable and the handler itself is pickled into the job. `InferenceSpec.backend` picks the
model: TensorFlow ("tf") or JAX/Flax ("jax"); everything around it is the same.

Batches come from `transforms.infer.batch` (RunInference's own BatchElements knows nothing of
audio length), so the handler skips RunInference's batching.

The hot path is per batch: normalization is one numpy expression per item (the statistics are
per item, as the reference feature extractor computes them), then one forward pass; the greedy CTC
ids and their probabilities are reduced from the logits here, so that only two numbers per frame
travel on when logits are not asked for. Likewise a classifier's logits become its softmax
probabilities here (the stitcher pools probabilities, not logits), and the pretraining head's
codevector ids travel as int16.

Failures stay per item: a window shorter than the model's receptive field, a batch the model
cannot run (then each item is retried alone, so one bad item does not fail its batch) and
non-finite outputs give an `InferredChunk` with `error` set, which the stitcher turns into the
item's error row. An item's failure marker from the decoder (`records.failure_marker`) is passed on
the same way, with the decoder's stage, and without a forward pass. Nothing here stops the job.

Padding is counted too: `input_samples` (the windows' samples) and `computed_samples` (what the
forward passes computed: each batch's bucket length times its power-of-two row count), whose
ratio gives summary.json's `padding_waste`.

Model loads are counted in the `wav2vec2/model_loads` counter for summary.json. Beam calls
`load_model` from `DoFn.setup` (or inside the model server process), where a counter increment
would be lost, so the loaded model remembers that its load is unreported and the first batch run
on it, inside a bundle, reports it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from wav2vec2_beam.models.ctc_beam_search import log_softmax
from wav2vec2_beam.models.feature_extraction import Wav2Vec2FeatureExtractor
from wav2vec2_beam.transforms.records import (
    CLASS_PROBABILITIES,
    CODES,
    CTC_CONFIDENCE,
    CTC_IDS,
    CTC_LOG_PROBS,
    LOGITS,
    TARGET_SAMPLE_RATE,
    AudioChunk,
    ErrorRecord,
    InferredChunk,
    hidden_state_key,
)
from wav2vec2_beam.transforms.write.progress import METRICS_NAMESPACE, record_progress

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceSpec:
    """What the handler computes; plain values only, so that the handler pickles."""

    model_dir: str
    #: Emit per-frame greedy CTC ids and their probabilities (for transcripts).
    ctc: bool
    #: Emit the CTC logits.
    logits: bool
    #: Hidden layers to emit, as non-negative indices into the reference's hidden_states.
    hidden_layers: tuple[int, ...]
    #: The runner's bucket ladder (the same one `BatchAudio` batches by).
    ladder: tuple[int, ...]
    precision: str = "float32"
    jit_compile: bool = False
    #: Emit a sequence classifier's softmax probabilities per window (for classifications).
    classify: bool = False
    #: Emit the pretraining head's codevector ids per frame (for codes).
    codes: bool = False
    #: Emit per-frame CTC log-probabilities (for beam-search decoding).
    ctc_log_probs: bool = False
    #: The model's backend: "tf" (TensorFlow) or "jax" (JAX/Flax).
    backend: str = "tf"
    #: Whether the jax backend keeps its compiled programs for later processes...
    jax_cache: bool = False
    #: ...in this folder, local or gs:// (None: the worker's own local cache, `jax/` in
    #: `models.file_cache.cache_root()`, resolved on the worker rather than the launcher).
    jax_cache_dir: str | None = None


def configure_gpus() -> None:
    """Turn on memory growth for every GPU, so TensorFlow takes GPU memory as it needs it.

    Without it TensorFlow reserves nearly all GPU memory at its first op, which leaves nothing to a
    second process on the same GPU. It must run before TensorFlow initializes the GPUs; in a
    process where that already happened (a launcher that validated the model first) it is too late
    and the setting stays as it was.
    """
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            _LOG.warning("GPU %s is already initialized; memory growth unchanged", gpu.name)


def max_softmax(logits: np.ndarray) -> np.ndarray:
    """Per-frame top softmax probability, computed stably as 1 / sum(exp(logits - max))."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return (1.0 / np.exp(shifted).sum(axis=-1)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax of a logits vector, computed stably in float64 and returned as float32."""
    shifted = np.exp(logits.astype(np.float64) - logits.max())
    return (shifted / shifted.sum()).astype(np.float32)


def normalize(samples: np.ndarray, do_normalize: bool) -> np.ndarray:
    """One item's model input, normalized as the checkpoint's feature extractor does it."""
    if not do_normalize:
        return samples
    return Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm([samples], None)[0]


class LoadedWav2Vec2:
    """A loaded checkpoint and its compiled runner: what `load_model` returns, one per process.

    Also the object a model server process serves when the model is shared across processes, so
    its methods take and return only picklable values.
    """

    def __init__(self, spec: InferenceSpec) -> None:
        from wav2vec2_beam.models import load_model

        self._spec = spec
        if spec.backend == "jax":
            # JAX would otherwise reserve 75% of each GPU's memory at its first op, which leaves
            # nothing to a second process on the same GPU; it must be set before JAX starts.
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
            if spec.jax_cache:
                from wav2vec2_beam.models.file_cache import cache_root
                from wav2vec2_beam.models.inference_flax import keep_compiled_programs

                keep_compiled_programs(spec.jax_cache_dir or os.path.join(cache_root(), "jax"))
        else:
            configure_gpus()
        self._model = load_model(spec.model_dir, backend=spec.backend)
        config = self._model.config
        self._receptive_field = config.receptive_field
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(spec.model_dir)
        if extractor.sampling_rate != TARGET_SAMPLE_RATE:
            raise ValueError(
                f"preprocessor_config.json says sampling_rate {extractor.sampling_rate}; "
                f"this pipeline feeds models {TARGET_SAMPLE_RATE} Hz audio"
            )
        self._do_normalize = extractor.do_normalize
        self._runner = _runner(self._model, spec)
        self._lock = threading.Lock()
        self._load_unreported = True

    def serves(self, spec: InferenceSpec) -> bool:
        """Whether this loaded model can run `spec`: the same checkpoint, backend and runner
        (which outputs are kept is per batch, so it may differ)."""
        mine, theirs = self._spec, spec
        return (mine.model_dir, mine.backend, mine.precision, mine.jit_compile, mine.ladder) == (
            theirs.model_dir,
            theirs.backend,
            theirs.precision,
            theirs.jit_compile,
            theirs.ladder,
        ) and mine.hidden_layers == theirs.hidden_layers

    def serving(self, spec: InferenceSpec) -> LoadedWav2Vec2:
        """This model, now choosing its outputs by `spec` (which it `serves`)."""
        self._spec = spec
        return self

    def computed_samples(self, lengths: Sequence[int]) -> int:
        """Samples a forward pass over items of `lengths` computes, padding included."""
        return self._runner.length_for(max(lengths)) * self._runner.rows_for(len(lengths))

    def take_unreported_load(self) -> bool:
        """True exactly once per load, so that exactly one batch reports it."""
        with self._lock:
            unreported, self._load_unreported = self._load_unreported, False
            return unreported

    def infer(self, chunks: Sequence[AudioChunk]) -> list[InferredChunk]:
        """Outputs for each chunk, in order; failures are per chunk (see module docstring)."""
        results: list[InferredChunk | None] = [None] * len(chunks)
        runnable = []
        for position, chunk in enumerate(chunks):
            if chunk.error is not None:
                results[position] = _marked(chunk, chunk.error)
            elif not chunk.needs_model:  # an item without speech (`--segment vad`)
                results[position] = _inferred(chunk, {}, None)
            elif len(chunk.samples) < self._receptive_field:
                results[position] = _failed(
                    chunk,
                    f"window of {len(chunk.samples)} samples is shorter than the model's "
                    f"receptive field ({self._receptive_field} samples)",
                )
            else:
                runnable.append(position)
        if runnable:
            inputs = [normalize(chunks[p].samples, self._do_normalize) for p in runnable]
            for position, result in zip(runnable, self._run(inputs, chunks, runnable), strict=True):
                results[position] = result
        return results  # type: ignore[return-value]

    def _run(
        self, inputs: list[np.ndarray], chunks: Sequence[AudioChunk], positions: list[int]
    ) -> list[InferredChunk]:
        """Run one batch; if the model fails on it, run each item alone to isolate the failure."""
        try:
            outputs = self._runner.run(inputs)
        except Exception as error:
            if len(inputs) == 1:
                return [_failed(chunks[positions[0]], f"{type(error).__name__}: {error}")]
            _LOG.warning("batch of %d failed (%s); retrying items alone", len(inputs), error)
            return [
                result
                for array, position in zip(inputs, positions, strict=True)
                for result in self._run([array], chunks, [position])
            ]
        return [
            self._chunk_result(chunks[position], outputs, row)
            for row, position in enumerate(positions)
        ]

    def _chunk_result(self, chunk: AudioChunk, outputs: Any, row: int) -> InferredChunk:
        """Select this item's requested outputs from a batch and check they are finite."""
        frames: dict[str, np.ndarray] = {}
        if outputs.logits is not None:
            logits = outputs.logits[row]
            if self._spec.ctc:
                frames[CTC_IDS] = logits.argmax(axis=-1).astype(np.int32)
                frames[CTC_CONFIDENCE] = max_softmax(logits)
            if self._spec.ctc_log_probs:
                frames[CTC_LOG_PROBS] = log_softmax(logits)
            if self._spec.logits:
                frames[LOGITS] = logits
        per_window: dict[str, np.ndarray] = {}
        if self._spec.classify:
            class_logits = outputs.class_logits[row]
            if not np.isfinite(class_logits).all():
                return _failed(chunk, "the model's class logits hold NaN or Inf")
            per_window[CLASS_PROBABILITIES] = softmax(class_logits)
        if self._spec.codes:
            frames[CODES] = outputs.codevector_ids[row].astype(np.int16)
        for position, layer in enumerate(self._spec.hidden_layers):
            frames[hidden_state_key(layer)] = outputs.hidden_states[position][row]
        for name, array in frames.items():
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                return _failed(chunk, f"the model's {name} output holds NaN or Inf")
        return _inferred(chunk, frames, None, per_window)


def _runner(model: Any, spec: InferenceSpec) -> Any:
    """The backend's batched runner for `model` (`run(arrays) -> BatchOutputs` either way)."""
    if spec.backend == "jax":
        from wav2vec2_beam.models.inference_flax import FlaxWav2Vec2Runner

        return FlaxWav2Vec2Runner(
            model, hidden_layers=spec.hidden_layers, precision=spec.precision, ladder=spec.ladder
        )
    from wav2vec2_beam.models.inference import Wav2Vec2Runner

    return Wav2Vec2Runner(
        model,
        hidden_layers=spec.hidden_layers,
        jit_compile=spec.jit_compile,
        precision=spec.precision,
        ladder=spec.ladder,
    )


def _inferred(
    chunk: AudioChunk,
    frames: dict[str, np.ndarray],
    error: str | None,
    per_window: dict[str, np.ndarray] | None = None,
    error_stage: str = "infer",
) -> InferredChunk:
    return InferredChunk(
        id=chunk.id,
        source=chunk.source,
        index=chunk.index,
        is_last=chunk.is_last,
        stride_left=chunk.stride_left,
        stride_right=chunk.stride_right,
        num_samples=len(chunk.samples),
        total_samples=chunk.total_samples,
        metadata=chunk.metadata,
        frames=frames,
        error=error,
        per_window=per_window or {},
        error_stage=error_stage,
        bundle=chunk.bundle,
        serial=chunk.serial,
        segment_start=chunk.segment_start,
    )


def _failed(chunk: AudioChunk, error: str) -> InferredChunk:
    return _inferred(chunk, {}, " ".join(error.split()))


def _marked(chunk: AudioChunk, error: ErrorRecord) -> InferredChunk:
    """A failure marker passed on: the decoder's error, with its stage, for the stitcher."""
    return _inferred(chunk, {}, error.error, error_stage=error.stage)


#: The model the launcher loaded to check the checkpoint, when the job runs in the launcher's own
#: process (the DirectRunner in memory or in threads): the first `load_model` there takes it instead of loading
#: the checkpoint a second time (1.5 s for base, more for lv60).
_kept_for_this_process: list[LoadedWav2Vec2] = []
_kept_lock = threading.Lock()


def keep_for_this_process(model: LoadedWav2Vec2 | None) -> None:
    """Keep `model` for this process's worker, or (None) drop the one kept."""
    with _kept_lock:
        _kept_for_this_process[:] = [] if model is None else [model]


def _take_kept(spec: InferenceSpec) -> LoadedWav2Vec2 | None:
    with _kept_lock:
        for model in _kept_for_this_process:
            if model.serves(spec):
                _kept_for_this_process.clear()
                return model.serving(spec)
    return None


class Wav2Vec2ModelHandler(ModelHandler[list[AudioChunk], InferredChunk, LoadedWav2Vec2]):
    """RunInference handler: each element is one batch (a list of chunks) from `BatchAudio`."""

    def __init__(
        self,
        spec: InferenceSpec,
        share_across_processes: bool = False,
        progress_dir: str | None = None,
    ) -> None:
        super().__init__()
        self._spec = spec
        self._share_across_processes = share_across_processes
        self._progress_dir = progress_dir

    def load_model(self) -> LoadedWav2Vec2:
        return _take_kept(self._spec) or LoadedWav2Vec2(self._spec)

    def run_inference(
        self,
        batch: Sequence[AudioChunk],
        model: LoadedWav2Vec2,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[InferredChunk]:
        results = model.infer(batch)
        if not any(chunk.needs_model for chunk in batch):  # markers: no forward pass
            return results
        if model.take_unreported_load():
            Metrics.counter(METRICS_NAMESPACE, "model_loads").inc()
        Metrics.counter(METRICS_NAMESPACE, "batches").inc()
        Metrics.counter(METRICS_NAMESPACE, "chunks").inc(len(batch))
        lengths = [len(chunk.samples) for chunk in batch]
        Metrics.counter(METRICS_NAMESPACE, "input_samples").inc(sum(lengths))
        Metrics.counter(METRICS_NAMESPACE, "computed_samples").inc(model.computed_samples(lengths))
        record_progress(
            self._progress_dir,
            batches=1,
            files_inferred=sum(chunk.is_last for chunk in batch),
            audio_s=sum(len(c.samples) - c.stride_left - c.stride_right for c in batch)
            / TARGET_SAMPLE_RATE,
        )
        return results

    def get_num_bytes(self, batch: Sequence[AudioChunk]) -> int:
        """Audio bytes of the batch (the default pickles the whole batch just to measure it)."""
        return sum(chunk.samples.nbytes for chunk in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def should_skip_batching(self) -> bool:
        return True

    def share_model_across_processes(self) -> bool:
        return self._share_across_processes

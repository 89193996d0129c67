"""Train the demo model: a small Wav2Vec2ForCTC, from scratch, on English that espeak-ng speaks.

    python -m wav2vec2_beam.demo.train --output src/wav2vec2_beam/demo/model/ [--seed 0] [--steps N]

The repository cannot download a checkpoint where it is built and tested, and a random-weight
checkpoint transcribes gibberish, which hides regressions in decoding, chunking, batching and
precision. So the repository makes its own small model: it synthesizes speech in many espeak-ng
voices from its own sentence generator (demo/corpus.py), augments it (band limit, silence,
gain, noise), and trains our TensorFlow model with its own CTC loss. The output is a normal
Hugging Face checkpoint folder (it loads in transformers' Wav2Vec2ForCTC) with the
facebook/wav2vec2-base-960h character vocabulary.

The architecture is a toy-size Wav2Vec2ForCTC (see `MODEL_CONFIG`): the usual kernels and strides
(320 samples per 20 ms frame) with narrow convolutions, which are what costs most on a CPU. Runs
are seeded: the sentences, voices, augmentation, batch order and initialization all follow
`--seed`, and on a CPU TensorFlow's deterministic ops make the run repeat exactly (with the same
espeak-ng version, which decides the audio). A GPU is used when TensorFlow sees one; its kernels
are then not forced to be deterministic.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wav2vec2_beam.demo import corpus as demo_corpus
from wav2vec2_beam.demo.evaluate import error_rates, transcribe
from wav2vec2_beam.models.configuration import Wav2Vec2Config
from wav2vec2_beam.models.feature_extraction import Wav2Vec2FeatureExtractor
from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer

logger = logging.getLogger("demo.train")

#: Training is done from a checkout of the repository (its tests' tokenizer files are the vocabulary).
REPO = Path(__file__).resolve().parents[3]
#: The facebook/wav2vec2-base-960h character vocabulary and tokenizer files, copied into the output.
TOKENIZER_DIR = REPO / "tests" / "fixtures" / "checkpoints" / "tokenizer_base960h"
TOKENIZER_FILES = ("vocab.json", "tokenizer_config.json", "special_tokens_map.json")
#: Unseen training-split sentences whose CER the log reports as training goes.
DEV_UTTERANCES = 48

#: The demo architecture. Narrow early convolutions (they run at 3200 and 1600 frames per second)
#: keep a CPU step cheap. The first convolution is group-normalized (base's feature encoder):
#: normalizing each channel over time keeps the loudness contour that per-frame layer norms take
#: away. The transformer is pre-norm (lv60's), which trains stably from scratch. No dropout or
#: SpecAugment: the speech is augmented afresh at every draw and training is short. In a trial,
#: these choices together left CTC's all-blank plateau in half the steps of lv60's layer-normed
#: convolutions with light dropout and SpecAugment (loss 2.18 against 2.63 at step 875).
MODEL_CONFIG: dict[str, Any] = {
    "architectures": ["Wav2Vec2ForCTC"],
    "vocab_size": 32,
    "pad_token_id": 0,
    "hidden_size": 144,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 576,
    "hidden_act": "gelu",
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "do_stable_layer_norm": True,
    "conv_dim": [32, 32, 64, 64, 128, 128, 128],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": True,
    "num_conv_pos_embeddings": 64,
    "num_conv_pos_embedding_groups": 8,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "final_dropout": 0.0,
    "layerdrop": 0.0,
    "apply_spec_augment": False,
    "mask_time_prob": 0.0,
    "mask_feature_prob": 0.0,
    "ctc_loss_reduction": "mean",
    "ctc_zero_infinity": True,
}


@dataclass
class Hyperparameters:
    """What decides a run besides the seed; the defaults are the committed demo model's (src/wav2vec2_beam/demo/model/)."""

    steps: int = 8000
    utterances: int = 12000
    #: Seconds of (padded) audio per batch: small batches, many updates, leave the plateau sooner.
    batch_seconds: float = 12.0
    peak_learning_rate: float = 3e-3
    warmup_steps: int = 300
    clip_norm: float = 5.0


@dataclass
class Corpus:
    """Synthesized training speech: 16 kHz int16 audio (half the memory of float32) and texts."""

    audio: list[np.ndarray]
    texts: list[str]


def synthesize_corpus(count: int, seed: int, workers: int, *, skip: int = 0) -> Corpus:
    """`count` training-split sentences spoken in training voices, band-limited at random.

    With `skip`, the sentences after the first `skip` of the same draw: with `skip` the corpus
    size, sentences the corpus does not have (a run's progress check, which leaves the held-out
    split to the evaluation).
    """
    sentences = demo_corpus.draw_sentences(skip + count, held_out=False, seed=seed)[skip:]
    plans = demo_corpus.plan_utterances(
        sentences, demo_corpus.TRAINING_VOICES, seed + skip, band_limit=True
    )
    with ThreadPoolExecutor(workers) as pool:  # espeak-ng runs as subprocesses: threads suffice
        audio = [
            np.round(np.clip(a, -1, 1) * 32767).astype(np.int16)
            for a in pool.map(demo_corpus.synthesize, plans)
        ]
    return Corpus(audio=audio, texts=sentences)


def load_or_synthesize(count: int, seed: int, cache: Path | None, workers: int) -> Corpus:
    """The training corpus, read from `cache` when an earlier run with the same plan wrote it."""
    path = cache / f"corpus_{count}_seed{seed}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as data:
            joined = data["audio"]  # each item access of an npz reads the array anew
            audio = [joined[a:b] for a, b in itertools.pairwise(data["offsets"])]
            return Corpus(audio=audio, texts=json.loads(str(data["texts"])))
    corpus = synthesize_corpus(count, seed, workers)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(a) for a in corpus.audio])
        np.savez(
            path,
            audio=np.concatenate(corpus.audio),
            offsets=offsets,
            texts=json.dumps(corpus.texts),
        )
    return corpus


@dataclass
class Batch:
    """One training step's inputs, padded."""

    values: np.ndarray  # (B, samples) float32, normalized per utterance, zero padded
    attention_mask: np.ndarray  # (B, samples) int32
    labels: np.ndarray  # (B, max label length) int32, padded with -100


class BatchMaker:
    """Endless augmented batches of about `batch_seconds` of padded audio each, seeded.

    Each epoch shuffles the corpus, sorts windows of it by length so that a batch pads little,
    and cuts them into batches of similar lengths in random order. Every utterance is augmented
    afresh each time it is drawn, then normalized as the feature extractor does at inference.
    """

    def __init__(
        self,
        corpus: Corpus,
        tokenizer: Wav2Vec2CTCTokenizer,
        config: Wav2Vec2Config,
        batch_seconds: float,
        seed: int,
    ) -> None:
        self.corpus = corpus
        self.config = config
        self.labels = [
            np.array(tokenizer.encode(demo_corpus.normalize_text(t)), np.int32)
            for t in corpus.texts
        ]
        self.budget = int(batch_seconds * demo_corpus.SAMPLING_RATE)
        self.rng = np.random.default_rng(seed)

    def _epoch_batches(self) -> list[list[int]]:
        order = self.rng.permutation(len(self.corpus.audio))
        # Augmentation adds up to 0.4 s of silence: budget for it.
        length = [len(a) + int(0.4 * demo_corpus.SAMPLING_RATE) for a in self.corpus.audio]
        batches: list[list[int]] = []
        window = 512
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: length[i])
            current: list[int] = []
            for index in chunk:
                if current and (len(current) + 1) * length[index] > self.budget:
                    batches.append(current)
                    current = []
                current.append(index)
            if current:
                batches.append(current)
        self.rng.shuffle(batches)
        return batches

    def _make(self, indices: list[int]) -> Batch:
        extractor = Wav2Vec2FeatureExtractor
        audio = [
            demo_corpus.augment(self.corpus.audio[i].astype(np.float32) / 32768, self.rng)
            for i in indices
        ]
        audio = extractor.zero_mean_unit_var_norm(audio, None)
        samples = max(len(a) for a in audio)
        values = np.zeros((len(audio), samples), np.float32)
        mask = np.zeros((len(audio), samples), np.int32)
        for row, a in enumerate(audio):
            values[row, : len(a)] = a
            mask[row, : len(a)] = 1
        labels = [self.labels[i] for i in indices]
        padded = np.full((len(labels), max(len(x) for x in labels)), -100, np.int32)
        for row, label in enumerate(labels):
            padded[row, : len(label)] = label
        return Batch(values, mask, padded)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            for indices in self._epoch_batches():
                yield self._make(indices)


def train(
    output: Path,
    seed: int,
    params: Hyperparameters,
    cache: Path | None = None,
    log_every: int = 50,
    dev_every: int = 250,
) -> dict[str, Any]:
    """Synthesize, train, and write the checkpoint folder; returns what the run measured."""
    import tensorflow as tf

    from wav2vec2_beam.models.inference import Wav2Vec2Runner
    from wav2vec2_beam.models.modeling_wav2vec2 import TFWav2Vec2ForCTC

    started = time.time()
    gpu = bool(tf.config.list_physical_devices("GPU"))
    tf.random.set_seed(seed)
    if not gpu:
        tf.config.experimental.enable_op_determinism()
    config = Wav2Vec2Config.from_dict(MODEL_CONFIG)
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(TOKENIZER_DIR))

    workers = max(os.cpu_count() or 1, 2)
    corpus = load_or_synthesize(params.utterances, seed, cache, workers)
    corpus_seconds = sum(len(a) for a in corpus.audio) / demo_corpus.SAMPLING_RATE
    dev = synthesize_corpus(DEV_UTTERANCES, seed, workers, skip=params.utterances)
    synthesized = time.time()
    logger.info(
        "corpus: %d utterances, %.1f h of speech, %d distinct words (%.0f s)",
        len(corpus.texts),
        corpus_seconds / 3600,
        len({w for t in corpus.texts for w in t.split()}),
        synthesized - started,
    )

    model = TFWav2Vec2ForCTC(config, seed=seed)
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=params.steps - params.warmup_steps,
        alpha=0.02,
        warmup_target=params.peak_learning_rate,
        warmup_steps=params.warmup_steps,
    )
    optimizer = tf.keras.optimizers.Adam(learning_rate=schedule, global_clipnorm=params.clip_norm)
    variables = model.trainable_variables

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None], tf.int32),
        ]
    )
    def step(values: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            output = model(values, attention_mask=mask, labels=labels, training=True)
        optimizer.apply_gradients(
            zip(tape.gradient(output.loss, variables), variables, strict=True)
        )
        return output.loss[0]

    runner = Wav2Vec2Runner(model)
    dev_audio = [a.astype(np.float32) / 32768 for a in dev.audio]
    batches = iter(BatchMaker(corpus, tokenizer, config, params.batch_seconds, seed))
    seen_seconds = 0.0
    losses: list[float] = []
    for number in range(1, params.steps + 1):
        batch = next(batches)
        loss = step(batch.values, batch.attention_mask, batch.labels)
        losses.append(float(loss))
        seen_seconds += batch.attention_mask.sum() / demo_corpus.SAMPLING_RATE
        if number % log_every == 0 or number == params.steps:
            logger.info(
                "step %d/%d  loss %.3f  lr %.2e  %.1f h of audio seen  %.0f s",
                number,
                params.steps,
                float(np.mean(losses[-log_every:])),
                float(schedule(number)),
                seen_seconds / 3600,
                time.time() - synthesized,
            )
        if number % dev_every == 0 or number == params.steps:
            rates = error_rates(dev.texts, transcribe(runner, tokenizer, dev_audio))
            logger.info("step %d  dev WER %.3f  CER %.3f", number, rates["wer"], rates["cer"])

    write_checkpoint(model, output)
    report = {
        "seed": seed,
        "hyperparameters": vars(params),
        "corpus_utterances": len(corpus.texts),
        "corpus_hours": round(corpus_seconds / 3600, 3),
        "audio_hours_seen": round(seen_seconds / 3600, 2),
        "final_loss": round(float(np.mean(losses[-log_every:])), 4),
        "dev_wer": round(rates["wer"], 4),
        "dev_cer": round(rates["cer"], 4),
        "synthesis_seconds": round(synthesized - started, 1),
        "training_seconds": round(time.time() - synthesized, 1),
        "device": "GPU" if gpu else f"CPU ({os.cpu_count()} cores)",
        "tensorflow": tf.__version__,
        # oneDNN kernels round differently, so a run repeats another only with the same setting.
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "espeak_ng": demo_corpus.espeak_version(),
    }
    (output / "training_run.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def write_checkpoint(model: Any, output: Path) -> None:
    """config.json + model.safetensors, and the base-960h tokenizer and preprocessor files.

    The preprocessor config is base-960h's (no attention mask, as for every group-norm model in
    transformers), naming its class so that transformers' Auto classes need no guess.
    """
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output))
    for name in TOKENIZER_FILES:
        shutil.copy(TOKENIZER_DIR / name, output / name)
    preprocessor = json.loads((TOKENIZER_DIR / "preprocessor_config.json").read_text())
    preprocessor["feature_extractor_type"] = "Wav2Vec2FeatureExtractor"
    (output / "preprocessor_config.json").write_text(
        json.dumps(preprocessor, indent=2, sort_keys=True) + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    defaults = Hyperparameters()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument(
        "--utterances", type=int, default=defaults.utterances, help="training corpus size"
    )
    parser.add_argument(
        "--cache", type=Path, help="folder to keep the synthesized corpus in, for later runs"
    )
    args = parser.parse_args(argv)
    if args.steps <= defaults.warmup_steps:
        parser.error(f"--steps must be more than the {defaults.warmup_steps} warm-up steps")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    params = Hyperparameters(steps=args.steps, utterances=args.utterances)
    report = train(args.output, args.seed, params, cache=args.cache)
    logger.info("wrote %s: %s", args.output, json.dumps(report))


if __name__ == "__main__":
    main()

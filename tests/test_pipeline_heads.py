"""Every checkpoint head through the pipeline, on real recordings, checked against models/.

One checkpoint of each kind (`seqcls`, `pretrain`, `bare`, and the CTC `base`) runs over the ten
pocketsphinx-testdata recordings (1.1 to 7.1 s) with 2 s windows, so that all but the shortest
files are classified window by window and pooled. Each kind runs twice, with batches of up to 8
windows and of 1, as module-scoped fixtures shared by all the checks:

* the run writes the documented tables, with their documented columns;
* the tables equal models/ called directly, one reference window at a time, on the same decoded
  samples: labels identical and probabilities within 1e-4 (pooled as docs/OUTPUTS.md says:
  per-window probabilities averaged, weighted by the audio each window keeps), codes identical,
  hidden states and logits within 1e-4 of the largest reference value, transcripts identical;
* batched equals unbatched for every head.

The window arithmetic below is the reference ASR pipeline's, written out independently of
transforms/infer/chunk.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pipeline_corpus import POCKETSPHINX

from wav2vec2_beam.models import (
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    load_model,
)
from wav2vec2_beam.pipeline.main import main
from wav2vec2_beam.transforms.read.decode_audio import decode_audio

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO / "tests" / "fixtures" / "checkpoints"
CHUNK_LENGTH_S = 2.0
RATIO = 320
RTOL = 1e-4
BATCH_SIZES = (8, 1)

#: kind -> (checkpoint, extra flags, the tables the run must write).
KINDS = {
    "classification": ("seqcls", [], {"classifications"}),
    "pretraining": (
        "pretrain",
        ["--outputs=codes,hidden_states", "--hidden_layers=0,-1"],
        {"codes", "hidden_states"},
    ),
    "bare": ("bare", [], {"hidden_states"}),
    "ctc": ("base", ["--outputs=transcripts,logits"], {"transcripts", "logits"}),
}

#: The columns docs/OUTPUTS.md documents for each table.
COLUMNS = {
    "classifications": [
        "id",
        "source",
        "label",
        "score",
        "probabilities",
        "duration_s",
        "model",
    ],
    "codes": ["id", "num_frames", "codes"],
    "hidden_states": ["id", "layer", "num_frames", "hidden_state"],
    "logits": ["id", "num_frames", "logits"],
    "transcripts": [
        "id",
        "source",
        "transcript",
        "duration_s",
        "sample_rate",
        "num_frames",
        "words",
        "chars",
        "model",
        "reference",
        "wer",
        "cer",
    ],
    "errors": ["id", "source", "stage", "error"],
}


@dataclass
class Tables:
    """One run's Parquet tables, read back: table -> rows keyed by id (and layer)."""

    exit_code: int
    folders: set[str]
    columns: dict[str, list[str]]
    rows: dict[str, dict] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


@dataclass
class Direct:
    """What models/ gives for one file, called one reference window at a time."""

    duration_s: float
    #: Every hidden layer, stitched.
    hidden: list[np.ndarray]
    probabilities: np.ndarray | None = None
    codes: np.ndarray | None = None
    logits: np.ndarray | None = None


def recordings() -> list[str]:
    assert POCKETSPHINX.is_dir(), "run_tests.sh installs pocketsphinx-testdata"
    return sorted(str(path) for path in POCKETSPHINX.glob("*/*.wav"))


def reference_windows(num_samples: int) -> list[tuple[int, int, int, int]]:
    """(start, end, stride_left, stride_right) of the reference ASR pipeline's chunk_iter."""
    chunk = int(round(CHUNK_LENGTH_S * 16_000 / RATIO) * RATIO)
    stride = int(round(CHUNK_LENGTH_S / 6 * 16_000 / RATIO) * RATIO)
    windows = []
    for start in range(0, num_samples, chunk - 2 * stride):
        end = start + chunk
        is_last = end >= num_samples
        left, right = (0 if start == 0 else stride), (0 if is_last else stride)
        if min(end, num_samples) - start > left:
            windows.append((start, min(end, num_samples), left, right))
        if is_last:
            break
    return windows


def direct_outputs(path: str, model, extractor) -> Direct:
    samples, _ = decode_audio(path)
    hidden, probabilities, weights, codes, logits = [], [], [], [], []
    for start, end, left, right in reference_windows(len(samples)):
        window = samples[start:end]
        features = extractor(window, sampling_rate=16_000, return_tensors="np")
        out = model(
            features["input_values"],
            attention_mask=features.get("attention_mask"),
            output_hidden_states=True,
        )
        token_n = round(len(window) / RATIO)
        keep = slice(
            round(left / len(window) * token_n), token_n - round(right / len(window) * token_n)
        )
        hidden.append([state[0].numpy()[keep] for state in out.hidden_states])
        if "codevector_ids" in out:
            codes.append(out.codevector_ids[0].numpy()[keep])
        if "logits" in out and out.logits.shape.rank == 3:
            logits.append(out.logits[0].numpy()[keep])
        elif "logits" in out:
            exp = np.exp(out.logits[0].numpy().astype(np.float64))
            probabilities.append(exp / exp.sum())
            weights.append(len(window) - left - right)
    return Direct(
        duration_s=len(samples) / 16_000,
        hidden=[np.concatenate(layer) for layer in zip(*hidden, strict=True)],
        probabilities=np.average(probabilities, axis=0, weights=weights) if weights else None,
        codes=np.concatenate(codes) if codes else None,
        logits=np.concatenate(logits) if logits else None,
    )


@pytest.fixture(scope="module")
def expected() -> dict[str, dict[str, Direct]]:
    out = {}
    for kind, (checkpoint, _, _) in KINDS.items():
        model_dir = str(CHECKPOINTS / checkpoint)
        model = load_model(model_dir)
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir)
        out[kind] = {path: direct_outputs(path, model, extractor) for path in recordings()}
    return out


def read_run(output: Path, exit_code: int) -> Tables:
    folders = {path.name for path in output.iterdir() if path.is_dir()}
    tables = Tables(exit_code, folders, {})
    for name in folders:
        table = pq.read_table(output / name)
        tables.columns[name] = table.column_names
        key = (lambda row: (row["id"], row["layer"])) if name == "hidden_states" else None
        tables.rows[name] = {(key(row) if key else row["id"]): row for row in table.to_pylist()}
    tables.summary = json.loads((output / "summary.json").read_text())
    return tables


@pytest.fixture(scope="module", params=list(KINDS))
def runs(request: pytest.FixtureRequest, tmp_path_factory) -> tuple[str, dict[int, Tables]]:
    """One kind's runs, batched and unbatched."""
    kind = request.param
    checkpoint, extra, _ = KINDS[kind]
    out = {}
    for batch_size in BATCH_SIZES:
        output = tmp_path_factory.mktemp(f"{kind}_{batch_size}")
        argv = [
            *[f"--input={path}" for path in recordings()],
            f"--model_dir={CHECKPOINTS / checkpoint}",
            f"--output_dir={output}",
            f"--chunk_length_s={CHUNK_LENGTH_S}",
            f"--batch_size={batch_size}",
            *extra,
        ]
        out[batch_size] = read_run(output, main(argv))
    return kind, out


def close(actual: np.ndarray, reference: np.ndarray) -> bool:
    return actual.shape == reference.shape and bool(
        np.abs(actual - reference).max(initial=0.0) <= RTOL * np.abs(reference).max()
    )


def test_each_kind_writes_its_documented_tables(runs) -> None:
    kind, by_batch = runs
    _, _, tables = KINDS[kind]
    for run in by_batch.values():
        assert run.exit_code == 0
        assert run.folders == tables | {"errors"}
        for name in run.folders:
            assert run.columns[name] == COLUMNS[name], name
        assert run.rows["errors"] == {}
        assert run.summary["succeeded"] == len(recordings())
    # the batched run did batch windows, and several files were cut into windows
    assert by_batch[8].summary["batches"] < by_batch[1].summary["batches"]
    assert by_batch[1].summary["batches"] > 2 * len(recordings())


def test_tables_equal_the_model_called_directly(runs, expected) -> None:
    kind, by_batch = runs
    checkpoint, _, _ = KINDS[kind]
    run = by_batch[8]
    layers = run.summary["options"]["hidden_layers"]
    model_dir = str(CHECKPOINTS / checkpoint)
    id2label = Wav2Vec2Config.from_pretrained(model_dir).id2label
    for path, reference in expected[kind].items():
        if "classifications" in run.rows:
            row = run.rows["classifications"][path]
            assert row["label"] == id2label[int(reference.probabilities.argmax())], path
            assert close(np.asarray(row["probabilities"]), reference.probabilities), path
            assert row["score"] == pytest.approx(reference.probabilities.max(), abs=RTOL)
            assert row["duration_s"] == reference.duration_s and row["source"] == path
            assert row["model"] == model_dir
        if "codes" in run.rows:
            row = run.rows["codes"][path]
            assert np.array_equal(np.asarray(row["codes"]), reference.codes), path
            assert row["num_frames"] == len(reference.codes)
        if "logits" in run.rows:
            assert close(np.asarray(run.rows["logits"][path]["logits"]), reference.logits)
            text = Wav2Vec2CTCTokenizer.from_pretrained(model_dir).decode(
                reference.logits.argmax(-1)
            )
            assert run.rows["transcripts"][path]["transcript"] == text, path
        for layer in layers:
            row = run.rows["hidden_states"][(path, layer)]
            assert close(np.asarray(row["hidden_state"]), reference.hidden[layer]), (path, layer)
    assert len(run.rows.get("hidden_states", {})) == len(expected[kind]) * len(layers)


def test_batched_equals_unbatched(runs) -> None:
    _, by_batch = runs
    batched, alone = by_batch[8], by_batch[1]
    for name, rows in batched.rows.items():
        assert rows.keys() == alone.rows[name].keys(), name
        for key, row in rows.items():
            other = alone.rows[name][key]
            for column, value in row.items():
                if column in ("probabilities", "hidden_state", "logits"):
                    assert close(np.asarray(value), np.asarray(other[column])), (key, column)
                elif column == "score":
                    assert value == pytest.approx(other[column], abs=RTOL)
                elif column in ("words", "chars"):  # the same text and times; confidences float
                    assert [{**part, "confidence": 0} for part in value] == [
                        {**part, "confidence": 0} for part in other[column]
                    ]
                else:
                    assert value == other[column], (name, key, column)

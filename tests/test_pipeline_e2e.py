"""The whole pipeline on the DirectRunner, read back from Parquet and checked against models/.

One corpus (generated audio in every container at several rates and channel counts, the
pocketsphinx recordings, ~70 short extra files, and every kind of bad file) goes through two runs
with different engines, checkpoints and batching:

* in-memory, the group-norm `base` checkpoint, big batches, every hidden layer;
* multi-processing with 2 workers, the layer-norm `lv60` checkpoint, batches of at most 2 items
  and 5 s of audio, hidden layers 0 and -1;
* in-memory with the JAX backend (`--backend jax`), the `base` checkpoint, batches of 8.

The expected outputs come from the TF model either way, so the JAX run is also checked against
the other backend, through the whole pipeline.

Each run's tables must equal what models/ gives when called directly, one window at a time, on
the same decoded samples, with the windows cut and stitched by the reference ASR pipeline's
arithmetic (written out again below, independently of transforms/infer/chunk.py): identical
transcripts and timings, logits and hidden states within 1e-4 of the largest reference value.
The runs are module-scoped fixtures, so each runs once for all the checks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
from pipeline_corpus import POCKETSPHINX, Corpus, make_corpus

from wav2vec2_beam.models import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, load_model
from wav2vec2_beam.models.weights import read_checkpoint, write_safetensors
from wav2vec2_beam.pipeline.main import main
from wav2vec2_beam.transforms.read.decode_audio import decode_audio

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO / "tests" / "fixtures" / "checkpoints"
CHUNK_LENGTH_S = 4.0
RATIO = 320
RTOL = 1e-4

RUNS = {
    "in_memory": (
        "base",
        ("all",),
        ["--batch_size", "16", "--max_batch_audio_s", "240", "--hidden_layers", "all"],
    ),
    "multi_processing": (
        "lv60",
        (0, -1),
        [
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
            "--batch_size",
            "2",
            "--max_batch_audio_s",
            "5",
            "--hidden_layers",
            "0,-1",
        ],
    ),
    "jax_backend": (
        "base",
        ("all",),
        ["--backend", "jax", "--batch_size", "8", "--hidden_layers", "all"],
    ),
}


@dataclass
class Expected:
    """What models/ gives for one file, called directly."""

    text: str
    logits: np.ndarray
    #: Every hidden layer, stitched like the logits.
    hidden: list[np.ndarray]
    duration_s: float
    sample_rate: int


@dataclass
class Run:
    exit_code: int
    model: str
    layers: list[int]
    transcripts: dict[str, dict]
    errors: list[dict]
    logits: dict[str, np.ndarray]
    hidden: dict[tuple[str, int], np.ndarray]
    summary: dict


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


def direct_outputs(path: str, model_dir: Path, model, extractor, tokenizer) -> Expected:
    """models/ called on each reference window of the decoded file, stitched as the reference."""
    samples, info = decode_audio(path)
    logits, hidden = [], []
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
            round(left / len(window) * token_n),
            token_n - round(right / len(window) * token_n),
        )
        logits.append(out.logits[0].numpy()[keep])
        hidden.append([state[0].numpy()[keep] for state in out.hidden_states])
    stitched = np.concatenate(logits)
    return Expected(
        text=tokenizer.decode(stitched.argmax(-1)),
        logits=stitched,
        hidden=[np.concatenate(layer) for layer in zip(*hidden, strict=True)],
        duration_s=len(samples) / 16_000,
        sample_rate=info.sample_rate,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return make_corpus(tmp_path_factory.mktemp("corpus"), fillers=70)


def checked_files(corpus: Corpus) -> list[str]:
    """Every good file but the extra short ones, of which every fifth (they are all alike)."""
    fillers = [path for path in corpus.good if "/filler_" in path]
    return [path for path in corpus.good if path not in fillers] + fillers[::5]


@pytest.fixture(scope="module")
def expected(corpus: Corpus) -> dict[str, dict[str, Expected]]:
    out = {}
    for name in {model for model, _, _ in RUNS.values()}:
        model_dir = CHECKPOINTS / name
        model = load_model(str(model_dir))
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(model_dir))
        tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(model_dir))
        out[name] = {
            path: direct_outputs(path, model_dir, model, extractor, tokenizer)
            for path in checked_files(corpus)
        }
    return out


def read_table(folder: Path) -> list[dict]:
    return pq.read_table(folder).to_pylist() if folder.is_dir() else []


def pipeline_args(corpus: Corpus, model: str, output: Path, extra: list[str]) -> list[str]:
    args = [f"--input={pattern}" for pattern in corpus.inputs]
    return [
        *args,
        f"--model_dir={CHECKPOINTS / model}",
        f"--output_dir={output}",
        "--outputs=transcripts,logits,hidden_states",
        f"--chunk_length_s={CHUNK_LENGTH_S}",
        *extra,
    ]


@pytest.fixture(scope="module", params=list(RUNS))
def run(request: pytest.FixtureRequest, corpus: Corpus, tmp_path_factory) -> Run:
    model, _, extra = RUNS[request.param]
    output = tmp_path_factory.mktemp(f"out_{request.param}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(REPO / "src"))  # for the worker processes
        exit_code = main(pipeline_args(corpus, model, output, extra))
    summary = json.loads((output / "summary.json").read_text())
    return Run(
        exit_code=exit_code,
        model=model,
        layers=summary["options"]["hidden_layers"],
        transcripts={row["id"]: row for row in read_table(output / "transcripts")},
        errors=read_table(output / "errors"),
        logits={row["id"]: np.asarray(row["logits"]) for row in read_table(output / "logits")},
        hidden={
            (row["id"], row["layer"]): np.asarray(row["hidden_state"])
            for row in read_table(output / "hidden_states")
        },
        summary=summary,
    )


def close(actual: np.ndarray, reference: np.ndarray) -> bool:
    return actual.shape == reference.shape and bool(
        np.abs(actual - reference).max(initial=0.0) <= RTOL * np.abs(reference).max()
    )


def test_run_exits_zero_and_every_input_ends_once(run: Run, corpus: Corpus) -> None:
    assert run.exit_code == 0
    error_ids = [row["id"] for row in run.errors]
    assert len(error_ids) == len(set(error_ids))
    assert not set(error_ids) & set(run.transcripts)
    assert set(run.transcripts) == set(corpus.good)
    assert {row["id"]: row["stage"] for row in run.errors} == corpus.bad
    assert len(corpus.good) + len(corpus.bad) >= 100


def test_transcripts_equal_the_model_called_directly(run: Run, expected) -> None:
    for path, reference in expected[run.model].items():
        row = run.transcripts[path]
        assert row["transcript"] == reference.text, path
        assert row["num_frames"] == len(reference.logits)
        assert row["duration_s"] == reference.duration_s
        assert row["sample_rate"] == reference.sample_rate
        assert row["model"] == str(CHECKPOINTS / run.model)


def test_logits_and_hidden_states_equal_the_model_called_directly(run: Run, expected) -> None:
    for path, reference in expected[run.model].items():
        assert close(run.logits[path], reference.logits), path
        for layer in run.layers:
            assert close(run.hidden[(path, layer)], reference.hidden[layer]), (path, layer)
    assert len(run.hidden) == len(run.transcripts) * len(run.layers)


def test_word_and_char_timings_and_confidences(run: Run, expected) -> None:
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(CHECKPOINTS / run.model))
    for path, reference in expected[run.model].items():
        ids = reference.logits.argmax(-1)
        shifted = reference.logits - reference.logits.max(-1, keepdims=True)
        top = 1 / np.exp(shifted).sum(-1)
        decoded = tokenizer.decode(ids, output_char_offsets=True, output_word_offsets=True)
        row = run.transcripts[path]
        assert [c["char"] for c in row["chars"]] == [c["char"] for c in decoded.char_offsets]
        assert [w["word"] for w in row["words"]] == [w["word"] for w in decoded.word_offsets]
        for char, offset in zip(row["chars"], decoded.char_offsets, strict=True):
            start, end = offset["start_offset"], offset["end_offset"]
            assert char["start_s"] == pytest.approx(start * RATIO / 16_000)
            assert char["end_s"] == pytest.approx(end * RATIO / 16_000)
            assert char["confidence"] == pytest.approx(top[start:end].mean(), abs=1e-4)
        for word, offset in zip(row["words"], decoded.word_offsets, strict=True):
            start, end = offset["start_offset"], offset["end_offset"]
            assert word["start_s"] == pytest.approx(start * RATIO / 16_000)
            assert word["end_s"] == pytest.approx(end * RATIO / 16_000)
            frames = [
                frame
                for c in decoded.char_offsets
                if start <= c["start_offset"] < end
                for frame in range(c["start_offset"], c["end_offset"])
            ]
            assert word["confidence"] == pytest.approx(top[frames].mean(), abs=1e-4)


def test_no_output_holds_nan(run: Run) -> None:
    for array in [*run.logits.values(), *run.hidden.values()]:
        assert np.isfinite(array).all()
    for row in run.transcripts.values():
        numbers = [row["duration_s"]] + [
            value
            for part in row["words"] + row["chars"]
            for value in part.values()
            if isinstance(value, float)
        ]
        assert all(math.isfinite(value) for value in numbers)


def test_silence_is_a_transcript_not_an_error(run: Run, corpus: Corpus) -> None:
    for path in corpus.silent:
        assert path in run.transcripts


def test_summary_counts_the_run(run: Run, corpus: Corpus) -> None:
    summary = run.summary
    assert summary["inputs"] == len(corpus.good) + len(corpus.bad)
    assert summary["succeeded"] == len(run.transcripts)
    assert summary["failed"] == len(run.errors)
    total = sum(row["duration_s"] for row in run.transcripts.values())
    assert summary["audio_seconds"] == pytest.approx(total, abs=1e-3 * len(run.transcripts))
    assert summary["wall_seconds"] > 0
    workers = 2 if "multi_processing" in str(summary["options"]["beam"]) else 1
    assert 1 <= summary["model_loads"] <= workers
    assert summary["options"]["model_dir"] == str(CHECKPOINTS / run.model)


def test_real_recordings_were_included(corpus: Corpus) -> None:
    assert POCKETSPHINX.is_dir(), "run_tests.sh installs pocketsphinx-testdata"
    assert sum("/real/" in path for path in corpus.good) == 10


@pytest.fixture(scope="module")
def blank_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base checkpoint with its blank logit raised, so that it transcribes nothing."""
    folder = tmp_path_factory.mktemp("blank")
    for path in (CHECKPOINTS / "base").iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    state, _ = read_checkpoint(str(folder))
    state["lm_head.bias"] = state["lm_head.bias"].copy()
    state["lm_head.bias"][0] += 1000.0
    write_safetensors(state, str(folder / "model.safetensors"))
    return folder


def test_a_model_that_hears_nothing_gives_empty_transcripts(
    blank_checkpoint: Path, corpus: Corpus, tmp_path: Path
) -> None:
    speech = next(path for path in corpus.good if path not in corpus.silent)
    inputs = [f"--input={path}" for path in [*corpus.silent, speech]]
    code = main([*inputs, f"--model_dir={blank_checkpoint}", f"--output_dir={tmp_path}"])
    rows = read_table(tmp_path / "transcripts")
    assert code == 0
    assert len(rows) == 3
    assert all(row["transcript"] == "" and row["words"] == [] for row in rows)
    assert not (tmp_path / "errors").exists() or read_table(tmp_path / "errors") == []


def test_soundfile_reads_the_source_rate(corpus: Corpus) -> None:
    """Guards the corpus itself: the generated files are at the rates the tests claim."""
    rates = {soundfile.info(path).samplerate for path in corpus.good}
    assert {8_000, 16_000, 22_050, 44_100, 48_000} <= rates


def test_a_model_shared_across_processes_gives_the_same_tables(
    corpus: Corpus, expected, tmp_path: Path
) -> None:
    """--share_model_across_processes: one model in a server process, called by the workers."""
    files = checked_files(corpus)[:4]
    argv = [
        *[f"--input={path}" for path in files],
        f"--model_dir={CHECKPOINTS / 'base'}",
        f"--output_dir={tmp_path}",
        f"--chunk_length_s={CHUNK_LENGTH_S}",
        "--share_model_across_processes",
    ]
    assert main(argv) == 0
    rows = {row["id"]: row["transcript"] for row in read_table(tmp_path / "transcripts")}
    assert rows == {path: expected["base"][path].text for path in files}
    assert json.loads((tmp_path / "summary.json").read_text())["model_loads"] == 1

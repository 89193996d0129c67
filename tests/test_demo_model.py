"""The bundled demo model transcribes for real: a guard on decoding, chunking, batching, precision.

src/wav2vec2_beam/demo/model/ was trained by demo/train.py; src/wav2vec2_beam/demo/heldout/ holds held-out
sentences (never in training) in training voices, as committed audio so that the test does not
depend on the local espeak-ng. With a model that transcribes well, a regression anywhere between
the audio and the text shows up as errors, which random weights would hide in gibberish.

- Our model, batched (padded with attention masks), gives transformers' transcripts exactly
  (tests/fixtures/reference/demo_heldout.json, written by check_demo_reference.py).
- The pipeline gives the same transcripts unchunked and batched (`--decoder greedy`), and stays
  under an error bound when it cuts the utterances into short overlapping windows.
- With its shipped LM (src/wav2vec2_beam/demo/model/language_model/, the pipeline's default for this checkpoint),
  the pipeline gives transformers' `Wav2Vec2ProcessorWithLM` transcripts, at most half the word
  errors of greedy decoding, and no more character errors than greedy decoding on sentences
  outside the demo's vocabulary.
- bfloat16 matmuls stay under an error bound.

The bounds are the measured figures plus a margin (see each constant).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from wav2vec2_beam.demo import HELDOUT_DIR, MODEL_DIR
from wav2vec2_beam.demo import corpus as demo_corpus
from wav2vec2_beam.demo.evaluate import OUT_OF_DOMAIN, error_rates, transcribe
from wav2vec2_beam.models import TFWav2Vec2ForCTC, Wav2Vec2CTCTokenizer, Wav2Vec2Runner
from wav2vec2_beam.pipeline.main import main as run_pipeline

REPO = Path(__file__).resolve().parents[1]
DEMO = MODEL_DIR
HELDOUT = HELDOUT_DIR
REFERENCE = REPO / "tests" / "fixtures" / "reference" / "demo_heldout.json"
LM_REFERENCE = REPO / "tests" / "fixtures" / "reference" / "lm_decode.json"

#: Measured on these 24 utterances (float32, as the reference): CER 14.2%, WER 50.6%. The bounds
#: leave a few points of margin: a regression in decoding, batching or padding costs far more.
CER_BOUND = 0.17
WER_BOUND = 0.56
#: bfloat16 matmuls: measured CER 14.3%, WER 50.6% (the same words as float32).
BFLOAT16_CER_BOUND = 0.17
BFLOAT16_WER_SHIFT = 0.02
#: The pipeline with 1.5 s windows (1 s of it new, 0.25 s of context each side): measured CER 18.9%,
#: WER 62.8% (utterances of 2-4 s cut into windows lose context at every cut).
CHUNK_LENGTH_S = 1.5
CHUNKED_CER_BOUND = 0.22
CHUNKED_WER_BOUND = 0.70


@pytest.fixture(scope="module")
def heldout() -> tuple[list[str], list[str], list[np.ndarray]]:
    """File names, reference texts and 16 kHz audio of the held-out set."""
    items = json.loads((HELDOUT / "transcripts.json").read_text())["utterances"]
    audio = [soundfile.read(HELDOUT / item["file"], dtype="float32")[0] for item in items]
    return [i["file"] for i in items], [i["text"] for i in items], audio


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.fixture(scope="module")
def model() -> TFWav2Vec2ForCTC:
    return TFWav2Vec2ForCTC.from_pretrained(str(DEMO))


@pytest.fixture(scope="module")
def tokenizer() -> Wav2Vec2CTCTokenizer:
    return Wav2Vec2CTCTokenizer.from_pretrained(str(DEMO))


@pytest.fixture(scope="module")
def ours(model, tokenizer, heldout) -> list[str]:
    """Our transcripts, float32, in padded batches of up to 8 utterances of mixed lengths."""
    return transcribe(Wav2Vec2Runner(model), tokenizer, heldout[2], batch_size=8)


def test_reference_was_made_from_the_committed_checkpoint(reference: dict) -> None:
    digest = hashlib.sha256((DEMO / "model.safetensors").read_bytes()).hexdigest()
    assert reference["model_safetensors_sha256"] == digest, (
        "src/wav2vec2_beam/demo/model/ changed since tests/fixtures/reference/demo_heldout.json was written: "
        "rerun tests/fixtures/check_demo_reference.py in the reference venv"
    )


def test_batched_transcripts_equal_the_reference(ours, heldout, reference) -> None:
    files = heldout[0]
    assert dict(zip(files, ours, strict=True)) == reference["transcripts"]


def test_error_rates_stay_under_their_bounds(ours, heldout) -> None:
    rates = error_rates(heldout[1], ours)
    assert rates["cer"] <= CER_BOUND, rates
    assert rates["wer"] <= WER_BOUND, rates


def test_bfloat16_stays_under_its_bound(model, tokenizer, heldout, ours) -> None:
    runner = Wav2Vec2Runner(model, precision="bfloat16")
    rates = error_rates(heldout[1], transcribe(runner, tokenizer, heldout[2], batch_size=8))
    float32 = error_rates(heldout[1], ours)
    assert rates["cer"] <= BFLOAT16_CER_BOUND, rates
    assert abs(rates["wer"] - float32["wer"]) <= BFLOAT16_WER_SHIFT, (rates, float32)


def pipeline_transcripts(output: Path, *options: str) -> dict[str, str]:
    """{file name: transcript} of a pipeline run over the held-out set."""
    args = [f"--input={HELDOUT}/*.flac", f"--model_dir={DEMO}", f"--output_dir={output}"]
    assert run_pipeline([*args, *options]) == 0
    table = pq.read_table(output / "transcripts").to_pylist()
    return {Path(row["id"]).name: row["transcript"] for row in table}


def test_pipeline_unchunked_gives_the_reference_transcripts(tmp_path, reference) -> None:
    got = pipeline_transcripts(tmp_path, "--chunk_length_s=0", "--batch_size=8", "--decoder=greedy")
    assert got == reference["transcripts"]


def test_pipeline_with_the_shipped_lm_gives_transformers_transcripts(
    tmp_path, reference, heldout
) -> None:
    """The default for this checkpoint: beam search with its LM, as transformers decodes it."""
    lm_reference = json.loads(LM_REFERENCE.read_text())["expected"]
    got = pipeline_transcripts(tmp_path, "--decode_processes=1")
    equal = [
        f for f, text in got.items() if text == lm_reference[f"heldout/{f}"]["demo_lm"]["text"]
    ]
    assert len(equal) >= 0.95 * len(got), sorted(set(got) - set(equal))
    files, texts, _ = heldout
    with_lm = error_rates(texts, [got[f] for f in files])
    greedy = error_rates(texts, [reference["transcripts"][f] for f in files])
    assert with_lm["wer"] <= greedy["wer"] / 2, (with_lm, greedy)


def test_the_shipped_lm_does_no_harm_outside_the_demo_vocabulary(tmp_path) -> None:
    """Sentences mostly outside the demo's 672 words (demo/out_of_domain.txt), spoken by
    espeak-ng in training voices: `run_local.sh`'s default (the LM) against greedy decoding."""
    sentences = OUT_OF_DOMAIN.read_text().splitlines()
    plans = demo_corpus.plan_utterances(
        sentences, demo_corpus.TRAINING_VOICES, 4242, band_limit=False
    )
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for index, plan in enumerate(plans):
        soundfile.write(audio_dir / f"{index:02d}.wav", demo_corpus.synthesize(plan), 16_000)
    rates = {}
    for name, flags in (("lm", []), ("greedy", ["--decoder", "greedy"])):
        out = tmp_path / name
        done = subprocess.run(
            [
                "bash",
                str(REPO / "run_local.sh"),
                "--input",
                f"{audio_dir}/*.wav",
                "--output_dir",
                str(out),
                *flags,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHON": sys.executable},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        rows = {
            Path(r["id"]).name: r["transcript"]
            for r in pq.read_table(out / "transcripts").to_pylist()
        }
        rates[name] = error_rates(
            [p.text for p in plans], [rows[f"{i:02d}.wav"] for i in range(len(plans))]
        )
    assert rates["lm"]["cer"] <= rates["greedy"]["cer"], rates


def test_pipeline_with_short_windows_stays_under_its_bound(tmp_path, heldout) -> None:
    got = pipeline_transcripts(tmp_path, f"--chunk_length_s={CHUNK_LENGTH_S}", "--batch_size=8")
    files, texts, _ = heldout
    rates = error_rates(texts, [got[f] for f in files])
    assert rates["cer"] <= CHUNKED_CER_BOUND, rates
    assert rates["wer"] <= CHUNKED_WER_BOUND, rates

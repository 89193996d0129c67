"""Hub ids as checkpoint paths, resolved through a real huggingface_hub cache.

The hub is not reachable here, so the test writes a cache in huggingface_hub's own layout
(`models--org--name/` with `blobs/` named by content hash, `snapshots/<commit>/` of links to
them, `refs/main`) holding two commits: the tests' `base` checkpoint, then `lv60`. With
`HF_HUB_OFFLINE=1` everything must come from that cache: by id, at `main` and at the first
commit's hash, through our classes, the `Auto*` entry points and the pipeline's `--model_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from wav2vec2_beam.demo import HELDOUT_DIR
from wav2vec2_beam.models import (
    AutoModelForCTC,
    AutoProcessor,
    TFWav2Vec2ForCTC,
    Wav2Vec2Config,
    Wav2Vec2Processor,
)
from wav2vec2_beam.models.hub import HubError

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO / "tests" / "fixtures" / "checkpoints"
REPO_ID = "test-org/tiny-ctc"
FIRST, SECOND = "1" * 40, "2" * 40


def _commit(cache: Path, commit: str, source: Path) -> None:
    repo = cache / f"models--{REPO_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in source.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hf_home"
    _commit(home / "hub", FIRST, CHECKPOINTS / "base")
    _commit(home / "hub", SECOND, CHECKPOINTS / "lv60")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_hub_ids_load_from_the_cache_at_main_and_at_a_revision(hub_cache: Path) -> None:
    audio = np.random.default_rng(0).standard_normal(16_000).astype(np.float32)
    by_id = TFWav2Vec2ForCTC.from_pretrained(REPO_ID)  # main: the second commit, lv60
    by_folder = TFWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / "lv60"))
    assert np.array_equal(by_id(audio[None]).logits.numpy(), by_folder(audio[None]).logits.numpy())
    old = Wav2Vec2Config.from_pretrained(REPO_ID, revision=FIRST)
    assert old.feat_extract_norm == "group"  # base, at the first commit
    model = AutoModelForCTC.from_pretrained(REPO_ID, revision=FIRST)
    reference = TFWav2Vec2ForCTC.from_pretrained(str(CHECKPOINTS / "base"))
    assert np.array_equal(model(audio[None]).logits.numpy(), reference(audio[None]).logits.numpy())
    processor = AutoProcessor.from_pretrained(REPO_ID)
    assert isinstance(processor, Wav2Vec2Processor)
    assert (
        processor.tokenizer.get_vocab()
        == Wav2Vec2Processor.from_pretrained(str(CHECKPOINTS / "lv60")).tokenizer.get_vocab()
    )


def test_an_id_neither_cached_nor_reachable_is_one_clear_line(hub_cache: Path) -> None:
    with pytest.raises(HubError) as raised:
        Wav2Vec2Config.from_pretrained("test-org/not-there")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("test-org/not-there: no such folder, and not a Hugging Face model")
    assert str(hub_cache / "hub") in message and "HF_HUB_OFFLINE" in message
    with pytest.raises(HubError, match=f"{REPO_ID}@{'3' * 40}"):
        TFWav2Vec2ForCTC.from_pretrained(REPO_ID, revision="3" * 40)


def test_model_dir_takes_a_hub_id(hub_cache: Path, tmp_path: Path) -> None:
    audio = HELDOUT_DIR / "00.flac"
    env = {**os.environ, "HF_HOME": str(hub_cache), "HF_HUB_OFFLINE": "1"}
    for model_dir, code in ((REPO_ID, 0), ("test-org/not-there", 3)):
        out = tmp_path / model_dir.replace("/", "_")
        done = subprocess.run(
            [
                sys.executable,
                *("-m", "wav2vec2_beam", f"--input={audio}"),
                *(f"--model_dir={model_dir}", f"--output_dir={out}"),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == code, done.stderr
        if code:
            assert done.stderr.count("\n") == 1, done.stderr
            assert "test-org/not-there: no such folder" in done.stderr
        else:
            rows = pq.read_table(out / "transcripts").to_pylist()
            assert [row["model"] for row in rows] == [REPO_ID]
            summary = json.loads((out / "summary.json").read_text())
            assert summary["succeeded"] == 1


def test_the_seed_tf_example_runs_with_only_the_import_changed(hub_cache: Path) -> None:
    """transformers' TFWav2Vec2ForCTC example, with a hub id (load_dataset left out)."""
    import soundfile as sf
    import tensorflow as tf

    from wav2vec2_beam.models import (  # was: from transformers import ...
        AutoProcessor,
        TFWav2Vec2ForCTC,
    )

    speech, _ = sf.read(HELDOUT_DIR / "00.flac")
    processor = AutoProcessor.from_pretrained(REPO_ID)
    model = TFWav2Vec2ForCTC.from_pretrained(REPO_ID)
    input_values = processor(speech, return_tensors="tf").input_values
    logits = model(input_values).logits
    predicted_ids = tf.argmax(logits, axis=-1)
    transcription = processor.decode(predicted_ids[0])
    labels = processor(text=transcription, return_tensors="tf").input_ids
    loss = model(input_values, labels=labels).loss
    expected = Wav2Vec2Processor.from_pretrained(str(CHECKPOINTS / "lv60")).decode(
        np.argmax(logits.numpy(), axis=-1)[0]
    )
    assert transcription == expected
    assert loss.shape == (1,) and np.isfinite(loss.numpy()).all()

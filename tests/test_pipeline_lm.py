"""The pipeline decoding transcripts with an n-gram LM, as transformers' processor does.

The checkpoint is the demo model with the LM that transformers saved in tests/fixtures/lm/
(`Wav2Vec2ProcessorWithLM.save_pretrained`), so the oracle is transformers' own decoding of its
PyTorch logits of the same audio (tests/fixtures/reference/lm_decode.json). A bad LM must stop
the job before it starts, in one line, with exit status 3.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jiwer
import pyarrow.parquet as pq
import pytest

from wav2vec2_beam.demo import HELDOUT_DIR, MODEL_DIR
from wav2vec2_beam.pipeline.main import EXIT_BAD_MODEL, EXIT_BAD_OPTIONS, main

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
HELDOUT = HELDOUT_DIR
REFERENCE = json.loads((FIXTURES / "reference" / "lm_decode.json").read_text())
ARPA = next((FIXTURES / "lm" / "language_model").glob("*.arpa"))


def _checkpoint(folder: Path, with_lm: bool = True) -> Path:
    """The demo model's weights and processor files, with the fixture LM or without any."""
    folder.mkdir(parents=True)
    for path in MODEL_DIR.iterdir():
        if path.is_file() and path.name != "alphabet.json":
            shutil.copy2(path, folder / path.name)
    if with_lm:
        shutil.copy2(FIXTURES / "lm" / "alphabet.json", folder / "alphabet.json")
        shutil.copytree(FIXTURES / "lm" / "language_model", folder / "language_model")
    return folder


@pytest.fixture(scope="module")
def lm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("lm") / "demo_with_lm")


def _transcripts(output: Path) -> dict[str, dict]:
    rows = pq.read_table(output / "transcripts").to_pylist()
    return {f"heldout/{Path(row['id']).name}": row for row in rows}


def _run(checkpoint: Path, output: Path, *flags: str) -> dict[str, dict]:
    argv = [f"--input={HELDOUT}/*.flac", f"--model_dir={checkpoint}", f"--output_dir={output}"]
    if "--decoder=greedy" not in flags:  # greedy decoding refuses a beam-search flag
        argv.append("--decode_processes=1")
    assert main([*argv, *flags]) == 0
    return _transcripts(output)


def test_a_checkpoint_with_an_lm_decodes_as_transformers_does(
    lm_checkpoint: Path, tmp_path: Path
) -> None:
    rows = _run(lm_checkpoint, tmp_path)
    assert len(rows) == 24
    expected = REFERENCE["expected"]
    equal = [
        name for name, row in rows.items() if row["transcript"] == expected[name]["default"]["text"]
    ]
    assert len(equal) >= 0.95 * len(rows), sorted(set(rows) - set(equal))
    for name in equal:  # the beam's word frames, in seconds (20 ms per frame)
        words = [
            [w["word"], round(w["start_s"] / 0.02), round(w["end_s"] / 0.02)]
            for w in rows[name]["words"]
        ]
        assert words == expected[name]["default"]["words"], name
        assert all(0 < w["confidence"] <= 1 for w in rows[name]["words"]), name
        spelled = "".join(c["char"] for c in rows[name]["chars"])
        assert spelled == rows[name]["transcript"].replace(" ", ""), name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["options"]["decoding"].startswith("beam search, width 100, LM ")


def test_decoder_greedy_ignores_the_lm(lm_checkpoint: Path, tmp_path: Path) -> None:
    greedy = json.loads((FIXTURES / "reference" / "demo_heldout.json").read_text())["transcripts"]
    rows = _run(lm_checkpoint, tmp_path, "--decoder=greedy")
    assert {name.split("/")[1]: row["transcript"] for name, row in rows.items()} == greedy


def test_lm_file_and_hotwords_from_the_command_line(tmp_path: Path) -> None:
    """A checkpoint without an LM, given one by --lm (its unigrams read from the ARPA file)."""
    checkpoint = _checkpoint(tmp_path / "plain", with_lm=False)
    rows = _run(
        checkpoint,
        tmp_path / "out",
        f"--lm={ARPA}",
        "--hotwords=MARTIN, ZEBRA  CROSSING",
        "--hotword_weight=6",
    )
    expected = REFERENCE["expected"]
    equal = [n for n, row in rows.items() if row["transcript"] == expected[n]["hotwords"]["text"]]
    assert len(equal) >= 0.95 * len(rows), sorted(set(rows) - set(equal))


def _refusal(capsys: pytest.CaptureFixture[str], checkpoint: Path, *flags: str) -> tuple[int, str]:
    argv = ["--input=x.wav", f"--model_dir={checkpoint}", "--output_dir=/nonexistent/out"]
    code = main([*argv, *flags])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("corrupt_arpa", r"trigram\.arpa: not a KenLM model"),
        ("shuffled_alphabet", "the alphabet does not match the vocabulary at 2 of 32 ids"),
        ("lower_case_lm", "characters the model's vocabulary lacks"),
        ("two_lm_files", "expected one KenLM file"),
    ],
)
def test_a_bad_lm_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, breakage: str, message: str
) -> None:
    checkpoint = _checkpoint(tmp_path / breakage)
    folder = checkpoint / "language_model"
    if breakage == "corrupt_arpa":
        (folder / ARPA.name).write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0\tA\n")
    elif breakage == "shuffled_alphabet":
        alphabet = json.loads((checkpoint / "alphabet.json").read_text())
        labels = alphabet["labels"]
        labels[5], labels[6] = labels[6], labels[5]
        (checkpoint / "alphabet.json").write_text(json.dumps(alphabet))
    elif breakage == "lower_case_lm":
        lowered = ARPA.read_text().replace("<S>", "<s>")
        (folder / ARPA.name).write_text(
            "\n".join(
                line if line.startswith(("\\", "ngram")) else line.lower()
                for line in lowered.splitlines()
            )
            + "\n"
        )
        (folder / "unigrams.txt").write_text((folder / "unigrams.txt").read_text().lower())
    elif breakage == "two_lm_files":
        shutil.copy2(ARPA, folder / "second.arpa")
    code, err = _refusal(capsys, checkpoint)
    assert code == EXIT_BAD_MODEL
    assert err.count("\n") == 1, err
    assert err.startswith("error: cannot use the language model: "), err
    assert re.search(message, err), err


def test_lm_flags_are_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    checkpoint = _checkpoint(tmp_path / "plain", with_lm=False)
    code, err = _refusal(capsys, checkpoint, f"--lm={tmp_path / 'missing.arpa'}")
    assert (code, err.count("\n")) == (EXIT_BAD_MODEL, 1), err
    assert "missing.arpa: no such file" in err
    for flags, message in (
        (["--decoder=viterbi"], "--decoder must be one of greedy,beam"),
        ([f"--lm={ARPA}", "--decoder=greedy"], "--lm needs --decoder beam"),
        (["--beam_width=0"], "--beam_width must be at least 1"),
    ):
        code, err = _refusal(capsys, checkpoint, *flags)
        assert code == EXIT_BAD_OPTIONS and err.count("\n") == 1, flags
        assert err.startswith(f"error: {message}"), err


def test_an_lm_built_from_text_into_a_checkpoint_is_its_default(tmp_path: Path) -> None:
    """`python -m wav2vec2_beam.lm.build_arpa --checkpoint`: text in, a checkpoint that decodes with it."""
    from wav2vec2_beam.demo import corpus as demo_corpus
    from wav2vec2_beam.lm.build_arpa import main as build_arpa

    text = tmp_path / "text.txt"
    sentences = demo_corpus.draw_sentences(2000, held_out=False, seed=99)
    text.write_text("\n".join(s.lower() for s in sentences) + "\n")
    checkpoint = _checkpoint(tmp_path / "built", with_lm=False)
    assert (
        build_arpa(["--text", str(text), "--case", "upper", "--checkpoint", str(checkpoint)]) == 0
    )
    assert json.loads((checkpoint / "alphabet.json").read_text()) == json.loads(
        (FIXTURES / "lm" / "alphabet.json").read_text()
    )
    rows = _run(checkpoint, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert f"LM {checkpoint}/language_model" in summary["options"]["decoding"]
    references = REFERENCE["references"]
    greedy = json.loads((FIXTURES / "reference" / "demo_heldout.json").read_text())["transcripts"]
    names = sorted(rows)
    with_lm = jiwer.wer([references[n] for n in names], [rows[n]["transcript"] for n in names])
    plain = jiwer.wer([references[n] for n in names], [greedy[n.split("/")[1]] for n in names])
    assert with_lm < plain / 2, (with_lm, plain)

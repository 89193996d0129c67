"""The pipeline over corpora as users store them: WebDataset shards, Parquet, JSONL manifests.

The pocketsphinx recordings (real speech, with their reference transcriptions) are packed here
into every layout, beside the same files given loose, and bad inputs of every kind are mixed in;
one run reads them all. Each layout must give the transcripts the loose files give, every item
must end exactly once (in transcripts or in errors), the references must be scored as
`transforms/write/score.py` and jiwer say, a manifest span must be what the sliced file gives, and the
mean-pooled vectors must be the means of the hidden states written beside them.

Other runs: a WebDataset corpus of 1,000 short utterances in 4 shards on 2 worker processes;
a resumed run (a subset of shards first, then all of them with --skip_existing); a Parquet file
with other column names read as `--input_format parquet`. Runs are module-scoped fixtures.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
from fixtures.synthetic_audio import synthetic_speech
from pipeline_corpus import POCKETSPHINX

from wav2vec2_beam.pipeline.main import main
from wav2vec2_beam.transforms.read.decode_items import UNREAD
from wav2vec2_beam.transforms.write.score import normalize_text, score

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "tests" / "fixtures" / "checkpoints" / "base"
SPAN = (0.5, 1.25)  # offset and duration, in seconds, of the manifest's span line

pytestmark = pytest.mark.skipif(
    not POCKETSPHINX.is_dir(), reason="run_tests.sh installs pocketsphinx-testdata"
)


def recordings() -> dict[str, tuple[Path, str]]:
    """name -> (16 kHz WAV, reference text) of the pocketsphinx recordings."""
    found = {}
    for folder, listing in (("cards", "cards.transcription"), ("librivox", "transcription")):
        for line in (POCKETSPHINX / folder / listing).read_text().splitlines():
            matched = re.fullmatch(r"<s>(.*)</s> \((.+)\)", line.strip())
            if matched:
                text, name = matched.groups()
                found[f"{folder}_{name}"] = (POCKETSPHINX / folder / f"{name}.wav", text.strip())
    return found


def flac_bytes(path: Path) -> bytes:
    samples, rate = soundfile.read(path, dtype="int16")
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> bytes:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def read_table(folder: Path) -> list[dict]:
    return pq.read_table(folder).to_pylist() if folder.is_dir() else []


@dataclass
class Run:
    exit_code: int
    output: Path
    transcripts: dict[str, dict]
    errors: dict[str, dict]
    summary: dict

    @classmethod
    def of(cls, argv: list[str], output: Path) -> Run:
        code = main([*argv, f"--model_dir={MODEL}", f"--output_dir={output}"])
        transcripts = read_table(output / "transcripts")
        errors = read_table(output / "errors")
        ids = [row["id"] for row in transcripts + errors]
        assert len(ids) == len(set(ids)), "an id is in the tables twice"
        return cls(
            exit_code=code,
            output=output,
            transcripts={row["id"]: row for row in transcripts},
            errors={row["id"]: row for row in errors},
            summary=json.loads((output / "summary.json").read_text()),
        )


# --- every layout in one run ----------------------------------------------------------------


@dataclass
class Layouts:
    inputs: list[str]
    #: id -> name of the recording it holds, for each layout (and the loose files).
    kinds: dict[str, dict[str, str]]
    #: id -> (stage, reason) of every bad input.
    bad: dict[str, tuple[str, str]]
    references: dict[str, str]
    slice_id: str
    span_id: str


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> Layouts:
    root = tmp_path_factory.mktemp("layouts")
    found = recordings()
    loose, shards, data = root / "loose", root / "shards", root / "data"
    for folder in (loose, shards, data):
        folder.mkdir()
    kinds: dict[str, dict[str, str]] = {"loose": {}, "webdataset": {}, "parquet": {}}
    for name, (path, _) in found.items():
        shutil.copy(path, loose / f"{name}.wav")
        kinds["loose"][str(loose / f"{name}.wav")] = name
    # The span of the manifest's offset line, cut out of the decoded file and given loose.
    span_name = "librivox_sense_and_sensibility_01_austen_64kb-0880"
    whole, rate = soundfile.read(found[span_name][0], dtype="float32")
    first = round(SPAN[0] * rate)
    piece = loose / "span.wav"
    soundfile.write(piece, whole[first : first + round(SPAN[1] * rate)], rate, subtype="FLOAT")

    good = shards / "good-000.tar"
    members = [
        (f"{name}.{ext}", content)
        for name, (path, text) in found.items()
        for ext, content in (("flac", flac_bytes(path)), ("txt", text.encode()))
    ]
    write_tar(good, [*members, ("junk.wav", b"not audio at all"), ("junk.txt", b"junk")])
    kinds["webdataset"] = {f"{good}#{name}": name for name in found}
    cut = shards / "cut-000.tar"
    names = list(found)[:3]
    intact = write_tar(cut, [(f"{name}.flac", flac_bytes(found[name][0])) for name in names])
    with tarfile.open(cut) as tar:
        third = tar.getmember(f"{names[2]}.flac")
    cut.write_bytes(intact[: third.offset_data + third.size // 2])
    kinds["webdataset"].update({f"{cut}#{name}": name for name in names[:2]})

    rows = [
        {"id": name, "audio": {"bytes": path.read_bytes(), "path": path.name}, "text": text}
        for name, (path, text) in found.items()
    ] + [{"id": "null-audio", "audio": None, "text": "lost"}]
    pq.write_table(pa.Table.from_pylist(rows), data / "train-00000-of-00001.parquet")
    kinds["parquet"] = {name: name for name in found}

    manifest = root / "manifest.jsonl"
    lines = [
        {"audio_filepath": f"loose/{name}.wav", "text": text} for name, (_, text) in found.items()
    ]
    lines.append(
        {"audio_filepath": f"loose/{span_name}.wav", "offset": SPAN[0], "duration": SPAN[1]}
    )
    manifest.write_text(
        "\n".join(json.dumps(line) for line in lines)
        + '\n{"audio_filepath": "loose/x.wav", oops\n'
        + json.dumps({"audio_filepath": "loose/missing.wav", "text": "gone"})
        + "\n"
    )
    kinds["manifest"] = {f"{manifest}#{n}": name for n, name in enumerate(found, start=1)}
    count = len(found)
    bad = {
        f"{good}#junk": ("decode", "not_audio"),
        f"{cut}#{names[2]}": ("read", "damaged_shard"),
        f"{cut}#{UNREAD}": ("read", "damaged_shard"),
        str(shards / "good-001.tar"): ("read", "no_match"),
        f"{data / 'train-00000-of-00001.parquet'}#10": ("read", "null_audio"),
        f"{manifest}#{count + 2}": ("read", "not_json"),
        f"{manifest}#{count + 3}": ("read", "unreadable"),
    }
    bad = {
        ("null-audio" if key.endswith("parquet#10") else key): value for key, value in bad.items()
    }
    references = {f"{good}#{name}": text for name, (_, text) in found.items()}
    references.update({name: text for name, (_, text) in found.items()})
    references.update({f"{manifest}#{n}": found[name][1] for n, name in enumerate(found, start=1)})
    references[f"{manifest}#{count + 3}"] = "gone"
    inputs = [
        str(loose / "*.wav"),
        str(shards / "good-{000..001}.tar"),
        str(cut),
        str(data / "*.parquet"),
        str(manifest),
    ]
    return Layouts(inputs, kinds, bad, references, str(piece), f"{manifest}#{count + 1}")


@pytest.fixture(scope="module")
def layouts_run(layouts: Layouts, tmp_path_factory: pytest.TempPathFactory) -> Run:
    argv = [f"--input={pattern}" for pattern in layouts.inputs] + [
        "--outputs=transcripts,hidden_states",
        "--hidden_layers=0,-1",
        "--feature_dtype=float16",
        "--pool=mean",
    ]
    return Run.of(argv, tmp_path_factory.mktemp("out_layouts"))


def test_every_item_ends_once_and_bad_inputs_are_error_rows(layouts: Layouts, layouts_run: Run):
    assert layouts_run.exit_code == 0
    good = {item for kind in layouts.kinds.values() for item in kind}
    good |= {layouts.slice_id, layouts.span_id}
    assert set(layouts_run.transcripts) == good
    errors = {
        key: (row["stage"], row["error"].split(":")[0]) for key, row in layouts_run.errors.items()
    }
    assert errors == layouts.bad
    assert layouts_run.summary["inputs"] == len(good) + len(layouts.bad)


@pytest.mark.parametrize("kind", ["webdataset", "parquet", "manifest"])
def test_each_layout_gives_the_transcripts_of_the_loose_files(
    layouts: Layouts, layouts_run: Run, kind: str
) -> None:
    loose = {name: layouts_run.transcripts[key] for key, name in layouts.kinds["loose"].items()}
    for key, name in layouts.kinds[kind].items():
        row = layouts_run.transcripts[key]
        assert row["transcript"] == loose[name]["transcript"], key
        for word, expected in zip(row["words"], loose[name]["words"], strict=True):
            # Batches of other lengths change float32 sums in the last bits, not the words.
            assert {**word, "confidence": pytest.approx(expected["confidence"], abs=1e-4)} == (
                expected
            )
        assert row["duration_s"] == loose[name]["duration_s"]
    assert len(layouts.kinds[kind]) >= 10 or kind == "webdataset"


def test_a_manifest_span_is_the_sliced_file(layouts: Layouts, layouts_run: Run) -> None:
    span, piece = (
        layouts_run.transcripts[layouts.span_id],
        layouts_run.transcripts[layouts.slice_id],
    )
    assert span["duration_s"] == SPAN[1] == piece["duration_s"]
    assert span["transcript"] == piece["transcript"] and span["num_frames"] == piece["num_frames"]


def test_references_are_scored_per_item_and_over_the_corpus(
    layouts: Layouts, layouts_run: Run
) -> None:
    scored = {key: row for key, row in layouts_run.transcripts.items() if row["reference"]}
    assert {key: row["reference"] for key, row in scored.items()} == {
        key: text for key, text in layouts.references.items() if key in layouts_run.transcripts
    }
    for row in layouts_run.transcripts.values():
        if row["reference"] is None:
            assert row["wer"] is None and row["cer"] is None
            continue
        expected = score(row["reference"], row["transcript"])
        assert row["wer"] == pytest.approx(expected.wer) and row["cer"] == pytest.approx(
            expected.cer
        )
    references = [normalize_text(row["reference"]) for row in scored.values()]
    hypotheses = [normalize_text(row["transcript"]) for row in scored.values()]
    summary = layouts_run.summary
    assert summary["scoring"]["items_scored"] == len(scored) == 30
    assert summary["wer"] == pytest.approx(jiwer.wer(references, hypotheses))
    assert summary["cer"] == pytest.approx(jiwer.cer(references, hypotheses))


def test_pooled_vectors_are_the_means_of_the_hidden_states(layouts_run: Run) -> None:
    hidden = pq.read_table(layouts_run.output / "hidden_states")
    pooled = pq.read_table(layouts_run.output / "pooled_hidden_states")
    assert pooled.schema.field("mean_hidden_state").type == pa.list_(pa.float16(), 32)
    assert hidden.num_rows == pooled.num_rows == 2 * len(layouts_run.transcripts)
    frames = {
        (row["id"], row["layer"]): np.asarray(row["hidden_state"], np.float64)
        for row in hidden.to_pylist()
    }
    for row in pooled.to_pylist():
        matrix = frames[(row["id"], row["layer"])]
        assert row["num_frames"] == len(matrix)
        expected = matrix.mean(axis=0)  # of the float16 frames: within float16 rounding
        vector = np.asarray(row["mean_hidden_state"], np.float64)
        assert np.abs(vector - expected).max() <= 2e-3 * max(1.0, np.abs(expected).max())


# --- 1,000 utterances in 4 shards on 2 worker processes --------------------------------------


def clip_members(count: int, seed: int) -> list[tuple[str, bytes]]:
    """`count` short generated utterances (0.3 to 0.5 s, FLAC) with a text member each."""
    members = []
    for index in range(count):
        samples = synthetic_speech(0.3 + 0.05 * (index % 5), seed=seed + index)
        buffer = io.BytesIO()
        soundfile.write(buffer, samples, 16_000, format="FLAC")
        members += [(f"utt{index:05d}.flac", buffer.getvalue()), (f"utt{index:05d}.txt", b"a b")]
    return members


def test_a_thousand_utterances_in_four_shards_on_two_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = set()
    for shard in range(4):
        path = tmp_path / f"corpus-{shard:06d}.tar"
        write_tar(path, clip_members(250, seed=1000 * shard))
        expected |= {f"{path}#utt{index:05d}" for index in range(250)}
    monkeypatch.setenv("PYTHONPATH", str(REPO / "src"))  # for the worker processes
    argv = [
        f"--input={tmp_path / 'corpus-{000000..000003}.tar'}",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
        "--batch_size=64",
    ]
    run = Run.of(argv, tmp_path / "out")
    assert run.exit_code == 0 and run.errors == {}
    assert set(run.transcripts) == expected
    assert run.summary["inputs"] == run.summary["succeeded"] == 1000
    assert run.summary["scoring"]["items_scored"] == 1000
    assert 1 <= run.summary["model_loads"] <= 2


# --- resume ----------------------------------------------------------------------------------


def digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*.parquet"))
    }


def test_a_resumed_run_adds_only_what_is_missing(tmp_path: Path) -> None:
    for shard in range(4):
        data = write_tar(tmp_path / f"s-{shard:03d}.tar", clip_members(6, seed=100 * shard))
        if shard == 1:  # damaged: three samples, then the lost tail
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                fourth = tar.getmember("utt00003.flac")
            (tmp_path / "s-001.tar").write_bytes(data[: fourth.offset_data + 100])
    output = tmp_path / "out"
    first = Run.of([f"--input={tmp_path / 's-{000..001}.tar'}"], output)
    assert first.exit_code == 0
    assert len(first.transcripts) == 9 and len(first.errors) == 2
    before = digest(output)

    resumed = Run.of([f"--input={tmp_path / 's-{000..003}.tar'}", "--skip_existing"], output)
    assert resumed.exit_code == 0
    assert {key: value for key, value in digest(output).items() if key in before} == before
    new_files = set(digest(output)) - set(before)
    assert new_files and all(resumed.summary["run_id"] in name for name in new_files)
    # Read back over both runs, every id is there exactly once (Run.of checks) and all are there.
    assert len(resumed.transcripts) == 9 + 12 and set(first.errors) == set(resumed.errors)
    assert resumed.summary["succeeded"] == 12 and resumed.summary["failed"] == 0
    assert resumed.summary["skipped_existing"] == 11

    again = Run.of([f"--input={tmp_path / 's-{000..003}.tar'}", "--skip_existing"], output)
    assert again.exit_code == 0 and again.summary["inputs"] == 0
    assert again.transcripts.keys() == resumed.transcripts.keys()


# --- a forced format and other column names --------------------------------------------------


def test_input_format_and_column_flags(tmp_path: Path, layouts: Layouts, layouts_run: Run) -> None:
    found = recordings()
    names = list(found)[:2]
    path = tmp_path / "corpus.data"  # a name that says nothing: --input_format decides
    pq.write_table(
        pa.table(
            {
                "utt": names,
                "speech": [found[name][0].read_bytes() for name in names],
                "words": [found[name][1] for name in names],
            }
        ),
        path,
    )
    argv = [
        f"--input={path}",
        "--input_format=parquet",
        "--audio_column=speech",
        "--text_column=words",
        "--id_column=utt",
        "--pool=mean",
    ]
    run = Run.of(argv, tmp_path / "out")
    assert run.exit_code == 0 and run.errors == {}
    loose = {name: key for key, name in layouts.kinds["loose"].items()}
    for name in names:
        assert (
            run.transcripts[name]["transcript"]
            == layouts_run.transcripts[loose[name]]["transcript"]
        )
        assert run.transcripts[name]["reference"] == found[name][1]
    pooled = read_table(tmp_path / "out" / "pooled_hidden_states")
    assert {(row["id"], row["layer"]) for row in pooled} == {(name, 2) for name in names}
    assert not (tmp_path / "out" / "hidden_states").exists()

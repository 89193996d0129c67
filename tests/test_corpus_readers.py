"""The corpus readers alone (no model): WebDataset shards, Parquet datasets, JSONL manifests.

Each reader turns a container into `AudioItem`s and error rows; these tests build the containers
here, in the layouts users store them in, and check ids, sources, references, spans, resume
skipping, and what damaged or odd containers give.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to
from fixtures.synthetic_audio import synthetic_speech

from wav2vec2_beam.pipeline.options import OptionsError, parse_args
from wav2vec2_beam.transforms.read.decode_audio import Span
from wav2vec2_beam.transforms.read.decode_items import UNREAD, AudioItem
from wav2vec2_beam.transforms.read.inputs import MatchInputs, expand_braces, infer_kind
from wav2vec2_beam.transforms.read.manifest import read_manifest
from wav2vec2_beam.transforms.read.parquet_audio import ParquetColumns, read_parquet_file
from wav2vec2_beam.transforms.read.resume import ReadExistingIds, SkipList, done_ids
from wav2vec2_beam.transforms.read.webdataset import read_shard, split_member_name


def wav_bytes(seed: int, seconds: float = 0.5) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, synthetic_speech(seconds, seed=seed), 16_000, format="WAV")
    return buffer.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def split(records: list) -> tuple[dict[str, AudioItem], dict[str, str]]:
    """Items by id, and error messages by id."""
    items = {r.id: r for r in records if isinstance(r, AudioItem)}
    errors = {r.value.id: r.value.error for r in records if not isinstance(r, AudioItem)}
    return items, errors


# --- inputs ---------------------------------------------------------------------------------


def test_brace_ranges_and_alternatives() -> None:
    assert expand_braces("gs://b/shard-{000000..000002}.tar") == [
        "gs://b/shard-000000.tar",
        "gs://b/shard-000001.tar",
        "gs://b/shard-000002.tar",
    ]
    assert expand_braces("{train,dev}-{8..10}.tar") == [
        "train-8.tar",
        "train-9.tar",
        "train-10.tar",
        "dev-8.tar",
        "dev-9.tar",
        "dev-10.tar",
    ]
    assert expand_braces("x{2..0}") == ["x2", "x1", "x0"]
    assert expand_braces("{a,{b,c}}") == ["a", "b", "c"]
    assert expand_braces("odd{name}.wav") == ["odd{name}.wav"]
    assert expand_braces("open{1..2") == ["open{1..2"]


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("gs://b/s-000.tar", "webdataset"),
        ("s.TAR.GZ", "webdataset"),
        ("s.tgz", "webdataset"),
        ("data/train-0001.parquet", "parquet"),
        ("m.jsonl", "manifest"),
        ("m.json", "manifest"),
        ("a.flac", "audio"),
        ("a.tar.wav", "audio"),
    ],
)
def test_kind_from_the_name(path: str, kind: str) -> None:
    assert infer_kind(path) == kind


def test_a_forced_format_overrides_the_name(tmp_path: Path) -> None:
    (tmp_path / "a.shard").write_bytes(b"")
    (tmp_path / "b.tar").write_bytes(b"")
    pattern = str(tmp_path / "*")
    assert sorted(MatchInputs("webdataset").process(pattern)) == [
        ("webdataset", str(tmp_path / "a.shard").encode(), 0),
        ("webdataset", str(tmp_path / "b.tar").encode(), 0),
    ]
    assert sorted(kind for kind, _, _ in MatchInputs("auto").process(pattern)) == [
        "audio",
        "webdataset",
    ]
    (missing,) = MatchInputs("auto").process(str(tmp_path / "c-{0..1}.tar"))
    assert missing.value.error.startswith("no_match:")


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (
            "--input_format=tar",
            "--input_format must be one of auto,audio,webdataset,parquet,manifest",
        ),
        ("--pool=max", "--pool must be one of none,mean"),
    ],
)
def test_corpus_flags_are_checked(flag: str, message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        parse_args(["--input=x", "--model_dir=m", "--output_dir=o", flag])


def test_corpus_flags_reach_the_config() -> None:
    _, config = parse_args(
        [
            "--input=x",
            "--model_dir=m",
            "--output_dir=o",
            "--input_format=parquet",
            "--audio_column=speech",
            "--text_column=words",
            "--id_column=utt",
            "--skip_existing",
            "--pool=mean",
        ]
    )
    assert (config.input_format, config.audio_column, config.text_column, config.id_column) == (
        "parquet",
        "speech",
        "words",
        "utt",
    )
    assert config.skip_existing and config.pool == "mean"


# --- WebDataset -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "split_name"),
    [
        ("utt1.flac", ("utt1", "flac")),
        ("a/b.c/utt1.seg.json", ("a/b.c/utt1", "seg.json")),
        ("./utt1.wav", ("./utt1", "wav")),
        ("._utt1.wav", None),
        ("README", None),
    ],
)
def test_member_names_split_as_webdataset_does(name: str, split_name) -> None:
    assert split_member_name(name) == split_name


def test_samples_ids_sources_and_references(tmp_path: Path) -> None:
    shard = write_tar(
        tmp_path / "s.tar",
        [
            ("a/u1.flac", wav_bytes(1)),
            ("a/u1.json", json.dumps({"text": "Hello there", "speaker": 3}).encode()),
            ("u2.wav", wav_bytes(2)),
            ("u2.txt", "Ünïcode text\n".encode()),
            ("u2.cls", b"7"),
            ("u3.mp3", wav_bytes(3)),
            ("u4.json", json.dumps({"sentence": "from another field"}).encode()),
            ("u4.opus", wav_bytes(4)),
            ("._u5.wav", b"macOS resource fork"),
        ],
    )
    items, errors = split(list(read_shard(str(shard), frozenset(), None)))
    assert errors == {}
    assert [(i.id, i.source, i.reference) for i in items.values()] == [
        (f"{shard}#a/u1", f"{shard}#a/u1.flac", "Hello there"),
        (f"{shard}#u2", f"{shard}#u2.wav", "Ünïcode text"),
        (f"{shard}#u3", f"{shard}#u3.mp3", None),
        (f"{shard}#u4", f"{shard}#u4.opus", "from another field"),
    ]
    assert items[f"{shard}#u2"].data == wav_bytes(2)
    named, errors = split(list(read_shard(str(shard), frozenset(), "speaker")))
    assert f"{shard}#a/u1" not in named  # a number is no reference text: an error row instead
    assert errors[f"{shard}#a/u1"].startswith("bad_reference:")


def test_odd_samples_are_error_rows(tmp_path: Path) -> None:
    shard = write_tar(
        tmp_path / "s.tar",
        [
            ("u1.json", b'{"text": "no audio"}'),
            ("u2.wav", wav_bytes(2)),
            ("u2.flac", wav_bytes(2)),
            ("u3.wav", wav_bytes(3)),
            ("u3.json", b"{not json"),
            ("u4.wav", wav_bytes(4)),
            ("u5.wav", wav_bytes(5)),
            ("u4.txt", b"comes back"),
        ],
    )
    items, errors = split(list(read_shard(str(shard), frozenset(), None)))
    assert set(items) == {f"{shard}#u4", f"{shard}#u5"}
    assert errors[f"{shard}#u1"].startswith("no_audio:")
    assert errors[f"{shard}#u2"].startswith("several_audio:")
    assert errors[f"{shard}#u3"].startswith("bad_reference:")
    assert errors[f"{shard}#u4.txt"].startswith("duplicate_key:")  # u4 itself is an item


@pytest.fixture
def ten_samples(tmp_path: Path) -> tuple[Path, bytes]:
    members = []
    for index in range(10):
        members += [
            (f"k{index}.wav", wav_bytes(index)),
            (f"k{index}.txt", f"text {index}".encode()),
        ]
    shard = write_tar(tmp_path / "s.tar", members)
    return shard, shard.read_bytes()


def member_offsets(shard: Path) -> dict[str, tuple[int, int]]:
    """Member name -> (header offset, data end), from the intact shard."""
    with tarfile.open(shard) as tar:
        return {m.name: (m.offset, m.offset_data + m.size) for m in tar.getmembers()}


@pytest.mark.parametrize("where", ["inside_data", "inside_header", "at_a_member_boundary"])
def test_a_truncated_shard_keeps_the_samples_before_the_damage(
    ten_samples: tuple[Path, bytes], tmp_path: Path, where: str
) -> None:
    shard, data = ten_samples
    offsets = member_offsets(shard)
    cut = {
        "inside_data": offsets["k6.wav"][0] + 512 + 1000,
        "inside_header": offsets["k6.wav"][0] + 100,
        "at_a_member_boundary": offsets["k6.wav"][0],
    }[where]
    broken = tmp_path / "broken.tar"
    broken.write_bytes(data[:cut])
    items, errors = split(list(read_shard(str(broken), frozenset(), None)))
    # k6 is the sample being read when the damage shows (for a cut before its header, k5's
    # members may go on: it is the one in progress); everything before it is kept.
    in_progress = "k6" if where == "inside_data" else "k5"
    kept = [f"k{index}" for index in range(int(in_progress[1]))]
    assert list(items) == [f"{broken}#{key}" for key in kept]
    assert set(errors) == {f"{broken}#{in_progress}", f"{broken}#{UNREAD}"}
    assert all(message.startswith("damaged_shard:") for message in errors.values())


def test_a_garbled_header_is_damage_not_the_end(ten_samples: tuple[Path, bytes], tmp_path: Path):
    shard, data = ten_samples
    header = member_offsets(shard)["k3.wav"][0]
    garbled = bytearray(data)
    garbled[header + 20] ^= 0xFF  # the name field: the header's checksum no longer matches
    broken = tmp_path / "garbled.tar"
    broken.write_bytes(bytes(garbled))
    items, errors = split(list(read_shard(str(broken), frozenset(), None)))
    # The garbled header (k3.wav's) and its data are skipped and reading goes on at k3.txt: the
    # lost member may have been k2's or k3's, so both are errors; every sample after is read.
    assert list(items) == [f"{broken}#k{index}" for index in (0, 1, 4, 5, 6, 7, 8, 9)]
    assert set(errors) == {f"{broken}#k2", f"{broken}#k3", f"{broken}#{UNREAD}"}
    assert all(message.startswith("damaged_shard:") for message in errors.values())


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "not_a_tar"), (b"this is not a tar archive" * 40, "not_a_tar"), (None, "unreadable")],
)
def test_a_shard_that_cannot_be_read_is_one_error_row(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    shard = tmp_path / "bad.tar"
    if content is not None:
        shard.write_bytes(content)
    items, errors = split(list(read_shard(str(shard), frozenset(), None)))
    assert items == {}
    assert list(errors) == [f"{shard}#{UNREAD}"]
    assert errors[f"{shard}#{UNREAD}"].startswith(reason)


def test_compressed_shards_stream_too(ten_samples: tuple[Path, bytes], tmp_path: Path) -> None:
    _, data = ten_samples
    shard = tmp_path / "s.tar.gz"
    shard.write_bytes(gzip.compress(data))
    items, errors = split(list(read_shard(str(shard), frozenset(), None)))
    assert len(items) == 10 and errors == {}
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gzip.compress(data)[: len(gzip.compress(data)) // 2])
    items, errors = split(list(read_shard(str(cut), frozenset(), None)))
    assert 0 < len(items) < 10 and f"{cut}#{UNREAD}" in errors


def test_done_samples_are_left_out(ten_samples: tuple[Path, bytes]) -> None:
    shard, _ = ten_samples
    done = frozenset(f"{shard}#k{index}" for index in range(0, 10, 2))
    items, errors = split(list(read_shard(str(shard), SkipList(done), None)))
    assert list(items) == [f"{shard}#k{index}" for index in range(1, 10, 2)] and errors == {}


# --- Parquet --------------------------------------------------------------------------------


def test_the_datasets_audio_layout(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "c.wav").write_bytes(wav_bytes(3))
    table = pa.table(
        {
            "audio": [
                {"bytes": wav_bytes(1), "path": "a.wav"},
                {"bytes": None, "path": "clips/c.wav"},
                None,
                {"bytes": None, "path": None},
            ],
            "sentence": ["first", None, "third", "fourth"],
        }
    )
    path = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(table, path, row_group_size=2)
    items, errors = split(list(read_parquet_file(str(path), frozenset(), ParquetColumns())))
    assert [(i.id, i.source, i.reference, i.path) for i in items.values()] == [
        (f"{path}#0", f"{path}#0", "first", None),
        (f"{path}#1", str(tmp_path / "clips" / "c.wav"), None, str(tmp_path / "clips" / "c.wav")),
    ]
    assert items[f"{path}#0"].data == wav_bytes(1)
    assert set(errors) == {f"{path}#2", f"{path}#3"}
    assert all(message.startswith("null_audio:") for message in errors.values())


def test_ids_from_a_column_binary_and_path_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(
        pa.table(
            {
                "wav": [wav_bytes(1), wav_bytes(2), wav_bytes(3)],
                "key": [11, 12, 11],
                "words": ["a", "b", "c"],
            }
        ),
        path,
    )
    columns = ParquetColumns(audio="wav", text="words", id="key")
    items, errors = split(list(read_parquet_file(str(path), frozenset(), columns)))
    assert [(i.id, i.reference) for i in items.values()] == [("11", "a"), ("12", "b")]
    assert errors[f"{path}#2"].startswith("duplicate_id: row 2 repeats id '11' of row 0")

    strings = tmp_path / "paths.parquet"
    pq.write_table(pa.table({"audio": ["/abs/x.flac", "rel/y.flac"], "id": ["x", "y"]}), strings)
    items, _ = split(list(read_parquet_file(str(strings), frozenset(), ParquetColumns())))
    assert [(i.id, i.path) for i in items.values()] == [
        ("x", "/abs/x.flac"),
        ("y", str(tmp_path / "rel" / "y.flac")),
    ]


def test_done_row_groups_are_not_read(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "d.parquet"
    pq.write_table(
        pa.table({"audio": [{"bytes": wav_bytes(i), "path": None} for i in range(6)]}),
        path,
        row_group_size=2,
    )
    read_groups = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, row_groups=None, **kwargs):
        read_groups.extend(row_groups)
        return original(self, *args, row_groups=row_groups, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    done = frozenset({f"{path}#0", f"{path}#1", f"{path}#3"})
    items, errors = split(list(read_parquet_file(str(path), SkipList(done), ParquetColumns())))
    assert list(items) == [f"{path}#2", f"{path}#4", f"{path}#5"] and errors == {}
    assert read_groups == [1, 2]


@pytest.mark.parametrize(
    ("columns", "content", "reason"),
    [
        (ParquetColumns(audio="speech"), None, "bad_columns"),
        (ParquetColumns(id="utt"), None, "bad_columns"),
        (ParquetColumns(), b"PAR1 but not really parquet PAR1", "unreadable"),
    ],
)
def test_a_file_that_cannot_be_read_is_one_error_row(
    tmp_path: Path, columns: ParquetColumns, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "d.parquet"
    if content is None:
        pq.write_table(pa.table({"audio": [wav_bytes(1)]}), path)
    else:
        path.write_bytes(content)
    items, errors = split(list(read_parquet_file(str(path), frozenset(), columns)))
    assert items == {} and list(errors) == [f"{path}#{UNREAD}"]
    assert errors[f"{path}#{UNREAD}"].startswith(reason)


# --- manifests ------------------------------------------------------------------------------


def test_manifest_lines(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    lines = [
        {"audio_filepath": "audio/a.wav", "duration": 1.5, "text": "one"},
        {"audio_filepath": "/abs/b.flac", "offset": 0.25, "duration": 0.5, "id": "utt-b"},
        "",
        {"audio_filepath": "gs://bucket/c.opus", "offset": 2, "id": 7},
        {"audio_filepath": "d.wav", "duration": 0},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(x) if x else "  " for x in lines) + "\n")
    items, errors = split(list(read_manifest(str(manifest), frozenset(), None, None)))
    assert errors == {}
    assert [(i.id, i.path, i.span, i.reference) for i in items.values()] == [
        (f"{manifest}#1", str(tmp_path / "audio" / "a.wav"), Span(0.0, 1.5), "one"),
        ("utt-b", "/abs/b.flac", Span(0.25, 0.5), None),
        ("7", "gs://bucket/c.opus", Span(2.0, None), None),
        (f"{manifest}#5", str(tmp_path / "d.wav"), None, None),
    ]


def test_bad_manifest_lines_are_error_rows(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(
        b"\n".join(
            [
                b'{"audio_filepath": "a.wav"}',
                b"{not json",
                b"[1, 2]",
                b'{"text": "no audio"}',
                b'{"audio_filepath": "b.wav", "offset": -1}',
                b'{"audio_filepath": "c.wav", "duration": "long"}',
                b'{"audio_filepath": "d.wav", "id": "x"}',
                b'{"audio_filepath": "e.wav", "id": "x"}',
                b"\xff\xfe not utf-8",
            ]
        )
    )
    items, errors = split(list(read_manifest(str(manifest), frozenset(), None, None)))
    assert list(items) == [f"{manifest}#1", "x"]
    assert {key: message.split(":")[0] for key, message in errors.items()} == {
        f"{manifest}#2": "not_json",
        f"{manifest}#3": "not_an_object",
        f"{manifest}#4": "no_audio_filepath",
        f"{manifest}#5": "bad_offset",
        f"{manifest}#6": "bad_duration",
        f"{manifest}#8": "duplicate_id",
        f"{manifest}#9": "not_json",
    }


def test_manifest_resume_and_a_missing_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav"}\n{"audio_filepath": "b.wav"}\n')
    items, _ = split(list(read_manifest(str(manifest), SkipList({f"{manifest}#1"}), None, None)))
    assert list(items) == [f"{manifest}#2"]
    missing = tmp_path / "missing.jsonl"
    items, errors = split(list(read_manifest(str(missing), frozenset(), None, None)))
    assert items == {} and list(errors) == [f"{missing}#{UNREAD}"]


# --- resume ---------------------------------------------------------------------------------


def test_existing_ids_are_read_from_every_run_of_the_tables(tmp_path: Path) -> None:
    (tmp_path / "transcripts").mkdir()
    (tmp_path / "errors").mkdir()
    for run, ids in (("run1", ["a", "b"]), ("run2", ["c"])):
        pq.write_table(
            pa.table({"id": ids, "transcript": ["x"] * len(ids)}),
            tmp_path / "transcripts" / f"{run}-00000-of-00001.parquet",
        )
    pq.write_table(pa.table({"id": ["d"], "error": ["e"]}), tmp_path / "errors" / "r.parquet")
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        for name, folder, expected in (
            ("full", tmp_path, {"transcripts": set("abc"), "errors": {"d"}}),
            ("empty", tmp_path / "nothing", {}),
        ):
            ids = pipeline | f"Ids{name}" >> ReadExistingIds(str(folder), ["transcripts", "errors"])
            assert_that(ids, equal_to([expected]), label=f"Check{name}")


def test_an_item_is_done_when_it_failed_or_is_in_every_table_it_belongs_in() -> None:
    existing = {
        "transcripts": frozenset("abc"),
        "hidden_states": frozenset("ab"),
        "errors": frozenset("e"),
    }
    assert done_ids(existing, ["transcripts", "hidden_states"]) == set("abe")
    assert done_ids(existing, ["transcripts"]) == set("abce")
    assert done_ids({}, ["transcripts"]) == set()


def test_synthetic_wav_bytes_decode() -> None:
    """Guards the helpers: the bytes packed into containers are real audio."""
    samples, rate = soundfile.read(io.BytesIO(wav_bytes(1)))
    assert rate == 16_000 and len(samples) == 8_000 and np.abs(samples).max() > 0


def test_a_json_document_that_is_not_jsonl_is_one_error_row(tmp_path: Path) -> None:
    """A pretty-printed JSON array beside the audio is not a manifest: one row, not one per line."""
    document = tmp_path / "metadata.json"
    document.write_text(json.dumps([{"file": "a.wav"}, {"file": "b.wav"}], indent=2))
    rows = list(read_manifest(str(document), frozenset(), None, None))
    assert len(rows) == 1
    error = rows[0].value
    assert error.id == str(document) and error.error.startswith("not_jsonl")

"""Hostile corpora, each reader and stage alone (issue #21); whole runs are in test_hostile_runs.py.

Every input item must end in exactly one row, an output or an error that says why, and no input
may stop or hang the job. The hostile inputs are made here: names that are not UTF-8, lone
surrogates in JSON, FIFOs, tar shards with zero blocks, concatenations, hard and symbolic links,
devices, CSV manifests with a byte-order mark and quoted line breaks, Parquet rows of the wrong
type, absurd spans and sample rates.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile
from fixtures.synthetic_audio import synthetic_speech

from wav2vec2_beam.transforms.read.corpus import CorpusOptions, _ReadFiles
from wav2vec2_beam.transforms.read.decode_audio import AudioDecodeError, Span, decode_audio
from wav2vec2_beam.transforms.read.decode_items import AudioItem, _DecodeItem
from wav2vec2_beam.transforms.read.ids import canonical_path, escape, file_id, path_text, unescape
from wav2vec2_beam.transforms.read.inputs import MatchInputs
from wav2vec2_beam.transforms.read.manifest import read_manifest
from wav2vec2_beam.transforms.read.parquet_audio import ParquetColumns, read_parquet_file
from wav2vec2_beam.transforms.read.resume import read_ids, table_patterns
from wav2vec2_beam.transforms.read.webdataset import read_shard
from wav2vec2_beam.transforms.records import ErrorRecord


def wav_bytes(seed: int, seconds: float = 0.5, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, synthetic_speech(seconds, seed=seed), rate, format="WAV")
    return buffer.getvalue()


def split(records: list) -> tuple[dict[str, AudioItem], dict[str, str]]:
    items = {r.id: r for r in records if isinstance(r, AudioItem)}
    errors = {r.value.id: r.value.error for r in records if not isinstance(r, AudioItem)}
    return items, errors


def tar_member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_tar(path: Path, members: list) -> bytes:
    with tarfile.open(
        path, "w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape"
    ) as tar:
        for info, data in members:
            tar.addfile(info, data)
    return path.read_bytes()


# --- 1. strings that are not UTF-8 ------------------------------------------------------------


def test_the_escape_is_lossless_and_leaves_text_alone() -> None:
    for text in ("plain", "caf\u00e9", "a\\b", "emoji \U0001f600"):
        assert escape(text) == text
    for broken in ("caf\udce9.wav", "x\ud800y", "back\\slash\udcff"):
        escaped = escape(broken)
        escaped.encode("utf-8")  # writable
        assert unescape(escaped) == broken
    assert escape("caf\udce9.wav") == "caf\\xe9.wav"


def test_a_file_name_that_is_not_utf8_is_read_under_an_escaped_id(tmp_path: Path) -> None:
    path = os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav")
    with open(path, "wb") as handle:
        handle.write(wav_bytes(1))
    matched = list(MatchInputs("auto").process(str(tmp_path / "*.wav")))
    assert len(matched) == 1
    items = list(_ReadFiles(CorpusOptions()).process(matched[0]))
    assert [item.id for item in items] == [f"{tmp_path}/caf\\xe9.wav"]
    assert os.path.exists(items[0].path)  # the path still opens the file


def test_tar_and_json_strings_that_are_not_utf8(tmp_path: Path) -> None:
    shard = tmp_path / "s.tar"
    record = json.dumps({"text": "bad \ud800 text"}).encode()  # "\\ud800" in the JSON
    write_tar(
        shard,
        [
            tar_member("ok.wav", wav_bytes(1)),
            tar_member("caf\udce9.wav", wav_bytes(2)),  # the member name's byte 0xE9
            tar_member("lone.wav", wav_bytes(3)),
            tar_member("lone.json", record),
        ],
    )
    items, errors = split(list(read_shard(str(shard), frozenset(), None)))
    assert errors == {}
    assert set(items) == {f"{shard}#ok", f"{shard}#caf\\xe9", f"{shard}#lone"}
    assert items[f"{shard}#lone"].reference == "bad \\ud800 text"


def test_manifest_strings_that_are_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(wav_bytes(1))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"audio_filepath": "a.wav", "id": "id\ud800", "text": "t\udfff"}) + "\n"
    )
    items, errors = split(list(read_manifest(str(manifest), frozenset(), None, None)))
    assert errors == {}
    assert list(items) == ["id\\ud800"] and items["id\\ud800"].reference == "t\\udfff"


def test_an_error_quoting_a_name_that_is_not_utf8_is_writable() -> None:
    error = ErrorRecord("caf\udce9", "caf\udce9", "read", "no such file: caf\udce9")
    assert error.id == "caf\\xe9" and error.error == "no such file: caf\\xe9"


# --- 3. FIFOs and other special files -----------------------------------------------------


def test_a_fifo_among_the_inputs_is_an_error_row_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    (tmp_path / "folder.wav").mkdir()
    match, read = MatchInputs("auto"), _ReadFiles(CorpusOptions())
    matched = [
        *match.process(str(tmp_path / "*.wav")),
        *match.process(str(tmp_path / "folder.wav")),
    ]
    errors = {r.value.id: r.value.error for found in matched for r in read.process(found)}
    assert errors[str(fifo)].startswith("not_a_regular_file:") and "FIFO" in errors[str(fifo)]
    assert "directory" in errors[str(tmp_path / "folder.wav")]


def test_a_fifo_named_by_a_manifest_is_an_error_row_not_a_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.wav")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "pipe.wav", "id": "p"}) + "\n")
    items, _ = split(list(read_manifest(str(manifest), frozenset(), None, None)))
    decoded: list = []
    worker = threading.Thread(target=lambda: decoded.extend(decode_chunks(items["p"])))
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "decoding a FIFO hangs"
    assert decoded[-1].error.error.startswith("not_a_regular_file:")


def decode_chunks(item: AudioItem) -> list:
    decoder = _DecodeItem(None, 20.0)
    decoder.start_bundle()
    return list(decoder.process(item))


# --- 5, 6. WebDataset shards ------------------------------------------------------------------


def test_samples_after_a_zero_block_and_in_concatenated_shards_are_read(tmp_path: Path) -> None:
    first = write_tar(tmp_path / "a.tar", [tar_member(f"a{i}.wav", wav_bytes(i)) for i in range(3)])
    second = write_tar(
        tmp_path / "b.tar", [tar_member(f"b{i}.wav", wav_bytes(10 + i)) for i in range(3)]
    )
    joined = tmp_path / "joined.tar"
    joined.write_bytes(first + second)  # `cat a.tar b.tar`: two end-of-archive markers inside
    items, errors = split(list(read_shard(str(joined), frozenset(), None)))
    assert errors == {} and len(items) == 6
    # one zero block between two members
    with tarfile.open(tmp_path / "a.tar") as tar:
        offset = tar.getmember("a1.wav").offset
    zeroed = tmp_path / "zero.tar"
    zeroed.write_bytes(first[:offset] + bytes(512) + first[offset:])
    items, errors = split(list(read_shard(str(zeroed), frozenset(), None)))
    assert errors == {} and sorted(items) == [f"{zeroed}#a{i}" for i in range(3)]


def test_member_kinds(tmp_path: Path) -> None:
    shard = tmp_path / "kinds.tar"
    audio = wav_bytes(4)
    write_tar(
        shard,
        [
            tar_member("orig.wav", audio),
            tar_member("hard.wav", kind=tarfile.LNKTYPE, link="orig.wav"),
            tar_member("soft.wav", kind=tarfile.SYMTYPE, link="orig.wav"),
            tar_member("dev.wav", kind=tarfile.CHRTYPE),
            tar_member("pipe.flac", kind=tarfile.FIFOTYPE),
            tar_member("adir", kind=tarfile.DIRTYPE),
            tar_member("case.wav", wav_bytes(5)),
            tar_member("case.WAV", wav_bytes(6)),
        ],
    )
    items, errors = split(list(read_shard(str(shard), frozenset(), None)))
    assert set(items) == {f"{shard}#orig", f"{shard}#hard"}
    assert items[f"{shard}#hard"].data == audio  # read as the member it links to
    for key in ("soft", "dev", "pipe"):
        assert errors[f"{shard}#{key}"].startswith("not_a_regular_file:"), key
    assert errors[f"{shard}#case"].startswith("several_audio:")
    assert len(items) + len(errors) == 6  # every sample once; the directory is no sample


# --- 7. CSV manifests ---------------------------------------------------------------------


def test_csv_manifests(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(wav_bytes(1, seconds=2.0))
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(
        "\ufeffaudio_filepath,text,offset,duration,id\r\n"
        'a.wav,"hello, ""quoted""\nworld",0.5,1,first\r\n'
        "a.wav,plain,,,\r\n"
        "a.wav,x,abc,,bad\r\n"
        "a.wav,only two\r\n".encode()
    )
    items, errors = split(list(read_manifest(str(manifest), frozenset(), None, None)))
    assert items["first"].reference == 'hello, "quoted"\nworld'
    assert items["first"].span == Span(0.5, 1.0)
    assert f"{manifest}#4" in items and items[f"{manifest}#4"].span is None  # after two lines
    assert errors["bad"].startswith("bad_offset:")
    assert errors[f"{manifest}#6"].startswith("bad_row:")


# --- 8. one id per file -------------------------------------------------------------------


def test_every_spelling_of_a_file_is_one_id(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "f.wav").write_bytes(wav_bytes(1))
    monkeypatch.chdir(tmp_path)
    spellings = [
        "base/*.wav",
        "./base/*.wav",
        "base/./f.wav",
        "base/../base/f.wav",
        str(tmp_path / "base" / "f.wav"),
    ]
    match = MatchInputs("auto")
    paths = {path_text(path) for spelling in spellings for _, path, _ in match.process(spelling)}
    assert paths == {str(tmp_path / "base" / "f.wav")}
    assert canonical_path("gs://b/a//x.wav") == "gs://b/a//x.wav"  # object names are exact
    assert file_id("base/f.wav") == str(tmp_path / "base" / "f.wav")


# --- 9, 2. the output folder on resume ------------------------------------------------------


def piece(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids}), path)


def test_the_output_folder_is_a_literal_name(tmp_path: Path) -> None:
    piece(tmp_path / "runA" / "transcripts" / "p.parquet", ["sibling"])
    piece(tmp_path / "out[1]" / "transcripts" / "p.parquet", ["mine"])
    for folder, expected in (("run?", set()), ("out[1]", {"mine"})):
        [pattern] = table_patterns(str(tmp_path / folder), ["transcripts"])
        found = {i for path in __import__("glob").glob(pattern) for _, i in read_ids(path)}
        assert found == expected, folder


def test_a_stray_file_in_a_table_folder_is_passed_over(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "transcripts"
    piece(folder / "good.parquet", ["a"])
    (folder / "junk.parquet").write_bytes(b"")
    pq.write_table(pa.table({"other": [1]}), folder / "noid.parquet")
    ids = [
        i for name in ("good", "junk", "noid") for _, i in read_ids(str(folder / f"{name}.parquet"))
    ]
    assert ids == ["a"]
    assert "junk.parquet" in caplog.text and "noid.parquet" in caplog.text


def test_a_committed_piece_is_synced_before_and_after_its_rename(tmp_path: Path, monkeypatch):
    from wav2vec2_beam.transforms.write import tables

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(tables.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    final = str(tmp_path / "t" / "p.parquet")
    (tmp_path / "t").mkdir()
    tables.write_piece(pa.table({"id": ["a"]}), final)()
    assert len(synced) == 2  # the file's data, then the folder's entry
    assert pq.read_table(final).column("id").to_pylist() == ["a"]


# --- 10. Parquet rows ---------------------------------------------------------------------


def test_one_bad_parquet_row_is_one_error_row(tmp_path: Path) -> None:
    audio = pa.struct([("bytes", pa.binary()), ("path", pa.binary())])
    rows = [{"bytes": wav_bytes(i), "path": None} for i in range(5)]
    rows[2] = {"bytes": None, "path": b"x.wav"}  # a path that is bytes, not text
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"audio": pa.array(rows, audio)}), path, row_group_size=10)
    items, errors = split(list(read_parquet_file(str(path), frozenset(), ParquetColumns())))
    assert sorted(items) == [f"{path}#{row}" for row in (0, 1, 3, 4)]
    assert list(errors) == [f"{path}#2"] and errors[f"{path}#2"].startswith("bad_audio:")


# --- 16, 17, 18. absurd rates, long manifests, spans ---------------------------------------


def test_a_sample_rate_below_the_floor_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "one_hz.wav"
    soundfile.write(path, np.zeros(1200, np.float32), 1, format="WAV")
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(str(path))
    assert caught.value.reason == "sample_rate_too_low"


@pytest.mark.parametrize(("offset", "duration"), [(1e308, None), (0.0, 1e308), (1e308, 1e308)])
def test_huge_spans_are_bad_spans_not_overflows(tmp_path: Path, offset, duration) -> None:
    path = tmp_path / "a.wav"
    soundfile.write(path, synthetic_speech(1.0, seed=1), 16_000)
    if offset == 0.0:  # a duration past the end is cut at the end
        samples, _ = decode_audio(str(path), span=Span(offset, duration))
        assert len(samples) == 16_000
        return
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(str(path), span=Span(offset, duration))
    assert caught.value.reason == "bad_span"


def test_a_manifest_of_bad_lines_is_read_once(tmp_path: Path, monkeypatch) -> None:
    """Bad lines that start like JSON objects, before any good one: the file is opened once for
    its lines and once to see whether its first line starts one JSON document (it does not)."""
    from wav2vec2_beam.transforms.read import manifest as module

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("{not json\n" * 2000 + json.dumps({"audio_filepath": "a.wav"}) + "\n")
    opened: list[str] = []
    real_open = module.FileSystems.open
    monkeypatch.setattr(
        module.FileSystems,
        "open",
        lambda path, **kw: (opened.append(path), real_open(path, **kw))[1],
    )
    items, errors = split(list(read_manifest(str(manifest), frozenset(), None, None)))
    assert len(errors) == 2000 and len(items) == 1
    assert len(opened) <= 2

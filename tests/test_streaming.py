"""Items stream from decoding to disk: the stitcher lets each item go when it is complete, a
failed decode reaches it as a marker, and the writers commit whole pieces, once per retried bundle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile
from apache_beam.io.filesystems import FileSystems

from wav2vec2_beam.transforms.infer.chunk import chunk_params
from wav2vec2_beam.transforms.infer.stitch import _Stitch
from wav2vec2_beam.transforms.read.decode_items import AudioItem, _DecodeItem, bundle_name
from wav2vec2_beam.transforms.read.resume import read_ids, table_patterns
from wav2vec2_beam.transforms.records import LOGITS, ErrorRecord, InferredChunk, ItemResult
from wav2vec2_beam.transforms.write.tables import (
    PieceLimits,
    _WritePieces,
    errors_table,
    logits_table,
)

# ---------------------------------------------------------------- stitching as windows arrive


def window(item: str, index: int, is_last: bool, frames: int = 4, **kw) -> InferredChunk:
    fields = dict(
        id=item,
        source=f"src-{item}",
        index=index,
        is_last=is_last,
        stride_left=0,
        stride_right=0,
        num_samples=frames * 320,
        total_samples=(index + 1) * frames * 320 if is_last else None,
        metadata={},
        frames={LOGITS: np.full((frames, 2), index, np.float32)},
    )
    return InferredChunk(**{**fields, **kw})


def test_each_item_leaves_the_stitcher_with_its_last_window_and_nothing_is_held() -> None:
    stitch = _Stitch(320, "float32")
    stitch.start_bundle()
    arrivals = [
        window("a", 1, True),
        window("b", 0, True),
        window("c", 0, False),
        window("a", 0, False),  # a is complete here, though it began first
        # c's decode failed after 2 windows: the marker is numbered 2, its window 1 still to come
        window("c", 2, True, frames=0, error="non_finite: NaN at 3.1 s", error_stage="decode"),
        window("d", 1, True, error="RuntimeError: boom"),
        window("c", 1, False),
        window("d", 0, False),
        window("e", 0, False),  # never completed: a broken contract must still end in a row
    ]
    emitted: list[tuple[str, object]] = []
    for arrival in arrivals:
        for out in stitch.process(arrival):
            emitted.append((f"{arrival.id}{arrival.index}", out))
        if arrival.id == "c" and arrival.error:
            assert stitch._arriving[0, "c"].windows == []  # a failed item keeps no outputs
    assert [when for when, _ in emitted] == ["b0", "a0", "c1", "d0"]
    results = dict(emitted)
    a = results["a0"]
    assert isinstance(a, ItemResult) and a.frames[LOGITS][:, 0].tolist() == [0] * 4 + [1] * 4
    assert results["c1"] == ErrorRecord("c", "src-c", "decode", "non_finite: NaN at 3.1 s")
    assert results["d0"] == ErrorRecord("d", "src-d", "infer", "RuntimeError: boom")
    assert list(stitch._arriving) == [(0, "e")]
    (tail,) = stitch.finish_bundle()
    assert tail.value.stage == "stitch" and tail.value.id == "e"
    assert stitch._arriving == {}


def test_a_late_decode_failure_ends_the_item_with_a_numbered_marker(tmp_path: Path) -> None:
    audio = np.sin(np.linspace(0, 2000, 20 * 16_000)).astype(np.float32)
    audio[15 * 16_000] = np.nan
    path = tmp_path / "late.wav"
    soundfile.write(path, audio, 16_000, subtype="FLOAT")
    decode = _DecodeItem(chunk_params(2.0, None, 320), block_s=0.5)
    decode.start_bundle()
    first = AudioItem(id="first", source=str(path), path=str(path), origin="m.jsonl#1")
    late = AudioItem(id="late", source=str(path), path=str(path), origin="m.jsonl#2")
    _ = list(decode.process(first))
    chunks = list(decode.process(late))
    *windows, marker = chunks
    # Every chunk names its bundle by the bundle's first item, and numbers its own item.
    assert {(c.bundle, c.serial) for c in chunks} == {(bundle_name(first), 2)}
    assert windows and all(not c.is_last and c.error is None for c in windows)
    assert [c.index for c in windows] == list(range(len(windows)))
    assert marker.is_last and marker.index == len(windows) and len(marker.samples) == 0
    assert marker.error.id == "late" and "non_finite" in marker.error.error


# ---------------------------------------------------------------- pieces


def result(item: str, bundle: str = "") -> ItemResult:
    logits = np.arange(6, dtype=np.float32).reshape(3, 2) + ord(item[-1])
    return ItemResult(item, f"src-{item}", 0.06, 16_000, 3, {LOGITS: logits}, bundle=bundle)


def writer(out: Path, items: int, seconds: float = 3600.0) -> _WritePieces:
    limits = PieceLimits(items=items, megabytes=64.0, seconds=seconds)
    return _WritePieces([logits_table("float32", 2)], str(out), "run", limits, "test", None)


def ids_in(out: Path, table: str) -> list[str]:
    (pattern,) = table_patterns(str(out), [table])
    paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    return sorted(item for path in paths for _, item in read_ids(path))


def test_pieces_are_cut_by_items_and_every_table_of_an_item_is_one_cut(tmp_path: Path) -> None:
    fn = writer(tmp_path, items=3)
    fn.start_bundle()
    elements = [result(f"i{n}") for n in range(4)] + [ErrorRecord("bad", "x", "decode", "no")]
    for element in elements:
        fn.process(element)
    assert len(list((tmp_path / "logits").glob("*.parquet"))) == 1  # committed while running
    fn.finish_bundle()  # the rest: i3 and the error
    logits = sorted(p.name for p in (tmp_path / "logits").glob("*.parquet"))
    errors = sorted(p.name for p in (tmp_path / "errors").glob("*.parquet"))
    assert len(logits) == 2 and errors == logits[1:]  # the error came in the second cut
    first = pq.read_table(tmp_path / "logits" / logits[0])
    assert first.column("id").to_pylist() == ["i0", "i1", "i2"]
    assert np.array_equal(np.array(first.column("logits")[1].as_py()), result("i1").frames[LOGITS])
    assert ids_in(tmp_path, "errors") == ["bad"]
    assert not list(tmp_path.rglob("*.tmp"))  # no scratch file is left behind


def test_a_piece_is_cut_when_its_oldest_row_has_waited_long_enough(tmp_path: Path) -> None:
    fn = writer(tmp_path, items=1000, seconds=1e-9)
    fn.start_bundle()
    for n in range(3):
        fn.process(result(f"i{n}"))
        assert len(list((tmp_path / "logits").glob("*.parquet"))) == n + 1


def test_a_retried_bundle_leaves_each_row_once(tmp_path: Path) -> None:
    elements = [result(f"i{n}") for n in range(5)]
    failed = writer(tmp_path, items=2)
    failed.start_bundle()
    for element in elements[:4]:
        failed.process(element)  # two pieces committed, then the worker dies
    assert ids_in(tmp_path, "logits") == ["i0", "i1", "i2", "i3"]
    retry = writer(tmp_path, items=3)  # cut elsewhere this time, as a time limit would
    retry.start_bundle()
    for element in elements:
        retry.process(element)
    retry.finish_bundle()
    assert ids_in(tmp_path, "logits") == [f"i{n}" for n in range(5)]
    other = writer(tmp_path, items=2)  # a different bundle leaves the first one's pieces alone
    other.start_bundle()
    other.process(result("j0"))
    other.finish_bundle()
    assert ids_in(tmp_path, "logits") == [*(f"i{n}" for n in range(5)), "j0"]


def test_a_retry_in_which_other_items_succeed_still_leaves_each_item_once(tmp_path: Path) -> None:
    """Attempt 1 failed to read its first item (a passing fault) and died; in attempt 2 it reads."""
    failed = writer(tmp_path, items=1)
    failed.start_bundle()
    failed.process(ErrorRecord("i0", "src-i0", "read", "unreadable: timeout", bundle="b1"))
    failed.process(result("i1", bundle="b1"))
    assert ids_in(tmp_path, "errors") == ["i0"] and ids_in(tmp_path, "logits") == ["i1"]
    (piece,) = (tmp_path / "logits").glob("*.parquet")
    scratch = tmp_path / "logits" / f".{piece.stem[:-1]}2.parquet.0123abcd.tmp"
    scratch.write_bytes(b"the third piece, half written when the worker died")
    retry = writer(tmp_path, items=1)
    retry.start_bundle()
    for element in (result("i0", bundle="b1"), result("i1", bundle="b1")):
        retry.process(element)
    retry.finish_bundle()
    assert ids_in(tmp_path, "errors") == [] and ids_in(tmp_path, "logits") == ["i0", "i1"]
    assert not scratch.exists()


def test_rows_a_table_holds_already_are_not_written_again(tmp_path: Path) -> None:
    tables = [logits_table("float32", 2), errors_table()]
    fn = _WritePieces(tables[:1], str(tmp_path), "run", PieceLimits(), "test", None)
    fn.start_bundle()
    fn.process(result("i0"), existing={"logits": frozenset({"i0"})})
    fn.process(result("i1"), existing={"logits": frozenset({"i0"})})
    fn.finish_bundle()
    assert ids_in(tmp_path, "logits") == ["i1"]


def test_a_scratch_file_is_not_a_piece(tmp_path: Path) -> None:
    (tmp_path / "logits").mkdir()
    (tmp_path / "logits" / ".run-abc-00000.parquet.1234abcd.tmp").write_bytes(b"half a file")
    assert ids_in(tmp_path, "logits") == []

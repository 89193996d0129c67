"""Peak memory is flat in file length and in corpus size.

A 30-minute file costs at most 1.3x a 1-minute file, with fixed windows and with voice segments
(about a minute each), and 200 files of real speech
at most 1.25x 20 files while every hidden state is written (about a minute and a half). Each run is a
fresh process that reports its own peak resident set size once the pipeline has finished.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
from fixtures.synthetic_audio import synthetic_speech

from bench.corpus_memory import KINDS, measure, speech_clips, write_checkpoint

REPO = Path(__file__).resolve().parents[1]
MEASURE = """
import sys
from wav2vec2_beam.pipeline.main import main
assert main(sys.argv[1:]) == 0
# VmHWM, not ru_maxrss: the latter starts from the parent's peak when forked.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print("maxrss_kb", int(hwm.split()[1]))
"""


def peak_rss_kb(audio: Path, output: Path, *flags: str) -> int:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURE,
            f"--input={audio}",
            f"--model_dir={REPO / 'tests' / 'fixtures' / 'checkpoints' / 'base'}",
            f"--output_dir={output}",
            *flags,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("maxrss_kb")]
    return int(line.split()[1])


@pytest.mark.parametrize("flags", [[], ["--segment=vad"]], ids=["windows", "vad"])
def test_a_30_minute_file_needs_at_most_1_3x_the_memory_of_a_1_minute_file(
    tmp_path: Path, flags: list[str]
) -> None:
    minute = synthetic_speech(60.0, seed=1)
    soundfile.write(tmp_path / "one.flac", minute, 16_000)
    soundfile.write(
        tmp_path / "thirty.flac",
        np.concatenate([synthetic_speech(60.0, seed=seed) for seed in range(30)]),
        16_000,
    )
    one = peak_rss_kb(tmp_path / "one.flac", tmp_path / "out_one", *flags)
    thirty = peak_rss_kb(tmp_path / "thirty.flac", tmp_path / "out_thirty", *flags)
    print(
        f"peak RSS: 1 min {one / 1024:.0f} MiB, 30 min {thirty / 1024:.0f} MiB, {thirty / one:.2f}x"
    )
    assert thirty <= 1.3 * one


def test_200_files_need_at_most_1_25x_the_memory_of_20_files(tmp_path: Path) -> None:
    """768 wide, 2 layers, transcripts and every hidden state of 4 s files of real speech: what
    must stay flat is the cost per item, not the audio's length, which the other test covers.
    The stitcher that once held every item's outputs cost 20 MB per 10 s file (PERFORMANCE.md),
    about 8 MB per file here: 1.4 GB over the 180 more files, far past the 1.25x bound."""
    model_dir = write_checkpoint(tmp_path / "checkpoint")
    peaks = {}
    for count in (20, 200):
        clips = speech_clips(tmp_path / f"clips{count}", count, seconds=4.0)
        output = tmp_path / f"out{count}"
        found = measure(
            str(tmp_path / f"clips{count}" / "*.flac"), model_dir, output, KINDS["every layer"]
        )
        peaks[count] = found["peak_rss_mib"]
        transcripts = pq.read_table(output / "transcripts")
        assert sorted(transcripts.column("id").to_pylist()) == sorted(map(str, clips))
        assert transcripts.column("duration_s").to_pylist() == [4.0] * count
        hidden = pq.read_table(output / "hidden_states", columns=["id", "layer"])
        assert hidden.num_rows == 3 * count  # layers 0, 1, 2 of every file
    print(f"peak RSS: 20 files {peaks[20]:.0f} MiB, 200 files {peaks[200]:.0f} MiB")
    assert peaks[200] <= 1.25 * peaks[20]

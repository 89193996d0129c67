"""Command-line checks: good command lines parse, bad ones and unloadable models exit in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wav2vec2_beam.demo import HELDOUT_DIR, MODEL_DIR
from wav2vec2_beam.models.configuration import Wav2Vec2Config
from wav2vec2_beam.pipeline.main import EXIT_BAD_MODEL, EXIT_BAD_OPTIONS, main
from wav2vec2_beam.pipeline.options import (
    OptionsError,
    check_against_model,
    parse_args,
    resolve_outputs,
)

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO / "tests" / "fixtures" / "checkpoints"
REQUIRED = ["--input=/data/*.wav", "--model_dir=/m", "--output_dir=/o"]


def config_of(name: str) -> Wav2Vec2Config:
    return Wav2Vec2Config.from_pretrained(str(CHECKPOINTS / name))


def test_our_flags_sit_beside_beam_flags() -> None:
    options, config = parse_args(
        [
            "--input=a/*.flac",
            "--input",
            "gs://b/c/**.wav",
            "--model_dir=/m",
            "--output_dir=/o",
            "--outputs=transcripts,hidden_states",
            "--hidden_layers=0,6,-1",
            "--stride_length_s=4,2",
            "--direct_running_mode=multi_processing",
            "--direct_num_workers=2",
        ]
    )
    assert config.inputs == ("a/*.flac", "gs://b/c/**.wav")
    assert config.outputs == ("transcripts", "hidden_states")
    assert config.hidden_layers == (0, 6, -1)
    assert config.stride_length_s == (4.0, 2.0)
    assert options.get_all_options()["direct_num_workers"] == 2


def test_defaults_chunk_long_files() -> None:
    _, config = parse_args(REQUIRED)
    assert config.outputs == ()  # the head's own, once the checkpoint is read
    assert config.hidden_layers == (-1,)
    assert config.chunk_length_s == 30.0 and config.stride_length_s is None
    assert config.feature_dtype == "float32" and config.precision == "float32"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model_dir=/m", "--output_dir=/o"], "--input is required"),
        (["--input=x", "--output_dir=/o"], "--model_dir is required"),
        ([*REQUIRED, "--batchsize=4"], "unrecognized arguments: --batchsize=4"),
        ([*REQUIRED, "--batch_size=four"], "invalid int value"),
        ([*REQUIRED, "--batch_size=0"], "--batch_size must be at least 1"),
        ([*REQUIRED, "--max_batch_audio_s=0"], "--max_batch_audio_s must be positive"),
        ([*REQUIRED, "--outputs=transcripts,words"], "--outputs"),
        ([*REQUIRED, "--outputs="], "--outputs"),
        ([*REQUIRED, "--hidden_layers=last"], "--hidden_layers"),
        ([*REQUIRED, "--feature_dtype=float64"], "--feature_dtype"),
        ([*REQUIRED, "--precision=int8"], "--precision"),
        ([*REQUIRED, "--backend=torch"], "--backend must be one of tf,jax"),
        ([*REQUIRED, "--backend=jax", "--jit_compile"], "--jit_compile is for --backend tf"),
        ([*REQUIRED, "--jax_cache_dir=/c"], "--jax_cache_dir has no effect with --backend tf"),
        ([*REQUIRED, "--chunk_length_s=-1"], "--chunk_length_s"),
        ([*REQUIRED, "--stride_length_s=1,2,3"], "--stride_length_s"),
        ([*REQUIRED, "--stride_length_s=-1"], "--stride_length_s"),
        ([*REQUIRED, "--segment=silero"], "--segment must be one of windows,vad"),
        ([*REQUIRED, "--segment=vad", "--max_segment_s=1"], "--max_segment_s must be at least 2"),
        ([*REQUIRED, "--max_segment_s=20"], "--max_segment_s has no effect without --segment vad"),
        ([*REQUIRED, "--segment=vad", "--chunk_length_s=10"], "--chunk_length_s has no effect"),
        ([*REQUIRED, "--formats=srt"], "--formats srt needs --segment vad"),
        ([*REQUIRED, "--formats=ctm,txt"], "--formats txt: not a format written here"),
    ],
)
def test_bad_command_lines_are_refused_in_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(OptionsError, match=message.replace("*", r"\*")) as raised:
        parse_args(argv)
    assert "\n" not in str(raised.value)


def test_hidden_layers_resolve_against_the_model() -> None:
    model = config_of("base")  # 2 layers: hidden states 0..2
    _, config = parse_args([*REQUIRED, "--outputs=hidden_states", "--hidden_layers=0,-1,2"])
    assert check_against_model(config, model) == (0, 2)
    _, config = parse_args([*REQUIRED, "--outputs=hidden_states", "--hidden_layers=all"])
    assert check_against_model(config, model) == (0, 1, 2)
    _, config = parse_args([*REQUIRED, "--outputs=transcripts"])
    assert check_against_model(config, model) == ()


@pytest.mark.parametrize(
    ("checkpoint", "outputs"),
    [
        ("base", ("transcripts",)),
        ("seqcls", ("classifications",)),
        ("pretrain", ("codes",)),
        ("bare", ("hidden_states",)),
    ],
)
def test_outputs_default_to_what_the_head_is_for(checkpoint: str, outputs: tuple[str]) -> None:
    _, config = parse_args(REQUIRED)
    assert resolve_outputs(config, config_of(checkpoint)).outputs == outputs
    expected_layers = (2,) if outputs == ("hidden_states",) else ()
    assert check_against_model(config, config_of(checkpoint)) == expected_layers


@pytest.mark.parametrize(
    ("checkpoint", "argv", "message"),
    [
        ("bare", ["--outputs=transcripts"], "head Wav2Vec2Model cannot give it"),
        ("seqcls", ["--outputs=logits"], "Wav2Vec2ForSequenceClassification"),
        ("seqcls", ["--outputs=codes"], "it gives classifications,hidden_states"),
        ("pretrain", ["--outputs=classifications"], "it gives codes,hidden_states"),
        ("base", ["--outputs=classifications"], "head Wav2Vec2ForCTC cannot give it"),
        ("base", ["--outputs=hidden_states", "--hidden_layers=3"], "hidden states 0..2"),
        ("base", ["--outputs=hidden_states", "--hidden_layers=-4"], "hidden states 0..2"),
        ("base", ["--stride_length_s=0"], "receptive field"),
        ("base", ["--chunk_length_s=2", "--stride_length_s=1"], "never advance"),
        (
            "base",
            ["--segment=vad", "--outputs=transcripts,logits"],
            "transcripts .* only, not logits",
        ),
        ("base", ["--segment=vad", "--pool=mean"], "not pooled vectors"),
        ("bare", ["--formats=ctm"], "made from transcripts, which this run does not write"),
    ],
)
def test_options_the_checkpoint_cannot_serve(
    checkpoint: str, argv: list[str], message: str
) -> None:
    _, config = parse_args([*REQUIRED, *argv])
    with pytest.raises(OptionsError, match=message):
        check_against_model(config, config_of(checkpoint))


def test_main_prints_one_line_for_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*REQUIRED, "--outputs=words"]) == EXIT_BAD_OPTIONS
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: --outputs")


@pytest.mark.parametrize(
    ("checkpoint", "head"),
    [
        ("bare", "Wav2Vec2Model"),
        ("seqcls", "Wav2Vec2ForSequenceClassification"),
        ("pretrain", "Wav2Vec2ForPreTraining"),
    ],
)
def test_main_refuses_transcripts_without_a_ctc_head(
    checkpoint: str, head: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = [
        "--input=x.wav",
        f"--model_dir={CHECKPOINTS / checkpoint}",
        f"--output_dir={tmp_path}",
        "--outputs=transcripts",
    ]
    assert main(argv) == EXIT_BAD_OPTIONS
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: --outputs transcripts: the checkpoint's head {head} cannot")
    assert "need a Wav2Vec2ForCTC checkpoint" in err
    assert not list(tmp_path.iterdir())


def _broken_checkpoints(root: Path) -> dict[str, Path]:
    """Checkpoint folders that cannot be loaded, each in its own way."""
    base = CHECKPOINTS / "base"
    broken = {}
    for name in ("truncated_weights", "no_weights", "bad_config", "no_vocab", "no_preprocessor"):
        folder = root / name
        folder.mkdir(parents=True)
        for path in base.iterdir():
            (folder / path.name).write_bytes(path.read_bytes())
        broken[name] = folder
    weights = broken["truncated_weights"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    (broken["no_weights"] / "model.safetensors").unlink()
    (broken["bad_config"] / "config.json").write_text('{"hidden_size": 30, "num_attention_')
    (broken["no_vocab"] / "vocab.json").unlink()
    (broken["no_preprocessor"] / "preprocessor_config.json").unlink()
    broken["missing"] = root / "nowhere"
    return broken


def test_main_prints_one_line_for_unloadable_models(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name, folder in _broken_checkpoints(tmp_path / "models").items():
        argv = ["--input=x.wav", f"--model_dir={folder}", f"--output_dir={tmp_path / 'out'}"]
        assert main(argv) == EXIT_BAD_MODEL, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1, (name, err)
        assert err.startswith(f"error: cannot load the model in {folder}: "), name
    assert not (tmp_path / "out").exists()


def test_the_command_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    """The real command line, as a user runs it (TensorFlow's start-up notices included)."""
    no_ctc_head = f"--model_dir={CHECKPOINTS / 'pretrain'}"
    for argv, code in (
        ([*REQUIRED, "--batch_size=x"], EXIT_BAD_OPTIONS),
        (["--input=x.wav", f"--model_dir={tmp_path}", f"--output_dir={tmp_path}"], EXIT_BAD_MODEL),
        (
            ["--input=x.wav", no_ctc_head, "--outputs=transcripts", "--output_dir=/o"],
            EXIT_BAD_OPTIONS,
        ),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "wav2vec2_beam", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == code
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr


def test_help_lists_our_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--input", "--model_dir", "--outputs", "--chunk_length_s", "--batch_size"):
        assert flag in out


def test_tensorflow_start_up_notices_are_left_out_unless_verbose(tmp_path: Path) -> None:
    """A run's stderr holds our progress lines, not TensorFlow's oneDNN/CUDA/CPU notices."""
    argv = [
        f"--input={HELDOUT_DIR / '00.flac'}",
        f"--model_dir={MODEL_DIR}",
        "--decoder=greedy",
    ]
    runs = {}
    for name, extra in (("quiet", []), ("verbose", ["--verbose"])):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "wav2vec2_beam",
                *argv,
                f"--output_dir={tmp_path / name}",
                *extra,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        runs[name] = done.stderr
    notices = ("absl::InitializeLog", "port.cc", "cudart_stub.cc", "cpu_feature_guard.cc")
    assert not [line for line in runs["quiet"].splitlines() if any(n in line for n in notices)]
    assert "writing to" in runs["quiet"]
    assert "oneDNN custom operations are on" in runs["verbose"]


def test_only_the_start_up_notices_are_dropped() -> None:
    from wav2vec2_beam.pipeline.main import without_startup_notices

    held = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        b"I0000 00:00:1796080759.149339   22517 port.cc:153] oneDNN custom operations are on.\n"
        b"E0000 00:00:1796080759.402587   22517 cuda_platform.cc:52] failed call to cuInit: "
        b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
        b"E0000 00:00:1796080759.5   22517 cuda_executor.cc:1228] could not create context\n"
        b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild\n"
        b"W0000 00:00:1796080759.5   22517 op_kernel.cc:1840] OP_REQUIRES failed: out of memory\n"
        b"something else\n"
    )
    assert without_startup_notices(held) == (
        b"E0000 00:00:1796080759.5   22517 cuda_executor.cc:1228] could not create context\n"
        b"W0000 00:00:1796080759.5   22517 op_kernel.cc:1840] OP_REQUIRES failed: out of memory\n"
        b"something else\n"
    )


@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_the_launchers_checked_model_serves_an_in_process_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """In memory the worker takes the model the launcher loaded to check the checkpoint (one
    load in all); with worker processes the launcher's copy is dropped before the run."""
    import json

    from wav2vec2_beam.transforms.infer import model_handler

    loads = []
    real_init = model_handler.LoadedWav2Vec2.__init__

    def counted(self: model_handler.LoadedWav2Vec2, spec: model_handler.InferenceSpec) -> None:
        loads.append(spec)
        real_init(self, spec)

    monkeypatch.setattr(model_handler.LoadedWav2Vec2, "__init__", counted)
    monkeypatch.setenv("PYTHONPATH", str(REPO / "src"))  # for the worker processes
    files = sorted(HELDOUT_DIR.glob("*.flac"))[:2]
    argv = [
        *[f"--input={path}" for path in files],
        f"--model_dir={CHECKPOINTS / 'base'}",
        f"--output_dir={tmp_path}",
        f"--direct_running_mode={mode}",
    ]
    assert main(argv) == 0
    assert len(loads) == 1  # the launcher's; the worker processes' loads are not seen here
    assert json.loads((tmp_path / "summary.json").read_text())["model_loads"] == 1
    assert not model_handler._kept_for_this_process

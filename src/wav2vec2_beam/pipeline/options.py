"""Command-line options: ours as a Beam `PipelineOptions` subclass, checked into a `RunConfig`.

Being a PipelineOptions subclass is what lets every Beam flag (--runner, --direct_running_mode,
--direct_num_workers, Dataflow's --project/--region/--temp_location...) sit beside ours on one
command line. Beam itself drops flags it does not know with a warning and exits on a bad value with
a usage screen; a typo in a flag would then silently run with a default, so `parse_args` parses
the whole command line with every registered PipelineOptions class and turns any problem into an
`OptionsError` with a one-line message. Checks that need the checkpoint's config (which outputs
its head can give, the hidden layers it has, the receptive field) are in `check_against_model`,
and `--outputs` left out means the head's own product (`resolve_outputs`).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from apache_beam.options.pipeline_options import (
    PipelineOptions,
    StandardOptions,
    _BeamArgumentParser,
)

from wav2vec2_beam.models import BACKENDS, hub
from wav2vec2_beam.models.batching import PRECISIONS
from wav2vec2_beam.models.ctc_beam_search import (
    DEFAULT_BEAM_WIDTH,
    DEFAULT_HOTWORD_WEIGHT,
    BeamSearchOptions,
)
from wav2vec2_beam.transforms.infer.chunk import ChunkParams, chunk_params
from wav2vec2_beam.transforms.read.inputs import INPUT_FORMATS
from wav2vec2_beam.transforms.read.voice_activity import (
    DEFAULT_MAX_SEGMENT_S,
    MARGIN_S,
    MIN_SEGMENT_S,
)
from wav2vec2_beam.transforms.records import TARGET_SAMPLE_RATE
from wav2vec2_beam.transforms.write.pool import POOLINGS
from wav2vec2_beam.transforms.write.tables import DEFAULT_LIMITS, FEATURE_DTYPES, PieceLimits

if TYPE_CHECKING:
    from wav2vec2_beam.models.configuration import Wav2Vec2Config

OUTPUT_NAMES = ("transcripts", "logits", "hidden_states", "classifications", "codes")

#: What each checkpoint head (config.json `architectures`) can give, among `OUTPUT_NAMES`.
HEAD_OUTPUTS = {
    "Wav2Vec2ForCTC": frozenset({"transcripts", "logits", "hidden_states"}),
    "Wav2Vec2Model": frozenset({"hidden_states"}),
    "Wav2Vec2ForSequenceClassification": frozenset({"classifications", "hidden_states"}),
    "Wav2Vec2ForPreTraining": frozenset({"codes", "hidden_states"}),
}

#: What each head writes when `--outputs` is left out: what the checkpoint was made for, so that
#: one command line serves any checkpoint.
DEFAULT_OUTPUTS = {
    "Wav2Vec2ForCTC": ("transcripts",),
    "Wav2Vec2Model": ("hidden_states",),
    "Wav2Vec2ForSequenceClassification": ("classifications",),
    "Wav2Vec2ForPreTraining": ("codes",),
}

#: `--decoder`: CTC decoding of transcripts.
DECODERS = ("greedy", "beam")

#: Flags that only beam search reads.
BEAM_SEARCH_FLAGS = (
    "beam_width",
    "lm_alpha",
    "lm_beta",
    "hotwords",
    "hotword_weight",
    "decode_processes",
)
#: Flags that only transcripts read.
DECODING_FLAGS = ("decoder", "lm", *BEAM_SEARCH_FLAGS)
#: The column flags, and the input formats each is for.
COLUMN_FLAGS = {
    "audio_column": ("auto", "parquet"),
    "id_column": ("auto", "parquet", "manifest"),
    "text_column": ("auto", "parquet", "manifest", "webdataset"),
}

#: Codes are written as int16, so a codevector group may hold at most this many entries.
MAX_CODEVECTORS_PER_GROUP = 2**15

#: `--max_batch_audio_s`'s default: four 30 s windows.
WINDOWS_BATCH_AUDIO_S = 120.0
#: ... and with `--segment vad`. A long file's voice segments (of every length up to the bound)
#: fill every batch to the budget, where 30 s windows fill half of it, and each batch shape
#: keeps oneDNN primitives sized to it: with 120 s a 30-minute file peaked at 1.35x the memory of
#: a 1-minute file, with 40 s at 1.17x (tests/test_pipeline_memory.py). On a CPU a batch of 40 s
#: runs as fast per second of audio as one of 120 s.
VOICE_SEGMENTS_BATCH_AUDIO_S = 40.0

#: `--segment`: fixed windows (the reference ASR pipeline's), or voice segments.
SEGMENTERS = ("windows", "vad")
#: `--formats`: files written per input beside the tables (`transforms.write.subtitles`).
FILE_FORMATS = ("srt", "vtt", "ctm")


class OptionsError(ValueError):
    """A bad command line; `str()` is the one line printed to the user."""


class Wav2Vec2Options(PipelineOptions):
    """This pipeline's flags, in the groups `--help` shows (docs/USAGE.md says more of each)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        inputs = parser.add_argument_group("inputs")
        inputs.add_argument(
            "--input",
            action="extend",
            nargs="+",
            metavar="PATH",
            help="(required) Audio files, WebDataset .tar shards, Parquet audio datasets or "
            "JSONL/CSV manifests, local or gs://: paths, globs ('**/' is zero or more folders, "
            "as in the shell), brace ranges. Several after one --input (so an unquoted glob "
            "works), or --input repeated.",
        )
        inputs.add_argument(
            "--input_format",
            default="auto",
            metavar="{" + ",".join(INPUT_FORMATS) + "}",
            help="What the inputs are (default auto: by name, .tar WebDataset shards, .parquet, "
            ".jsonl/.json/.csv manifests, anything else audio).",
        )
        inputs.add_argument(
            "--audio_column", metavar="NAME", help="Parquet: the audio column (default audio)."
        )
        inputs.add_argument(
            "--text_column",
            metavar="NAME",
            help="Parquet column, manifest or tar-JSON field of the reference text (default: "
            "the first of text, sentence, transcription, transcript).",
        )
        inputs.add_argument(
            "--id_column",
            metavar="NAME",
            help="Parquet column or manifest field of the item id (default id when present, "
            "else <file>#<row or line>).",
        )

        model = parser.add_argument_group("model")
        model.add_argument(
            "--model_dir",
            metavar="CHECKPOINT",
            help="(required) A Hugging Face Wav2Vec2 checkpoint: a folder (local or gs://) or "
            "a hub id such as facebook/wav2vec2-base-960h (through the Hugging Face cache).",
        )
        model.add_argument(
            "--backend",
            default="tf",
            metavar="{" + ",".join(BACKENDS) + "}",
            help="The model's backend (default tf; jax for GPUs and TPUs).",
        )
        model.add_argument(
            "--precision",
            default="float32",
            metavar="{" + ",".join(PRECISIONS) + "}",
            help="Matmul precision (default float32).",
        )

        decoding = parser.add_argument_group("decoding (transcripts)")
        decoding.add_argument(
            "--decoder",
            metavar="{" + ",".join(DECODERS) + "}",
            help="CTC decoding. Default: beam (with the LM) when the checkpoint ships a "
            "language_model/ folder or --lm is given, else greedy.",
        )
        decoding.add_argument(
            "--lm",
            metavar="FILE",
            help="An ARPA file or KenLM binary (local or gs://) to decode with, instead of the "
            "checkpoint's own LM; a binary needs unigrams.txt beside it. Make one from text "
            "with python -m wav2vec2_beam.lm.build_arpa.",
        )
        decoding.add_argument(
            "--beam_width",
            metavar="N",
            type=int,
            default=DEFAULT_BEAM_WIDTH,
            help=f"Beam search: hypotheses kept per frame (default {DEFAULT_BEAM_WIDTH}).",
        )
        decoding.add_argument(
            "--lm_alpha",
            metavar="X",
            type=finite_float,
            help="Beam search: the LM's weight (default: the LM's attrs.json, else 0.5).",
        )
        decoding.add_argument(
            "--lm_beta",
            metavar="X",
            type=finite_float,
            help="Beam search: the bonus per word (default: the LM's attrs.json, else 1.5).",
        )
        decoding.add_argument(
            "--hotwords",
            metavar="WORDS",
            help="Beam search: comma-separated words or phrases to favour, e.g. 'KUBERNETES,"
            "APACHE BEAM'; they need not be in the LM.",
        )
        decoding.add_argument(
            "--hotword_weight",
            metavar="X",
            type=finite_float,
            default=DEFAULT_HOTWORD_WEIGHT,
            help=f"Beam search: the score added per hotword (default {DEFAULT_HOTWORD_WEIGHT:g}).",
        )
        decoding.add_argument(
            "--decode_processes",
            metavar="N",
            type=int,
            default=0,
            help="Beam search: decoding processes beside the model on each worker process "
            "(default 0: one fewer than the machine's cores, at least 1).",
        )

        outputs = parser.add_argument_group("outputs")
        outputs.add_argument(
            "--output_dir",
            metavar="FOLDER",
            help="(required) Folder for the tables (local or gs://). A folder holding an earlier "
            "run's tables takes --skip_existing or --overwrite.",
        )
        outputs.add_argument(
            "--outputs",
            metavar="TABLES",
            help=f"Comma-separated tables among {','.join(OUTPUT_NAMES)} (default: the "
            "checkpoint head's own: transcripts for CTC, classifications for sequence "
            "classification, codes for pretraining, hidden_states for the bare encoder).",
        )
        outputs.add_argument(
            "--formats",
            metavar="FORMATS",
            help=f"Comma-separated files to write per input beside the tables, among "
            f"{','.join(FILE_FORMATS)}: subtitles (srt, vtt: a cue per voice segment, so "
            "with --segment vad) and word times (ctm), in FOLDER/<format>/.",
        )
        outputs.add_argument(
            "--hidden_layers",
            default="-1",
            metavar="LAYERS",
            help="Hidden states to write: -1 (last, default), all, or indices like 0,6,12.",
        )
        outputs.add_argument(
            "--feature_dtype",
            default="float32",
            metavar="{" + ",".join(FEATURE_DTYPES) + "}",
            help="Of the logits, hidden_states and pooled tables (default float32).",
        )
        outputs.add_argument(
            "--pool",
            default="none",
            metavar="{" + ",".join(POOLINGS) + "}",
            help="mean also writes one mean-pooled vector per item and --hidden_layers layer "
            "(table pooled_hidden_states; default none).",
        )
        outputs.add_argument(
            "--skip_existing",
            action="store_true",
            help="Resume: leave out the ids already in --output_dir's tables (same settings).",
        )
        outputs.add_argument(
            "--overwrite",
            action="store_true",
            help="Replace the tables an earlier run left in --output_dir.",
        )
        outputs.add_argument(
            "--piece_items",
            metavar="N",
            type=int,
            default=DEFAULT_LIMITS.items,
            help="Cut a piece of the tables (one Parquet file each) after this many items "
            f"(default {DEFAULT_LIMITS.items}),",
        )
        outputs.add_argument(
            "--piece_mb",
            metavar="MB",
            type=finite_float,
            default=DEFAULT_LIMITS.megabytes,
            help="... or once its rows hold about this many MB of features "
            f"(default {DEFAULT_LIMITS.megabytes:g}),",
        )
        outputs.add_argument(
            "--piece_seconds",
            metavar="S",
            type=finite_float,
            default=DEFAULT_LIMITS.seconds,
            help="... or once its oldest row has waited this many seconds "
            f"(default {DEFAULT_LIMITS.seconds:g}).",
        )

        performance = parser.add_argument_group("performance")
        performance.add_argument(
            "--segment",
            default="windows",
            metavar="{" + ",".join(SEGMENTERS) + "}",
            help="How long files are cut for the model: windows (default: --chunk_length_s "
            "windows, as the HF ASR pipeline) or vad (voice activity: speech segments of at most "
            "--max_segment_s, silence and noise never sent to the model; transcripts only, and "
            "a segments table).",
        )
        performance.add_argument(
            "--max_segment_s",
            metavar="S",
            type=finite_float,
            default=DEFAULT_MAX_SEGMENT_S,
            help=f"--segment vad: longest segment's speech (default {DEFAULT_MAX_SEGMENT_S:g}; "
            "plus 0.2 s of margin each side); longer speech is cut at its quietest point.",
        )
        performance.add_argument(
            "--chunk_length_s",
            metavar="S",
            type=finite_float,
            default=30.0,
            help="Window length for long files, as the HF ASR pipeline's (default 30; 0: never "
            "chunk).",
        )
        performance.add_argument(
            "--stride_length_s",
            metavar="S or LEFT,RIGHT",
            help="Window overlap each side (default chunk_length_s / 6).",
        )
        performance.add_argument(
            "--batch_size",
            metavar="N",
            type=int,
            default=16,
            help="Most windows per forward pass (default 16).",
        )
        performance.add_argument(
            "--max_batch_audio_s",
            metavar="S",
            type=finite_float,
            default=None,
            help=f"Most padded audio seconds per forward pass (default {WINDOWS_BATCH_AUDIO_S:g}; "
            f"{VOICE_SEGMENTS_BATCH_AUDIO_S:g} with --segment vad).",
        )
        performance.add_argument(
            "--jit_compile",
            action="store_true",
            help="Compile the TF forward pass with XLA (the jax backend always compiles).",
        )
        performance.add_argument(
            "--jax_cache_dir",
            metavar="FOLDER",
            default=None,
            help="--backend jax: where compiled XLA programs are kept for later processes and "
            "runs, local or gs:// (default: a folder in the local cache, "
            "~/.cache/wav2vec2-beam/jax; none to compile every time).",
        )
        performance.add_argument(
            "--share_model_across_processes",
            action="store_true",
            help="One model per machine, shared by all SDK processes (one per GPU).",
        )

        runner = parser.add_argument_group(
            "runner",
            "Any Apache Beam pipeline option is accepted too: --runner DataflowRunner (default: "
            "the local DirectRunner), --direct_running_mode multi_processing "
            "--direct_num_workers N, Dataflow's --project, --region, --temp_location; see "
            "docs/USAGE.md and docs/DATAFLOW.md.",
        )
        runner.add_argument(
            "--verbose",
            action="store_true",
            help="Also show TensorFlow's and the workers' start-up notices.",
        )


@dataclass(frozen=True)
class RunConfig:
    """Our options, checked and parsed."""

    inputs: tuple[str, ...]
    model_dir: str
    output_dir: str
    #: The tables to write; empty until `resolve_outputs` fills in the head's default.
    outputs: tuple[str, ...]
    #: "all", or the layer indices as given (negative ones count from the last).
    hidden_layers: str | tuple[int, ...]
    feature_dtype: str
    chunk_length_s: float
    stride_length_s: tuple[float, float] | None
    batch_size: int
    max_batch_audio_s: float
    precision: str
    jit_compile: bool
    share_model_across_processes: bool
    #: The model's backend, "tf" or "jax" (`models.BACKENDS`).
    backend: str = "tf"
    #: Whether the jax backend keeps its compiled programs (`--jax_cache_dir`, not `none`)...
    jax_cache: bool = True
    #: ...in this folder (None: in each machine's own local cache, `models.file_cache`).
    jax_cache_dir: str | None = None
    #: `--input_format` and the column flags (see transforms/read/corpus.py).
    input_format: str = "auto"
    audio_column: str | None = None
    text_column: str | None = None
    id_column: str | None = None
    skip_existing: bool = False
    #: `--overwrite`: replace the tables an earlier run left in the folder.
    overwrite: bool = False
    pool: str = "none"
    #: When the writers cut a piece (`--piece_items`, `--piece_mb`, `--piece_seconds`).
    piece_limits: PieceLimits = DEFAULT_LIMITS
    #: `--decoder`: "greedy", "beam", or None (beam when an LM is there).
    decoder: str | None = None
    lm: str | None = None
    beam_width: int = DEFAULT_BEAM_WIDTH
    lm_alpha: float | None = None
    lm_beta: float | None = None
    hotwords: tuple[str, ...] = ()
    hotword_weight: float = DEFAULT_HOTWORD_WEIGHT
    #: `--decode_processes`; 0 means one fewer than the machine's cores (at least 1).
    decode_processes: int = 0
    #: `--verbose`: show TensorFlow's start-up notices too.
    verbose: bool = False
    #: `--segment`: "windows" or "vad", and `--max_segment_s`.
    segment: str = "windows"
    max_segment_s: float = DEFAULT_MAX_SEGMENT_S
    #: `--formats`: the files written per input (`FILE_FORMATS`).
    formats: tuple[str, ...] = ()
    #: The flags given on the command line (names without `--`), to refuse one with no effect.
    given: frozenset[str] = frozenset()

    def beam_search_options(self) -> BeamSearchOptions:
        return BeamSearchOptions(
            beam_width=self.beam_width,
            hotwords=self.hotwords,
            hotword_weight=self.hotword_weight,
        )

    @property
    def decoding_processes(self) -> int:
        return self.decode_processes or max(1, (os.cpu_count() or 1) - 1)

    def chunking(self, align_to: int) -> ChunkParams | None:
        """The window geometry in samples (None: no chunking, or voice segments instead), as the
        reference derives it."""
        if self.segment == "vad":
            return None
        return chunk_params(self.chunk_length_s, self.stride_length_s, align_to)

    @property
    def voice_segments_s(self) -> float | None:
        """The longest voice segment with `--segment vad`, else None (fixed windows)."""
        return self.max_segment_s if self.segment == "vad" else None

    @property
    def longest_model_input_s(self) -> float:
        """The longest audio one window or segment gives the model (0: unchunked)."""
        if self.segment == "vad":
            return self.max_segment_s + 2 * MARGIN_S
        return self.chunk_length_s

    @property
    def max_batch_samples(self) -> int:
        return int(self.max_batch_audio_s * TARGET_SAMPLE_RATE)

    def table_settings(self, hidden_layers: Sequence[int]) -> dict[str, object]:
        """The settings that shape the tables' rows: a resume must keep them
        (`transforms.write.folder.check_settings`)."""
        local = os.path.isdir(self.model_dir)
        return {
            "model_dir": os.path.abspath(self.model_dir) if local else self.model_dir,
            "outputs": list(self.outputs),
            "hidden_layers": list(hidden_layers),
            "feature_dtype": self.feature_dtype,
            "pool": self.pool,
            "chunk_length_s": self.chunk_length_s,
            "stride_length_s": self.stride_length_s,
            "precision": self.precision,
            "backend": self.backend,
            "decoder": self.decoder,
            "lm": self.lm,
            "beam_width": self.beam_width,
            "lm_alpha": self.lm_alpha,
            "lm_beta": self.lm_beta,
            "hotwords": list(self.hotwords),
            "hotword_weight": self.hotword_weight,
            # Only with voice segments, so that folders of earlier versions still resume.
            **(
                {"segment": "vad", "max_segment_s": self.max_segment_s}
                if self.segment == "vad"
                else {}
            ),
        }


def finite_float(text: str) -> float:
    """A number flag's value: Python's float() also takes `inf` and `nan`, which no flag means."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _raise(message: str) -> None:
    raise OptionsError(message)


def _all_options_parser() -> argparse.ArgumentParser:
    """A parser that knows every registered PipelineOptions flag, and raises instead of exiting."""
    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
    classes = {str(cls): cls for cls in PipelineOptions.__subclasses__()}
    for cls in classes.values():
        cls._add_argparse_args(parser)  # how Beam itself collects every flag
    parser.error = _raise  # type: ignore[method-assign]
    return parser


def help_text() -> str:
    """Usage of this pipeline's own flags, grouped (Beam's are documented by Beam)."""
    parser = argparse.ArgumentParser(
        prog="wav2vec2-beam",
        usage="wav2vec2-beam --input PATH [PATH ...] --model_dir CHECKPOINT --output_dir FOLDER "
        "[options]\n       (or: python -m wav2vec2_beam ...)",
        description="Run Wav2Vec2 over audio corpora with Apache Beam and write Parquet tables: "
        "transcripts, logits, hidden states, labels or codes, and one error row per input "
        "that failed.",
        epilog="Exit status: 0 when the job ran (files that failed are in errors/), 2 for a bad "
        "command line or output folder, 3 for a model or LM that cannot be loaded, 4 when every "
        "input failed, 130 or 143 when interrupted (what is on disk is kept: run again with "
        "--skip_existing). Every flag: docs/USAGE.md.",
    )
    Wav2Vec2Options._add_argparse_args(parser)
    return parser.format_help()


def given_flags(argv: Sequence[str]) -> frozenset[str]:
    """The names of the flags on a command line (`--name` or `--name=value`)."""
    return frozenset(
        arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--") and len(arg) > 2
    )


def no_effect(flag: str, reason: str) -> OptionsError:
    return OptionsError(f"--{flag} has no effect {reason}")


def parse_args(argv: Sequence[str]) -> tuple[PipelineOptions, RunConfig]:
    """Beam's options and our checked `RunConfig` from a command line; raises `OptionsError`."""
    argv = list(argv)
    _, unknown = _all_options_parser().parse_known_args(argv)
    if unknown:
        hint = ""
        if any(arg.startswith("--input=") for arg in argv) and not unknown[0].startswith("-"):
            hint = " (several paths go after --input with a space, not '=')"
        raise OptionsError(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    options = PipelineOptions(argv)
    ours = options.view_as(Wav2Vec2Options)
    for name in ("input", "model_dir", "output_dir"):
        if not getattr(ours, name):
            raise OptionsError(f"--{name} is required")
    given = ours.outputs
    outputs = tuple(name.strip() for name in (given or "").split(",") if name.strip())
    unknown_outputs = [name for name in outputs if name not in OUTPUT_NAMES]
    if unknown_outputs or (given is not None and not outputs):
        raise OptionsError(
            f"--outputs {ours.outputs!r}: choose among {','.join(OUTPUT_NAMES)}, comma-separated"
        )
    if ours.feature_dtype not in FEATURE_DTYPES:
        raise OptionsError(f"--feature_dtype must be one of {','.join(FEATURE_DTYPES)}")
    if ours.precision not in PRECISIONS:
        raise OptionsError(f"--precision must be one of {','.join(PRECISIONS)}")
    if ours.backend not in BACKENDS:
        raise OptionsError(f"--backend must be one of {','.join(BACKENDS)}")
    if ours.jit_compile and ours.backend != "tf":
        raise OptionsError("--jit_compile is for --backend tf: the jax backend always compiles")
    if ours.batch_size < 1:
        raise OptionsError("--batch_size must be at least 1")
    if ours.max_batch_audio_s is None:
        ours.max_batch_audio_s = (
            VOICE_SEGMENTS_BATCH_AUDIO_S if ours.segment == "vad" else WINDOWS_BATCH_AUDIO_S
        )
    if not ours.max_batch_audio_s > 0:
        raise OptionsError("--max_batch_audio_s must be positive")
    if not (ours.chunk_length_s >= 0 and math.isfinite(ours.chunk_length_s)):
        raise OptionsError("--chunk_length_s must be 0 (no chunking) or a positive number")
    if ours.input_format not in INPUT_FORMATS:
        raise OptionsError(f"--input_format must be one of {','.join(INPUT_FORMATS)}")
    if ours.pool not in POOLINGS:
        raise OptionsError(f"--pool must be one of {','.join(POOLINGS)}")
    if ours.segment not in SEGMENTERS:
        raise OptionsError(f"--segment must be one of {','.join(SEGMENTERS)}")
    if not ours.max_segment_s >= MIN_SEGMENT_S:
        raise OptionsError(f"--max_segment_s must be at least {MIN_SEGMENT_S:g} seconds")
    if ours.piece_items < 1 or not ours.piece_mb > 0 or not ours.piece_seconds > 0:
        raise OptionsError("--piece_items, --piece_mb and --piece_seconds must be positive")
    if ours.decoder is not None and ours.decoder not in DECODERS:
        raise OptionsError(f"--decoder must be one of {','.join(DECODERS)}")
    if ours.lm and ours.decoder == "greedy":
        raise OptionsError("--lm needs --decoder beam (greedy decoding uses no LM)")
    if ours.beam_width < 1:
        raise OptionsError("--beam_width must be at least 1")
    if ours.decode_processes < 0:
        raise OptionsError("--decode_processes must be 0 (automatic) or more")
    given = given_flags(argv)
    _refuse_flags_without_effect(ours, given)
    _refuse_local_paths_for_dataflow(options, ours)
    formats = _parse_formats(ours.formats, ours.segment)
    hotwords = tuple(
        " ".join(phrase.split()) for phrase in (ours.hotwords or "").split(",") if phrase.strip()
    )
    config = RunConfig(
        inputs=tuple(ours.input),
        model_dir=ours.model_dir,
        output_dir=ours.output_dir,
        outputs=tuple(dict.fromkeys(outputs)),
        hidden_layers=_parse_layers(ours.hidden_layers),
        feature_dtype=ours.feature_dtype,
        chunk_length_s=ours.chunk_length_s,
        stride_length_s=_parse_stride(ours.stride_length_s),
        batch_size=ours.batch_size,
        max_batch_audio_s=ours.max_batch_audio_s,
        precision=ours.precision,
        jit_compile=ours.jit_compile,
        backend=ours.backend,
        jax_cache=(ours.jax_cache_dir or "").lower() != "none",
        jax_cache_dir=None if (ours.jax_cache_dir or "").lower() == "none" else ours.jax_cache_dir,
        share_model_across_processes=ours.share_model_across_processes,
        input_format=ours.input_format,
        audio_column=ours.audio_column,
        text_column=ours.text_column,
        id_column=ours.id_column,
        skip_existing=ours.skip_existing,
        overwrite=ours.overwrite,
        pool=ours.pool,
        piece_limits=PieceLimits(ours.piece_items, ours.piece_mb, ours.piece_seconds),
        decoder=ours.decoder,
        lm=ours.lm,
        beam_width=ours.beam_width,
        lm_alpha=ours.lm_alpha,
        lm_beta=ours.lm_beta,
        hotwords=hotwords,
        hotword_weight=ours.hotword_weight,
        decode_processes=ours.decode_processes,
        verbose=ours.verbose,
        segment=ours.segment,
        max_segment_s=ours.max_segment_s,
        formats=formats,
        given=given,
    )
    return options, config


def _refuse_flags_without_effect(ours: Wav2Vec2Options, given: frozenset[str]) -> None:
    """A flag that this run would accept and ignore is refused: it means a user expects
    something the run will not do. (Those that depend on the checkpoint are checked in
    `check_against_model` and the launcher.)"""
    if ours.overwrite and ours.skip_existing:
        raise OptionsError(
            "--overwrite and --skip_existing contradict each other: resume the folder's run "
            "(--skip_existing) or replace its tables (--overwrite)"
        )
    if "stride_length_s" in given and ours.chunk_length_s == 0:
        raise no_effect("stride_length_s", "with --chunk_length_s 0 (files are not chunked)")
    if ours.decoder == "greedy":
        for flag in BEAM_SEARCH_FLAGS:
            if flag in given:
                raise no_effect(flag, "with --decoder greedy (it is for beam search)")
    for flag, formats in COLUMN_FLAGS.items():
        if flag in given and ours.input_format not in formats:
            raise no_effect(flag, f"with --input_format {ours.input_format}")
    if "jax_cache_dir" in given and ours.backend != "jax":
        raise no_effect("jax_cache_dir", f"with --backend {ours.backend} (it is for jax)")
    if ours.segment == "vad":
        for flag in ("chunk_length_s", "stride_length_s"):
            if flag in given:
                raise no_effect(flag, "with --segment vad (voice segments replace the windows)")
    elif "max_segment_s" in given:
        raise no_effect("max_segment_s", "without --segment vad")


DATAFLOW_RUNNERS = ("dataflowrunner", "dataflow")


def _refuse_local_paths_for_dataflow(options: PipelineOptions, ours: Wav2Vec2Options) -> None:
    """Dataflow's workers cannot read this machine's files: a local --input, --model_dir, --lm
    or --output_dir would fail on every worker after the job had started (or write nowhere the
    user can see), so it is refused before anything is built. A hub id is not a local path."""
    runner = (options.view_as(StandardOptions).runner or "").lower()
    if runner not in DATAFLOW_RUNNERS:
        return
    paths = [("--input", pattern) for pattern in ours.input]
    paths += [("--model_dir", ours.model_dir), ("--lm", ours.lm), ("--output_dir", ours.output_dir)]
    for flag, path in paths:
        if not path or ("://" in path and not path.startswith("file://")):
            continue
        if flag == "--model_dir" and hub.is_hub_id(path):
            continue
        raise OptionsError(
            f"{flag} {path} is on this machine, and Dataflow's workers cannot read it: copy it "
            "to Cloud Storage (gcloud storage cp -r) and give its gs:// path"
        )


def beam_options_used(options: PipelineOptions) -> dict[str, object]:
    """The Beam flags given on the command line (ours are in `RunConfig`), for summary.json."""
    ours = options.view_as(Wav2Vec2Options).get_all_options(current_only=True)
    given = options.get_all_options(drop_default=True)
    return {name: value for name, value in given.items() if name not in ours}


def _parse_formats(text: str | None, segment: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(part.strip() for part in (text or "").split(",") if part.strip()))
    unknown = [name for name in formats if name not in FILE_FORMATS]
    if unknown:
        raise OptionsError(
            f"--formats {','.join(unknown)}: not a format written here (use {','.join(FILE_FORMATS)})"
        )
    subtitles = [name for name in formats if name in ("srt", "vtt")]
    if subtitles and segment != "vad":
        raise OptionsError(
            f"--formats {','.join(subtitles)} needs --segment vad: a subtitle cue is a voice "
            "segment (ctm, word times, works with either)"
        )
    return formats


def _parse_layers(text: str) -> str | tuple[int, ...]:
    if text.strip() == "all":
        return "all"
    try:
        layers = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise OptionsError(
            f"--hidden_layers {text!r}: use -1, all, or comma-separated indices like 0,6,12"
        ) from None
    return tuple(dict.fromkeys(layers))


def _parse_stride(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        parts = [float(part) for part in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or not all(p >= 0 and math.isfinite(p) for p in parts):
        raise OptionsError(
            f"--stride_length_s {text!r}: use seconds for both sides (5) or left,right (4,2)"
        )
    return (parts[0], parts[-1])


def resolve_outputs(config: RunConfig, model: Wav2Vec2Config) -> RunConfig:
    """`config` with `--outputs` defaulted, when left out, to what the checkpoint's head is for."""
    if config.outputs:
        return config
    return replace(config, outputs=DEFAULT_OUTPUTS.get(model.architecture, ()))


def check_against_model(config: RunConfig, model: Wav2Vec2Config) -> tuple[int, ...]:
    """Check the options against the checkpoint; returns the hidden layers to write (0-based).

    `--outputs` left out is checked as `resolve_outputs` fills it in. The hidden layers are
    indices into the reference's `hidden_states` (0 is the encoder's input, `num_hidden_layers`
    the last), with negative indices counted from the end; an empty tuple when neither the hidden_states
    table nor pooled vectors (`--pool`) are asked for.
    """
    head = model.architecture
    outputs = resolve_outputs(config, model).outputs
    possible = HEAD_OUTPUTS.get(head, frozenset())
    missing = [name for name in outputs if name not in possible]
    if missing:
        hint = ""
        if {"transcripts", "logits"} & set(missing):
            hint = "; transcripts and logits need a Wav2Vec2ForCTC checkpoint"
        raise OptionsError(
            f"--outputs {','.join(missing)}: the checkpoint's head {head} cannot give it "
            f"(it gives {','.join(sorted(possible)) or 'nothing this pipeline writes'}{hint})"
        )
    if config.segment == "vad" and (set(outputs) != {"transcripts"} or config.pool != "none"):
        raise OptionsError(
            f"--segment vad writes transcripts (and their segments) only, not "
            f"{','.join(sorted(set(outputs) - {'transcripts'})) or 'pooled vectors'}: the model "
            "sees the speech alone, so frames would not line up with the file's time; use "
            "--segment windows for features"
        )
    if config.formats and "transcripts" not in outputs:
        raise OptionsError(
            f"--formats {','.join(config.formats)} is made from transcripts, which this run does "
            f"not write (--outputs {','.join(outputs)})"
        )
    if "codes" in outputs and model.num_codevectors_per_group > MAX_CODEVECTORS_PER_GROUP:
        raise OptionsError(
            f"--outputs codes: the checkpoint has {model.num_codevectors_per_group} codevectors "
            f"per group, more than the codes table's int16 holds ({MAX_CODEVECTORS_PER_GROUP})"
        )
    try:
        params = config.chunking(model.inputs_to_logits_ratio)
    except ValueError as error:
        raise OptionsError(f"--chunk_length_s/--stride_length_s: {error}") from None
    if params is not None and params.stride_left + params.stride_right < model.receptive_field:
        raise OptionsError(
            "--stride_length_s: the two strides must add up to at least the model's receptive "
            f"field ({model.receptive_field / TARGET_SAMPLE_RATE:.3f} s), or the last window of "
            "some files would be too short for the model"
        )
    features = {"logits", "hidden_states"} & set(outputs) or config.pool != "none"
    if "feature_dtype" in config.given and not features:
        raise no_effect(
            "feature_dtype",
            f"when the run writes no logits or hidden states (--outputs {','.join(outputs)})",
        )
    if "hidden_states" not in outputs and config.pool == "none":
        if "hidden_layers" in config.given:
            raise no_effect(
                "hidden_layers",
                f"when the run writes no hidden states (--outputs {','.join(outputs)}; add "
                "hidden_states, or --pool mean)",
            )
        return ()
    count = model.num_hidden_layers + 1
    if config.hidden_layers == "all":
        return tuple(range(count))
    wrong = [layer for layer in config.hidden_layers if not -count <= layer < count]
    if wrong:
        raise OptionsError(
            f"--hidden_layers {','.join(map(str, wrong))}: the model has hidden states "
            f"0..{count - 1} (or -{count}..-1)"
        )
    return tuple(dict.fromkeys(layer % count for layer in config.hidden_layers))

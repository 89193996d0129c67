"""The command (`python -m wav2vec2_beam`, console script `wav2vec2-beam`): check, build, run,
summarize, exit.

Exit status: 0 when the job ran, whatever happened to some of the files (they are in the errors
table); 2 for a bad command line or an output folder that cannot be used (not writable, busy, or
holding an earlier run's tables without --skip_existing or --overwrite); 3 for a model, or a
language model, that cannot be loaded; 4 when the run had inputs and every one of them failed;
130 (Ctrl-C) or 143 (SIGTERM) when interrupted. Every refusal prints one line, before anything is
submitted, so a broken job never starts on a cluster. The model is checked by loading it exactly
as a worker will (weights, feature extractor, tokenizer), because a checkpoint that fails on
every worker would otherwise fail the job only after it was scheduled.

One line means one line: the command line is checked before TensorFlow is imported (hence the
late imports below), and while TensorFlow starts and the model is checked, the process's native
stderr is held back (TensorFlow's C++ layer prints start-up notices there that no setting turns
off) and written out only once the checks passed, without those notices unless `--verbose`.
During a local run, the worker processes' start-up notices are dropped the same way
(`pipeline/lifecycle.py`), and progress is shown (`pipeline/console.py`).

On the DirectRunner the job runs on Beam's FnApiRunner, which honours --direct_running_mode and
--direct_num_workers. (Beam 2.77's DirectRunner would first try the Prism runner, which it
downloads from GitHub at run time and which ignores those two flags.)
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from wav2vec2_beam.models.file_cache import StoreUnreachable, cached_when_unreachable
from wav2vec2_beam.pipeline.console import ProgressDisplay, census_lines
from wav2vec2_beam.pipeline.dataflow_job import job_file_path, write_job_file
from wav2vec2_beam.pipeline.lifecycle import (
    Interrupted,
    forwarded_stderr,
    freeze_start_up_objects,
    interruption,
    stop_children,
    stop_on_signals,
    without_startup_notices,
)
from wav2vec2_beam.pipeline.options import (
    BEAM_SEARCH_FLAGS,
    DECODING_FLAGS,
    OUTPUT_NAMES,
    OptionsError,
    RunConfig,
    beam_options_used,
    check_against_model,
    help_text,
    no_effect,
    parse_args,
    resolve_outputs,
)
from wav2vec2_beam.transforms.read.census import CENSUS_BUDGET_S, Census, take_census
from wav2vec2_beam.transforms.write.folder import (
    EarlierTables,
    FolderBusy,
    FolderUnwritable,
    SettingsDiffer,
    check_reuse,
    check_settings,
    locked,
    remove_scratch,
    remove_tables,
)
from wav2vec2_beam.transforms.write.pool import TABLE as POOLED_TABLE
from wav2vec2_beam.transforms.write.progress import (
    LOGGER,
    counters,
    failures_line,
    halt_commits,
    items_on_disk,
    summarize,
    summary_line,
)
from wav2vec2_beam.transforms.write.score import score_line, summarize_scores
from wav2vec2_beam.transforms.write.tables import errors_table, write_empty_pieces, write_summary

if TYPE_CHECKING:
    from wav2vec2_beam.models.configuration import Wav2Vec2Config
    from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer
    from wav2vec2_beam.transforms.write.lm_decode import BeamDecoding

EXIT_BAD_OPTIONS = 2
EXIT_BAD_MODEL = 3
EXIT_ALL_FAILED = 4

#: Every table a run may write, for the checks of a reused folder.
ALL_TABLES = (*OUTPUT_NAMES, POOLED_TABLE, "errors")

_DIRECT_RUNNERS = ("directrunner", "direct", "switchingdirectrunner")


class ModelLoadError(Exception):
    """The checkpoint cannot be loaded; `str()` is the one line printed to the user."""


class LanguageModelLoadError(Exception):
    """The LM (the checkpoint's, or `--lm`) cannot be used; `str()` is the one line printed."""


def one_line(error: BaseException) -> str:
    """An exception as one line: its type, and its message with whitespace collapsed (a store
    out of reach says all in its message)."""
    message = " ".join(str(error).split())
    if isinstance(error, StoreUnreachable):
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


@contextlib.contextmanager
def held_native_stderr() -> Iterator[list[bytes]]:
    """Send file descriptor 2 to a scratch file; the caller decides whether to replay it.

    Yields a list that holds the captured bytes once the block has ended.
    """
    captured: list[bytes] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            scratch.seek(0)
            captured.append(scratch.read())


def load_checked_model(
    config: RunConfig,
) -> tuple[RunConfig, Wav2Vec2Config, tuple[int, ...], BeamDecoding | None]:
    """Read and check the checkpoint; returns our options with the outputs resolved against it
    (`--outputs` left out means the head's default), its config, the hidden layers to write, and
    the beam decoding of transcripts (None: greedy).

    Raises `OptionsError` for options the checkpoint cannot serve, `ModelLoadError` when any
    file a worker needs cannot be loaded, `LanguageModelLoadError` for an unusable LM.
    """
    from wav2vec2_beam.models.configuration import load_checked_config
    from wav2vec2_beam.models.loading import check_checkpoint
    from wav2vec2_beam.models.tokenizer import Wav2Vec2CTCTokenizer
    from wav2vec2_beam.pipeline.graph import inference_spec
    from wav2vec2_beam.transforms.infer.model_handler import LoadedWav2Vec2, keep_for_this_process

    try:
        model = load_checked_config(config.model_dir)
    except Exception as error:
        raise ModelLoadError(one_line(error)) from error
    config = resolve_outputs(config, model)
    hidden_layers = check_against_model(config, model)
    if "transcripts" not in config.outputs:
        for flag in DECODING_FLAGS:
            if flag in config.given:
                raise no_effect(
                    flag, "when the run writes no transcripts (it is for decoding them)"
                )
    try:
        # The checks that need no model first: a broken folder is refused in a second or two,
        # before TensorFlow is loaded or any variable is built.
        check_checkpoint(config.model_dir, model)
        tokenizer = None
        if "transcripts" in config.outputs:
            tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(config.model_dir)
            check_vocabulary_width(tokenizer, model)
        checked = LoadedWav2Vec2(inference_spec(config, model, hidden_layers))
    except Exception as error:
        raise ModelLoadError(one_line(error)) from error
    decoding = None if tokenizer is None else checked_decoding(config, model, tokenizer)
    if tokenizer is not None and decoding is None:
        for flag in BEAM_SEARCH_FLAGS:
            if flag in config.given:
                raise no_effect(
                    flag,
                    "when transcripts are decoded greedily (the checkpoint has no language_model/"
                    "; add --lm FILE or --decoder beam for beam search)",
                )
    keep_for_this_process(checked)  # only now: every check passed, so run() will drop it
    return config, model, hidden_layers, decoding


def check_vocabulary_width(tokenizer: Wav2Vec2CTCTokenizer, model: Wav2Vec2Config) -> None:
    """Refuse a vocab.json with an id the logits do not have (it would decode as nothing)."""
    beyond = [
        (token, index) for token, index in tokenizer.encoder.items() if index >= model.vocab_size
    ]
    if beyond:
        token, index = beyond[0]
        raise ValueError(
            f"vocab.json: token {token!r} has id {index}, beyond the model's {model.vocab_size} "
            "logits (vocab_size in config.json)"
        )


def checked_decoding(
    config: RunConfig, model: Wav2Vec2Config, tokenizer: Wav2Vec2CTCTokenizer
) -> BeamDecoding | None:
    """`plan_decoding` for this run; `LanguageModelLoadError` when the LM cannot be used."""
    from wav2vec2_beam.models.ctc_beam_search import AlphabetError
    from wav2vec2_beam.models.language_model import LanguageModelError
    from wav2vec2_beam.transforms.write.lm_decode import plan_decoding

    try:
        return plan_decoding(
            decoder=config.decoder,
            checkpoint=config.model_dir,
            lm_path=config.lm,
            tokens_by_id=[tokenizer.convert_ids_to_tokens(i) for i in range(model.vocab_size)],
            word_delimiter=tokenizer.word_delimiter_token,
            blank=tokenizer.pad_token,
            seconds_per_frame=model.inputs_to_logits_ratio / 16_000,
            options=config.beam_search_options(),
            alpha=config.lm_alpha,
            beta=config.lm_beta,
        )
    except (LanguageModelError, AlphabetError, OSError, ValueError) as error:
        raise LanguageModelLoadError(" ".join(str(error).split())) from error


def drop_kept_model(collect: bool = True) -> None:
    """Forget the model the launcher's check loaded, when no worker of this process will use it;
    with `collect`, free its memory now (its traced function holds reference cycles)."""
    from wav2vec2_beam.transforms.infer.model_handler import keep_for_this_process

    keep_for_this_process(None)
    if collect:
        gc.collect()


def new_run_id() -> str:
    """UTC start time and a random suffix: sortable, and unique across concurrent runs."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def make_pipeline(options: PipelineOptions) -> tuple[beam.Pipeline, bool]:
    """The Pipeline to run, and whether it runs locally on the DirectRunner's engine."""
    runner = options.view_as(StandardOptions).runner
    if runner is None or runner.lower() in _DIRECT_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return beam.Pipeline(runner=FnApiRunner(), options=options), True
    return beam.Pipeline(options=options), False


def run(argv: Sequence[str]) -> int:
    """The whole command; returns the exit status."""
    try:
        options, config = parse_args(argv)
    except OptionsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_OPTIONS
    run_id = new_run_id()
    if options.view_as(TestOptions).dry_run:  # builds the job only: nothing is written
        with cached_when_unreachable():  # offline, from the checkpoint files cached before
            return check_and_run(options, config, run_id)
    try:
        # Held from the start, so that a second run into the folder is refused at once.
        with locked(config.output_dir, run_id):
            check_reuse(config.output_dir, ALL_TABLES, config.skip_existing, config.overwrite)
            return check_and_run(options, config, run_id)
    except (FolderBusy, FolderUnwritable, EarlierTables) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_OPTIONS


def check_and_run(options: PipelineOptions, config: RunConfig, run_id: str) -> int:
    """Check the model, then build and run the job; returns the exit status."""
    with held_native_stderr() as held:
        try:
            config, model, hidden_layers, decoding = load_checked_model(config)
            freeze_start_up_objects()
        except OptionsError as error:
            refusal = (EXIT_BAD_OPTIONS, f"error: {error}")
        except ModelLoadError as error:
            refusal = (
                EXIT_BAD_MODEL,
                f"error: cannot load the model in {config.model_dir}: {error}",
            )
        except LanguageModelLoadError as error:
            refusal = (EXIT_BAD_MODEL, f"error: cannot use the language model: {error}")
        else:
            refusal = None
    if refusal is not None:
        print(refusal[1], file=sys.stderr)
        return refusal[0]
    sys.stderr.buffer.write(held[0] if config.verbose else without_startup_notices(held[0]))

    try:
        return run_job(options, config, model, hidden_layers, decoding, run_id)
    finally:
        # Kept but not taken (a dry run, a run with nothing to infer, a failure): nothing runs
        # after this, so the garbage collector may free it whenever it runs.
        drop_kept_model(collect=False)


def run_job(
    options: PipelineOptions,
    config: RunConfig,
    model: Wav2Vec2Config,
    hidden_layers: tuple[int, ...],
    decoding: BeamDecoding | None,
    run_id: str,
) -> int:
    """Build and run the job on a checked configuration; returns the exit status."""
    from wav2vec2_beam.pipeline.graph import build_pipeline

    pipeline, local = make_pipeline(options)
    if not local or options.view_as(DirectOptions).direct_running_mode == "multi_processing":
        drop_kept_model()  # the workers are other processes: the check's copy is not needed
    progress_dir = tempfile.mkdtemp(prefix="wav2vec2-progress-") if local else None
    try:
        build_pipeline(
            pipeline,
            config,
            model,
            hidden_layers,
            run_id,
            progress_dir,
            reshuffle=not local,
            decoding=decoding,
        )
        if decoding is not None:
            LOGGER.info("transcripts: %s", decoding.describe())
        if options.view_as(TestOptions).dry_run:
            if local:
                print(f"dry run: the job for run {run_id} was built and not submitted")
                return 0
            # a remote runner builds its job request, and stops before submitting it
            path = job_file_path(options, run_id, tempfile.gettempdir())
            write_job_file(pipeline.run().job, path)
            print(f"dry run: the job request of run {run_id} is in {path}; nothing was submitted")
            return 0
        if config.overwrite:
            removed = remove_tables(config.output_dir, ALL_TABLES)
            LOGGER.info("--overwrite: removed %d pieces of earlier runs", removed)
        try:
            settings = config.table_settings(hidden_layers)
            check_settings(config.output_dir, settings, resuming=config.skip_existing)
        except SettingsDiffer as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_OPTIONS
        if remove_scratch(config.output_dir, ALL_TABLES):
            LOGGER.info("removed the scratch files a killed run left")
        # Counted before the job starts, so that a pattern that matches nothing shows at once; on
        # a remote runner only the patterns are listed (no file headers read from here).
        census = take_census(config.inputs, config.input_format, CENSUS_BUDGET_S if local else 0)
        for line in census_lines(census):
            LOGGER.info(line)
        return run_built(
            pipeline, options, progress_dir, census, config, model, hidden_layers, decoding, run_id
        )
    finally:
        if progress_dir is not None:
            shutil.rmtree(progress_dir, ignore_errors=True)


def run_built(
    pipeline: beam.Pipeline,
    options: PipelineOptions,
    progress_dir: str | None,
    census: Census | None,
    config: RunConfig,
    model: Wav2Vec2Config,
    hidden_layers: tuple[int, ...],
    decoding: BeamDecoding | None,
    run_id: str,
) -> int:
    """Run the built job (the output folder held by `run`) and write its summary."""
    from wav2vec2_beam.pipeline.graph import table_specs

    LOGGER.info("run %s: writing to %s", run_id, config.output_dir)
    start = time.time()
    try:
        if progress_dir is None:
            result = pipeline.run()
            result.wait_until_finish()
        else:
            result = run_locally(pipeline, progress_dir, census, start, config.verbose)
    except Interrupted as stop:
        on_disk = 0
        if progress_dir is not None:  # counted once no writer can commit any more
            halt_commits(progress_dir)
            stop_children()
            on_disk = items_on_disk(progress_dir)
        stop.message = (
            f"interrupted: {on_disk} items are on disk in {config.output_dir} (run {run_id}); "
            "run the same command with --skip_existing to go on from there"
        )
        raise
    write_empty_pieces(
        [*table_specs(config, model, hidden_layers), errors_table()], config.output_dir, run_id
    )
    used = {
        **asdict(replace(config, given=frozenset())),
        "decoding": "greedy" if decoding is None else decoding.describe(),
        "hidden_layers": list(hidden_layers),
        "beam": beam_options_used(options),
    }
    found = counters(result)
    summary = {
        "run_id": run_id,
        **summarize(result, time.time() - start, used),
        **summarize_scores(found),
    }
    write_summary(config.output_dir, run_id, summary)
    print(summary_line(summary))
    failed = failures_line(summary)
    if failed is not None:
        print(failed)
    if summary["wer"] is not None:
        print(score_line(summary))
    print(f"output: {config.output_dir} (run {run_id})")
    if summary["inputs"] and not summary["succeeded"] and not summary["skipped_existing"]:
        print(
            f"error: every input failed ({summary['failed']}); the reasons are above and in "
            f"{config.output_dir}/errors/",
            file=sys.stderr,
        )
        return EXIT_ALL_FAILED
    return 0


def run_locally(
    pipeline: beam.Pipeline, progress_dir: str, census: Census | None, start: float, verbose: bool
) -> Any:
    """Run on the launcher's machine, with the progress display and the workers' stderr shown
    above it (`pipeline/lifecycle.py`); returns the finished result."""
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    try:
        interactive = terminal.isatty()
        with (
            ProgressDisplay(progress_dir, start, census, terminal, interactive) as display,
            forwarded_stderr(display.write_line, verbose) as silence,
        ):
            try:
                result = pipeline.run()
                result.wait_until_finish()
            except BaseException as error:
                stop = interruption()
                if stop is None:
                    raise
                silence()
                raise stop from error
            # A signal's exception raised inside a C library's callback can be swallowed there
            # (printed, and the run goes on): the run was still asked to stop.
            if (stop := interruption()) is not None:
                silence()
                raise stop
        return result
    finally:
        terminal.close()


def _not_beam_resource_warning(record: logging.LogRecord) -> bool:
    """Drop Beam 2.77's warning on every model load that the `resource` module is missing.

    It is there; RunInference only thinks so because an optional import beside it (its
    ModelManager) fails without torch, so the warning says nothing about this job.
    """
    return not record.getMessage().startswith("Resource module is not available")


def _configure_logging() -> None:
    """Our progress lines at INFO on stderr; Beam's and TensorFlow's loggers stay at WARNING."""
    if LOGGER.handlers:
        return
    logging.getLogger().addFilter(_not_beam_resource_warning)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: the exit status of the command (module docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's Python-level chatter
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(help_text())
        return 0
    _configure_logging()
    try:
        with stop_on_signals():
            return run(argv)
    except Interrupted as stop:
        stop_children()
        print(stop.message, file=sys.stderr)
        sys.stderr.flush()
        _silence_stderr()
        return stop.status


def _silence_stderr() -> None:
    """After an interruption, what the rest of the process would print (threads dying in the
    middle of their work) is not the user's to read."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    threading.excepthook = lambda args: None


def cli() -> NoReturn:
    """`python -m wav2vec2_beam` and the console script: `main`, then `exit_now`."""
    exit_now(main())


def exit_now(status: int) -> NoReturn:
    """The quickest clean exit.

    The decoding processes are stopped and waited for, the exit handlers run (logging's flush,
    multiprocessing's and temporary files' clean-up) and stdio is flushed, but the interpreter's
    own teardown is skipped: clearing TensorFlow's and Beam's thousands of modules and objects
    took 1.5 s of every run (base, 2 vCPUs of a Zen 4), 2% of a 20-minute corpus, after
    everything was written.
    """
    from wav2vec2_beam.transforms.write.lm_decode import close_shared_pool

    close_shared_pool()  # before the exit handlers: multiprocessing's would wait on its processes
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
            stream.flush()
    os._exit(status)

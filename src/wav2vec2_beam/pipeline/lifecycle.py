"""The launcher as a process: its signals, its children, and the stderr they share.

- Ctrl-C (SIGINT) and SIGTERM become `Interrupted` in the main thread, which the command turns
  into one line (what is on disk, how to go on) and exit status 128 + the signal (130, 143), as
  shells report a process a signal ended. Every process the run started is then stopped
  (`stop_children`): Beam's worker processes, the decoding processes, multiprocessing's resource
  tracker.
- During a local run the native stderr (file descriptor 2, which worker processes inherit) goes
  through a pipe that the launcher reads (`forwarded_stderr`): each line is shown above the
  progress bar, and the start-up notices that TensorFlow and Beam print in every worker process
  are dropped unless `--verbose`. After an interruption nothing more is shown: the processes
  being stopped would print their tracebacks there.
- The command starts with the cyclic garbage collector off (`wav2vec2_beam/__main__.py`);
  `freeze_start_up_objects` turns it back on once the model is loaded.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator

import psutil

#: Seconds a child is given to exit after SIGTERM before it is killed.
CHILD_GRACE_S = 3.0


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the launcher. A BaseException, as KeyboardInterrupt is, so that
    no `except Exception` on the way swallows it; `message` is set by whoever knows what the
    run had written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.status = 128 + signum
        self.message = "interrupted before the job started: nothing was written"


#: The signal received in the current `stop_on_signals` block, if any.
_received: list[int] = []


def freeze_start_up_objects() -> None:
    """End a start-up run without the garbage collector: what it made (the modules, the model)
    frozen out of the run's collections, then the collector on again.

    No collection first: one took 0.5-0.6 s over the start-up's 950,000 objects (base, 2 vCPUs
    of a Zen 4) and found 5,000 unreachable ones (closures, frames, argparse's formatters; no
    arrays), which stay frozen with the rest.

    A no-op where the collector is on (the start-up did not turn it off: `main` called in-process).
    """
    if gc.isenabled():
        return
    gc.freeze()
    gc.enable()


def interruption() -> Interrupted | None:
    """The interruption that a signal caused, also when Beam wrapped the exception the signal
    raised in its own (it re-raises a failure in a step as a RuntimeError naming the step)."""
    return Interrupted(_received[-1]) if _received else None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Raise `Interrupted` in the main thread on SIGINT and SIGTERM, for the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        _received.append(signum)
        # What the run's threads and processes say from now on is about being stopped: Beam
        # logs the interrupted step's traceback before the exception reaches the launcher.
        logging.disable(logging.CRITICAL)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    _received.clear()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_children() -> None:
    """Stop every process this one started, and theirs: SIGTERM, then SIGKILL after a grace."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=CHILD_GRACE_S)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=CHILD_GRACE_S)


#: What TensorFlow's C++ layer prints on every start-up, before its logging is set up (so no
#: setting silences it): notices about oneDNN, CUDA on a machine without a GPU, and the CPU
#: instructions it was not compiled for. Nothing in them is about the job. Error lines are kept,
#: but for cuInit's "unknown error" (303), which is what a machine without a CUDA driver gives.
_TENSORFLOW_NOTICES = (
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IW]\d{4} [\d:. ]+ +\d+ (port|cudart_stub|cuda_platform|cuda_executor|cpu_feature_guard)"
    rb"\.cc:\d+\]"
    rb"|E\d{4} [\d:. ]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*\(303\)$"
    rb"|To enable the following instructions: "
)
#: What the Beam worker processes of `--direct_running_mode=multi_processing` log as they start
#: (relayed by the launcher's job service as warnings): they found no staging folder (there is
#: none locally) and RunInference's note on the `resource` module; nothing about the job.
_WORKER_NOTICES = (
    rb"|INFO:(root|absl|apache_beam[\w.]*):"
    rb"|WARNING:apache_beam\.runners\.portability\.local_job_service:Worker: severity: WARN .*"
    rb'message: "(No semi_persistent_directory found|Resource module is not available)'
)
_NOTICES = re.compile(rb"^(" + _TENSORFLOW_NOTICES + _WORKER_NOTICES + rb")")


def without_startup_notices(stderr: bytes) -> bytes:
    """`stderr` without the start-up notices above; every other line (a real warning or error
    from TensorFlow or Beam, or anything else) is kept."""
    lines = stderr.splitlines(keepends=True)
    return b"".join(line for line in lines if not _NOTICES.match(line))


class _Forwarder:
    def __init__(self, read_end: int, emit: Callable[[str], None], verbose: bool) -> None:
        self._read_end = read_end
        self._emit = emit
        self._verbose = verbose
        self.silenced = False
        self.thread = threading.Thread(target=self._loop, name="stderr", daemon=True)

    def _loop(self) -> None:
        with os.fdopen(self._read_end, "rb") as pipe:
            for line in pipe:
                if self.silenced or _received or (not self._verbose and _NOTICES.match(line)):
                    continue
                self._emit(line.decode("utf-8", "replace").rstrip("\n"))


@contextlib.contextmanager
def forwarded_stderr(emit: Callable[[str], None], verbose: bool) -> Iterator[Callable[[], None]]:
    """Route file descriptor 2 through a pipe for the block (module docstring); yields the
    function that silences it for good."""
    import sys

    sys.stderr.flush()
    read_end, write_end = os.pipe()
    saved = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = _Forwarder(read_end, emit, verbose)
    forwarder.thread.start()

    def silence() -> None:
        forwarder.silenced = True

    try:
        yield silence
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # our end of the pipe closes; children still holding theirs keep it
        os.close(saved)
        forwarder.thread.join(timeout=1.0)
        forwarder.silenced = True  # a child still holding the pipe writes to no one now

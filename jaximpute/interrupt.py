"""Stopping the command line at once on Ctrl-C or SIGTERM (issue 18).

Python runs a signal handler only in the main thread, between bytecodes; a compiled XLA program
(sampling, a study's batch) does not return to Python until it ends, so Ctrl-C used to wait for
the end of sampling, and SIGTERM ended the process with no message and temporary files left.
`run_stoppable` runs the command in a worker thread instead; the main thread only waits, and
owns the handlers. On a signal it

1. waits while a compiled program is being stored in JAX's persistent cache (a torn entry
   would be read, and warned about, by every later run) and while output files are being
   renamed into place (jaximpute.output.stop_writing: a set of files is replaced whole), at
   most a few seconds;
2. removes the temporary files of outputs being written, so nothing partial is left and no
   old file is replaced;
3. prints one line, `jaximpute: interrupted (SIGINT); <what is on disk>`, and ends the process
   with os._exit(128 + signal): 130 for SIGINT, 143 for SIGTERM, the shell's convention. The
   worker thread (mid-compile, mid-sampling, mid-write) ends with it.

The library (jaximpute.api, cli.main called with arguments from Python) is not affected: there a
KeyboardInterrupt reaches the caller once the running program returns, as before.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable

SIGNALS = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}

# JAX functions that store a compiled program in the persistent cache; a stop waits for them.
_CACHE_WRITERS = ("put_executable_and_time", "_cache_write")

_state: dict = {"report": lambda: "nothing was written", "stopping": False}


def on_stop(report: Callable[[], str]) -> None:
    """What the stop line says after the signal's name: `report()` is called after the
    temporary files are gone (e.g. 'nothing was written', or how many batches are done)."""
    _state["report"] = report


def run_stoppable(job: Callable[[], int]) -> int:
    """job() in a worker thread, stoppable at any moment by SIGINT or SIGTERM (module
    docstring); its return value, or its exception raised here."""
    if threading.current_thread() is not threading.main_thread():
        return job()                          # handlers can only be set in the main thread
    box: dict = {}

    def work() -> None:
        try:
            box["value"] = job()
        except BaseException as e:            # noqa: B036 - handed to the main thread
            box["error"] = e

    for s in SIGNALS:
        signal.signal(s, _stop)
    worker = threading.Thread(target=work, name="jaximpute", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)                      # a timed wait: a signal's handler runs at once
    if "error" in box:
        raise box["error"]
    return box["value"]


def _stop(signum, frame) -> None:
    if _state["stopping"]:                    # a second Ctrl-C while the first one is handled
        return
    _state["stopping"] = True
    name = SIGNALS.get(signum, f"signal {signum}")
    try:
        _wait_for_cache_writes(deadline=time.monotonic() + 5.0)
        output = sys.modules.get("jaximpute.output")  # not imported: nothing is being written
        if output is not None:
            output.stop_writing(timeout=5.0)
        what = _state["report"]()
    except BaseException as e:                # noqa: B036 - the process ends below regardless
        what = f"stopped while cleaning up ({type(e).__name__}: {e})"
    lead = "\n" if _isatty(2) else ""         # after a progress bar or the terminal's ^C
    try:
        os.write(2, f"{lead}jaximpute: interrupted ({name}); {what}\n".encode("utf-8", "replace"))
    except OSError:
        pass
    os._exit(128 + signum)


def _wait_for_cache_writes(deadline: float) -> None:
    """Until no thread is inside JAX's persistent-cache write (by its frames), or the deadline."""
    me = threading.get_ident()
    while time.monotonic() < deadline:
        busy = False
        for ident, frame in sys._current_frames().items():
            f = frame if ident != me else None
            while f is not None and not busy:
                busy = f.f_code.co_name in _CACHE_WRITERS
                f = f.f_back
        if not busy:
            return
        time.sleep(0.01)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False

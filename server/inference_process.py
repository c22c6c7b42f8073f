"""The model in a process of its own, so it never competes with the event loop for the GIL.

Eager PyTorch takes and releases the GIL around every operator. With the model on a thread of the
server process, each of those ~100 hand-offs per forward waits for the busy event loop (on the
2-core development machine a batch of 32 took twice as long next to an event-loop-like Python
load). Here the event loop's process only sends the joined pixels down a pipe and reads back the
probabilities: two system calls per batch, no GIL shared. The server process does not even import
torch.

The protocol (settings, replies, rows) is `server/model_protocol.py`; the child builds a
`ModelRunner` (`server/model_runner.py`, a frozen TorchScript graph whose logits equal eager's, or
eager), so the answers are the offline evaluation's. If the child dies or stops answering, the batch
in flight fails with `InferenceUnavailable` (UNAVAILABLE to callers, who retry) and the next batch
is answered by a new child, started at once; health says NOT_SERVING in between. The parent side
is one lock-protected pipe: whatever replaces the child (a reload, another runtime) happens under
that lock, between batches.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection

from model.shape import PIXELS_LEN
from server.batcher import BatchFailed
from server.model_protocol import (
    DEFAULT_BATCH_TIMEOUT,
    ModelInfo,
    ModelSettings,
    Row,
    decode_reply,
    encode_error,
    encode_reply,
)

log = logging.getLogger(__name__)


class InferenceUnavailable(BatchFailed):
    """The model process could not answer (it failed to start, or died mid-batch)."""


class ModelProcessLost(InferenceUnavailable):
    """The child died or hung during this batch; the one log line about it is already written."""

    reported = True


def _preload_in_background(settings: ModelSettings) -> None:
    """Run `model_runner.preload` on a thread of the lowest CPU priority, and wait for it.

    During a reload the old model process answers while this one starts; importing torch and
    exporting the graph take seconds of CPU, and on a small machine every one of them is taken from
    the processes serving requests (p99 went to 1.1-3x during the load on 2 cores). Niced, the load
    only uses CPU nobody else wants. Linux keeps a nice value per thread, so only this thread is
    lowered: the runner is then built, warmed and served from the main thread at normal priority
    (and its thread pools, created there, inherit that). Elsewhere the nice value is per process, so
    the preload is skipped rather than leave the new model process niced for good."""
    if not sys.platform.startswith("linux"):
        return

    def run() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            from server.model_runner import preload

            preload(settings.path, settings.runtime)
        except Exception:  # the runner, built next, reports what is wrong in the one usual line
            log.debug("background preload failed", exc_info=True)

    thread = threading.Thread(target=run, name="model-preload", daemon=True)
    thread.start()
    thread.join()


def _child(conn: Connection, settings: ModelSettings) -> None:
    """Load, warm up, report, then answer batches until the parent closes the pipe."""
    # Ctrl-C (and `kill -HUP` for a model reload) reaches the whole process group; the parent decides
    # when the model stops or is replaced.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if settings.background:
        _preload_in_background(settings)
    try:
        import torch

        from server.model_runner import ModelRunner

        runner = ModelRunner(
            settings.path, settings.device, settings.threads, graph=settings.graph, runtime=settings.runtime
        )
        runner.warm_up(settings.warm_to)
        threads = torch.get_num_threads() if runner.device.type == "cpu" else None
        gc.freeze()  # torch's import-time objects are permanent: keep full collections short
        conn.send(("ready", ModelInfo(runner.version, str(runner.device), runner.runtime, threads)))
    except Exception as exc:  # a bad checkpoint or a missing GPU: the parent reports it in one line
        conn.send(("error", str(exc)))
        return
    while True:
        try:
            pixels = conn.recv_bytes()
        except (EOFError, OSError):  # the parent is gone or closed the pipe: stop
            return
        try:
            reply = encode_reply(*runner.predict_arrays(pixels, len(pixels) // PIXELS_LEN))
        except Exception as exc:
            reply = encode_error(exc)
        try:
            conn.send_bytes(reply)
        except OSError:  # the parent died while the batch ran
            return


class InferenceProcess:
    """`predict(joined_pixels, n)` for the batcher's inference thread, answered by the child process.

    Life cycle: `__init__` starts the child and waits for it to be ready. A child that dies or gives
    no answer within `batch_timeout` fails its batch (InferenceUnavailable), is reported once
    (`on_crash`, `on_health(False)`) and is replaced at once on a thread of its own; when the
    replacement is warm, `on_health(True)`. Everything that touches the child holds `_lock`, so a
    replacement (or a future reload) never overlaps a batch.
    """

    def __init__(
        self,
        settings: ModelSettings | None = None,
        *,
        start_timeout: float = 300.0,
        batch_timeout: float = DEFAULT_BATCH_TIMEOUT,
        on_restart: Callable[[], None] | None = None,
        on_fatal: Callable[[str], None] | None = None,
        on_crash: Callable[[], None] | None = None,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        self.settings = settings or ModelSettings()
        self._start_timeout = start_timeout
        self._batch_timeout = batch_timeout  # a hung model must not hold every later request forever
        # Callbacks, all called from the inference thread or the restart thread, never the event loop:
        self._on_restart = on_restart  # a replacement child is up
        self._on_fatal = on_fatal  # no replacement could start: the owner should stop
        self._on_crash = on_crash  # a child died or hung
        self._on_health = on_health  # False when a child is lost, True when its replacement answered
        self._fatal: str | None = None
        self._closed = False
        # forkserver, like the preprocessing pool: never fork a process that runs gRPC threads.
        self._context = multiprocessing.get_context("forkserver")
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self.info = self._start()

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> ModelInfo:
        parent, child = self._context.Pipe()
        proc = self._context.Process(target=_child, args=(child, self.settings), name="digits-inference", daemon=True)
        proc.start()
        child.close()
        try:
            if not parent.poll(self._start_timeout):
                raise InferenceUnavailable(f"the model process did not start within {self._start_timeout:g} s")
            status, payload = parent.recv()
        except (EOFError, OSError):
            proc.join(5)
            status, payload = "error", f"the model process exited during start-up (exit code {proc.exitcode})"
        except InferenceUnavailable as exc:
            status, payload = "error", str(exc)
        if status != "ready":
            self._conn, self._proc = parent, proc
            self._discard()
            raise InferenceUnavailable(payload)
        self._conn, self._proc = parent, proc
        return payload

    def predict(self, pixels: bytes, n: int) -> list[Row]:
        with self._lock:
            if self._fatal is not None:
                raise InferenceUnavailable(self._fatal)
            if self._conn is None:  # the previous child failed and no replacement is up yet: start it now
                self._restart_locked()
            conn = self._conn
            try:
                conn.send_bytes(pixels)
                if not conn.poll(self._batch_timeout):
                    self._lost(f"gave no answer within {self._batch_timeout:g} s", grace=0.0)
                    raise ModelProcessLost(
                        f"the model process gave no answer within {self._batch_timeout:g} s; it was stopped "
                        "and is being replaced"
                    )
                reply = conn.recv_bytes()
            except (EOFError, OSError) as exc:
                proc = self._proc
                if proc is not None:
                    proc.join(1)  # reaps it, so its exit code is known
                code = proc.exitcode if proc is not None else None
                how = "unknown cause" if code is None else f"exit code {code}" if code >= 0 else f"signal {-code}"
                self._lost(f"died ({how})")
                raise ModelProcessLost(f"the model process died ({how}); it is being replaced") from exc
        return decode_reply(reply, n)

    def _lost(self, what: str, grace: float = 1.0) -> None:
        """The child failed (under the lock): one log line, health NOT_SERVING, and a replacement
        starting at once on a thread of its own (health turns SERVING when it answers)."""
        log.error("the model process %s; health is NOT_SERVING until a replacement answers", what)
        if self._on_crash is not None:
            self._on_crash()
        if self._on_health is not None:
            self._on_health(False)
        self._discard(grace)
        if not self._closed:
            threading.Thread(target=self._restart, name="model-restart", daemon=True).start()

    def _restart(self) -> None:
        with self._lock:
            if self._conn is None and self._fatal is None and not self._closed:
                try:
                    self._restart_locked()
                except InferenceUnavailable:
                    pass  # _restart_locked reported it

    def _restart_locked(self) -> None:
        """Start a replacement child (under the lock); a start that fails is fatal."""
        log.info("restarting the model process")
        # A replacement for a lost child is what everyone is waiting for: full priority, even if the
        # lost one had been loaded in the background as a reload.
        self.settings = replace(self.settings, background=False)
        try:
            self.info = self._start()
        except InferenceUnavailable as exc:
            # The same start would fail for every later batch too: stop trying, and let the
            # owner decide (the server exits, and its supervisor starts it afresh).
            self._fatal = f"the model process could not be restarted: {exc}"
            if self._on_fatal is not None:
                self._on_fatal(self._fatal)
            raise InferenceUnavailable(self._fatal) from None
        log.info("model process restarted (pid %s)", self.pid)
        if self._on_restart is not None:
            self._on_restart()
        if self._on_health is not None:
            self._on_health(True)  # it loaded, warmed up and answered its warm-up batches

    def _discard(self, grace: float = 1.0) -> None:
        """Close the pipe (a healthy child exits on its own), then kill whatever is left after `grace` s."""
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            self._proc.join(grace)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(1)
        self._conn = self._proc = None

    def close(self) -> None:
        self._closed = True  # no replacement starts after this
        with self._lock:
            self._discard(grace=5.0)

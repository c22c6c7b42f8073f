"""Model updates with no downtime: `digits-server --model PATH` takes a new checkpoint on SIGHUP, and
by itself when the file at PATH is replaced (an atomic rename: `mv`, `kubectl cp` then `mv`, a
ConfigMap or volume update), without failing or noticeably slowing a single request.

How: the new file is read once and pinned (copied into a private folder), then loaded and warmed in
a NEW model process while the old one keeps answering, and checked with a probe batch (10
probabilities per image, finite, summing to 1). Only then is it switched in, between two batches;
the old process finishes its batch and exits. Every answer carries the version of the process that
computed it, and from the switch on the `digits_model` metric and Ping carry the new one.

A file that does not check out (unreadable, tampered, wrong shape, the wrong kind of model) is
refused: one log line, `digits_model_reloads_total{outcome="refused"}`, and the old model goes on
serving. A model process that crashes is restarted from the pinned copy of the model it was
running, never from whatever is on disk by then, so the version reported is always the one
answering. The server process never imports torch: loading happens in the model process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from model.shape import NUM_CLASSES, PIXELS_LEN, SERVED_COLUMNS
from server.model_protocol import ModelInfo, ModelSettings, Row

log = logging.getLogger("digits.server.reload")

VersionedRow = tuple[int, float, list[float], str]  # a Row plus the version of the model that computed it


class Runner(Protocol):
    """What the reloader needs of a model process (server.inference_process.InferenceProcess)."""

    info: ModelInfo

    @property
    def version(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def predict(self, pixels: bytes, n: int) -> list[Row]: ...

    def close(self) -> None: ...


class ModelRefused(Exception):
    """A new checkpoint that must not serve; the message says why, in one line."""


class _Unsettled(Exception):
    """The file changed while it was read (still being written): try again at the next poll."""


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when the file is replaced or rewritten; None while there is no file."""
    try:
        st = os.stat(path)  # follows symlinks: a ConfigMap volume swaps the link's target
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def probe(runner: Runner) -> None:
    """Raise ModelRefused unless the model answers a batch the way the server needs it to."""
    try:
        rows = runner.predict(bytes(PIXELS_LEN) * 2, 2)
    except Exception as exc:  # a reply of the wrong size cannot even be decoded into rows
        raise ModelRefused(f"its answers do not fit {NUM_CLASSES} classes for 28x28 images ({exc})") from None
    for _, confidence, probabilities in rows:
        if len(probabilities) != SERVED_COLUMNS or not all(math.isfinite(p) for p in probabilities):
            raise ModelRefused(f"it answered {len(probabilities)} columns, not {SERVED_COLUMNS} finite ones")
        if abs(sum(probabilities[:NUM_CLASSES]) - 1.0) > 1e-3 or not 0.0 <= confidence <= 1.0:
            raise ModelRefused("its probabilities do not sum to 1")


class ModelReloader:
    """The batcher's `predict`, answered by the current model process, which reloads replace.

    Same interface as InferenceProcess (`predict`, `info`, `version`, `pid`, `close`), so the server
    uses either; `predict` returns VersionedRows."""

    def __init__(
        self,
        start: Callable[[ModelSettings], Runner],
        settings: ModelSettings,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._start_runner = start
        self._settings = settings
        self.source = Path(settings.path) if settings.path is not None else None
        self.on_switch: Callable[[ModelInfo], None] | None = None  # called on the reload's thread
        self.reloads = Counter(
            "digits_model_reloads",
            "Model reloads (SIGHUP, or the --model file replaced), by outcome: switched, refused, unchanged",
            ["outcome"],
            registry=registry or CollectorRegistry(),
        )
        for outcome in ("switched", "refused", "unchanged"):
            self.reloads.labels(outcome)
        # Held by the inference thread for a whole batch, and by a switch: the switch lands between batches.
        self._switch = threading.Lock()
        self._reload = threading.Lock()  # one reload at a time
        self._folder = Path(tempfile.mkdtemp(prefix="digits-model-"))
        self._names = itertools.count(1)
        self._seen = _signature(self.source) if self.source else None
        self._digest: str | None = None
        self._pinned: Path | None = None
        self._closing = False
        try:
            if self.source is None:  # the shipped model: nothing to watch
                self._current = start(settings)
            else:
                self._current, self._digest, self._pinned = self._prepare(self._read_settled())
            try:
                probe(self._current)
            except ModelRefused:
                self._current.close()
                raise
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise

    # --- what the server uses ---

    @property
    def info(self) -> ModelInfo:
        return self._current.info

    @property
    def version(self) -> str:
        return self._current.version

    @property
    def pid(self) -> int | None:
        return self._current.pid

    def predict(self, pixels: bytes, n: int) -> list[VersionedRow]:
        with self._switch:
            current = self._current
            rows = current.predict(pixels, n)
            version = current.version
        return [(*row, version) for row in rows]

    def close(self) -> None:
        """Stop the model process. A reload still loading then discards what it loaded."""
        with self._switch:
            self._closing = True
            self._current.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    # --- reloading ---

    def changed(self) -> bool:
        """Whether the file at the source path differs from the one last looked at."""
        return self.source is not None and _signature(self.source) not in (self._seen, None)

    def reload(self, why: str = "SIGHUP") -> str:
        """Load the file at the source path and switch to it if it checks out. Returns the outcome:
        "switched", "refused", "unchanged", or "unsettled" (being written: the next poll retries)."""
        with self._reload:
            if self.source is None:
                log.warning("%s: no --model file to reload (serving the shipped model %s)", why, self.version)
                return "unchanged"
            try:
                data = self._read()
            except _Unsettled:
                return "unsettled"
            except ModelRefused as exc:
                return self._refused(why, str(exc))
            digest = hashlib.sha256(data).hexdigest()
            if digest == self._digest:
                log.info("%s: %s is the model already serving (%s)", why, self.source, self.version)
                self.reloads.labels("unchanged").inc()
                return "unchanged"
            log.info("%s: loading %s in a new model process; %s keeps serving", why, self.source, self.version)
            try:
                runner, digest, pinned = self._prepare(data, digest, background=True)
            except ModelRefused as exc:
                return self._refused(why, str(exc))
            try:
                probe(runner)
            except ModelRefused as exc:
                self._discard(runner, pinned)
                return self._refused(why, f"{self.source}: {exc}")
            with self._switch:  # waits for the batch in flight, if any
                if self._closing:
                    self._discard(runner, pinned)
                    return "unchanged"
                old, old_pinned = self._current, self._pinned
                self._current, self._digest, self._pinned = runner, digest, pinned
            log.info(
                "model switched: %s -> %s (model_pid=%s runtime=%s)",
                old.version,
                runner.version,
                runner.pid,
                runner.info.runtime,
            )
            self.reloads.labels("switched").inc()
            if self.on_switch is not None:
                self.on_switch(runner.info)
            self._discard(old, old_pinned)
            return "switched"

    async def watch(self, poll_s: float, hup: asyncio.Event) -> None:
        """Reload when `hup` is set (the SIGHUP handler sets it), and when the file changes (checked
        every `poll_s` seconds; 0: only on SIGHUP). Runs until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hup.wait(), poll_s if poll_s > 0 else None)
            why = "SIGHUP" if hup.is_set() else "file replaced"
            hup.clear()
            if why == "SIGHUP" or self.changed():
                try:
                    await asyncio.to_thread(self.reload, why)
                except Exception:  # never let the watcher die: the next change gets its chance
                    log.exception("model reload failed")

    def _refused(self, why: str, reason: str) -> str:
        log.error("%s: model refused, still serving %s: %s", why, self.version, reason)
        self.reloads.labels("refused").inc()
        return "refused"

    def _read(self) -> bytes:
        assert self.source is not None
        before = _signature(self.source)
        try:
            data = self.source.read_bytes()
        except FileNotFoundError:
            raise ModelRefused(f"{self.source}: checkpoint not found") from None
        except OSError as exc:
            raise ModelRefused(f"{self.source}: cannot read it ({exc.strerror})") from None
        after = _signature(self.source)
        if before != after:
            raise _Unsettled(f"{self.source}: the file kept changing while it was read")
        self._seen = after  # a refused file is refused once, not at every poll
        return data

    def _read_settled(self, tries: int = 50) -> bytes:
        for _ in range(tries - 1):
            try:
                return self._read()
            except _Unsettled:
                time.sleep(0.1)
        return self._read()

    def _prepare(self, data: bytes, digest: str | None = None, background: bool = False) -> tuple[Runner, str, Path]:
        """Pin `data` and start a model process on the pinned copy; ModelRefused if it cannot start.
        `background`: another model serves meanwhile, so the new one loads at low CPU priority."""
        pinned = self._folder / f"model-{next(self._names)}.safetensors"
        pinned.write_bytes(data)
        try:
            runner = self._start_runner(replace(self._settings, path=pinned, background=background))
        except Exception as exc:
            pinned.unlink(missing_ok=True)
            raise ModelRefused(str(exc).replace(str(pinned), str(self.source))) from None
        return runner, digest or hashlib.sha256(data).hexdigest(), pinned

    @staticmethod
    def _discard(runner: Runner, pinned: Path | None) -> None:
        runner.close()  # after its batch in flight
        if pinned is not None:
            pinned.unlink(missing_ok=True)


__all__ = ["ModelRefused", "ModelReloader", "VersionedRow", "probe"]

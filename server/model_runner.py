"""The model behind the batcher: load a checkpoint on a device, warm it up, and turn one batch of
784-byte images into calibrated probabilities. The server runs it inside its model process
(server/inference_process.py, which speaks server/model_protocol.py); tests and benchmarks use it
directly. A new runtime (another graph compiler, an accelerator) belongs here, behind `predict_arrays`."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, resolve_device
from model.shape import IMAGE_SIZE, NOT_A_DIGIT_INDEX, NUM_CLASSES, PIXELS_LEN, SEVERAL_DIGITS_INDEX
from server.model_protocol import Row, rows

log = logging.getLogger(__name__)


def preload(path: Path | str | None, runtime: str) -> None:
    """Do the slow, cacheable part of building a runner ahead of it: torch is imported (by importing
    this module), the checkpoint read, and the ONNX export written to its cache, so the `ModelRunner`
    built afterwards only reads them. A reload runs this on a low-priority thread (see
    server/inference_process.py). Errors are left for the runner to report."""
    loaded = load_checkpoint(path or DEFAULT_CHECKPOINT, device=torch.device("cpu"))
    if runtime in ("onnx", "onnx-int8"):
        from server.runtimes import export_onnx

        export_onnx(loaded.served(), int8=runtime == "onnx-int8")


class ModelRunner:
    """Owns the model. `predict` takes the concatenated bytes of n images (the batcher joins them)."""

    def __init__(
        self,
        path: Path | str | None = None,
        device: str = "auto",
        threads: int | None = None,
        graph: bool = False,
        runtime: str = "",
    ) -> None:
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            # One intra-op thread per spare core: the event loop and preprocessing workers need CPU too.
            torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) - 1))
        loaded = load_checkpoint(path or DEFAULT_CHECKPOINT, device=self.device)
        if loaded.config.num_classes != NUM_CLASSES:
            raise ValueError(f"the model answers {loaded.config.num_classes} classes, not {NUM_CLASSES} digits")
        self.model = loaded.served()  # images -> 10 calibrated probabilities + P(not a digit) + P(several)
        self.version = loaded.version
        self.temperature = float(loaded.temperature)
        # An image whose P(not a digit) reaches this is answered NOT_A_DIGIT_INDEX; 1.1 never does (no gate).
        self.not_a_digit_threshold = float(loaded.gate.threshold) if loaded.gate is not None else 1.1
        # ... and one whose P(several digits) reaches this (digits run together) SEVERAL_DIGITS_INDEX.
        self.several_threshold = float(loaded.several.threshold) if loaded.several is not None else 1.1
        # `runtime` "onnx" / "onnx-int8": server/runtimes.py, checked against eager; if it cannot be
        # had, TorchScript (graph) or eager as before.
        self._compiled = None
        if runtime in ("onnx", "onnx-int8") and self.device.type == "cpu":
            from server.runtimes import build

            threads = torch.get_num_threads()  # the intra-op threads chosen above
            self._compiled = build("onnx", self.model, threads, int8=runtime == "onnx-int8")
        if self._compiled is not None:
            self.runtime = runtime
        else:
            self.runtime = "torchscript" if graph and self._freeze_graph() else "eager"

    def _freeze_graph(self) -> bool:
        """Swap the eager model for a frozen TorchScript graph, but only if its logits are identical.

        A forward is ~100 small operators; run one at a time from Python, each pays dispatch
        overhead: batch 1 took 1.15 ms eager and 0.64 ms frozen on the 2-core CI machine, batch 32
        about 10% less. TorchScript is deprecated upstream, so anything that goes wrong (an API gone
        from a later torch, or a graph that differs from eager by a single bit) keeps eager, whose
        arithmetic is the offline evaluation's."""
        probe = torch.rand(8, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0)).to(self.device)
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # trace/freeze announce their deprecation on every call
                graph = torch.jit.freeze(torch.jit.trace(self.model, probe[:2]).eval())
                same = all(torch.equal(graph(x), self.model(x)) for x in (probe[:1], probe, probe[:2]))
        except Exception as exc:
            log.warning("running the model eagerly: TorchScript failed (%s)", exc)
            return False
        if not same:
            log.warning("running the model eagerly: the TorchScript graph's logits differ from eager")
            return False
        self.model = graph
        return True

    @torch.inference_mode()
    def predict_arrays(self, pixels: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Same arithmetic as the offline evaluation (uint8 -> float / 255), then softmax(logits / T).
        Returns the digits (n,) and the probabilities (n, SERVED_COLUMNS: the 10 digits, then P(not a
        digit) and P(several digits)) as arrays, cheap to ship between processes. An image the gate
        refuses has digit NOT_A_DIGIT_INDEX; else one the several-digits head flags, SEVERAL_DIGITS_INDEX."""
        if self._compiled is not None:
            probs = self._compiled(np.frombuffer(pixels, dtype=np.uint8).reshape(n, PIXELS_LEN))
        else:
            x = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(n, 1, IMAGE_SIZE, IMAGE_SIZE)
            if self.device.type != "cpu":
                x = x.pin_memory().to(self.device, non_blocking=True)
            probs = self.model(x.float().div_(255)).float().cpu().numpy()
        digits = probs[:, :NUM_CLASSES].argmax(axis=1)
        digits[probs[:, SEVERAL_DIGITS_INDEX] >= self.several_threshold] = SEVERAL_DIGITS_INDEX
        digits[probs[:, NOT_A_DIGIT_INDEX] >= self.not_a_digit_threshold] = NOT_A_DIGIT_INDEX
        return digits, probs

    def predict(self, pixels: bytes, n: int) -> list[Row]:
        return rows(*self.predict_arrays(pixels, n))

    def warm_up(self, max_batch_size: int) -> None:
        """Run every power-of-two batch size once so the first real requests do not pay for allocation."""
        size = 1
        while True:
            self.predict(bytes(PIXELS_LEN * size), size)
            if size >= max_batch_size:
                break
            size = min(size * 2, max_batch_size)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        log.debug("warmed up to batch %d", max_batch_size)

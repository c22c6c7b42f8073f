"""Model runtimes off TorchScript (deprecated upstream): ONNX Runtime, with the model exported once
at start-up, and `torch.export` + AOTInductor (compiled to a shared library with the C++ compiler).

Each runtime is the whole per-batch computation (uint8 pixels -> /255 -> encoder -> softmax of
logits / T, and the not-a-digit gate: `model.gate.Served`) in one graph, so one call per batch
crosses into it, and it is kept only after its
probabilities match eager's on a probe batch (`PROBE_TOLERANCE`); the full check, every one of the
10,000 MNIST test images, is tests/unit/test_runtimes.py and benchmarks/runtime_bench.py.
`build` returns None (and logs why) when a runtime is unavailable or differs: the runner then
falls back to eager.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.shape import IMAGE_SIZE, NUM_CLASSES, SERVED_COLUMNS

log = logging.getLogger(__name__)

RUNTIMES = ("onnx", "aoti", "torchscript", "eager")
PROBE_TOLERANCE = 1e-4  # largest |p_runtime - p_eager| accepted on the start-up probe

# pixels (n, 784) uint8 -> (n, 11) float32: 10 calibrated probabilities, then P(not a digit)
Predict = Callable[[np.ndarray], np.ndarray]


class Calibrated(nn.Module):
    """The served computation as one module: raw 0..255 pixels in, `Served`'s columns out."""

    def __init__(self, served: nn.Module) -> None:
        super().__init__()
        self.served = served

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.served(pixels.view(-1, 1, IMAGE_SIZE, IMAGE_SIZE).float() / 255.0)


def _example(n: int = 4) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, IMAGE_SIZE * IMAGE_SIZE), dtype=torch.uint8, generator=generator)


def _batch_dim():
    return {"pixels": {0: torch.export.Dim("batch", min=1, max=4096)}}


def cache_dir() -> Path:
    """Where exported models are kept between starts: $DIGITS_CACHE_DIR, or ~/.cache/digits."""
    return Path(os.environ.get("DIGITS_CACHE_DIR") or Path.home() / ".cache" / "digits")


def _model_key(served: nn.Module, *extra: str) -> str:
    """A digest of the weights (the heads' too), the temperature, the served columns, torch's version and
    `extra`: a cached export is reused only for exactly the model (and exporter and output) it was made from."""
    head = f"{served.temperature!r}|{SERVED_COLUMNS}|{torch.__version__}|{'|'.join(extra)}"
    digest = hashlib.sha256(head.encode())
    for name, tensor in sorted(served.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


_exported: dict[Path, bytes] = {}  # this process's exports, for when the cache folder is not writable


def export_onnx(served: nn.Module, int8: bool = False) -> bytes:
    """The calibrated module as ONNX bytes (torch.onnx, dynamo exporter, dynamic batch). Exporting
    takes 5-20 s on a small CPU, so the bytes are cached on disk under a digest of the weights."""
    path = cache_dir() / f"digits-{_model_key(served, 'onnx', 'int8' if int8 else 'fp32')}.onnx"
    if path in _exported:
        return _exported[path]
    try:
        return path.read_bytes()
    except OSError:
        pass
    module = Calibrated(served).eval()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (_example(),), dynamo=True, dynamic_shapes=_batch_dim(), verbose=False)
    data = program.model_proto.SerializeToString()
    if int8:
        data = _quantize_int8(data)
    _exported[path] = data
    try:  # write-then-rename: a concurrent start never reads half a file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot cache the exported model in %s: %s", path.parent, exc)
    return data


def onnx_session(served: nn.Module, threads: int | None, int8: bool = False) -> Predict:
    """An ONNX Runtime CPU session over the exported calibrated module."""
    import onnxruntime as ort

    data = export_onnx(served, int8=int8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle worker threads spin-wait by default: on a shared small CPU that burns the cores the
    # event loop and the other processes need, for nothing between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(pixels: np.ndarray) -> np.ndarray:
        return session.run(None, {name: pixels})[0]

    return predict


def _quantize_int8(data: bytes) -> bytes:
    """Dynamic int8 quantization of the matrix multiplications (weights int8, activations per batch)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(data)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        return dst.read_bytes()


def aoti_package(served: nn.Module, threads: int | None) -> Predict:
    """torch.export the calibrated module and compile it ahead of time with AOTInductor (needs a C++
    compiler; the compiled package is cached by Inductor, so a restart reuses it)."""
    import torch._inductor

    module = Calibrated(served).eval()
    with torch.no_grad():
        exported = torch.export.export(module, (_example(),), dynamic_shapes=_batch_dim())
        tmp = tempfile.mkdtemp(prefix="digits-aoti-")
        path = torch._inductor.aoti_compile_and_package(exported, package_path=str(Path(tmp) / "model.pt2"))
    runner = torch._inductor.aoti_load_package(path)

    def predict(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = runner(torch.from_numpy(pixels))
        return (out[0] if isinstance(out, (list, tuple)) else out).numpy()

    return predict


def reference(served: nn.Module) -> Predict:
    """Eager PyTorch, the offline evaluation's arithmetic: what every runtime is compared with."""
    module = Calibrated(served).eval()

    def predict(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(pixels)).numpy()

    return predict


def agrees(got: np.ndarray, want: np.ndarray, tolerance: float = PROBE_TOLERANCE) -> bool:
    """Same shape, same predicted digit for every row, and no probability further than `tolerance`."""
    return (
        got.shape == want.shape
        and got.ndim == 2
        and got.shape[1] == SERVED_COLUMNS
        and np.array_equal(got[:, :NUM_CLASSES].argmax(1), want[:, :NUM_CLASSES].argmax(1))
        and float(np.abs(got - want).max()) <= tolerance
    )


def build(kind: str, served: nn.Module, threads: int | None, int8: bool = False, check: bool = True) -> Predict | None:
    """The runtime `kind` ("onnx" or "aoti") checked against eager on a probe, or None (logged).

    int8 is never exact (probabilities move by up to ~0.25 on MNIST test, a few predictions
    change), so it is only asked to give probabilities; choosing it is choosing that. `check=False`
    skips the comparison altogether (benchmarks)."""
    probe = _example(64).numpy()
    try:
        if kind == "onnx":
            predict = onnx_session(served, threads, int8=int8)
        elif kind == "aoti":
            predict = aoti_package(served, threads)
        else:
            raise ValueError(f"unknown runtime {kind!r}")
        got = predict(probe)
        want = reference(served)(probe)
    except Exception as exc:  # a missing package or compiler, an operator the exporter cannot take
        log.warning("runtime %s unavailable, falling back: %s", kind, exc)
        return None
    if not check:
        return predict
    if int8:
        ok = got.shape == want.shape and bool(np.all(np.abs(got[:, :NUM_CLASSES].sum(1) - 1) < 1e-3))
    else:
        ok = agrees(got, want)
    if not ok:
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        log.warning("runtime %s differs from eager on the probe (max |dp| %.2g): falling back", kind, diff)
        return None
    return predict


def main(argv: list[str] | None = None) -> int:
    """`python -m server.runtimes [--model PATH]`: export the ONNX model into the cache now (a Docker
    build does this, so containers start without the 5-20 s export)."""
    import argparse

    from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint

    p = argparse.ArgumentParser(prog="python -m server.runtimes", description=main.__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_CHECKPOINT, help="checkpoint (default: the shipped one)")
    args = p.parse_args(argv)
    loaded = load_checkpoint(args.model)
    export_onnx(loaded.served())
    print(f"exported {loaded.version} into {cache_dir()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

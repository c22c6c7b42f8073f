"""The shipped checkpoint format: safetensors weights plus metadata that rebuild the model.

safetensors holds only tensors and string metadata, so loading a checkpoint never runs code
(no unpickling). The metadata carries the model configuration, the calibration temperature and a
version; a SHA-256 over the tensors makes a tampered or corrupted file fail loudly instead of
serving wrong answers.

A checkpoint may also hold the not-a-digit gate (model/gate.py): its tensors under "gate.", its
configuration, threshold and the SHA-256 of the encoder weights it was trained on under the "gate"
metadata key. A gate is only valid for those exact weights: saving an encoder that has changed
since (a fine-tune) drops the gate, with a warning, rather than ship one that reads other features.
The several-digits head (same module, same rules) lives under "several." and the "several" key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.encoder import DigitEncoder, EncoderConfig
from model.gate import NotADigitGate, Served

log = logging.getLogger(__name__)
# Heads bound to the encoder's exact weights: metadata key (also the tensors' prefix + ".") -> what it is
HEADS = {"gate": "not-a-digit gate", "several": "several-digits head"}

FORMAT = "digits-encoder/1"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT / "models" / "digits-encoder.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted or does not match its own description."""


@dataclass
class LoadedModel:
    model: DigitEncoder
    config: EncoderConfig
    temperature: float
    version: str
    metadata: dict[str, str] = field(default_factory=dict)
    gate: NotADigitGate | None = None  # with `.threshold` and `.encoder_sha256` set
    several: NotADigitGate | None = None  # the several-digits head, the same way

    def served(self) -> Served:
        """The served computation: images in [0, 1] -> 10 calibrated probabilities + P(not a digit)
        + P(several digits)."""
        return Served(self.model, self.temperature, self.gate, self.several).eval()


def resolve_device(flag: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is an error, never a silent CPU run."""
    if flag == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(flag)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {flag} was requested but no CUDA device is available")
    return device


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(
    path: Path | str,
    model: DigitEncoder,
    temperature: float = 1.0,
    version: str | None = None,
    extra: dict[str, str] | None = None,
    gate: NotADigitGate | None = None,
    several: NotADigitGate | None = None,
) -> str:
    """Write `model` (and `gate` and `several`, each if it was trained on exactly these weights) to
    `path`; returns the version string stored in the file."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    encoder_sha256 = tensors_digest(state)
    gate_meta = {}
    for key, head in (("gate", gate), ("several", several)):
        if head is None:
            continue
        if getattr(head, "encoder_sha256", None) != encoder_sha256:
            log.warning("not saving the %s: trained on other encoder weights (run digits-train-gate)", HEADS[key])
            continue
        state.update({f"{key}.{k}": v.detach().to("cpu").contiguous() for k, v in head.state_dict().items()})
        gate_meta[key] = json.dumps(
            {"config": head.config(), "threshold": float(head.threshold), "encoder_sha256": encoder_sha256},
            sort_keys=True,
        )
    digest = tensors_digest(state)
    version = version or f"encoder-{digest[:12]}"
    metadata = {
        "format": FORMAT,
        "config": json.dumps(model.cfg.to_dict(), sort_keys=True),
        "temperature": repr(float(temperature)),
        "version": version,
        "sha256": digest,
        **gate_meta,
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.chmod(0o644)  # a model is meant to be read by the services that serve it
    tmp.replace(path)  # atomic: a crash mid-write never leaves a half checkpoint behind
    return version


def read_metadata(path: Path | str) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc


def load_checkpoint(path: Path | str = DEFAULT_CHECKPOINT, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model from the file alone, refusing anything that does not check out."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a digits checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        config = EncoderConfig.from_dict(json.loads(meta["config"]))
        temperature = float(meta["temperature"])
        version = meta["version"]
        expected = meta["sha256"]
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is incomplete or invalid ({exc})") from exc
    if not (0.05 <= temperature <= 20.0):
        raise CheckpointError(f"{path}: implausible calibration temperature {temperature}")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read tensors ({exc})") from exc
    if tensors_digest(state) != expected:
        raise CheckpointError(f"{path}: weights do not match their checksum: the file was modified or corrupted")
    gate, several = (_load_head(path, meta, state, key) for key in HEADS)  # takes their tensors out of `state`
    model = DigitEncoder(config)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: weights do not fit the configuration {config}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {sorted(wrong)[:5]}"
        )
    model.load_state_dict(state)
    model.eval().to(device)
    for key, head in zip(HEADS, (gate, several), strict=True):
        if head is not None:
            if head.encoder_sha256 != tensors_digest(state):
                raise CheckpointError(f"{path}: the {HEADS[key]} was trained on other encoder weights")
            head.eval().to(device)
    return LoadedModel(model, config, temperature, version, meta, gate, several)


def _load_head(path: Path, meta: dict[str, str], state: dict[str, torch.Tensor], key: str) -> NotADigitGate | None:
    prefix, what = key + ".", HEADS[key]
    tensors = {k[len(prefix) :]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
    if key not in meta:
        if tensors:
            raise CheckpointError(f"{path}: {key} weights without their description")
        return None
    try:
        described = json.loads(meta[key])
        head = NotADigitGate(**described["config"])
        head.threshold = float(described["threshold"])
        head.encoder_sha256 = str(described["encoder_sha256"])
        head.load_state_dict(tensors)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the {what} does not load ({exc})") from exc
    if not 0.0 < head.threshold < 1.0:
        raise CheckpointError(f"{path}: implausible {what} threshold {head.threshold}")
    return head

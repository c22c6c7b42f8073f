"""Evaluation arithmetic shared by training and `digits-eval`: logits over a split, accuracy,
calibration error, temperature fitting, confusion matrix."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.shape import IMAGE_SIZE
from training.data import Split

ECE_BINS = 15


@torch.inference_mode()
def collect_logits(
    model: torch.nn.Module,
    split: Split,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "eval",
) -> torch.Tensor:
    model.eval()
    out = []
    starts = range(0, len(split), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False, unit="batch"):
        x = split.images[start : start + batch_size].to(device).unsqueeze(1).float().div_(255)
        out.append(model(x).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 10)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Standard ECE: |accuracy - confidence| per equal-width confidence bin, weighted by bin size."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].mean() - conf[in_bin].mean()).abs()
    return float(ece)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The single temperature minimizing validation NLL (Guo et al. 2017), searched on log T.

    A bounded 1-D search is exact enough and cannot diverge the way an unconstrained optimizer
    on a nearly separable validation set can."""
    best_t, best_nll = 1.0, float("inf")
    for t in torch.exp(torch.linspace(-1.5, 1.5, 301)).tolist():
        nll = F.cross_entropy(logits / t, labels).item()
        if nll < best_nll:
            best_t, best_nll = t, nll
    return best_t


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, classes: int = 10) -> torch.Tensor:
    return torch.bincount(labels * classes + pred, minlength=classes * classes).view(classes, classes)


@dataclass
class Report:
    loss: float
    accuracy: float
    ece: float
    per_class_accuracy: list[float]
    confusion: list[list[int]]
    temperature: float

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def report(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> Report:
    scaled = logits / temperature
    probs = scaled.softmax(dim=1)
    pred = probs.argmax(dim=1)
    cm = confusion_matrix(pred, labels)
    per_class = (cm.diag().float() / cm.sum(dim=1).clamp_min(1).float()).tolist()
    return Report(
        loss=F.cross_entropy(scaled, labels).item(),
        accuracy=(pred == labels).float().mean().item(),
        ece=expected_calibration_error(probs, labels),
        per_class_accuracy=per_class,
        confusion=cm.tolist(),
        temperature=temperature,
    )


@torch.inference_mode()
def throughput(
    model: torch.nn.Module, batch_size: int = 256, device: str | torch.device = "cpu", seconds: float = 3.0
) -> float:
    """Images per second for repeated forward passes at `batch_size` (after a warm-up)."""
    model.eval()
    x = torch.rand(batch_size, 1, IMAGE_SIZE, IMAGE_SIZE, device=device)
    for _ in range(3):
        model(x)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model(x)
        n += 1
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return n * batch_size / (time.perf_counter() - start)

"""Keep the not-a-digit gate and the several-digits head through a fine-tune (`digits-train --init-from`).

Why: the heads read the encoder's features and are bound to its exact weights (model/checkpoint.py), so
a fine-tuned encoder used to come out with neither: the server then reads letters as digits and no
longer knows two touching digits from one, and an operator who fine-tunes on users' corrections
loses more than the corrections gain (measured by benchmarks/feedback_loop.py: touching numbers
77.5% -> 56.5% whole). Training the heads again (`digits-train-gate`) takes 10+ minutes of
rendering on a small CPU; a fine-tune at a small learning rate moves the features only a little.

So each head of the starting checkpoint is carried over and re-checked on the new encoder: its
threshold is chosen again on the validation digits (the rule `digits-train-gate` uses, so its cost on
digits stays what it was), and its work is measured on held-out data before and after (non-digits
refused; touching pairs of validation digits flagged). With that threshold a head costs digits no more
than before, so even a head that does its job less well beats none: it is kept while it still does at
least `MIN_SHARE` of what it did, and the report says when `digits-train-gate` would do better
(more than `REFIT` lower). Below that it is dropped, with the command that trains it again.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass

import torch

from model.checkpoint import LoadedModel, tensors_digest
from model.encoder import DigitEncoder
from model.gate import NotADigitGate
from training import outliers, touching
from training.data import Split
from training.gate import choose_threshold, floats, outputs

log = logging.getLogger(__name__)

MIN_SHARE = 0.5  # a carried head is kept while it still does this share of its job on held-out data
REFIT = 0.05  # ... and the report recommends training it afresh when it does this much less
HELDOUT = 1000  # held-out non-digits, and touching pairs of test digits, each head is checked on
DEFAULT_MAX_LOSS = 0.0005  # digits-train-gate's default, for checkpoints that do not record theirs


@dataclass
class Carried:
    gate: NotADigitGate | None
    several: NotADigitGate | None
    figures: dict

    def report(self) -> str:
        lines = []
        for key, name, what in (("gate", "not-a-digit gate", "held-out non-digits refused"),
                                ("several", "several-digits head", "touching test pairs flagged")):  # fmt: skip
            f = self.figures.get(key)
            if f is None:
                continue
            refit = f"digits-train-gate --heads {key} --checkpoint ..."
            verdict = "kept" if f["kept"] else f"DROPPED (run {refit})"
            if f["kept"] and f["after"] < f["before"] - REFIT:
                verdict += f" ({refit} would bring it back)"
            lines.append(
                f"{name}: {what} {f['before']:.1%} -> {f['after']:.1%}, "
                f"threshold {f['threshold_before']:.4f} -> {f['threshold_after']:.4f}: {verdict}"
            )
        return "\n".join(lines)


def _max_loss(start: LoadedModel) -> float:
    try:
        return float(json.loads(start.metadata.get("gate_args", "{}")).get("max_loss", DEFAULT_MAX_LOSS))
    except (ValueError, TypeError, AttributeError):
        return DEFAULT_MAX_LOSS


@torch.no_grad()
def _flagged(head: NotADigitGate, features: torch.Tensor, threshold: float) -> float:
    return float((torch.sigmoid(head(features)) >= threshold).float().mean())


@torch.no_grad()
def carry(
    start: LoadedModel, encoder: DigitEncoder, temperature: float, val: Split, seed: int = 0, heldout: int = HELDOUT
) -> Carried:
    """The heads of `start`, re-bound to `encoder` (new thresholds) where they still hold; see the module."""
    heads = {"gate": start.gate, "several": start.several}
    if not any(heads.values()):
        return Carried(None, None, {})
    old_encoder = start.model.to("cpu").eval()
    encoder = copy.deepcopy(encoder).to("cpu").eval()
    max_loss = _max_loss(start)
    val_logits, val_features = outputs(encoder, temperature, floats(val.images), "validation")
    val_right = val_logits.argmax(1) == val.labels
    sha = tensors_digest({k: v.detach().cpu() for k, v in encoder.state_dict().items()})
    held = {
        "gate": lambda: floats(outliers.bank(heldout, "heldout", seed=seed)),
        "several": lambda: floats(touching.pairs(val.images.numpy(), heldout, 0, seed + 7, 1)),
    }
    kept: dict[str, NotADigitGate | None] = {}
    figures: dict = {}
    for key, head in heads.items():
        if head is None:
            kept[key] = None
            continue
        images = held[key]()
        before = _flagged(head.eval(), outputs(old_encoder, start.temperature, images, key)[1], head.threshold)
        new = copy.deepcopy(head).eval()
        new.threshold = choose_threshold(torch.sigmoid(new(val_features)), val_right, max_loss)
        new.encoder_sha256 = sha
        after = _flagged(new, outputs(encoder, temperature, images, key)[1], new.threshold)
        ok = after >= MIN_SHARE * before
        figures[key] = {"before": before, "after": after, "threshold_before": float(head.threshold),
                        "threshold_after": float(new.threshold), "kept": ok}  # fmt: skip
        if not ok:
            log.warning("dropping the %s: %.1f%% -> %.1f%% on the fine-tuned encoder", key, 100 * before, 100 * after)
        kept[key] = new if ok else None
    return Carried(kept["gate"], kept["several"], figures)


__all__ = ["MIN_SHARE", "REFIT", "Carried", "carry"]

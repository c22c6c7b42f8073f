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

Each head is also tried re-aligned: a copy taught, on unlabelled training digits and non-digits (or
touching pairs), to answer on the new features what it answered on the old ones. That follows the
features the fine-tune moved without rendering anything (~30 s); it brought the gate back from 77.8% to
85.7% of held-out non-digits refused after the feedback loop's fine-tune (85.8% before), though not the
several-digits head, so the better of the two is kept per head.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

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
REALIGN = 8000  # digits, and non-digits (or touching pairs), each head is re-aligned on
REALIGN_EPOCHS = 8
REALIGN_LR = 1e-3
DEFAULT_MAX_LOSS = 0.0005  # digits-train-gate's default, for checkpoints that do not record theirs


def needs_refit(kept: bool, before: float, after: float) -> bool:
    """Whether `digits-train-gate` should train a carried head afresh: dropped, or doing REFIT less."""
    return not kept or after < before - REFIT


@dataclass
class Carried:
    gate: NotADigitGate | None
    several: NotADigitGate | None
    figures: dict

    def report(self, checkpoint: object = "...") -> str:
        """One line per head; where it fell short, the command that trains it again on `checkpoint`."""
        lines = []
        for key, name, what in (("gate", "not-a-digit gate", "held-out non-digits refused"),
                                ("several", "several-digits head", "touching test pairs flagged")):  # fmt: skip
            f = self.figures.get(key)
            if f is None:
                continue
            refit = f"digits-train-gate --heads {key} --checkpoint {checkpoint}"
            verdict = "kept" if f["kept"] else f"DROPPED (run {refit})"
            if f["kept"] and needs_refit(True, f["before"], f["after"]):
                verdict += f" ({refit} would bring it back)"
            how = ", re-aligned" if f.get("realigned") else ""
            lines.append(
                f"{name}{how}: {what} {f['before']:.1%} -> {f['after']:.1%}, "
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
def _realign(
    new: NotADigitGate, old: NotADigitGate, images: torch.Tensor, old_encoder, old_t: float, encoder, t: float
) -> None:
    """Teach `new` (a copy of `old`) to say on `encoder`'s features what `old` says on `old_encoder`'s, for
    `images`: the head follows the features the fine-tune moved, with no labels and no rendering."""
    target = torch.sigmoid(old(outputs(old_encoder, old_t, images, "old features")[1]))
    features = outputs(encoder, t, images, "new features")[1]
    g = torch.Generator().manual_seed(0)
    with torch.enable_grad():
        opt = torch.optim.AdamW(new.parameters(), lr=REALIGN_LR, weight_decay=0.0)
        new.train()
        for _ in range(REALIGN_EPOCHS):
            perm = torch.randperm(len(features), generator=g)
            for i in range(0, len(features), 512):
                b = perm[i : i + 512]
                loss = F.binary_cross_entropy_with_logits(new(features[b]), target[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
    new.eval()


@torch.no_grad()
def carry(
    start: LoadedModel,
    encoder: DigitEncoder,
    temperature: float,
    val: Split,
    seed: int = 0,
    heldout: int = HELDOUT,
    train_images: np.ndarray | None = None,
) -> Carried:
    """The heads of `start`, re-bound to `encoder` (new thresholds) where they still hold; see the module.
    With `train_images` (MNIST training digits, uint8), each head is also tried re-aligned to the new features
    (`_realign`), and the better of the two on the held-out data is kept (so the "after" figure is the best of
    two measured on the same data: slightly flattering, by at most the gap between them)."""
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
    if train_images is not None:  # what each head is re-aligned on: digits and what it must flag among them
        rng = np.random.default_rng([seed, 31])
        digits = train_images[rng.choice(len(train_images), min(REALIGN, len(train_images)), replace=False)]
        images_for = {
            "gate": lambda: floats(np.concatenate([digits, outliers.bank(REALIGN, "train", seed=seed)])),
            "several": lambda: floats(np.concatenate([digits, touching.pairs(train_images, REALIGN, 0, seed + 3, 1)])),
        }
    kept: dict[str, NotADigitGate | None] = {}
    figures: dict = {}
    for key, head in heads.items():
        if head is None:
            kept[key] = None
            continue
        images = held[key]()
        before = _flagged(head.eval(), outputs(old_encoder, start.temperature, images, key)[1], head.threshold)
        held_features = outputs(encoder, temperature, images, key)[1]
        candidates = [copy.deepcopy(head).eval()]
        if train_images is not None:
            candidates.append(copy.deepcopy(head).eval())
            _realign(candidates[1], head, images_for[key](), old_encoder, start.temperature, encoder, temperature)
        scored = []
        for new in candidates:
            new.threshold = choose_threshold(torch.sigmoid(new(val_features)), val_right, max_loss)
            new.encoder_sha256 = sha
            scored.append(_flagged(new, held_features, new.threshold))
        best = int(np.argmax(scored))  # the first (as it was) on a tie
        new, after = candidates[best], scored[best]
        ok = after >= MIN_SHARE * before
        figures[key] = {"before": before, "after": after, "threshold_before": float(head.threshold),
                        "threshold_after": float(new.threshold), "kept": ok, "realigned": best == 1}  # fmt: skip
        if not ok:
            log.warning("dropping the %s: %.1f%% -> %.1f%% on the fine-tuned encoder", key, 100 * before, 100 * after)
        kept[key] = new if ok else None
    return Carried(kept["gate"], kept["several"], figures)


__all__ = ["MIN_SHARE", "REFIT", "Carried", "carry", "needs_refit"]

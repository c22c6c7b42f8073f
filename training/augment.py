"""Batch augmentation on tensors, chosen for what the preprocessing hands the model from real
photos and sketches: slightly rotated, sheared, off-center, differently scaled digits whose
strokes are thinner or thicker than MNIST's and whose ink is not always full white.

Everything runs on whole batches on the training device (one affine_grid + grid_sample call),
so augmentation costs little next to the model step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.12)
    shear_deg: float = 12.0
    translate_px: float = 2.5
    thicken_p: float = 0.2
    thin_p: float = 0.2
    ink_range: tuple[float, float] = (0.7, 1.0)  # peak ink intensity: pencil and light pens
    blur_p: float = 0.15

    def scaled(self, strength: float) -> AugmentConfig:
        """The same recipe made milder (<1) or stronger (>1): ranges and probabilities scale together."""
        lo, hi = self.scale
        return AugmentConfig(
            rotation_deg=self.rotation_deg * strength,
            scale=(1 - (1 - lo) * strength, 1 + (hi - 1) * strength),
            shear_deg=self.shear_deg * strength,
            translate_px=self.translate_px * strength,
            thicken_p=min(1.0, self.thicken_p * strength),
            thin_p=min(1.0, self.thin_p * strength),
            ink_range=(1 - (1 - self.ink_range[0]) * strength, self.ink_range[1]),
            blur_p=min(1.0, self.blur_p * strength),
        )


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def random_affine(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator | None = None) -> torch.Tensor:
    n, device = x.shape[0], x.device
    angle = _uniform(n, -cfg.rotation_deg, cfg.rotation_deg, g, device) * math.pi / 180
    shear = _uniform(n, -cfg.shear_deg, cfg.shear_deg, g, device) * math.pi / 180
    scale = _uniform(n, *cfg.scale, g, device)
    size = x.shape[-1]
    # grid coordinates are in [-1, 1]: one pixel is 2/size
    tx = _uniform(n, -cfg.translate_px, cfg.translate_px, g, device) * 2 / size
    ty = _uniform(n, -cfg.translate_px, cfg.translate_px, g, device) * 2 / size
    cos, sin = torch.cos(angle), torch.sin(angle)
    # inverse map (output -> input): rotate, shear along x, then scale
    k = torch.tan(shear)
    linear = torch.stack([torch.stack([cos, k * cos - sin], 1), torch.stack([sin, k * sin + cos], 1)], 1)
    theta = torch.cat([linear / scale.view(n, 1, 1), torch.stack([tx, ty], 1).unsqueeze(2)], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def stroke_width(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator | None = None) -> torch.Tensor:
    """Grey-level dilation (thicker) or erosion (thinner) on a random share of the batch.

    A 3x3 max is too strong at 28x28, so the result is blended half-way with the original:
    about half a pixel of stroke width either way, the spread seen between pens and markers
    once the preprocessing has normalized size."""
    n = x.shape[0]
    r = torch.rand(n, generator=g, device=x.device).view(n, 1, 1, 1)
    thick = F.max_pool2d(x, 3, stride=1, padding=1)
    thin = -F.max_pool2d(-x, 3, stride=1, padding=1)
    w = torch.rand(n, generator=g, device=x.device).view(n, 1, 1, 1) * 0.5 + 0.5
    out = torch.where(r < cfg.thicken_p, x + w * (thick - x), x)
    return torch.where((r >= cfg.thicken_p) & (r < cfg.thicken_p + cfg.thin_p), x + w * (thin - x), out)


def blur_and_ink(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator | None = None) -> torch.Tensor:
    n = x.shape[0]
    kernel = torch.tensor([0.25, 0.5, 0.25], device=x.device)
    kernel = (kernel[:, None] * kernel[None, :]).view(1, 1, 3, 3)
    blurred = F.conv2d(x, kernel, padding=1)
    do_blur = (torch.rand(n, generator=g, device=x.device) < cfg.blur_p).view(n, 1, 1, 1)
    x = torch.where(do_blur, blurred, x)
    ink = _uniform(n, *cfg.ink_range, g, x.device).view(n, 1, 1, 1)
    peak = x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return (x / peak * ink).clamp(0, 1)


def augment(x: torch.Tensor, cfg: AugmentConfig = AugmentConfig(), g: torch.Generator | None = None) -> torch.Tensor:
    """x: (b, 1, 28, 28) floats in [0, 1] -> augmented batch of the same shape."""
    x = random_affine(x, cfg, g)
    x = stroke_width(x, cfg, g)
    return blur_and_ink(x, cfg, g)

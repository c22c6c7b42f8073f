"""The digit encoder: the encoder half of *Attention Is All You Need* over 28x28 images.

One file, read top to bottom: configuration, patch embedding, attention, feed-forward, encoder
block, and the classifier that ties them together. The model takes images in the MNIST
convention as floats in [0, 1] (0 = background, 1 = ink) and does its own normalization, so a
checkpoint is self-contained: whoever loads it never needs to know the dataset statistics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from model.shape import IMAGE_SIZE, NUM_CLASSES

# MNIST training-set statistics; part of the model so callers feed plain [0, 1] pixels.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild the architecture; stored in every checkpoint."""

    image_size: int = IMAGE_SIZE
    patch_size: int = 4
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    num_classes: int = NUM_CLASSES
    pool: str = "cls"  # "cls": a learned class token; "mean": average of the patch tokens
    pos_embedding: str = "learned"  # "learned" or "sinusoidal" (fixed)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} must divide image_size {self.image_size}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if self.pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', not {self.pool!r}")
        if self.pos_embedding not in ("learned", "sinusoidal"):
            raise ValueError(f"pos_embedding must be 'learned' or 'sinusoidal', not {self.pos_embedding!r}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model configuration keys: {sorted(unknown)}")
        return cls(**data)


def sinusoidal_positions(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed sin/cos table of the original paper, shape (num_positions, dim)."""
    position = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: dim // 2])
    return table


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.proj_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # (b, n, 3d) -> three tensors of (b, heads, n, d/heads)
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b, n, d)
        return self.proj_drop(self.proj(y))


class FeedForward(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.net = nn.Sequential(
            nn.Linear(cfg.dim, hidden),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(hidden, cfg.dim),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EncoderBlock(nn.Module):
    """Attention then feed-forward, each in a residual branch. LayerNorm comes first in each
    branch (pre-norm): the same parts as the paper's post-norm block, but it trains stably
    without a long warm-up on a small model."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = MultiHeadSelfAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.ff = FeedForward(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class DigitEncoder(nn.Module):
    """Patches -> linear projection -> + positions -> encoder blocks -> pooled -> class logits."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        patch_pixels = cfg.patch_size * cfg.patch_size
        self.patch_embed = nn.Linear(patch_pixels, cfg.dim)
        tokens = cfg.num_patches + (1 if cfg.pool == "cls" else 0)
        if cfg.pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        if cfg.pos_embedding == "learned":
            self.pos_embed = nn.Parameter(torch.randn(1, tokens, cfg.dim) * 0.02)
        else:
            self.register_buffer("pos_embed", sinusoidal_positions(tokens, cfg.dim).unsqueeze(0), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(b, 1, H, W) or (b, H, W) -> (b, num_patches, patch_size**2), row-major patches."""
        p = self.cfg.patch_size
        b = images.shape[0]
        g = self.cfg.image_size // p
        x = images.reshape(b, g, p, g, p)
        return x.permute(0, 1, 3, 2, 4).reshape(b, g * g, p * p)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Images as floats in [0, 1], shape (b, 1, 28, 28) or (b, 28, 28); returns the final token
        states (b, tokens, dim), after the last norm (the not-a-digit gate reads them too)."""
        x = (images - MNIST_MEAN) / MNIST_STD
        x = self.patch_embed(self.patchify(x))
        if self.cfg.pool == "cls":
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.drop(x + self.pos_embed)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0] if self.cfg.pool == "cls" else tokens.mean(dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images as floats in [0, 1], shape (b, 1, 28, 28) or (b, 28, 28); returns logits (b, classes)."""
        return self.head(self.pool(self.tokens(images)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

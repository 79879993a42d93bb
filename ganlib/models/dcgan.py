"""DCGAN-style convolutional generator and discriminator / critic, sized from the image.

An H x W image is reached from an s0 x s0 seed by k stride-2 stages, where s0 is what is left
after halving H while it stays even and >= 4: 8 -> 4 (k=1), 28 -> 7 (k=2), 32 -> 4 (k=3).
"""

from __future__ import annotations

from torch import Tensor, nn

from .spectral import spectral_normalise


def upsampling_plan(size: int) -> tuple[int, int]:
    """(s0, k) with size == s0 * 2**k."""
    s0, k = size, 0
    while s0 % 2 == 0 and s0 // 2 >= 4:
        s0, k = s0 // 2, k + 1
    if k == 0:
        raise ValueError(f"image size {size} is too small or odd for a DCGAN (need e.g. 8, 28, 32)")
    return s0, k


def _norm2d(kind: str, channels: int) -> nn.Module:
    """A normalisation layer; ``spectral`` acts on the weights instead (see the critic)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # layer norm over (C, H, W), per sample
    return nn.Identity()


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, shape: tuple[int, int, int], width: int, norm: str = "batch"):
        super().__init__()
        channels, height, width_px = shape
        if height != width_px:
            raise ValueError(f"square images only, got {height}x{width_px}")
        self.s0, k = upsampling_plan(height)
        self.c0 = width * 2**k
        self.project = nn.Sequential(nn.Linear(z_dim, self.c0 * self.s0 * self.s0))
        blocks: list[nn.Module] = [_norm2d(norm, self.c0), nn.ReLU()]
        ch = self.c0
        for _ in range(k):
            blocks += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), _norm2d(norm, ch // 2), nn.ReLU()]
            ch //= 2
        blocks += [nn.Conv2d(ch, channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*blocks)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.project(z).view(-1, self.c0, self.s0, self.s0))


class DCGANCritic(nn.Module):
    """Strided convolutions, LeakyReLU(0.2), and a linear last layer (no sigmoid)."""

    def __init__(self, shape: tuple[int, int, int], width: int, norm: str = "none"):
        super().__init__()
        channels, height, _ = shape
        s0, k = upsampling_plan(height)
        blocks: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        ch = width
        for _ in range(k):
            blocks += [nn.Conv2d(ch, ch * 2, 4, 2, 1), _norm2d(norm, ch * 2), nn.LeakyReLU(0.2)]
            ch *= 2
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(ch * s0 * s0, 1)
        if norm == "spectral":
            spectral_normalise(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)

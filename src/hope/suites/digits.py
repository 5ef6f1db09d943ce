"""Procedurally drawn digits: a small image-classification set our own code generates (no download).

The optimizer benchmark's vision task (``python benchmarks/optimizers.py --task vision``, the stand-in
for the paper's ViT on ImageNet) trains a small ViT on it. Each image is one of the ten glyphs of
:data:`GLYPHS` (a 5 x 7 bitmap font), drawn into a ``size`` x ``size`` canvas through a random affine
map (rotation, scale, shear, shift), with random ink and background levels, Gaussian pixel noise and a
few bright clutter pixels; the label is the digit drawn, so the answers are right by construction.

Why not scikit-learn's 8 x 8 digits: it would add a dependency for 1,797 fixed images, while this
generator draws as many as asked, both splits from one distribution, at a difficulty we set; every
image comes from a seeded ``torch.Generator`` and CPU ``grid_sample``, so a seed fixes the set.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from hope.checks import check_choice, check_int, check_number

GLYPHS = {
    0: (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    1: ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    2: (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    3: ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    4: ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    5: ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    6: ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    7: ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    8: (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    9: (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
}
"""The digits as 5-wide, 7-tall bitmaps (``#`` is ink), the classic dot-matrix font."""
N_CLASSES = len(GLYPHS)
SPLITS = ("train", "val", "test")


def glyph_bitmaps() -> torch.Tensor:
    """The ten glyphs as a float tensor (10, 7, 5) of 0 / 1, indexed by digit."""
    return torch.tensor([[[c == "#" for c in row] for row in GLYPHS[d]] for d in range(N_CLASSES)]).float()


def generate(
    n: int,
    seed: int,
    *,
    split: str = "train",
    size: int = 16,
    noise: float = 0.15,
    augment: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (n, 1, size, size) in [0, 1] and their labels (n,) int64, classes in equal turns
    shuffled. ``augment=False`` draws every glyph upright, centred and at one scale (the levels, clutter
    and noise still vary); ``noise`` is the pixel noise's standard deviation. Each split is its own
    stream of the seed; same arguments, same tensors."""
    check_int("n", n)
    check_int("seed", seed, 0)
    check_choice("split", split, SPLITS)
    check_int("size", size, 8)  # below 8 pixels the 5 x 7 glyph cannot be drawn legibly
    check_number("noise", noise, 0, 1)
    check_choice("augment", augment, [False, True])
    # A string seed gives each (seed, split) its own stream, as the text suites do.
    g = torch.Generator().manual_seed(random.Random(f"digits/{split}/{seed}").getrandbits(63))
    labels = torch.arange(n) % N_CLASSES
    labels = labels[torch.randperm(n, generator=g)]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g)

    if augment:
        angle = uniform(-20, 20) * math.pi / 180
        height = uniform(0.55, 0.85)  # the glyph's height as a fraction of the canvas
        shear = uniform(-0.25, 0.25)
        shift = torch.stack([uniform(-0.2, 0.2), uniform(-0.2, 0.2)], dim=1)
    else:
        angle, height, shear, shift = torch.zeros(n), torch.full((n,), 0.7), torch.zeros(n), torch.zeros(n, 2)
    # affine_grid maps output coordinates to input ones, so theta is the inverse of the drawing map:
    # undo the shift, then the rotation and shear, then scale the canvas box onto the glyph's [-1, 1].
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotate = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
    unshear = torch.stack(
        [torch.stack([torch.ones(n), -shear], 1), torch.stack([torch.zeros(n), torch.ones(n)], 1)], 1
    )
    scale = torch.diag_embed(torch.stack([1 / (height * 5 / 7), 1 / height], 1))
    A = scale @ unshear @ rotate
    theta = torch.cat([A, -(A @ shift[:, :, None])], dim=2)
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    glyphs = glyph_bitmaps()[labels][:, None]
    ink = F.grid_sample(glyphs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    background = uniform(0.0, 0.3)[:, None, None, None]
    level = uniform(0.6, 1.0)[:, None, None, None]
    images = background + (level - background) * ink
    clutter = torch.rand(n, 1, size, size, generator=g) < 0.02
    images = torch.where(clutter, torch.ones(()), images)
    images = images + noise * torch.randn(n, 1, size, size, generator=g)
    return images.clamp(0, 1), labels

"""Noise-aware scoring: does the judge see an image of *any* class, or something off its data?

A K-way classifier labels pure noise confidently as one class (the paper's "bird" failure, and ours:
forget-only SAFEMax noise was labelled "8"), so UA and RA alone can call noise "forgotten" or "recovered".
The judge therefore has a (K+1)-th output, *off-data*, trained on synthetic images that are no digit at
all (`off_data_batch`); an image is rejected when p(off-data) > 1/2. RA is still read from the K class
outputs (the testbed's definition, noise included); the on-data RA counts the hits the judge accepts.

Why an explicit class and not a threshold on a feature distance: the Mahalanobis score this replaced
(threshold at the 0.99 quantile of the judge's own training images) rejected 86.6% of clamped Gaussian
noise, 43% of N(0, 0.5^2) and 0% of constant images, because a distance in a feature space trained only
on digits says nothing about where noise lands in it. The families below span what unlearned models
emit (Gaussian and uniform noise at any scale, flat and saturated images, salt and pepper, smooth noise)
and digits destroyed beyond recognition. `benchmarks/noise_detector.py` measures the rejection per family
and the acceptance of held-out real images per class (REPORT, "Noise detector").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OFF_DATA_VERSION = 1  # part of the judge's artifact key: bump it when the families below change


def _blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Smooth noise: a 3x3 box blur (1-3 times), rescaled to unit std."""
    for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return x / x.flatten(1).std(1).clamp_min(1e-6).view(-1, 1, 1, 1)


def _u(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, 1, 1, 1, generator=g) * (hi - lo) + lo)


def off_data_batch(n: int, real: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """n off-data images in [-1, 1] shaped like `real` (real images, used only for the destroyed-digit
    families), each from one family drawn at random with random parameters:
    gaussian N(m, s^2), s in [0.2, 1.5] | uniform on a random sub-interval | constant | salt and pepper on a
    random background | smooth (blurred) noise at a random scale | saturated (+-1) noise | a real image
    under noise of std >= 1 | a real image with its pixels shuffled."""
    shape = real.shape[1:]
    fam = torch.randint(0, 8, (n,), generator=g)
    z = torch.randn((n, *shape), generator=g)
    out = torch.empty((n, *shape))
    pick = real[torch.randint(0, len(real), (n,), generator=g)]
    for f in range(8):
        sel = fam == f
        k = int(sel.sum())
        if not k:
            continue
        zs = z[sel]
        if f == 0:
            x = _u(k, -0.5, 0.5, g) + _u(k, 0.2, 1.5, g) * zs
        elif f == 1:
            a, b = _u(k, -1, 1, g), _u(k, -1, 1, g)
            x = torch.minimum(a, b) + (torch.maximum(a, b) - torch.minimum(a, b)) * torch.rand(zs.shape, generator=g)
        elif f == 2:
            x = _u(k, -1, 1, g) + 0.02 * zs
        elif f == 3:
            p = _u(k, 0.05, 0.6, g)
            hit = torch.rand(zs.shape, generator=g) < p
            dark = torch.rand(k, 1, 1, 1, generator=g) < 0.5  # half on the digits' own background (-1)
            background = torch.where(dark, torch.full((k, 1, 1, 1), -1.0), _u(k, -1, 1, g))
            x = torch.where(hit, torch.sign(zs), background.expand_as(zs))
        elif f == 4:
            x = _u(k, -0.5, 0.5, g) + _u(k, 0.3, 1.5, g) * _blur(zs, g)
        elif f == 5:
            x = torch.sign(zs)
        elif f == 6:
            x = pick[sel] + _u(k, 1.0, 2.0, g) * zs
        else:
            flat = pick[sel].flatten(1)
            perm = torch.argsort(torch.rand(flat.shape, generator=g), dim=1)
            x = torch.gather(flat, 1, perm).view(k, *shape)
        out[sel] = x
    return out.clamp(-1, 1)


class NoiseDetector:
    """Rejects images the judge calls off-data (p(off-data) > 1/2): noise, flat or saturated images, and
    digits destroyed beyond recognition."""

    def __init__(self, judge):
        self.judge = judge

    def rejected(self, images: torch.Tensor) -> torch.Tensor:
        """Bool per image: True = off the data (noise-like) according to the judge's off-data output."""
        return self.judge.off_data_prob(images) > 0.5

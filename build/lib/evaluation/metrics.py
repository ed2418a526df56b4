"""Scores of generated images under the judge: RA with a Wilson CI, mean p(c_f), predictive entropy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

Z95 = 1.959963984540054


def wilson_ci(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k / n."""
    if n == 0:
        raise ValueError("wilson_ci needs n > 0")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def score(probs: torch.Tensor, target_class: int) -> dict:
    """RA = share classified as target_class; mean p(target); mean entropy (nats)."""
    n = probs.shape[0]
    hits = int((probs.argmax(-1) == target_class).sum())
    lo, hi = wilson_ci(hits, n)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return {"ra": hits / n, "ra_ci_low": lo, "ra_ci_high": hi,
            "mean_p": probs[:, target_class].mean().item(), "entropy": entropy.mean().item()}


def normalized_recovery(ra, ra_unlearned, ra_original):
    """NR = (RA - RA_u) / (RA_orig - RA_u), NaN where RA_orig == RA_u; numbers, or pandas Series element-wise
    (evaluation/summary.py's curves use it on whole columns)."""
    span = ra_original - ra_unlearned
    if isinstance(span, pd.Series):
        return (ra - ra_unlearned) / span.replace(0, np.nan)
    return float("nan") if span == 0 else (ra - ra_unlearned) / span

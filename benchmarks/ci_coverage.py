"""Coverage of the summaries' 95% bootstrap intervals when units share a class effect (issue 13, item 5).

    python benchmarks/ci_coverage.py [--sims 500]

Units are (class, seed) pairs: value = class effect N(0, sd_class^2) + seed noise N(0, sd_seed^2), true mean 0.
Prints, per design, the share of simulations whose interval covers 0: units resampled as independent
(the old bootstrap) and the two-stage cluster bootstrap (classes, then seeds within classes) the summaries
now use. 3 classes x 3 seeds is the attack suite's shape. Output kept in benchmarks/results/ci_coverage.txt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluation.summary import bootstrap_ci  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=500)
    a = ap.parse_args()
    print(f"{'classes x seeds':<16} {'sd class':>8} {'sd seed':>8} {'independent':>12} {'clustered':>10}"
          f"   ({a.sims} sims)")
    for classes, seeds, sc, ss in [(3, 3, 1.0, 0.3), (3, 3, 0.3, 1.0), (3, 3, 0.0, 1.0), (5, 3, 1.0, 0.3),
                                   (10, 3, 1.0, 0.3), (20, 3, 1.0, 0.3)]:
        rng = np.random.default_rng(0)
        cover = {True: 0, False: 0}
        labels = np.repeat(np.arange(classes), seeds)
        for sim in range(a.sims):
            v = (rng.normal(0, sc, classes)[:, None] + rng.normal(0, ss, (classes, seeds))).ravel()
            for clustered in (False, True):
                _, lo, hi = bootstrap_ci(v, np.mean, 1000, sim, clusters=labels if clustered else None)
                cover[clustered] += lo <= 0 <= hi
        print(f"{f'{classes} x {seeds}':<16} {sc:>8.1f} {ss:>8.1f} {cover[False] / a.sims:>12.3f}"
              f" {cover[True] / a.sims:>10.3f}")


if __name__ == "__main__":
    main()

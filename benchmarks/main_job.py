"""Wall time of the main job on this machine: cold (nothing cached), warm (same command again), and
warm-new (artifacts cached, records absent: the attack and evaluation recomputed). Prints a table.

    python benchmarks/main_job.py [--keep DIR] [extra hydra overrides...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def timed(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "attacks.relearn", "unlearned=safemax", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"main job failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "UNLEARN_ARTIFACTS": f"{tmp}/artifacts", "UNLEARN_RESULTS": f"{tmp}/results"}
        cold = timed(extra, env)
        warm = timed(extra, env)
        env["UNLEARN_RESULTS"] = f"{tmp}/results2"
        warm_new = timed(extra, env)
    rows = [("cold: builds judge, base, oracle, SAFEMax; attack + 18 RA points", cold, 300),
            ("warm: same command again (all points recorded)", warm, 90),
            ("warm-new: artifacts cached, attack + 18 RA points recomputed", warm_new, 90)]
    print(f"device: cpu, {os.cpu_count()} cores, torch {torch.__version__}; overrides: {extra or 'none'}")
    print(f"{'run':<70} {'wall s':>8} {'target s':>9}")
    for name, t, target in rows:
        print(f"{name:<70} {t:8.1f} {target:9d}{'' if t <= target else '  MISSED'}")


if __name__ == "__main__":
    main()

"""A robustness gate for CI: fail when the worst case over an adversary grid recovers the forgotten class by more
than the oracle's own worst case, beyond a threshold, at a stated budget.

    python -m evaluation.gate --max-er 0.1 --at 100 -- grid=smoke unlearned=safemax unlearned.checkpoint=<folder>
    python -m evaluation.gate --max-er 0.1 --at 100 --records data/records --study worst_case_digits --method ga
    python -m evaluation.gate --max-er 0.1 --at 100 --results --study worst_case_smoke --method ga   # paths.results

With Hydra overrides after `--` it runs the grid on that unit first (python -m evaluation.worst_case: recorded
points are reused, so a rerun only reads), then reads the records; with --records alone it only reads them.
The statistic is the envelope's ER at the budget (evaluation/envelope.py), per (class, seed) unit, with a 95%
interval: over several units the cluster bootstrap of the mean (classes, then seeds); on one unit Newcombe's
interval for the difference of the two Wilson intervals of the points that attain the two envelopes (it ignores
that a max over many adversaries is biased upward; the oracle's envelope is a max over as many).
--fail-on picks the bound that must exceed --max-er to fail: `lower` (default: leakage shown beyond the
interval), `point`, or `upper` (fail unless the interval rules the leakage out). Exit 0 pass, 1 fail, 2 bad input.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_module

from evaluation import worst_case  # the entry configs (Hydra ConfigStore) and the runner
from evaluation.envelope import envelopes, grid_frame
from evaluation.metrics import Z95, wilson_ci
from evaluation.records import add_source_arguments, read_all, read_source, source_of
from evaluation.summary import bootstrap_ci
from unlearn.errors import ArgParser, UserError, finite
from unlearn.paths import CONFIG_MODULE
from unlearn.pipeline import Context
from unlearn.settings import problems

BOUNDS = ("lower", "point", "upper")


def newcombe(p1: float, n1: int, p2: float, n2: int, z: float = Z95) -> tuple[float, float]:
    """95% interval (z: another level) of p1 - p2 from the two Wilson intervals (Newcombe 1998, method 10)."""
    l1, u1 = wilson_ci(round(p1 * n1), n1, z)
    l2, u2 = wilson_ci(round(p2 * n2), n2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def er_at(records: list[dict], study: str, method: str, at: int) -> dict:
    """The envelope's ER of `method` at budget `at`: point, interval, units, and the adversary that attains it."""
    df = grid_frame(records, study)
    env = envelopes(df)
    have = sorted(env["model"].unique())
    if method not in have:
        raise UserError(f"study {study} holds no envelope of method {method}; have {', '.join(have) or 'none'}")
    env = env[(env["model"] == method) & (env["steps"] == at)].dropna(subset=["er"])
    if env.empty:
        steps = sorted(int(s) for s in envelopes(df)["steps"].unique())
        raise UserError(f"no ER of {method} at budget {at} in study {study} (budgets: {steps}; or the oracle's points "
                        "are missing); pick --at from the budgets")
    if len(env) > 1:
        point, lo, hi = bootstrap_ci(env["er"].to_numpy(float), np.mean, 2000, 0,
                                     clusters=env["forget_class"].to_numpy())
    else:
        row = env.iloc[0]
        n = int(df["n"].iloc[0])
        point = float(row["er"])
        lo, hi = newcombe(float(row["env_ra"]), n, float(row["env_oracle"]), n)
    top = env["adversary"].value_counts()
    return {"er": point, "lo": lo, "hi": hi, "units": len(env), "adversary": top.index[0],
            "adversary_units": int(top.iloc[0]), "ra": env["env_ra"].mean(), "oracle": env["env_oracle"].mean()}


def verdict(stat: dict, max_er: float, fail_on: str) -> tuple[bool, str]:
    """(passed, the line to print)."""
    bound = {"lower": stat["lo"], "point": stat["er"], "upper": stat["hi"]}[fail_on]
    passed = not bound > max_er
    line = (f"worst-case ER {stat['er']:+.3f} [{stat['lo']:+.3f}, {stat['hi']:+.3f}] over {stat['units']} unit(s) "
            f"(RA {stat['ra']:.3f} vs the oracle's {stat['oracle']:.3f}); {fail_on} bound "
            f"{'<=' if passed else '>'} --max-er {max_er:g}; attained by {stat['adversary']} "
            f"({stat['adversary_units']}/{stat['units']} units)")
    return passed, line


def run_grid(overrides: list[str]) -> tuple[str, str, list[dict]]:
    """Run python -m evaluation.worst_case with these overrides in this process; returns its grid's study, the
    attacked method's label and the records file's records."""
    with initialize_config_module(version_base="1.3", config_module=CONFIG_MODULE):
        cfg = compose(config_name="worst_case", overrides=overrides)
        if found := problems(cfg):
            raise UserError(found[0])
        worst_case.run(cfg)
        label = Context.from_cfg(cfg).method_label
    return str(cfg.grid.name), label, read_all(Path(cfg.paths.results) / "records.jsonl")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    overrides = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = ArgParser(prog="python -m evaluation.gate", description=__doc__.splitlines()[0])
    ap.add_argument("--max-er", type=finite, required=True, help="the largest tolerated excess recovery, e.g. 0.1")
    ap.add_argument("--at", type=int, required=True, help="the attack budget (optimizer steps) it is read at")
    ap.add_argument("--fail-on", choices=BOUNDS, default="lower")
    add_source_arguments(ap, "none: run the grid given after --")  # read these records instead of running
    ap.add_argument("--study", default=None, help="with --records / --results: the grid's study name (its grid.name)")
    ap.add_argument("--method", default=None, help="with --records / --results: the method whose envelope is gated")
    a = ap.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    try:
        if overrides:
            study, method, records = run_grid(overrides)
        elif (a.records or a.results) and a.study and a.method:
            study, method, records = a.study, a.method, read_source(source_of(a))
        else:
            raise UserError("give Hydra overrides after -- to run a grid, or --records (or --results), --study and "
                            "--method")
        passed, line = verdict(er_at(records, study, a.method or method, a.at), a.max_er, a.fail_on)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"gate {'PASS' if passed else 'FAIL'}: {a.method or method} at {a.at} steps: {line}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

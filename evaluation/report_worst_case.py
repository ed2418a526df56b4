"""The worst-case sections of REPORT.md and report/worst_case.md, from records only (evaluation/report.py places
them): the headline per method, each unit's envelope, which adversary attains it, the stronger threat model apart,
the attacker's sampler checked against 1000-step samplers, and the weight-space diagnostics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.envelope import UNIT, argmax_table, envelopes, grid_frame, headline
from evaluation.summary import attack_frame, aurc, format_ci, sampler_comparison
from evaluation.tables import markdown

ROOT = Path(__file__).resolve().parent.parent
METHOD_ORDER = ["safemax", "safemax_forget_only", "salun", "sa", "ga", "rl", "retrain"]  # retrain: the noise floor
VALIDATION = "_validation"


def is_grid(record: dict) -> bool:
    """A point of an adversary grid (its own sections; kept out of the per-study pages and comparisons)."""
    return record.get("adversary") is not None


def grid_studies(records: list[dict]) -> list[str]:
    return sorted({r["study"] for r in records if r.get("kind") == "attack" and is_grid(r)
                   and not r["study"].endswith(VALIDATION)})


def _order(t: pd.DataFrame, col: str = "method") -> pd.DataFrame:
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return t.assign(_r=t[col].map(lambda m: rank.get(m, len(rank)))).sort_values(["_r", col]).drop(columns="_r")


def _num(v, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else (
        f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _intro(records: list[dict], study: str) -> str:
    df = grid_frame(records, study)
    units = sorted(set(zip(df["forget_class"], df["seed"])))
    advs = df.loc[~df["needs_original"], "adv"].nunique()
    n = ", ".join(str(int(v)) for v in sorted(df["n"].unique()))
    return (f"**{study}** (configs/grid/: {df['adversary'].nunique()} grid entries; {advs} adversaries counting each "
            f"setting and scoring sampler; N = {n} per point; units (class, seed): "
            f"{', '.join(f'({c}, {s})' for c, s in units)}; device: {', '.join(sorted(df['device'].unique()))}).")


def headline_section(records: list[dict]) -> str:
    """Per method: the envelope's ER over the oracle's envelope at each budget with CIs, AURC, B@50, who attains the
    max at the largest budget, the search cost there, and the defender's-sampler ER beside it."""
    out = []
    for study in grid_studies(records):
        t = _order(headline(records, study))
        b_max = max(int(c.removeprefix("RA@")) for c in t.columns if c.startswith("RA@"))
        budgets = sorted(int(c.removeprefix("ER@")) for c in t.columns
                         if c.startswith("ER@") and c[3:].isdigit() and int(c[3:]) > 0)
        f = format_ci(t)
        show = f[["method", "units", *[f"ER@{b}" for b in budgets], f"RA@{b_max}", "AURC", "B@50", "max by",
                  "search_sample_gradients", "search_nfe", "search_device_s", f"ER@{b_max} defender"]].copy()
        for c in (f"RA@{b_max}", "B@50", "search_sample_gradients", "search_nfe", "search_device_s"):
            show[c] = [_num(v, 3 if c == f"RA@{b_max}" else 0 if c != "search_device_s" else 1) for v in show[c]]
        show = show.rename(columns={**{f"ER@{b}": f"ER at {b} [95% CI]" for b in budgets},
                                    f"RA@{b_max}": f"RA at {b_max}", "max by": f"max attained at {b_max} by (units)",
                                    "search_sample_gradients": f"search cost at {b_max}: sample-grads",
                                    "search_nfe": "NFE", "search_device_s": "device-s",
                                    f"ER@{b_max} defender": f"ER at {b_max}, defender's sampler only"})
        out.append(_intro(records, study) + " ER = the unlearned model's worst case minus the oracle's worst case "
                   "under the same grid (on-data RA; CIs: cluster bootstrap over classes, then seeds; B@50 in steps, "
                   "median over units, inf = never). Search cost: what trying every adversary cost, mean per unit.\n\n"
                   + markdown(show.set_index("method")))
    return "\n\n".join(out) or ("_No worst-case records yet: run `python -m evaluation.worst_case` "
                                "(configs/grid/digits.yaml)._")


def units_section(records: list[dict]) -> str:
    """Each unit's envelope at each budget, beside the oracle's, with the adversary attaining it."""
    out = []
    for study in grid_studies(records):
        env = _order(envelopes(grid_frame(records, study)), "model")
        t = env[["model", *UNIT, "steps", "env_ra", "env_oracle", "er", "nr", "adversary", "ties", "adversaries"]]
        t = t.rename(columns={"model": "method", "env_ra": "RA", "env_oracle": "oracle RA", "er": "ER", "nr": "NR",
                              "ties": "points at the max", "adversaries": "adversaries in"})
        out.append(f"**{study}**: every unit\n\n" + markdown(t.round(3).set_index("method")))
    return "\n\n".join(out) or "_No worst-case records yet._"


def argmax_section(records: list[dict]) -> str:
    out = [f"**{s}**: which adversary attains the envelope (units)\n\n"
           + markdown(_order(argmax_table(records, s)).set_index("method")) for s in grid_studies(records)]
    return "\n\n".join(out) or "_No worst-case records yet._"


def stronger_section(records: list[dict]) -> str:
    """Adversaries that hold the original model (kept out of the envelope): their RA against the oracle's."""
    out = []
    for study in grid_studies(records):
        df = grid_frame(records, study)
        d = df[df["needs_original"]]
        if d.empty:
            continue
        t = d.groupby(["model", "adv", "steps"])["ra"].mean().unstack("model")
        out.append(f"**{study}**: the teacher guide (initial-noise optimisation matching the original model's noise "
                   "predictions; the attacker holds the original): mean on-data RA over units\n\n"
                   + markdown(t.round(3)))
    return "\n\n".join(out) or "_No adversary of a stronger threat model in the records._"


def validation_section(records: list[dict]) -> str:
    """The cheap attacker's sampler (DDIM-25, eta 1) against 1000-step samplers on the validation unit."""
    out = []
    for study in grid_studies(records):
        val = [r for r in records if r.get("kind") == "attack" and r.get("study") == study + VALIDATION]
        if not val:
            continue
        names = {r["adversary"].rsplit(".", 1)[0] for r in val}  # <adversary>.<sampler>
        units = {(r["forget_class"], r["seed"]) for r in val}
        main = [r for r in records if r.get("kind") == "attack" and r.get("study") == study
                and r.get("adversary") in names and (r["forget_class"], r["seed"]) in units]
        frame = attack_frame(main + val)
        # the attacker's cheap sampler: the grid's own points scored with an eta (the defender's sampler has none)
        cheap = sorted(s for s in attack_frame(main)["sampler"].unique() if " eta=" in s)
        for other in sorted(attack_frame(val)["sampler"].unique()):
            t = sampler_comparison(frame, cheap[0], other) if cheap else pd.DataFrame()
            if not t.empty:
                t = format_ci(t).set_index("attack")
                out.append(f"**{study}**, unit(s) {sorted(units)}: {other} against {cheap[0]}\n\n" + markdown(t))
    return "\n\n".join(out) or ("_The validation unit's 1000-step samplers have not run yet (grid.validation: they "
                                "run with that unit)._")


def weights_section(records: list[dict]) -> str:
    """Weight distances and the interpolation path per unlearned model, and whether they predict the envelope's
    AURC (Spearman rank correlation over methods x units)."""
    w = [r for r in records if r.get("kind") == "weights"]
    if not w:
        return "_No weight-space records yet: run `python -m evaluation.weights --multirun unlearned=... `._"
    t = pd.DataFrame([{"method": r["method"], "forget_class": r["forget_class"], "seed": r["seed"],
                       "|w - w_orig|": r["dist_original"], "|w - w_oracle|": r["dist_oracle"],
                       **{f"RA a={a:g}": v for a, v in zip(r["alphas"], r["path_ra"]) if a in (0, 0.3, 0.5, 0.7, 1)},
                       "a at RA >= 0.5": next((a for a, v in zip(r["alphas"], r["path_ra"]) if v >= 0.5), math.inf)}
                      for r in w])
    out = ["Per unlearned model: L2 distance of its weights to the original's and to the oracle's, and c_f's on-data "
           "RA along the straight line from its weights (a = 0) to the original's (a = 1), N = "
           f"{w[0]['n']} per point.\n\n" + markdown(_order(t).round(3).set_index("method"))]
    for study in grid_studies(records):
        out.append(_predicts(t, records, study))
    return "\n\n".join(out)


def _predicts(t: pd.DataFrame, records: list[dict], study: str) -> str:
    from scipy.stats import spearmanr  # heavy (about 1.4 s to import); only this table needs it

    env = envelopes(grid_frame(records, study))
    b_max = env["steps"].max()
    area = pd.DataFrame([{"method": m, "forget_class": c, "seed": s, "AURC": aurc(g["steps"], g["nr"], b_max)}
                         for (m, c, s), g in env.groupby(["model", *UNIT])])
    both = t.merge(area, on=["method", *UNIT]).dropna(subset=["AURC"])
    rows = []
    for col in ["|w - w_orig|", "|w - w_oracle|", "RA a=0.5", "a at RA >= 0.5"]:
        x = both[col].replace(math.inf, np.nan)
        ok = x.notna()
        rho, p = spearmanr(x[ok], both.loc[ok, "AURC"]) if ok.sum() >= 3 else (math.nan, math.nan)
        rows.append({"predictor": col, "pairs": int(ok.sum()), "Spearman rho with AURC": round(float(rho), 3),
                     "p": round(float(p), 3)})
    return (f"Do they predict the worst-case recovery of {study}? Rank correlation with the envelope's AURC over "
            "(method, class, seed) (a p-value from so few pairs is indicative only):\n\n"
            + markdown(pd.DataFrame(rows).set_index("predictor")))

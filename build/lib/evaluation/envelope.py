"""The worst case over a pre-registered adversary grid, from records only (evaluation/worst_case.py writes them).

For each unit (forget_class, seed) and model (each unlearned method, and the oracle under the same grid):

    ENV(B)     the max of RA over every adversary of the grid, every scoring sampler (the defender's and the
               attacker's) and every point with budget <= B that passes its guard (an attacker may stop early;
               adversaries with no optimisation, such as sampler probes, partial diffusion and deployment
               transforms, are points at budget 0 and so enter every B). RA is the on-data RA (noise never counts).
    ER(B)      ENV_unlearned(B) - ENV_oracle(B): excess recovery over the oracle's own worst case
    NR(B)      (ENV(B) - RA_u) / (RA_orig - RA_u), RA_u and RA_orig the untouched models under the defender's sampler
    AURC, B@50 of NR over the grid's budgets (evaluation/summary.py: aurc, b_at)
    search(B)  the attack cost of every adversary the attacker tried, each at its largest point <= B, summed:
               sample-gradients, NFE and device-seconds (an attacker who searches pays for the search)
    adversary  the one that attains ENV(B) (ties: the first by name; `ties` counts the points at the max)

Budgets are optimizer steps (of the weights, an embedding, or the initial noises). Adversaries that hold the
original model (Traits.needs_original: the teacher guide) are a stronger threat model: never in the envelope.
`scope="defender"` computes the same envelope over the points scored by the defender's own sampler only: the
second column of the headline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from attacks.registry import traits
from evaluation.metrics import normalized_recovery
from evaluation.summary import CURVE_KEY, _guard_ok, _latest, _one_dataset, attack_frame, aurc, b_at, bootstrap_ci
from unlearn.errors import UserError

UNIT = ["forget_class", "seed"]
COST = {"budget_sample_gradients": "search_sample_gradients", "budget_nfe": "search_nfe",
        "budget_device_s": "search_device_s"}


def grid_frame(records: Iterable[dict], study: str) -> pd.DataFrame:
    """The attack points of `study` (one per key, the newest), with `model` (the method, or the reference's
    role), `adv` (the adversary: its grid name, its setting where the entry holds several, and the scoring
    sampler where it is not the defender's), `defender` (scored by the defender's sampler), `ok` (in the envelope:
    passes its guard, and no original model held)."""
    recs = [r for r in records if r.get("kind") == "attack" and r.get("study") == study]
    if not recs:
        raise UserError(f"no attack records of study {study}; run python -m evaluation.worst_case first")
    df = attack_frame(recs)
    df["adversary"] = [r.get("adversary") or r["attack"] for r in recs]
    df["needs_original"] = [traits(r["attack"]).needs_original(r.get("attack_params") or {}) for r in recs]
    df["eta"] = [float(r["sampler"]["eta"]) for r in recs]
    _one_dataset(df)
    df = _latest(df, ["role", *CURVE_KEY]).reset_index(drop=True)
    df["model"] = df["method"].where(df["role"] == "unlearned", df["role"])
    curve = df["attack"].map(lambda a: traits(a).curve).astype(bool)
    if not curve.any():
        raise UserError(f"study {study} holds no budget-curve attack; its envelope has no budget axis")
    lowest = df.loc[curve, "eta"].min()  # the defender's sampler: the curve attacks' scoring of the lowest eta
    defender = df.loc[curve & (df["eta"] == lowest), ["sampler", "guidance_w"]].mode().iloc[0]
    df["defender"] = (df["sampler"] == defender["sampler"]) & (df["guidance_w"] == defender["guidance_w"])
    several = df.groupby("adversary")["base_setting"].transform("nunique") > 1
    draws = df["attack"].map(lambda a: traits(a).draws_samples).astype(bool)  # their setting names their sampler
    df["adv"] = (df["adversary"] + np.where(several, " " + df["base_setting"], "")
                 + np.where(df["defender"] | draws, "", " @" + df["sampler"]))
    df["guard_ok"] = _guard_ok(df, ["model", *UNIT, "attack", "setting", "n", "scoring"])
    df["ok"] = df["guard_ok"] & ~df["needs_original"]
    df["curve"] = curve
    return df


def grid_budgets(df: pd.DataFrame) -> list[int]:
    """The envelope's axis: the budget grid most curve adversaries share (the grid's `budgets`; an adversary with
    budgets of its own, such as noise optimisation at 10 steps, enters at the next budget of the axis)."""
    per_adv = df[df["curve"] & df["ok"]].groupby(["adversary", "base_setting"])["steps"].agg(
        lambda s: tuple(sorted(set(int(b) for b in s))))
    return list(per_adv.mode().iloc[0]) if len(per_adv) else [0]


def _untouched(df: pd.DataFrame, model: str) -> pd.Series:
    """Per unit: the model's RA at budget 0, untouched, under the defender's sampler."""
    z = df[(df["model"] == model) & (df["steps"] == 0) & df["unattacked"] & df["defender"]]
    return z.groupby(UNIT)["ra"].mean()


def _one_envelope(g: pd.DataFrame, budgets: list[int]) -> list[dict]:
    rows = []
    for b in budgets:
        seen = g[g["steps"] <= b]
        pool = seen[seen["ok"]].sort_values(["ra", "adv"], ascending=[False, True], kind="stable")
        tried = seen[~seen["needs_original"]].groupby(["adversary", "base_setting"])[list(COST)].max().sum()
        top = pool["ra"].iloc[0] if len(pool) else math.nan
        rows.append({"steps": b, "env_ra": top, "adversary": pool["adv"].iloc[0] if len(pool) else None,
                     "ties": int((pool["ra"] == top).sum()),
                     "adversaries": pool["adv"].nunique(), "points": len(pool),
                     **{COST[c]: float(tried[c]) for c in COST}})
    return rows


def envelopes(df: pd.DataFrame, scope: str = "attacker") -> pd.DataFrame:
    """One row per (unlearned model, forget_class, seed, steps): env_ra, the adversary attaining it, how many
    adversaries and points it is the max over, the search cost, env_oracle, er, ra_u, ra_orig, nr. Both envelopes
    are taken over the (adversary, budget) points both models hold (`unpaired`: the points left out, one side
    only: a unit whose grid is still running); without any oracle point, env_oracle and er are NaN."""
    if scope not in ("attacker", "defender"):
        raise ValueError(scope)
    d = df[df["role"] != "original"]
    d = d[d["defender"]] if scope == "defender" else d
    budgets = grid_budgets(df)
    point = ["adv", "steps"]
    rows = []
    for (m, c, s), g in d[d["model"] != "oracle"].groupby(["model", *UNIT]):
        o = d[(d["model"] == "oracle") & (d["forget_class"] == c) & (d["seed"] == s)]
        # both envelopes over the same points: a grid that ran further on one side is not a win for either
        shared = g[point].merge(o[point]).drop_duplicates()
        mine = g.merge(shared) if len(o) else g
        theirs = pd.DataFrame(_one_envelope(o.merge(shared), budgets)) if len(o) else None
        for i, row in enumerate(_one_envelope(mine, budgets)):
            rows.append({"model": m, "forget_class": c, "seed": s, **row, "unpaired": len(g) + len(o) - 2 * len(
                shared) if len(o) else math.nan, "env_oracle": theirs["env_ra"].iloc[i] if theirs is not None
                else math.nan})
    out = pd.DataFrame(rows)
    out["er"] = out["env_ra"] - out["env_oracle"]
    orig = _untouched(df, "original").rename("ra_orig").reset_index()
    out = out.merge(orig, on=UNIT, how="left")
    out["ra_u"] = [_untouched(df, m).get((c, s), math.nan) for m, c, s in zip(out["model"], *(out[k] for k in UNIT))]
    out["nr"] = normalized_recovery(out["env_ra"], out["ra_u"], out["ra_orig"])
    return out.sort_values(["model", *UNIT, "steps"]).reset_index(drop=True)


def _ci(values: pd.Series, classes, stat=np.mean, n_boot: int = 2000) -> tuple[float, float, float]:
    return bootstrap_ci(values.to_numpy(float), stat, n_boot, 0, clusters=np.asarray(classes))


def headline(records: Iterable[dict], study: str, n_boot: int = 2000) -> pd.DataFrame:
    """Per unlearned method, over its units: at each budget above 0 the envelope's RA and ER over the oracle's
    envelope (cluster-bootstrap CIs: classes, then seeds), AURC and B@50 of the envelope's NR, the adversary
    attaining the max at the largest budget (the most frequent over units, with its count), the search cost there
    (mean over units), and the ER at the largest budget of the defender's-sampler envelope."""
    df = grid_frame(records, study)
    env, dfd = envelopes(df), envelopes(df, "defender")
    b_max = max(grid_budgets(df))
    rows = []
    for method, g in env.groupby("model"):
        units = g.groupby(UNIT)
        row = {"method": method, "units": units.ngroups}
        for b in sorted(g["steps"].unique()):
            at = g[g["steps"] == b].set_index(UNIT)
            row[f"RA@{b}"] = at["env_ra"].mean()
            row[f"ER@{b}"], row[f"ER@{b}_lo"], row[f"ER@{b}_hi"] = _ci(at["er"], at.index.get_level_values(0),
                                                                      n_boot=n_boot)
        scal = pd.DataFrame([{"forget_class": c, "aurc": aurc(u["steps"], u["nr"], b_max),
                              "b50": b_at(u["steps"], u["nr"])} for (c, _), u in units])
        row["AURC"], row["AURC_lo"], row["AURC_hi"] = _ci(scal["aurc"], scal["forget_class"], n_boot=n_boot)
        row["B@50"] = float(np.median(scal["b50"])) if len(scal) else math.nan
        top = g[g["steps"] == b_max]["adversary"].value_counts()
        row["max by"] = f"{top.index[0]} ({top.iloc[0]}/{units.ngroups})" if len(top) else "-"
        last = g[g["steps"] == b_max]
        for c in COST.values():
            row[c] = last[c].mean()
        d = dfd[(dfd["model"] == method) & (dfd["steps"] == b_max)].set_index(UNIT)
        row[f"ER@{b_max} defender"], row[f"ER@{b_max} defender_lo"], row[f"ER@{b_max} defender_hi"] = _ci(
            d["er"], d.index.get_level_values(0), n_boot=n_boot)
        rows.append(row)
    return pd.DataFrame(rows)


def argmax_table(records: Iterable[dict], study: str) -> pd.DataFrame:
    """Which adversary attains the envelope: per (method, steps), each adversary's count of units it attains."""
    env = envelopes(grid_frame(records, study))
    t = env.groupby(["model", "steps"])["adversary"].agg(lambda s: ", ".join(
        f"{a} ({n})" for a, n in s.value_counts().items()))
    return t.reset_index().rename(columns={"model": "method", "adversary": "attained by (units)"})


def unit_report(run_records: list[dict], all_records: list[dict], study: str) -> str:
    """The envelope of the units a run touched (its records' classes and seeds), as a printable table."""
    units = {(r["forget_class"], r["seed"]) for r in run_records if r.get("study") == study}
    if not units:
        return f"no points of study {study} in this run"
    df = grid_frame(all_records, study)
    env = envelopes(df)
    env = env[[(c, s) in units for c, s in zip(env["forget_class"], env["seed"])]]
    cols = ["model", *UNIT, "steps", "env_ra", "env_oracle", "er", "nr", "adversary", "adversaries",
            "search_sample_gradients", "search_nfe"]
    return env[cols].round(3).to_string(index=False)

"""Robustness scalars and tables across methods, classes and seeds, computed from records only.

Notation (../shared/spec/attacks.md):
    RA(B)        recovered accuracy of c_f after attack budget B (optimizer steps)
    RA_orig      the original model's RA at B = 0: the ceiling          (column ra_orig)
    RA_u         the unlearned model's RA at B = 0: the floor           (column ra_u)
    NR(B)        (RA(B) - RA_u) / (RA_orig - RA_u), normalized recovery (column nr)
    ER(B)        RA(B) - RA_oracle(B), excess recovery over the oracle attacked with the same budget (er)
A unit is one (forget_class, seed) pair. Confidence intervals are two-stage cluster bootstraps: forget
classes, then seeds within classes (the units of a class share one base-model class and one oracle).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from attacks.registry import traits
from evaluation.metrics import normalized_recovery
from evaluation.records import sampler_name
from evaluation.tables import score_on_data
from unlearn.errors import UserError

UNIT = ["forget_class", "seed"]
CURVE_KEY = ["method", "forget_class", "seed", "attack", "setting", "n", "steps"]
GUARDS = ["guard_ra_ondata", "guard_fid_cf", "guard_retained_ra", "guard_retained_n"]
HITS = ["hit_any_1", "hit_any_10", "hit_any_100"]
COSTS = ["budget_sample_gradients", "budget_wall_s", "budget_device_s", "eval_wall_s", "eval_device_s"]
SCALARS = ["aurc", "aurc_excess", "b50", "nr_at_max", "er_at_max", "guard_fail"]  # b50: median over units, others mean
WORST = "worst case"
GUARD_REL = 0.8  # retained-class RA below this share of the same model's at budget 0: broken, not recovered
ROLE_ORDER = ["original", "unlearned", "oracle"]


def attack_frame(records: Iterable[dict]) -> pd.DataFrame:
    """Attack records flattened (budget.steps -> budget_steps, guard.fid_cf -> guard_fid_cf, hit_any.10 ->
    hit_any_10); `steps` = budget_steps; a missing setting is "default"; missing guards / costs are NaN.

    Noise never counts as recovery: `ra` here is the on-data RA (the judge names c_f AND does not call the
    sample off-data, guard.ra_ondata) wherever the record has it; `ra_raw` keeps the K-way judge's RA (the
    testbed's, in which noise can count), and `ra_scored` says which one `ra` is ("on-data" / "raw")."""
    recs = [r for r in records if r.get("kind") == "attack"]
    if not recs:
        raise UserError("no attack records; run an attack first (e.g. python -m attacks.relearn unlearned=safemax)")
    df = pd.json_normalize(recs, sep="_")
    # `setting`: the label tables group and show, composed once here (the attack's label, + the differing parameters
    # where one label covers several, + " @<scoring>" below); `base_setting`: the same without the scoring
    df["setting"] = df["setting"].fillna("default") if "setting" in df else "default"
    df["setting"] = df["base_setting"] = _disambiguate(recs, df["setting"])
    for c in GUARDS + HITS + COSTS:
        if c not in df:
            df[c] = np.nan
    df["steps"] = df["budget_steps"]
    ondata = score_on_data(df)
    df["ra_scored"] = np.where(ondata, "on-data", "raw")
    # How a point was scored: the sampler (DDIM-25, DDPM-1000, ...) and guidance w. Points scored differently
    # must never share a curve (an oracle point under one sampler against an unlearned point under another):
    # `scoring` names it, and where a frame holds several, each setting is tagged " @<scoring>". Sampler probes
    # pick w and eta themselves (their setting names both), so for them only the rest of the sampler counts.
    df["sampler"] = [sampler_name(r) for r in recs]
    probe = ~_is_curve(df).to_numpy()
    many_w = df.loc[~probe, "guidance_w"].nunique() > 1
    df["scoring"] = [sampler_name(r, with_eta=False) if p else s + (f" w={r['guidance_w']:g}" if many_w else "")
                     for r, p, s in zip(recs, probe, df["sampler"])]
    for part in (probe, ~probe):
        if df.loc[part, "scoring"].nunique() > 1:
            df.loc[part, "setting"] = df.loc[part, "setting"] + " @" + df.loc[part, "scoring"]
    # Budget 0 is the untouched model under the defender's sampler, except where the attack changes the model
    # or the sampler before its first step (each attack declares it: sampler probes, embedding from another row)
    df["unattacked"] = [traits(r["attack"]).untouched_at_zero(r.get("attack_params") or {}) for r in recs]
    return df


def _disambiguate(recs: list[dict], setting: pd.Series) -> pd.Series:
    """Settings are short labels chosen by each attack; where one label covers records whose attack
    parameters differ (e.g. two learning rates), append the differing parameters to the label."""
    params = [{k: v for k, v in r.get("attack_params", {}).items() if k != "budgets"} for r in recs]
    out = setting.copy()
    for label in setting.unique():
        idx = [i for i, s in enumerate(setting) if s == label]
        variants = {json.dumps(params[i], sort_keys=True, default=str) for i in idx}
        if len(variants) < 2:
            continue
        keys = {k for i in idx for k in params[i]}
        differ = sorted(k for k in keys if len({json.dumps(params[j].get(k), default=str) for j in idx}) > 1)
        for i in idx:
            out.iloc[i] = label + " " + " ".join(f"{k}={params[i].get(k)}" for k in differ)
    return out


def _is_curve(df: pd.DataFrame) -> pd.Series:
    """Rows of attacks whose points form a budget curve (declared by each attack: attacks.common.Traits)."""
    return df["attack"].map(lambda a: traits(a).curve).astype(bool)


def _frame(data) -> pd.DataFrame:
    return data if isinstance(data, pd.DataFrame) else attack_frame(data)


def _curves(data) -> pd.DataFrame:
    df = _frame(data)
    return df if "nr" in df else curve_table(df)


def _one_dataset(df: pd.DataFrame) -> None:
    """One dataset and one judge per table: points scored by different judges (e.g. records from before and
    after the judge changed) never share a curve."""
    if "dataset" in df and df["dataset"].nunique() > 1:
        raise UserError(f"records hold datasets {sorted(df['dataset'].dropna().unique())}; pass one dataset's records")
    if "judge_id" in df and df["judge_id"].nunique() > 1:
        raise UserError(f"records hold points scored by judges {sorted(df['judge_id'].dropna().unique())}; pass one "
                        "judge's records (python -m evaluation.records export --fresh writes only a run's records)")


def _latest(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One record per key: the newest (by `time`, when records carry it), else the last read."""
    if "time" in df:
        df = df.sort_values("time", kind="stable")
    return df.drop_duplicates(keys, keep="last")


def _role_label(df: pd.DataFrame) -> pd.Series:
    return df["role"].where(df["role"] != "unlearned", "unlearned:" + df["method"].astype(str))


def _at_zero(ref: pd.DataFrame, on: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """RA of `ref` at budget 0, untouched model (see attack_frame), for each row of `on`, matched on `keys`
    (attack and setting among them); where absent, the mean over `ref`'s untouched budget-0 points of any
    setting with the other keys equal (the same scoring too, except for sampler probes: they choose their own
    sampler, and their reference is the untouched model as scored by any)."""
    z = ref[(ref["steps"] == 0) & ref["unattacked"]]

    def mean_over(by: list[str]) -> np.ndarray:
        return on[by].merge(z.groupby(by, as_index=False)["ra"].mean(), on=by, how="left")["ra"].to_numpy(float)

    exact = mean_over(keys)
    loose = [k for k in keys if k not in ("attack", "setting")]
    fallback = mean_over(loose)
    probe = ~_is_curve(on).to_numpy()
    if probe.any() and "scoring" in loose:
        fallback = np.where(probe, mean_over([k for k in loose if k != "scoring"]), fallback)
    return np.where(np.isnan(exact), fallback, exact)


def curve_table(df) -> pd.DataFrame:
    """One row per (method, forget_class, seed, attack, setting, steps) of the unlearned role with ra, ra_orig,
    ra_u, nr (NaN where RA_orig = RA_u), ra_oracle, er, nr_oracle (the oracle's RA on the same NR scale), and
    the guard / hit_any columns. Duplicate points keep the newest record. RA_orig and RA_u are the untouched
    models' RA (budget 0 of the same attack and setting where that is the untouched model, else the mean over
    untouched budget-0 points of the same class, seed and N; the unlearned model's of the same method).
    Guard, relative to the model itself: a point fails when its retained-class RA after the attack is below
    GUARD_REL x the same model's retained-class RA at budget 0 of the same curve (so a model whose retained
    classes were already low is judged against itself, not against an absolute bar). A failing point is
    excluded, never scored as zero recovery: ra_guarded, nr and er are NaN there (and er also where the
    oracle's point fails); `guard_fail` counts them. Points without guard fields, or whose curve has no
    budget-0 guard, pass. See `guard_false_alarm` for how many guard samples a 0.9 model needs."""
    df = _frame(df)
    _one_dataset(df)
    df = _latest(df, ["role", *CURVE_KEY])
    u = df[df["role"] == "unlearned"].reset_index(drop=True)
    if u.empty:
        raise UserError("no attack records of role 'unlearned'; attack an unlearned model (unlearned=<method>)")
    ref = ["forget_class", "seed", "attack", "setting", "n", "scoring"]
    u["ra_orig"] = _at_zero(df[df["role"] == "original"], u, ref)
    u["ra_u"] = _at_zero(u, u, ["method", *ref])
    oracle = df[df["role"] == "oracle"].groupby([*ref, "steps"], as_index=False)["ra"].mean()
    u["ra_oracle"] = u[[*ref, "steps"]].merge(oracle, on=[*ref, "steps"], how="left")["ra"].to_numpy(float)
    # Guard: a point whose model lost its retained classes is not recovery. It keeps its raw `ra`; NR and ER
    # are NaN (excluded). (The c_f FID is not a gate: it pools hits and misses, so a half-recovered model's FID
    # is dominated by its noise samples; ra_ondata, the hits the noise detector accepts, is reported instead.)
    oracle_rows = df[df["role"] == "oracle"].reset_index(drop=True)
    u["guard_ok"] = _guard_ok(u, ["method", *ref])
    oracle_rows["guard_ok"] = _guard_ok(oracle_rows, ref)
    oracle_ok = oracle_rows.groupby([*ref, "steps"], as_index=False)["guard_ok"].min()
    ok_o = u[[*ref, "steps"]].merge(oracle_ok, on=[*ref, "steps"], how="left")["guard_ok"]
    u["oracle_guard_ok"] = ok_o.fillna(True).astype(bool).to_numpy()
    u["ra_guarded"] = u["ra"].where(u["guard_ok"])
    u["nr"] = normalized_recovery(u["ra_guarded"], u["ra_u"], u["ra_orig"])
    u["er"] = (u["ra_guarded"] - u["ra_oracle"]).where(u["oracle_guard_ok"])
    u["nr_oracle"] = normalized_recovery(u["ra_oracle"], u["ra_u"], u["ra_orig"]).where(u["oracle_guard_ok"])
    extra = ["ra_ci_low", "ra_ci_high", "budget_sample_gradients", "budget_unlearning_equivalents", "device",
             "run_id"]
    cols = [*CURVE_KEY, "scoring", "ra", "ra_raw", "ra_scored", "ra_guarded", "guard_ok", "oracle_guard_ok", "ra_orig",
            "ra_u", "nr", "ra_oracle", "er",
            "nr_oracle", *GUARDS, *HITS]
    cols += [c for c in extra if c in u]
    return u[cols].sort_values(CURVE_KEY).reset_index(drop=True)


def _guard_ok(rows: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """Per row: retained RA >= GUARD_REL x the model's retained RA when untouched (True where either is
    unknown). The reference is budget 0 of the same curve where that is the untouched model; for curves whose
    budget 0 is already an attack (sampler probes, inversion from another row) it is the mean over the same
    model's untouched budget-0 points (any setting and scoring of the class and seed)."""
    zero = rows[rows["steps"] == 0]
    own = zero.groupby(keys, as_index=False)["guard_retained_ra"].mean()
    ref = rows[keys].merge(own.rename(columns={"guard_retained_ra": "_r0"}), on=keys, how="left")["_r0"].to_numpy(float)
    loose = [k for k in keys if k not in ("attack", "setting", "scoring", "n")]
    plain = zero[zero["unattacked"]].groupby(loose, as_index=False)["guard_retained_ra"].mean()
    ref_u = rows[loose].merge(plain.rename(columns={"guard_retained_ra": "_r0"}), on=loose,
                              how="left")["_r0"].to_numpy(float)
    touched = ~rows.groupby(keys)["unattacked"].transform("max").to_numpy(bool)  # no untouched budget 0 in the curve
    ref = np.where(touched & ~np.isnan(ref_u), ref_u, ref)
    ra = rows["guard_retained_ra"].to_numpy(float)
    return ~(ra < GUARD_REL * ref)  # NaN compares False: unknown passes


def guard_false_alarm(n: int, p: float = 0.9, rel: float = GUARD_REL) -> float:
    """P(a model whose true retained RA is p, unchanged by the attack, fails the guard) with n guard samples at
    budget 0 and n after: P(K_B < rel * K_0), K_0, K_B ~ Binomial(n, p) independent (exact)."""
    from scipy.stats import binom  # heavy (about 1.4 s to import), and only the guard check needs it

    k = np.arange(n + 1)
    return float(sum(binom.pmf(a, n, p) * binom.cdf(math.ceil(rel * a - 1e-9) - 1, n, p) for a in k))


def aurc(budgets, nr, b_max: float | None = None) -> float:
    """Area under the normalized-recovery curve over log budget: 0 for no recovery, 1 for full recovery at once.

    x(B) = log(1 + B) / log(1 + B_max) maps budgets 0..B_max onto [0, 1] (B = 0 -> 0, each decade of budget
    weighs about the same); the trapezoid rule joins the points. NR is not clipped: clipping at 0 would bias a
    near-zero curve's area upward (its noise below 0 dropped, above 0 kept), so an unrecovered model's AURC
    scatters around 0 and may be negative, and one that overshoots RA_orig may exceed 1. NR = 1 everywhere
    gives 1, NR = 0 gives 0, NR = x gives 0.5 (for any grid). Points with NaN NR (excluded by a guard) are
    dropped, so their area is interpolated from their neighbours (`guard_fail` says how many); a curve without a
    B = 0 point adds no area left of its first budget. NaN if fewer than two points or B_max = 0.
    b_max: the grid's largest budget (default: this curve's), so a unit missing its last points is not
    stretched onto [0, 1]: it is NaN instead (its area is unknown).
    """
    b, r = np.asarray(budgets, float), np.asarray(nr, float)
    keep = ~np.isnan(r)
    b, r = b[keep], r[keep]
    if (b < 0).any():
        raise ValueError(f"budgets must be >= 0, got {b.min()}")
    if b.size < 2 or b.max() <= 0 or (b_max is not None and b.max() < b_max):
        return math.nan
    order = np.argsort(b, kind="stable")
    x = np.log1p(b[order]) / np.log1p(b.max())
    return float(np.trapezoid(r[order], x))


def b_at(budgets, nr, level: float = 0.5) -> float:
    """B@level: the smallest budget with NR >= level; math.inf if never reached. NaN (unknown) when a point
    at or below that budget is NaN (excluded by a guard, or NR undefined): an excluded point is never
    credited as "not recovered"."""
    b, r = np.asarray(budgets, float), np.asarray(nr, float)
    order = np.argsort(b, kind="stable")
    for bi, ri in zip(b[order], r[order]):
        if np.isnan(ri):
            return math.nan
        if ri >= level:
            return float(bi)
    return math.inf


def bootstrap_ci(values_by_unit, stat: Callable = np.mean, n_boot: int = 2000, seed: int = 0,
                 clusters=None) -> tuple[float, float, float]:
    """(stat of all units, 2.5th and 97.5th percentile of stat over n_boot resamples). values_by_unit: a mapping
    unit -> value or a sequence of values, one per unit (NaN units are dropped; inf is allowed).

    clusters=None resamples the units with replacement as if independent. clusters (one label per unit, e.g.
    its forget class) makes it a two-stage cluster bootstrap: resample the clusters with replacement, then
    the units within each drawn cluster with replacement; use it when units share a realisation (the units
    of one forget class share its oracle and its base-model class). With few clusters it is still
    anticonservative (REPORT states the measured coverage). Deterministic for a seed; one unit gives
    lo == hi == point; no unit gives NaNs."""
    vals = list(values_by_unit.values()) if isinstance(values_by_unit, Mapping) else list(values_by_unit)
    labels = list(range(len(vals))) if clusters is None else list(clusters)
    if len(labels) != len(vals):
        raise ValueError(f"bootstrap_ci: {len(vals)} values but {len(labels)} cluster labels")
    keep = [(float(v), c) for v, c in zip(vals, labels) if not np.isnan(float(v))]
    if not keep:
        return math.nan, math.nan, math.nan
    v = np.array([x for x, _ in keep], float)
    point = float(stat(v))
    rng = np.random.default_rng(seed)
    if clusters is None:
        idx = rng.integers(0, len(v), size=(n_boot, len(v)))
        try:
            boots = np.asarray(stat(v[idx], axis=1), float)
        except TypeError:  # a stat without an axis argument
            boots = np.array([stat(v[row]) for row in idx], float)
    else:
        members: dict = {}
        for i, (_, c) in enumerate(keep):
            members.setdefault(c, []).append(i)
        groups = list(members.values())
        sizes = np.array([len(m) for m in groups])
        width = int(sizes.max())
        table = np.array([m + [m[0]] * (width - len(m)) for m in groups])           # [G, width]
        pick = rng.integers(0, len(groups), size=(n_boot, len(groups)))              # stage 1: clusters
        n_in = sizes[pick][..., None]                                                 # [B, G, 1]
        within = (rng.random((n_boot, len(groups), width)) * n_in).astype(int)       # stage 2: units in each
        drawn = np.where(np.arange(width) < n_in, v[table[pick[..., None], within]], np.nan).reshape(n_boot, -1)
        nan_stat = {np.mean: np.nanmean, np.median: np.nanmedian}.get(stat)
        boots = (np.asarray(nan_stat(drawn, axis=1), float) if nan_stat is not None
                 else np.array([stat(row[~np.isnan(row)]) for row in drawn], float))
    lo, hi = np.quantile(boots, [0.025, 0.975], method="inverted_cdf")  # no interpolation: inf stays inf
    return point, float(lo), float(hi)


def unit_ci(per_unit: pd.Series, stat: Callable = np.mean, n_boot: int = 2000, seed: int = 0):
    """bootstrap_ci over a Series indexed by UNIT (forget_class, seed): classes, then seeds within classes."""
    return bootstrap_ci(per_unit.to_numpy(), stat, n_boot, seed,
                        clusters=per_unit.index.get_level_values("forget_class"))


def envelope(df) -> pd.DataFrame:
    """Worst case over the settings of a family: per (method, forget_class, seed, attack, steps) the max of ra,
    nr, er and nr_oracle over settings, each with the setting that achieved it (<col>_setting), and the
    number of settings present at that budget."""
    c = _curves(df)
    keys = ["method", "forget_class", "seed", "attack", "n", "steps"]
    out = c.groupby(keys, as_index=False).agg(settings=("setting", "nunique"))
    for col in ["ra", "nr", "er", "nr_oracle"]:  # ties: the alphabetically first setting
        best = c.dropna(subset=[col]).sort_values([col, "setting"], ascending=[True, False], kind="stable")
        best = best.drop_duplicates(keys, keep="last")[[*keys, col, "setting"]]
        out = out.merge(best.rename(columns={"setting": f"{col}_setting"}), on=keys, how="left")
    return out


def _unit_scalars(g: pd.DataFrame, b_max: float) -> dict:
    g = g.sort_values("steps")
    last = g[g["steps"] == b_max]
    area = aurc(g["steps"], g["nr"], b_max)
    return {"aurc": area, "aurc_excess": area - aurc(g["steps"], g["nr_oracle"], b_max),
            "b50": b_at(g["steps"], g["nr"]),
            "nr_at_max": last["nr"].mean() if len(last) else math.nan,
            "er_at_max": last["er"].mean() if len(last) else math.nan,
            "guard_fail": 1.0 - g.loc[g["steps"] > 0, "guard_ok"].astype(float).mean() if "guard_ok" in g else math.nan}


def _scalar_rows(c: pd.DataFrame, keys: list[str], n_boot: int, seed: int) -> list[dict]:
    rows = []
    for key, g in c.groupby(keys, sort=True):
        b_max = g["steps"].max()
        units = list(g.groupby(UNIT))
        per_unit = [_unit_scalars(gu, b_max) for _, gu in units]
        classes = [u[0] for u, _ in units]
        row = {**dict(zip(keys, key)), "units": len(per_unit), "b_max": b_max}
        for name in SCALARS:
            stat = np.median if name == "b50" else np.mean
            ci = bootstrap_ci([s[name] for s in per_unit], stat, n_boot, seed, clusters=classes)
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = ci
        rows.append(row)
    return rows


def scalar_table(df, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per (method, attack, setting), over (class, seed) units, each with a bootstrap CI (<name>_lo/_hi):
    aurc, aurc_excess (AURC minus the oracle's AURC on the same NR scale: the area of excess over the oracle),
    b50 (B@50 in steps: median, inf when most units never reach it), nr_at_max and er_at_max (at the largest
    budget of the group; units without it are left out). A family with several settings adds a row with
    setting "worst case", computed from the envelope. Sampler probes (no budget axis) are in sampler_table."""
    c = _curves(df)
    c = c[_is_curve(c)]
    rows = _scalar_rows(c, ["method", "attack", "setting", "n"], n_boot, seed)
    several = c.groupby(["method", "attack", "n"])["setting"].transform("nunique") > 1
    if several.any():
        env = envelope(c[several]).drop(columns=["setting"], errors="ignore").assign(setting=WORST)
        rows += _scalar_rows(env, ["method", "attack", "setting", "n"], n_boot, seed)
    if not rows:
        return pd.DataFrame()
    t = pd.DataFrame(rows)
    t["_worst"] = t["setting"] == WORST
    return t.sort_values(["method", "attack", "_worst", "setting"]).drop(columns="_worst").reset_index(drop=True)


def format_ci(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Collapse each <name>, <name>_lo, <name>_hi triple into one "point [lo, hi]" string column."""
    t = table.copy()
    for name in [c for c in t.columns if f"{c}_lo" in t and f"{c}_hi" in t]:
        t[name] = [f"{p:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
                   for p, lo, hi in zip(t[name], t[f"{name}_lo"], t[f"{name}_hi"])]
        t = t.drop(columns=[f"{name}_lo", f"{name}_hi"])
    return t


def _role_sort(labels: pd.Series) -> pd.Series:
    return labels.map(lambda s: ROLE_ORDER.index(s.split(":")[0]) if s.split(":")[0] in ROLE_ORDER else len(ROLE_ORDER))


def b50_sample_grads(frame: pd.DataFrame, table: pd.DataFrame) -> pd.Series:
    """B@50 of each scalar_table row in sample-gradients: steps x the batch of that attack setting (NaN for the
    envelope row, which has no single batch)."""
    def one(row) -> float:
        sub = frame[(frame["attack"] == row["attack"]) & (frame["setting"] == row["setting"]) & (frame["steps"] > 0)]
        return float(row["b50"] * (sub["budget_sample_gradients"] / sub["steps"]).iloc[0]) if len(sub) else np.nan

    return table.apply(one, axis=1)


def sampler_table(df, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Sampler probes: per role (original / unlearned:<method> / oracle) x setting, RA mean with bootstrap CI
    over units and the mean hit_any_1/10/100 (best-of-m). A unit holding several points counts its max.
    Empty if there are no sampler records."""
    d = _frame(df)
    d = d[~_is_curve(d)]
    if d.empty:
        return pd.DataFrame()
    _one_dataset(d)
    d = _latest(d, ["role", *CURVE_KEY]).assign(model=lambda x: _role_label(x))
    rows = []
    for (model, setting), g in d.groupby(["model", "setting"]):
        unit = g.groupby(UNIT)[["ra", "guard_ra_ondata", *HITS]].max()
        row = {"role": model, "setting": setting, "units": len(unit)}
        row["ra"], row["ra_lo"], row["ra_hi"] = unit_ci(unit["ra"], np.mean, n_boot, seed)
        row["on-data RA"] = unit["guard_ra_ondata"].mean()
        rows.append({**row, **unit[HITS].mean().to_dict()})
    t = pd.DataFrame(rows)
    return t.assign(_r=_role_sort(t["role"])).sort_values(["_r", "role", "setting"]).drop(columns="_r").reset_index(
        drop=True)


def mia_table(records: Iterable[dict], n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Membership inference: per role (original / unlearned:<method> / oracle) x score, the mean of auc,
    tpr_at_1pct_fpr and tpr_at_01pct_fpr over (class, seed) units with bootstrap CIs, the number of units and
    the mean members / non-members per audit. Empty if there are no mia records."""
    recs = [r for r in records if r.get("kind") == "mia"]
    if not recs:
        return pd.DataFrame()
    d = pd.json_normalize(recs, sep="_")
    _one_dataset(d)
    d = d.assign(model=_role_label(d))
    if "time" in d:  # one audit per (model, score, class, seed): the newest
        d = d.sort_values("time", kind="stable").drop_duplicates(["model", "score", *UNIT], keep="last")
    metrics = ["auc", *sorted(c for c in d.columns if c.startswith("tpr_at_"))]
    d[metrics] = d[metrics].apply(pd.to_numeric)  # null (an unresolvable TPR, strict JSON) -> NaN, float columns
    rows = []
    for (model, score), g in d.groupby(["model", "score"]):
        unit = g.groupby(UNIT)[metrics].mean()
        row = {"role": model, "score": score, "units": len(unit)}
        for m in metrics:
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = unit_ci(unit[m], np.mean, n_boot, seed)
        for n in ["n_members", "n_nonmembers"]:
            row[n] = g[n].mean() if n in g else math.nan
        rows.append(row)
    t = pd.DataFrame(rows)
    return t.assign(_r=_role_sort(t["role"])).sort_values(["_r", "role", "score"]).drop(columns="_r").reset_index(
        drop=True)


def _join(s: pd.Series) -> str:
    return ", ".join(sorted(map(str, s.dropna().unique())))


def ledger(records: Iterable[dict]) -> pd.DataFrame:
    """Compute spent per run_id. Attack cost: per role, the max over budgets of the cumulative attack cost
    (budget wall_s / device_s), summed over roles. Evaluation cost (sampling and scoring, guards included):
    summed over points. Plus the attack, methods, devices and torch versions seen and the number of points."""
    df = attack_frame(records)
    for c in ["device", "torch"]:
        if c not in df:
            df[c] = np.nan
    att = (df.groupby(["run_id", "role", "method"])[["budget_wall_s", "budget_device_s"]].max()
           .groupby("run_id").sum(min_count=1)
           .rename(columns={"budget_wall_s": "attack_wall_s", "budget_device_s": "attack_device_s"}))
    ev = df.groupby("run_id")[["eval_wall_s", "eval_device_s"]].sum(min_count=1)
    info = df.groupby("run_id").agg(attack=("attack", _join), setting=("setting", _join), method=("method", _join),
                                    device=("device", _join), torch=("torch", _join), points=("key", "size"))
    return info.join(att).join(ev)[["attack", "setting", "method", "attack_wall_s", "attack_device_s",
                                    "eval_wall_s", "eval_device_s", "device", "torch", "points"]]


def ra_budget_table(data, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Budget attacks: per (attack, setting, steps), each model's RA (original / unlearned:<method> / oracle)
    as mean over (class, seed) units with a bootstrap CI, each method's ER (excess over the oracle, CI over
    units), and the guards: the lowest retained-class RA and the mean c_f FID of any attacked model there."""
    df = _frame(data)
    df = df[_is_curve(df)]
    if df.empty:
        return pd.DataFrame()
    _one_dataset(df)
    df = _latest(df, ["role", *CURVE_KEY]).assign(model=lambda x: _role_label(x))
    curves = curve_table(df)
    models = sorted(df["model"].unique(), key=lambda s: (_role_sort(pd.Series([s])).iloc[0], s))
    rows = []
    for (attack, setting, steps), g in df.groupby(["attack", "setting", "steps"]):
        row = {"attack": attack, "setting": setting, "steps": steps}
        for m in models:
            unit = g[g["model"] == m].groupby(UNIT)["ra"].mean()
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = unit_ci(unit, np.mean, n_boot, seed)
        c = curves[(curves["attack"] == attack) & (curves["setting"] == setting) & (curves["steps"] == steps)]
        for method, gm in c.groupby("method"):
            unit = gm.groupby(UNIT)["er"].mean()
            row[f"ER {method}"], row[f"ER {method}_lo"], row[f"ER {method}_hi"] = unit_ci(unit, np.mean, n_boot, seed)
        for method, gm in g[g["role"] == "unlearned"].groupby("method"):
            row[f"on-data RA {method}"] = gm["guard_ra_ondata"].mean()
        row["min retained RA"] = g["guard_retained_ra"].min()
        row["FID c_f (unlearned)"] = g.loc[g["role"] == "unlearned", "guard_fid_cf"].mean()
        rows.append(row)
    return pd.DataFrame(rows)



def sampler_comparison(data, baseline: str, other: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The same attack scored under two evaluation samplers (column `sampler`, e.g. the defender's DDIM-25 in
    one study and an attacker's DDPM-1000 in another): per (attack, setting, method, steps), each sampler's
    mean RA and ER over the (class, seed) units where both ERs are defined (no guard fails; `units` counts
    them), and ER diff = ER(other) - ER(baseline) paired by
    unit, with bootstrap CIs over those units. Curves are built per sampler, so an oracle point is only ever
    compared with an unlearned point scored by the same sampler."""
    df = _frame(data)
    df = df[_is_curve(df)]
    key = ["attack", "setting", "method", "forget_class", "seed", "n", "steps"]
    curves = []
    for s in (baseline, other):
        sub = df[df["sampler"] == s]
        if sub.empty:
            return pd.DataFrame()
        # the two samplers' curves are matched by setting and guidance w (" w=1" where the frame mixes weights)
        sub = sub.assign(setting=sub["base_setting"] + sub["scoring"].str.removeprefix(s))
        c = curve_table(sub)
        curves.append(c[[*key, "ra", "er"]])
    both = curves[0].merge(curves[1], on=key, suffixes=(f" {baseline}", f" {other}"))
    both = both.dropna(subset=[f"er {baseline}", f"er {other}"])  # a pair counts where both ERs are defined
    rows = []
    for (attack, setting, method, n, steps), g in both.groupby(["attack", "setting", "method", "n", "steps"]):
        row = {"attack": attack, "setting": setting, "method": method, "n": n, "steps": steps, "units": len(g)}
        for s in (baseline, other):
            row[f"RA {s}"] = g[f"ra {s}"].mean()
            row[f"ER {s}"], row[f"ER {s}_lo"], row[f"ER {s}_hi"] = bootstrap_ci(
                g[f"er {s}"].to_numpy(), np.mean, n_boot, seed, clusters=g["forget_class"].to_numpy())
        diff = (g[f"er {other}"] - g[f"er {baseline}"]).to_numpy()
        row["ER diff"], row["ER diff_lo"], row["ER diff_hi"] = bootstrap_ci(diff, np.mean, n_boot, seed,
                                                                            clusters=g["forget_class"].to_numpy())
        rows.append(row)
    return pd.DataFrame(rows)


def method_comparison(data, a: str, b: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Two unlearning methods under the same attack, paired by unit: per (attack, setting, n, steps), each
    method's mean ER over the (class, seed) units where both ERs are defined, and diff = ER(a) - ER(b) per unit
    with a cluster bootstrap CI (both ERs are taken against the same oracle point, so diff is also the paired RA
    difference). A unit where either point, or the oracle's, fails its guard drops out of that budget's diff (it
    is NaN, never zero); `units` counts the pairs that remain. Negative diff: a recovers less than b (relative to
    the oracle) at that budget."""
    df = _frame(data)
    df = df[_is_curve(df)]
    if df.empty or not {a, b} <= set(df.loc[df["role"] == "unlearned", "method"]):
        return pd.DataFrame()
    c = curve_table(df)
    key = ["attack", "setting", "forget_class", "seed", "n", "scoring", "steps"]
    both = c[c["method"] == a][[*key, "er"]].merge(c[c["method"] == b][[*key, "er"]], on=key, suffixes=(" a", " b"))
    rows = []
    for (attack, setting, n, _scoring, steps), g in both.groupby(["attack", "setting", "n", "scoring", "steps"]):
        ok = np.isfinite(g["er a"].to_numpy(float) - g["er b"].to_numpy(float))
        g = g[ok]
        row = {"attack": attack, "setting": setting, "n": n, "steps": steps, "units": len(g)}
        row[f"ER {a}"] = g["er a"].mean() if len(g) else np.nan
        row[f"ER {b}"] = g["er b"].mean() if len(g) else np.nan
        col = f"ER {a} - ER {b}"
        row[col], row[f"{col}_lo"], row[f"{col}_hi"] = bootstrap_ci(
            (g["er a"] - g["er b"]).to_numpy(float), np.mean, n_boot, seed, clusters=g["forget_class"].to_numpy())
        rows.append(row)
    return pd.DataFrame(rows)

"""Tables computed from records only (pandas)."""

from __future__ import annotations

import pandas as pd

ROLE_ORDER = ["original", "unlearned", "oracle"]


def records_frame(records: list[dict]) -> pd.DataFrame:
    """Flatten records: budget.* become budget_* columns."""
    return pd.json_normalize(records, sep="_")


def scored_frame(records: list[dict]) -> pd.DataFrame:
    """records_frame with `ra` = the on-data RA (the judge names c_f and does not call the sample off-data)
    wherever the record has it, its 95% Wilson CI in ra_ci_low / ra_ci_high, and `ra_raw` = the K-way judge's
    RA (noise can count), as every summary scores it."""
    from evaluation.metrics import wilson_ci

    df = records_frame(records)
    if df.empty:
        return df
    df["ra_raw"] = df["ra"]
    if "guard_ra_ondata" not in df:
        return df
    on = df["guard_ra_ondata"].notna() & (df["guard_ra_ondata"] != df["ra_raw"])
    df["ra"] = df["guard_ra_ondata"].where(df["guard_ra_ondata"].notna(), df["ra_raw"])
    for i in df.index[on]:
        df.loc[i, ["ra_ci_low", "ra_ci_high"]] = wilson_ci(round(df.at[i, "ra"] * df.at[i, "n"]), int(df.at[i, "n"]))
    return df


def ra_table(records: list[dict]) -> pd.DataFrame:
    """On-data RA [95% Wilson CI] per budget (rows) and role (columns), the K-way RA in parentheses where it
    differs, plus the oracle-relative excess recovery (on-data)."""
    df = scored_frame(records)
    if df.empty:
        return pd.DataFrame()
    df["cell"] = [f"{r.ra:.3f} [{r.ra_ci_low:.2f}, {r.ra_ci_high:.2f}]"
                  + ("" if r.ra == r.ra_raw else f" ({r.ra_raw:.3f})") for r in df.itertuples()]
    label = df["role"].where(df["role"] != "unlearned", "unlearned:" + df["method"])
    t = df.assign(col=label).pivot_table(index="budget_steps", columns="col", values="cell", aggfunc="first")
    order = [c for r in ROLE_ORDER for c in t.columns if c == r or c.startswith(r + ":")]
    t = t[order + [c for c in t.columns if c not in order]]
    ra = df.pivot_table(index="budget_steps", columns="role", values="ra", aggfunc="first")
    if {"unlearned", "oracle"} <= set(ra.columns):
        t["excess_over_oracle"] = (ra["unlearned"] - ra["oracle"]).map(lambda v: f"{v:+.3f}")
    t.index.name = "attack steps"
    return t

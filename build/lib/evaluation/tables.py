"""Tables computed from records only (pandas)."""

from __future__ import annotations

import pandas as pd

from evaluation.metrics import wilson_ci

ROLE_ORDER = ["original", "unlearned", "oracle"]


def markdown(df: pd.DataFrame) -> str:
    """A pandas frame as a GitHub markdown table (no tabulate dependency)."""
    df = df.reset_index()
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    rows = ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def records_frame(records: list[dict]) -> pd.DataFrame:
    """Flatten records: budget.* become budget_* columns."""
    return pd.json_normalize(records, sep="_")


def score_on_data(df: pd.DataFrame) -> pd.Series:
    """In place: `ra_raw` = the K-way judge's RA (noise can count) and `ra` = the on-data RA (the judge names c_f
    and does not call the sample off-data, guard.ra_ondata) wherever a record has it. Returns that mask."""
    df["ra_raw"] = df["ra"]
    ondata = df["guard_ra_ondata"].notna() if "guard_ra_ondata" in df else pd.Series(False, index=df.index)
    df["ra"] = df["guard_ra_ondata"].where(ondata, df["ra_raw"]) if ondata.any() else df["ra_raw"]
    return ondata


def scored_frame(records: list[dict]) -> pd.DataFrame:
    """records_frame scored as every summary scores it (score_on_data), with the 95% Wilson CI of the on-data
    RA in ra_ci_low / ra_ci_high where it differs from the K-way RA."""
    df = records_frame(records)
    if df.empty:
        return df
    on = score_on_data(df) & (df["ra"] != df["ra_raw"])
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

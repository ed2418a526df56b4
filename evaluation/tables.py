"""Tables computed from records only (pandas)."""

from __future__ import annotations

import pandas as pd

ROLE_ORDER = ["original", "unlearned", "oracle"]


def records_frame(records: list[dict]) -> pd.DataFrame:
    """Flatten records: budget.* become budget_* columns."""
    return pd.json_normalize(records, sep="_")


def ra_table(records: list[dict]) -> pd.DataFrame:
    """RA [95% CI] per budget (rows) and role (columns), plus the oracle-relative excess recovery."""
    df = records_frame(records)
    if df.empty:
        return pd.DataFrame()
    df["cell"] = df.apply(lambda r: f"{r.ra:.3f} [{r.ra_ci_low:.2f}, {r.ra_ci_high:.2f}]", axis=1)
    label = df["role"].where(df["role"] != "unlearned", "unlearned:" + df["method"])
    t = df.assign(col=label).pivot_table(index="budget_steps", columns="col", values="cell", aggfunc="first")
    order = [c for r in ROLE_ORDER for c in t.columns if c == r or c.startswith(r + ":")]
    t = t[order + [c for c in t.columns if c not in order]]
    ra = df.pivot_table(index="budget_steps", columns="role", values="ra", aggfunc="first")
    if {"unlearned", "oracle"} <= set(ra.columns):
        t["excess_over_oracle"] = (ra["unlearned"] - ra["oracle"]).map(lambda v: f"{v:+.3f}")
    t.index.name = "attack steps"
    return t

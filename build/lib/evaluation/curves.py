"""The robustness figure: RA of the forgotten class against attack budget, one panel per attack family,
mean over (class, seed) units with 95% bootstrap bands. Drawn from records only."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from attacks.registry import ATTACKS, traits  # noqa: E402
from evaluation.plots import COLORS, _atomic_savefig  # noqa: E402
from evaluation.summary import UNIT, attack_frame, unit_ci  # noqa: E402

FAMILIES = list(ATTACKS)  # panel order: the registry's
METHOD_COLORS = ["tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
ETA_STYLES = ["-", "--", ":", "-."]


def _models(d: pd.DataFrame, colors: dict[str, str]) -> list[tuple[str, str, pd.DataFrame]]:
    """(legend label, colour, rows) for original, each unlearned method, oracle."""
    out = [("original", COLORS["original"], d[d["role"] == "original"])]
    for m in sorted(d.loc[d["role"] == "unlearned", "method"].unique()):
        out.append((f"unlearned ({m})", colors[m], d[(d["role"] == "unlearned") & (d["method"] == m)]))
    out.append(("oracle", COLORS["oracle"], d[d["role"] == "oracle"]))
    return [o for o in out if not o[2].empty]


def _band(g: pd.DataFrame, x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per x: mean RA over units (a unit's duplicate points averaged) and its 95% bootstrap CI."""
    per_unit = g.groupby([x, *UNIT])["ra"].mean()
    rows = [(xv, *unit_ci(s.droplevel(0))) for xv, s in per_unit.groupby(level=0)]
    return tuple(np.array(c, float) for c in zip(*rows))


def _budget_label(d: pd.DataFrame) -> str:
    pos = d[d["steps"] > 0]
    batch = sorted({int(round(b)) for b in (pos["budget_sample_gradients"] / pos["steps"]).dropna()})
    return f"optimizer steps (batch {', '.join(map(str, batch))})" if batch else "optimizer steps"


def _budget_panel(ax, d: pd.DataFrame, family: str, colors: dict[str, str]) -> None:
    settings = sorted(d["setting"].unique())
    several = len(settings) > 1
    for label, color, g in _models(d, colors):
        if several:  # each setting thin, the envelope (max over settings per unit and budget) solid
            for _, gs in g.groupby("setting"):
                m = gs.groupby("steps")["ra"].mean()
                ax.plot(m.index, m.to_numpy(), color=color, lw=0.8, alpha=0.35)
            g = g.groupby([*UNIT, "steps"], as_index=False)["ra"].max()
        x, m, lo, hi = _band(g, "steps")
        ax.plot(x, m, "o-", color=color, label=label, ms=3)
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel(_budget_label(d))
    ax.set_title(f"{family}: envelope = max over {len(settings)} settings (thin: each)" if several
                 else f"{family} ({settings[0]})", fontsize=9)


def _param(d: pd.DataFrame, name: str, fallback: str) -> pd.Series:
    """A numeric sampler parameter: attack_params[name] (every probe records its w and eta there), else the
    record's own field `fallback`."""
    def num(v):
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan

    col = f"attack_params_{name}"
    out = d[col].map(num) if col in d else pd.Series(np.nan, index=d.index)
    if fallback in d:
        out = out.fillna(d[fallback].map(num))
    return out


def _sampler_panel(ax, d: pd.DataFrame, colors: dict[str, str]) -> None:
    d = d.assign(w=_param(d, "guidance_w", "guidance_w"), eta=_param(d, "eta", "sampler_eta"))
    d = d.dropna(subset=["w"])
    etas = sorted(d["eta"].dropna().unique())
    for label, color, g in _models(d, colors):
        for i, eta in enumerate(etas):
            ge = g[g["eta"] == eta]
            if ge.empty:
                continue
            x, m, lo, hi = _band(ge, "w")
            ax.plot(x, m, "o", ls=ETA_STYLES[i % len(ETA_STYLES)], color=color, label=f"{label}, eta={eta:g}", ms=3)
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
    ax.set_xlabel("guidance w")
    ax.set_title("sampler probes (linestyle: DDIM eta)", fontsize=9)


def plot_robustness(records: list[dict], path: str | Path, title: str | None = None) -> None:
    """One panel per attack family present: RA of c_f vs budget (symlog x, 0 shown) for original, each
    unlearned method and oracle, mean over (class, seed) units with a 95% bootstrap band; the sampler panel
    plots RA vs guidance w. Curves never mix devices: with several, only the most common one is drawn."""
    df = attack_frame(records)
    device = df["device"].fillna("unknown device") if "device" in df else pd.Series("unknown device", index=df.index)
    counts = device.value_counts()
    main = counts.index[0]
    df = df[device == main]
    note = (f"; only device {main} drawn ({counts.iloc[1:].sum()} point(s) on {', '.join(counts.index[1:])} left out)"
            if len(counts) > 1 else "")
    families = [f for f in FAMILIES if f in set(df["attack"])] + sorted(set(df["attack"]) - set(FAMILIES))
    methods = sorted(df.loc[df["role"] == "unlearned", "method"].unique())
    colors = {m: METHOD_COLORS[i % len(METHOD_COLORS)] for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(families), figsize=(4.4 * len(families), 3.6), squeeze=False)
    for ax, family in zip(axes[0], families):
        d = df[df["attack"] == family]
        if not traits(family).curve:
            _sampler_panel(ax, d, colors)
        else:
            _budget_panel(ax, d, family, colors)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("recovered accuracy RA of c_f")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(title or "recovery of the forgotten class under attack", fontsize=10)
    torch_v = ", ".join(sorted(map(str, df["torch"].dropna().unique()))) if "torch" in df else "?"
    ns = ", ".join(str(int(n)) for n in sorted(df["n"].dropna().unique())) if "n" in df else "?"
    fig.text(0.01, -0.06, f"device: {main}; torch {torch_v}; N = {ns} samples per point; mean over "
             f"{df.groupby(UNIT).ngroups} (class, seed) units, 95% bootstrap bands{note}", fontsize=7)
    _atomic_savefig(fig, Path(path))

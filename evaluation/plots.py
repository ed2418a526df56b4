"""Figures drawn from records (curves) and from saved sample strips (grids)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.records import sampler_name  # noqa: E402
from evaluation.tables import ROLE_ORDER, scored_frame  # noqa: E402
from unlearn.io import atomic_write  # noqa: E402

COLORS = {"original": "tab:blue", "unlearned": "tab:red", "oracle": "tab:green"}


def _atomic_savefig(fig, path: Path) -> None:
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)


def plot_ra_curve(records: list[dict], path: Path, title: str | None = None) -> None:
    """On-data RA of c_f vs attack steps (symlog x: 0 is shown, log beyond 10), 95% Wilson bands, one line per
    role; a dotted line of the same colour is the K-way RA (noise counts) where it differs."""
    df = scored_frame(records)
    if df.empty:
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for role in [r for r in ROLE_ORDER if r in set(df.role)]:
        d = df[df.role == role].sort_values("budget_steps")
        label = role if role != "unlearned" else f"unlearned ({d.method.iloc[0]})"
        ax.plot(d.budget_steps, d.ra, "o-", color=COLORS[role], label=label, ms=4)
        ax.fill_between(d.budget_steps, d.ra_ci_low, d.ra_ci_high, color=COLORS[role], alpha=0.2, lw=0)
        if (d.ra_raw != d.ra).any():
            ax.plot(d.budget_steps, d.ra_raw, ":", color=COLORS[role], lw=1, label=f"{label}, K-way (noise counts)")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("attack budget: optimizer steps "
                  f"(batch {int(df.budget_sample_gradients.max() / max(1, df.budget_steps.max()))})")
    ax.set_ylabel("on-data RA of c_f")
    r0 = df.iloc[0]
    ax.set_title(title or f"{r0.attack} on {r0.dataset}, forget class {r0.forget_class}, seed {r0.seed}", fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    ax.grid(alpha=0.3)
    fig.text(0.01, -0.04, f"judge {r0.judge_id}, {sampler_name(records[0])} w={r0.guidance_w}, N={r0.n}, "
             f"device: {r0.device}", fontsize=7)
    _atomic_savefig(fig, path)


def _framed(im: np.ndarray) -> np.ndarray:
    """[C, H, W] -> [H + 2, W + 2] (grey) or [H + 2, W + 2, 3] (RGB): a 1-pixel frame, the channels untouched."""
    if im.shape[0] == 1:
        return np.pad(im[0], 1)
    return np.pad(im.transpose(1, 2, 0), ((1, 1), (1, 1), (0, 0)))


def sample_grid(strips: dict[str, np.ndarray], path: Path, title: str = "") -> None:
    """One row per model: images in [-1, 1], [n, C, H, W]."""
    if not strips:
        return
    ncol = max(len(v) for v in strips.values())
    fig, axes = plt.subplots(len(strips), 1, figsize=(ncol * 0.5 + 1.2, len(strips) * 0.65 + 0.4), squeeze=False)
    for ax, (name, x) in zip(axes[:, 0], strips.items()):
        imgs = (np.clip(x, -1, 1) + 1) / 2  # [n, C, H, W]
        row = np.concatenate([_framed(im) for im in imgs], axis=1)
        ax.imshow(row, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    _atomic_savefig(fig, path)


def plot_roc(records: list[dict], path: Path) -> bool:
    """Membership-inference ROC curves (the corners the audit records keep): one panel per score, one line per
    role, the chance diagonal dotted; log-scaled false-positive rate, where the low-FPR regime shows. Returns
    False (and draws nothing) when no record holds a curve (audits recorded before the curves were kept)."""
    recs = [r for r in records if r.get("kind") == "mia" and r.get("roc_fpr")]
    if not recs:
        return False
    scores = list(dict.fromkeys(r["score"] for r in recs))
    cols = min(4, len(scores))
    rows = -(-len(scores) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    floor = 1.0 / max(r["n_nonmembers"] for r in recs)
    for ax, score in zip(axes.flat, scores):
        for r in sorted((r for r in recs if r["score"] == score), key=lambda r: ROLE_ORDER.index(r["role"])):
            label = r["role"] if r["role"] != "unlearned" else f"unlearned ({r['method']})"
            fpr = np.maximum(np.asarray(r["roc_fpr"], dtype=float), floor / 2)
            ax.plot(fpr, r["roc_tpr"], "-", color=COLORS[r["role"]], label=f"{label}: AUC {r['auc']:.2f}", lw=1.2)
        grid = np.logspace(np.log10(floor / 2), 0, 50)
        ax.plot(grid, grid, ":", color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(floor / 2, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(score, fontsize=9)
        ax.set_xlabel("false-positive rate", fontsize=8)
        ax.set_ylabel("true-positive rate", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(scores):]:
        ax.axis("off")
    r0 = recs[0]
    fig.suptitle(f"membership inference on {r0['dataset']}, forget class {r0['forget_class']}, seed {r0['seed']} "
                 f"(members: c_f training images)", fontsize=10)
    fig.tight_layout()
    _atomic_savefig(fig, path)
    return True

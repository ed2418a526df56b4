"""Membership inference as an unlearning audit: does the model still treat the forgotten class's
training images as members?

Members = the forget class's training images; non-members = its test-split images (never trained on by
any model here). The oracle never saw either set: its AUC, not 0.5, is the reference an unlearned model
should match. Scores (higher = "more likely a member"), each queried with label c_f ("cond") and with the
null label ("null": the unconditional branch, which SAFEMax's loss never touches):
    loss t=T               -|| eps - eps(x_t, t, y) ||^2 at fixed t (T in attack.t), averaged over
                           attack.draws fixed noise draws (queries = draws)
    pia                    PIA (Kong et al. ICLR'24): eps0 = eps(x_0, 0) as the noise, x_t = sqrt(a_t) x_0 +
                           sqrt(1 - a_t) eps0, score -|| eps(x_t, t) - eps0 ||_4 (2 queries)
    secmi                  SecMI-stat (Duan et al. ICML'23, as in their mia_evals/secmia.py): deterministic
                           DDIM inversion x_0 -> x_{tsec-k} in steps of k, one step up to tsec, one step
                           back down; score -|| x'_{tsec-k} - x_{tsec-k} ||^2 (tsec/k + 1 queries)
Metrics (sklearn.metrics): AUC on all samples; TPR at 1% / 0.1% FPR with the threshold fitted on a
shadow half of each set and applied to the other half (the realised FPR is recorded beside it).

    python -m attacks.mia unlearned=safemax
"""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig

from attacks.common import Audit
from unlearn.diffusion import Schedule, ddim_step, predict_eps, q_sample
from unlearn.errors import UserError
from unlearn.model import null_class
from unlearn.pipeline import Context
from unlearn.progress import bar


def _full(x: torch.Tensor, value: int) -> torch.Tensor:
    return torch.full((x.shape[0],), value, device=x.device, dtype=torch.long)


@torch.inference_mode()
def loss_score(model, schedule: Schedule, x0, label: int, t: int, draws: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros(x0.shape[0], device=x0.device)
    for _ in range(draws):
        eps = torch.randn(x0.shape, generator=g).to(x0.device)
        tt = _full(x0, t)
        total += (predict_eps(model, q_sample(schedule, x0, tt, eps), tt, _full(x0, label))
                  - eps).pow(2).flatten(1).mean(1)
    return -(total / draws).cpu().numpy()


@torch.inference_mode()
def pia_score(model, schedule: Schedule, x0, label: int, t: int = 200, p: float = 4.0) -> np.ndarray:
    y = _full(x0, label)
    eps0 = predict_eps(model, x0, _full(x0, 0), y)
    tt = _full(x0, t)
    err = predict_eps(model, q_sample(schedule, x0, tt, eps0), tt, y) - eps0
    return -err.flatten(1).norm(p=p, dim=1).cpu().numpy()


@torch.inference_mode()
def secmi_score(model, schedule: Schedule, x0, label: int, t_sec: int = 100, k: int = 10) -> np.ndarray:
    """SecMI-stat as published (Duan et al. ICML'23; jinhaoduan/SecMI mia_evals/secmia.py,
    get_intermediate_results + naive_statistic_attack): deterministic DDIM (eta 0, x0 not clipped)
        1. invert x_0 -> x_{t_sec - k} in steps of k (t_sec / k - 1 steps, the first from t = 0);
        2. one step up  x_{t_sec - k} -> x_{t_sec};
        3. one step down x_{t_sec} -> x'_{t_sec - k};
        4. score = -|| x'_{t_sec - k} - x_{t_sec - k} ||^2 (sum over pixels; members have the smaller error).
    Queries per image: t_sec / k + 1."""
    y = _full(x0, label)

    def step(x, t_from, t_to):  # deterministic DDIM (eta 0, no clipping), either direction
        return ddim_step(schedule, predict_eps(model, x, _full(x, t_from), y), t_from, t_to, x, 0.0, None,
                         clip_x0=False)

    x = x0
    for t in range(0, t_sec - k, k):
        x = step(x, t, t + k)
    back = step(step(x, t_sec - k, t_sec), t_sec, t_sec - k)
    return -(back - x).pow(2).flatten(1).sum(1).cpu().numpy()


ROC_POINTS = 101  # the ROC corners a record keeps, at most
LABELS = ("cond", "null")  # query with label c_f, or with the null label (the branch SAFEMax leaves untouched)


def score_names(ts) -> list[str]:
    return [f"{s} {y}" for s in [*(f"loss t={t}" for t in ts), "pia", "secmi"] for y in LABELS]


def mia_scores(model, schedule: Schedule, x0: torch.Tensor, forget_class: int, *, ts=(50, 100, 200), draws: int = 4,
               pia_t: int = 200, secmi_t: int = 100, secmi_k: int = 10, seed: int = 0,
               batch_size: int = 512) -> dict[str, tuple[np.ndarray, int]]:
    """Every score of every image: name -> (scores, queries per image). Images go through in chunks of
    `batch_size`, each chunk with the same noise draws (a score never depends on the chunking of others)."""
    out = {}
    chunks = -(-len(x0) // batch_size)
    with bar(total=len(LABELS) * (len(ts) + 2) * chunks, desc=f"mia {len(x0)} images", unit="chunk") as pbar:
        for y, label in zip(LABELS, (forget_class, null_class(model))):
            for t in ts:
                out[f"loss t={t} {y}"] = (_chunked(lambda x: loss_score(model, schedule, x, label, t, draws, seed + t),
                                                   x0, batch_size, pbar), draws)
            out[f"pia {y}"] = (_chunked(lambda x: pia_score(model, schedule, x, label, pia_t), x0, batch_size, pbar),
                               2)
            out[f"secmi {y}"] = (_chunked(lambda x: secmi_score(model, schedule, x, label, secmi_t, secmi_k),
                                          x0, batch_size, pbar), secmi_t // secmi_k + 1)
    return out


def _chunked(fn, x0: torch.Tensor, batch_size: int, pbar=None) -> np.ndarray:
    out = []
    for i in range(0, len(x0), batch_size):
        out.append(fn(x0[i:i + batch_size]))
        if pbar is not None:
            pbar.update()
    return np.concatenate(out)


def roc_points(fpr: np.ndarray, tpr: np.ndarray, max_points: int = ROC_POINTS) -> tuple[list, list]:
    """The ROC curve's corners, thinned to at most max_points (first and last kept), rounded: what a record
    stores and `evaluation.plots.plot_roc` draws (the AUC is computed on the full curve)."""
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(max_points, len(fpr))).round().astype(int))
    return [round(float(v), 5) for v in fpr[keep]], [round(float(v), 5) for v in tpr[keep]]


def evaluate(members: np.ndarray, nonmembers: np.ndarray, fprs=(0.01, 0.001), shadow_fraction: float = 0.5,
             seed: int = 0) -> dict:
    """AUC on all samples; TPR at each FPR with the threshold fitted on a shadow split of both sets.
    A shadow split with fewer than 1 / FPR non-members cannot place that threshold: TPR and the realised
    FPR are NaN there (digits has about 18 shadow non-members per class: 1% is not resolvable)."""
    from sklearn.metrics import roc_auc_score, roc_curve  # heavy (about 0.5 s to import), only the audit needs them

    scores = np.concatenate([members, nonmembers])
    truth = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    out = {"auc": float(roc_auc_score(truth, scores)), "n_members": len(members), "n_nonmembers": len(nonmembers)}
    fpr, tpr, _ = roc_curve(truth, scores, drop_intermediate=True)
    out["roc_fpr"], out["roc_tpr"] = roc_points(fpr, tpr)
    rng = np.random.default_rng(seed)
    pm, pn = rng.permutation(len(members)), rng.permutation(len(nonmembers))
    cm, cn = int(len(members) * shadow_fraction), int(len(nonmembers) * shadow_fraction)
    shadow_non, eval_mem, eval_non = nonmembers[pn[:cn]], members[pm[cm:]], nonmembers[pn[cn:]]
    out["n_shadow_nonmembers"] = cn
    for fpr in fprs:
        tag = f"{fpr * 100:g}pct".replace(".", "")
        if cn < 1 / fpr:
            out[f"tpr_at_{tag}_fpr"] = out[f"fpr_realised_{tag}"] = float("nan")
            continue
        thr = np.quantile(shadow_non, 1 - fpr, method="higher")  # at most fpr of shadow non-members above it
        out[f"tpr_at_{tag}_fpr"] = float((eval_mem > thr).mean())
        out[f"fpr_realised_{tag}"] = float((eval_non > thr).mean())
    return out


def audit_sets(ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    ds, fc = ctx.ds, ctx.forget_class
    return ds.x_train[ds.y_train == fc], ds.x_test[ds.y_test == fc]


def plans(cfg: DictConfig, ctx: Context) -> Audit:
    """The audit's checks across settings; the audit of one model: every score on members and non-members."""
    a = cfg.attack
    ts, fprs = [int(t) for t in a.t], [float(f) for f in a.fprs]
    k, t_sec = int(a.secmi_k), int(a.secmi_t)
    if k > t_sec or t_sec % k:
        raise UserError(f"attack.secmi_t={t_sec}, attack.secmi_k={k}: secmi_t must be a multiple of secmi_k")
    members, nonmembers = audit_sets(ctx)
    if min(len(members), len(nonmembers)) < 4:
        raise UserError(f"class {ctx.forget_class} has {len(members)} training and {len(nonmembers)} test images; "
                        "the audit needs at least 4 of each")

    def run(model) -> list[dict]:
        dev = next(model.parameters()).device
        kw = dict(ts=ts, draws=int(a.draws), pia_t=int(a.pia_t), secmi_t=int(a.secmi_t), secmi_k=int(a.secmi_k),
                  seed=ctx.seed)
        sm = mia_scores(model, ctx.schedule, members.to(dev), ctx.forget_class, **kw)
        sn = mia_scores(model, ctx.schedule, nonmembers.to(dev), ctx.forget_class, **kw)
        bad = [name for name in sm if not (np.isfinite(sm[name][0]).all() and np.isfinite(sn[name][0]).all())]
        if bad:
            raise UserError(f"the audit's {bad[0]} scores hold NaN or inf: the model's outputs are not finite (its "
                            "weights, or a diverged model); nothing was recorded")
        return [{"score": name, "queries_per_sample": q,
                 "metrics": evaluate(sm[name][0], sn[name][0], tuple(fprs), float(a.shadow_fraction), ctx.seed)}
                for name, (_, q) in sm.items()]

    return Audit(score_names(ts), run)


if __name__ == "__main__":
    from evaluation.entry import main

    main("mia")

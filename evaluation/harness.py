"""Drive an attack over its budget grid on the unlearned model and its references, score each point
with the judge, append one record per point, and draw the job's curve and sample grids.

Resumable: a point whose record key exists is not evaluated again; a role whose points all exist is
skipped entirely (the attack is deterministic for a seed, so a partial role is replayed and only its
missing points are scored).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from attacks.common import AttackState, Prior, check_budgets
from evaluation.judge import Judge, JudgeRecipe, train_judge
from evaluation.metrics import score
from evaluation.ood import OFF_DATA_VERSION, NoiseDetector
from evaluation.records import append_record, existing_keys, read_records
from unlearn.artifacts import artifact, key_of
from unlearn.diffusion import VARIANCES, ddim_sample, sampler_label, sampling_nfe
from unlearn.errors import UserError
from unlearn.fast import fp32_math
from unlearn.io import atomic_write, write_text
from unlearn.methods import REFERENCES
from unlearn.model import Timer, code_version, device_name, null_class
from unlearn.pipeline import Context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerSpec:
    """The evaluation sampler: guided DDIM (DDPM at steps 1000, eta 1), used for every evaluated point.
    The defender's default is configs/sampler/ddim.yaml; an attacker may pick another (sampler=ddpm)."""

    steps: int
    eta: float
    guidance_w: float
    batch_size: int
    clip: bool = True  # clip x0_hat to [-1, 1] at every step
    variance: str = "ddim"  # "ddim": sigma from eta (eq. 16 of DDIM); "beta": sigma^2 = beta_t (the testbed's DDPM)

    @classmethod
    def from_cfg(cls, s: DictConfig) -> SamplerSpec:
        clip = s.get("clip", True)
        if not isinstance(clip, bool):
            raise UserError(f"sampler.clip={clip!r}: use true or false")
        variance = s.get("variance", "ddim")
        if variance not in VARIANCES:
            raise UserError(f"sampler.variance={variance!r}: use one of {', '.join(VARIANCES)}")
        spec = cls(int(s.steps), float(s.eta), float(s.guidance_w), int(s.batch_size), clip, variance)
        if not 1 <= spec.steps <= 1000 or spec.batch_size < 1 or spec.eta < 0:
            raise UserError(f"sampler.steps must be in [1, 1000], sampler.batch_size >= 1 and sampler.eta >= 0; "
                            f"got {spec.steps}, {spec.batch_size}, {spec.eta}")
        return spec

    def key(self) -> dict:
        """The sampler's part of a point's key: `clip` enters only when off and `variance` only when not
        "ddim", so keys made before those switches existed stay valid."""
        return {k: v for k, v in asdict(self).items()
                if not (k == "clip" and v) and not (k == "variance" and v == "ddim")}

    @property
    def label(self) -> str:
        return sampler_label(self.steps, self.eta, self.clip, self.variance)

    @property
    def variant(self) -> str:
        """A suffix for output paths ("" for deterministic clipped DDIM, else e.g. "@DDPM-1000"), so an attacker's
        sampler never overwrites the default run's figures and sample strips."""
        return "" if self.eta == 0 and self.clip and self.variance == "ddim" else "@" + self.label.replace(" ", "_")

    def record(self) -> dict:
        """The sampler as records carry it ({"name": "ddim", "steps", "eta"}, plus "clip": false when off and
        "variance": "beta" for the testbed's DDPM); `evaluation.records.sampler_name` turns it into a label."""
        return {"name": "ddim", "steps": self.steps, "eta": self.eta, **({} if self.clip else {"clip": False}),
                **({} if self.variance == "ddim" else {"variance": self.variance})}


def check_n(n, name: str = "eval.n") -> int:
    if int(n) < 1:
        raise UserError(f"{name}={n}: need at least one sample per point (default 500)")
    return int(n)


def get_judge(ctx: Context, judge_cfg: DictConfig) -> Judge:
    recipe = JudgeRecipe(**OmegaConf.to_container(judge_cfg.recipe, resolve=True))
    spec = {"data": ctx.data_key(), "recipe": asdict(recipe), "seed": ctx.pretrain_seed, "trained_on": "heldout",
            "off_data": OFF_DATA_VERSION}

    def build(folder: Path) -> dict:
        judge = train_judge(ctx.ds, recipe, ctx.pretrain_seed, ctx.device)
        judge.save(folder)
        return {"test_accuracy": judge.meta["test_accuracy"]}

    folder = artifact(ctx.artifacts_root, "judge", spec, build)
    judge = Judge.load(folder, ctx.device)
    judge.meta["id"] = folder.name
    judge.meta["folder"] = str(folder)
    return judge


def sample_labels(model, ctx: Context, ev: SamplerSpec, labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, Timer]:
    """Samples for `labels` under the defender's sampler; the same noise for every model and budget."""
    timer = Timer(ctx.device)
    with timer:
        x = ddim_sample(model, ctx.schedule, labels, ctx.ds.image_shape,
                        null_class(model), ev.guidance_w, ev.steps, ev.eta,
                        torch.Generator().manual_seed(seed + 10_007), ev.batch_size, ev.clip, variance=ev.variance)
    return x, timer


AttackFactory = Callable[[torch.nn.Module, Context, torch.Generator], Iterator[AttackState]]


def _hit_any(hits: torch.Tensor, sizes=(1, 10, 100)) -> dict:
    """Best-of-m: the probability that m samples drawn without replacement from the N evaluated ones hold
    at least one hit, 1 - C(N - h, m) / C(N, m) (exact, for each m <= N).

    As an estimate of the m-seed success an attacker gets, 1 - (1 - p)^m with p the model's true hit rate, it
    is unbiased for every m <= N (the m drawn samples are i.i.d. draws of the model, so E_h[C(N - h, m) /
    C(N, m)] = (1 - p)^m; tests check it exactly), i.e. it does not overstate on average. It is noisy where
    m / N is large: at m = N it is 1 if any of the N samples is a hit, else 0 (N = 100: hit_any_100 is
    "at least one hit in 100"). Read hit_any_100 at N = 100 as that, not as a rate."""
    n, h = hits.shape[0], int(hits.sum())
    return {str(m): round(1.0 - math.comb(n - h, m) / math.comb(n, m), 5) for m in sizes if m <= n}


class Guards:
    """Quality guards beside every recovered point, so garbage or a destroyed model is not 'recovery':
    - ra_ondata: the share of c_f samples the judge calls c_f AND the noise detector (evaluation/ood.py)
      accepts as on-data: noise or adversarial garbage labelled c_f does not count (the "bird" failure);
    - FID (judge features, torch-fidelity) of the c_f samples against real c_f images (held-out half +
      test split, never given to an attacker);
    - retained_ra: the judge's accuracy on samples of the retained classes after the attack (a sample counts
      when the judge names its class and does not call it off-data)."""

    def __init__(self, ctx: Context, judge: Judge, ev: SamplerSpec, per_class: int,
                 inception_weights: str | None = None):
        ds, fc = ctx.ds, ctx.forget_class
        self.ctx, self.judge, self.ev, self.inception = ctx, judge, ev, inception_weights
        self.real = torch.cat([ds.heldout(fc), ds.x_test[ds.y_test == fc]])
        self.labels = torch.tensor([c for c in range(ds.num_classes) if c != fc for _ in range(per_class)])
        self.noise = NoiseDetector(judge)

    def __call__(self, model, x_cf: torch.Tensor, hits: torch.Tensor) -> tuple[dict, Timer]:
        from evaluation.fid import fid

        x, timer = sample_labels(model, self.ctx, self.ev, self.labels, self.ctx.seed + 1)
        with timer:
            ondata = (hits & ~self.noise.rejected(x_cf)).float().mean().item()
            # a retained sample counts when the judge names its class and does not call it off-data
            retained = ((self.judge.probs(x).argmax(-1) == self.labels) & ~self.noise.rejected(x)).float().mean().item()
            f = fid(x_cf, self.real, Path(self.judge.meta["folder"]), self.inception,
                    cuda=self.ctx.device.type == "cuda")
        return {"ra_ondata": round(ondata, 5), "fid_cf": round(f, 3),
                "fid_features": "inception" if self.inception else f"judge:{self.judge.id}",
                "retained_ra": round(retained, 5), "retained_n": len(self.labels), "fid_real_n": len(self.real)}, timer


def run_attack(cfg: DictConfig, attack: AttackFactory, ctx: Context | None = None, *, setting: str = "default",
               subdir: str | None = None, sampling_is_attack: bool = False) -> list[dict]:
    """Run `attack` on the unlearned model and the references; one record per (role, budget).

    setting: the attack variant's label within its family (e.g. "lora r=4 k=10"), stored in records.
    subdir: put this run's figures under a sub-folder of the run folder (attacks with several settings).
    sampling_is_attack: the attack *is* the sampling (sampler probes): its budget is the sampling cost."""
    ctx = ctx or Context.from_cfg(cfg)
    ev = SamplerSpec.from_cfg(cfg.sampler)
    n = check_n(cfg.eval.n)
    per_class = int(cfg.eval.get("n_retained_per_class", 0))
    if per_class < 0:
        raise UserError(f"eval.n_retained_per_class={per_class}: use 0 (no guards) or more")
    budgets = check_budgets(cfg.attack.budgets)
    out_dir = _run_dir(cfg) / ((subdir or _slug(setting)) + ("" if sampling_is_attack else ev.variant))
    records_path = Path(cfg.paths.results) / "records.jsonl"
    overwrite = bool(cfg.get("overwrite"))  # recompute points that are already recorded (and replace them)
    roles = _roles(cfg, ctx)
    attack_params = OmegaConf.to_container(cfg.attack, resolve=True)
    judge = get_judge(ctx, cfg.judge)
    unlearned_prov = ctx.provenance(ctx.model_folder("unlearned"))
    unlearn_sg = unlearned_prov.get("unlearn", {}).get("sample_gradients")
    # A point's identity: the model (its artifact key), the attack's settings (the budget grid excluded:
    # points are cumulative, so adding a budget reuses every recorded point), the evaluation, the budget.
    job = {"attack": {k: v for k, v in attack_params.items() if k != "budgets"}, "sampler": ev.key(), "n": n,
           "seed": ctx.seed, "judge": judge.id, "forget_class": ctx.forget_class, "guards": per_class,
           **({"study": cfg.study} if cfg.get("study") else {}),  # a study owns its points (rerun = resume)
           **ctx.fast_key()}  # bf16 etc. on CUDA: other numbers, other keys
    inception = cfg.eval.get("inception_weights")
    if inception:
        job["inception"] = str(inception)
    guards = Guards(ctx, judge, ev, per_class, inception) if per_class else None
    run_id = key_of({**job, "unlearned": unlearned_prov["key"]})
    keys = []
    for role in roles:
        folder = ctx.model_folder(role)
        prov = ctx.provenance(folder)
        model_key = prov["key"]
        role_keys = {b: key_of({**job, "model": model_key, "steps": b}) for b in budgets}
        keys += role_keys.values()
        have = set() if overwrite else existing_keys(records_path)
        if all(k in have for k in role_keys.values()):
            log.info("%s: all %d points already recorded", role, len(budgets))
            continue
        model = ctx.load(folder)
        for state in attack(model, ctx, torch.Generator().manual_seed(ctx.seed)):
            if role_keys[state.steps] in have:
                continue
            x, timer = sample_labels(state.model, ctx, ev, torch.full((n,), ctx.forget_class), ctx.seed)
            probs = judge.probs(x)
            s = score(probs, ctx.forget_class)
            guard, gtimer = (guards(state.model, x, probs.argmax(-1) == ctx.forget_class) if guards
                             else ({}, Timer(ctx.device)))
            if sampling_is_attack:
                state = AttackState(state.model, 0, 0, sampling_nfe(n, ev.steps, ev.guidance_w), timer.wall_s,
                                    timer.device_s)
            rec = {
                "key": role_keys[state.steps], "kind": "attack", "run_id": run_id, "study": cfg.get("study"),
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "code_version": code_version(), "dataset": ctx.ds.name, "data_fingerprint": ctx.ds.fingerprint,
                "model": ctx.arch_name, "model_key": model_key, "model_code_version": prov.get("code_version"),
                "method": ctx.method_label if role == "unlearned" else role, "role": role,
                "forget_class": ctx.forget_class, "seed": ctx.seed,
                "attack": attack_params["name"], "setting": setting, "attack_params": attack_params,
                "budget": {"steps": state.steps, "sample_gradients": state.sample_gradients, "nfe": state.nfe,
                           **({f"prior_{k}": round(v, 3) if isinstance(v, float) else v
                               for k, v in asdict(state.prior).items()} if state.prior != Prior() else {}),
                           # in units of the attacked method's own unlearning run; reference records are
                           # shared across methods, so they carry none (divide by the method's at read time)
                           "unlearning_equivalents": (state.sample_gradients / unlearn_sg)
                           if unlearn_sg and role == "unlearned" else None,
                           "wall_s": round(state.wall_s, 3), "device_s": round(state.device_s, 3)},
                "judge_id": judge.id, "judge_test_accuracy": judge.meta["test_accuracy"],
                "sampler": ev.record(), "guidance_w": ev.guidance_w,
                # evaluation cost: the c_f samples (unless sampling is the attack itself) and the guards
                "n": n, "eval": {"nfe": sampling_nfe((0 if sampling_is_attack else n)
                                                     + (len(guards.labels) if guards else 0), ev.steps, ev.guidance_w),
                                 "wall_s": round((0 if sampling_is_attack else timer.wall_s) + gtimer.wall_s, 3),
                                 "device_s": round((0 if sampling_is_attack else timer.device_s) + gtimer.device_s, 3)},
                **{k: round(v, 5) for k, v in s.items()},
                "hit_any": _hit_any(probs.argmax(-1) == ctx.forget_class), "guard": guard,
                "device": device_name(ctx.device), "torch": torch.__version__, "fast": ctx.fast_tag(),
            }
            _save_strip(x[:16], out_dir / "samples" / f"{role}_steps{state.steps}.npy")
            append_record(records_path, rec, replace=overwrite)
            log.info("%s %s steps=%d RA=%.3f [%.3f, %.3f] H=%.3f guard=%s", role, setting, state.steps, s["ra"],
                     s["ra_ci_low"], s["ra_ci_high"], s["entropy"], guard)
    wanted = set(keys)
    records = [r for r in read_records(records_path) if r["key"] in wanted]
    _outputs(records, out_dir, roles, budgets)
    return records


def _roles(cfg: DictConfig, ctx: Context) -> list[str]:
    """The unlearned model, then the references. Attacking a reference itself (unlearned=original / oracle):
    it is run once, under its own role."""
    bad = [r for r in cfg.references if r not in REFERENCES]
    if bad:
        raise UserError(f"references may only name {', '.join(REFERENCES)}; got {bad}")
    return list(dict.fromkeys([*([] if ctx.method_name in REFERENCES else ["unlearned"]),
                               *cfg.references, *([ctx.method_name] if ctx.method_name in REFERENCES else [])]))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_") or "default"


def _run_dir(cfg: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.paths.results) / "run"


def _save_strip(x: torch.Tensor, path: Path) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, x.numpy().astype(np.float32))


def _outputs(records: list[dict], out_dir: Path, roles: list[str], budgets: list[int]) -> None:
    from evaluation.plots import plot_ra_curve, sample_grid
    from evaluation.tables import ROLE_ORDER, ra_table

    out_dir.mkdir(parents=True, exist_ok=True)
    plot_ra_curve(records, out_dir / "ra_curve.png")
    for b in budgets:
        strips = {r: out_dir / "samples" / f"{r}_steps{b}.npy" for r in ROLE_ORDER if r in roles}
        sample_grid({r: np.load(p) for r, p in strips.items() if p.exists()}, out_dir / f"samples_steps{b}.png",
                    title=f"samples with label c_f after {b} attack steps")
    table = ra_table(records)
    print(table.to_string())
    write_text(out_dir / "summary.txt", table.to_string() + "\n")
    print(f"records: {len(records)} points; outputs in {out_dir}")


def run_audit(cfg: DictConfig, audit: Callable[[torch.nn.Module], list[dict]], scores: list[str],
              ctx: Context | None = None) -> list[dict]:
    """Run an audit (no budget, no sampling: membership inference) on the unlearned model and the
    references; one record (kind "mia") per (role, score name in `scores`). Resumable like run_attack:
    a role whose scores are all recorded is skipped; otherwise only the missing scores are appended."""
    ctx = ctx or Context.from_cfg(cfg)
    records_path = Path(cfg.paths.results) / "records.jsonl"
    overwrite = bool(cfg.get("overwrite"))  # recompute points that are already recorded (and replace them)
    roles = _roles(cfg, ctx)
    params = OmegaConf.to_container(cfg.attack, resolve=True)
    unlearned_key = ctx.provenance(ctx.model_folder("unlearned"))["key"]
    # audits always run in fp32 (no bf16 / TF32, whatever `fast` says): their keys carry no fast tag. "scores": 2
    # is the version of the score definitions (2: SecMI as published), so older audits are recomputed, not resumed
    job = {"attack": {k: v for k, v in params.items() if k not in ("budgets", "t")}, "seed": ctx.seed,
           "forget_class": ctx.forget_class, "scores": 2, **({"study": cfg.study} if cfg.get("study") else {})}
    run_id = key_of({**job, "unlearned": unlearned_key})
    wanted = set()
    for role in roles:
        folder = ctx.model_folder(role)
        prov = ctx.provenance(folder)
        role_key = {**job, "model": prov["key"]}
        keys = {name: key_of({**role_key, "score": name}) for name in scores}
        wanted |= set(keys.values())
        have = set() if overwrite else existing_keys(records_path)
        if all(k in have for k in keys.values()):
            log.info("%s: audit already recorded", role)
            continue
        model = ctx.load(folder, fp32=True)
        timer = Timer(ctx.device)
        with timer, fp32_math():
            results = audit(model)
        for res in results:
            if keys[res["score"]] in have:
                continue
            rec = {"key": keys[res["score"]], "kind": "mia", "study": cfg.get("study"),
                   "run_id": run_id, "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                   "code_version": code_version(), "dataset": ctx.ds.name, "data_fingerprint": ctx.ds.fingerprint,
                   "model": ctx.arch_name, "model_key": prov["key"],
                   "method": ctx.method_label if role == "unlearned" else role, "role": role,
                   "forget_class": ctx.forget_class, "seed": ctx.seed, "attack": params["name"],
                   "attack_params": params, **res, "audit_wall_s": round(timer.wall_s, 3),
                   "audit_device_s": round(timer.device_s, 3), "device": device_name(ctx.device),
                   "torch": torch.__version__}
            append_record(records_path, rec, replace=overwrite)
        log.info("%s: %s", role, ", ".join(f"{r['score']} AUC {r['auc']:.3f}" for r in results))
    records = [r for r in read_records(records_path) if r["key"] in wanted]
    _print_mia(records)
    return records


def _print_mia(records: list[dict]) -> None:
    import pandas as pd

    if not records:
        return
    df = pd.DataFrame(records)
    df["col"] = df["role"].where(df["role"] != "unlearned", "unlearned:" + df["method"])
    print(df.pivot_table(index="score", columns="col", values="auc", aggfunc="first").round(3).to_string())

"""Drive an attack over its budget grid on the unlearned model and its references, score each point with
the judge, append one record per point. Figures and tables are a separate step (evaluation/entry.py) that
reads the records.

    for each model role (unlearned, then the references):
        skip the role if all its points are recorded; else load the model
        for each state the attack yields, for each scoring sampler: skip if recorded, sample, score, append

Scoring samplers: the defender's (cfg.sampler, as the plan overrides it) and, with eval.attacker_eta set, the same
sampler with the attacker's eta (DDIM-25 with eta 1: as strong as DDPM-1000 at 1/40 of its cost, REPORT finding 8),
each point keyed apart. An attack that draws its own samples (sampler probes, partial diffusion, noise
optimisation: Traits.draws_samples) is scored as drawn, once.

Resumable: a point whose record key exists is not evaluated again (the attack is deterministic for a seed,
so a partial role is replayed and only its missing points are scored).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from attacks.common import AttackState, Audit, Plan, Prior
from attacks.registry import traits
from evaluation.fid import distances, safe_inception
from evaluation.judge import Judge, JudgeRecipe, train_judge
from evaluation.metrics import score
from evaluation.ood import OFF_DATA_VERSION, NoiseDetector
from evaluation.records import append_record, existing_keys, read_records
from evaluation.schema import AttackPoint, AuditPoint
from unlearn.artifacts import artifact, key_of
from unlearn.fast import fp32_math
from unlearn.io import atomic_write
from unlearn.model import Timer, device_name
from unlearn.pipeline import Context, check_finite
from unlearn.sampling import SamplerSpec

log = logging.getLogger(__name__)


def get_judge(ctx: Context, judge_cfg: DictConfig) -> Judge:
    recipe = JudgeRecipe(**OmegaConf.to_container(judge_cfg.recipe, resolve=True))
    spec = {"data": ctx.data_key(), "recipe": asdict(recipe), "seed": ctx.pretrain_seed, "trained_on": "heldout",
            "off_data": OFF_DATA_VERSION}

    def build(folder: Path) -> dict:
        judge = train_judge(ctx.ds, recipe, ctx.pretrain_seed, ctx.device)
        check_finite(judge.net, [judge.meta["final_loss"]], "judge training", "judge.recipe.lr")
        judge.save(folder)
        return {"test_accuracy": judge.meta["test_accuracy"]}

    folder = artifact(ctx.artifacts_root, "judge", spec, build)
    judge = Judge.load(folder, ctx.device)
    judge.meta["id"] = folder.name
    judge.meta["folder"] = str(folder)
    return judge


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
        x, timer = self.ev.sample(model, self.ctx.schedule, self.labels, self.ctx.ds.image_shape, self.ctx.seed + 1)
        with timer:
            ondata = (hits & ~self.noise.rejected(x_cf)).float().mean().item()
            # a retained sample counts when the judge names its class and does not call it off-data
            retained = ((self.judge.probs(x).argmax(-1) == self.labels) & ~self.noise.rejected(x)).float().mean().item()
            d = distances(x_cf, self.real, Path(self.judge.meta["folder"]), self.inception,
                          cuda=self.ctx.device.type == "cuda")
        return {"ra_ondata": round(ondata, 5), "fid_cf": round(d["fid"], 3), "kid_cf": round(d["kid"], 5),
                "kid_subset": d["kid_subset"],
                "fid_features": "inception" if self.inception else f"judge:{self.judge.id}",
                "retained_ra": round(retained, 5), "retained_n": len(self.labels), "fid_real_n": len(self.real)}, timer


@dataclass
class AttackJob:
    """What is fixed over one run of a plan: the evaluation and the identity of its points. A point's key is
    the model (its artifact key), the attack's settings (the budget grid excluded: points are cumulative, so
    adding a budget reuses every recorded point), the evaluation and the budget."""

    cfg: DictConfig
    ctx: Context
    plan: Plan
    evs: list[SamplerSpec]  # the scoring samplers: the defender's first
    n: int
    budgets: list[int]
    params: dict
    roles: list[str]
    judge: Judge
    guards: list[Guards | None]  # per scoring sampler
    key: dict
    run_id: str
    unlearn_sg: int | None
    out_dirs: list[Path]  # the plan's figures and sample strips, per scoring sampler

    @classmethod
    def from_cfg(cls, cfg: DictConfig, ctx: Context, plan: Plan) -> AttackJob:
        ev = SamplerSpec.from_cfg(cfg.sampler).with_(**plan.sampler)
        attacker_eta = cfg.eval.get("attacker_eta")
        params = plan.params or OmegaConf.to_container(cfg.attack, resolve=True)
        evs = [ev] if (attacker_eta is None or traits(params["name"]).draws_samples
                       or float(attacker_eta) == ev.eta) else [ev, ev.with_(eta=float(attacker_eta))]
        n, per_class = int(cfg.eval.n), int(cfg.eval.get("n_retained_per_class", 0))
        budgets = [int(b) for b in params["budgets"]]
        job_roles = ctx.roles(cfg.references)
        inception = cfg.eval.get("inception_weights")
        if inception:
            safe_inception(inception)  # refused now if it is not a plain state dict
        judge = get_judge(ctx, cfg.judge)
        key = {"attack": {k: v for k, v in params.items() if k != "budgets"}, "n": n,
               "seed": ctx.seed, "judge": judge.id, "forget_class": ctx.forget_class, "guards": per_class,
               **({"study": cfg.study} if cfg.get("study") else {}),  # a study owns its points (rerun = resume)
               **ctx.fast_key(),  # bf16 etc. on CUDA: other numbers, other keys
               **({"inception": str(inception)} if inception else {})}
        unlearned = ctx.provenance(ctx.model_folder("unlearned"))
        return cls(cfg, ctx, plan, evs, n, budgets, params, job_roles, judge,
                   [Guards(ctx, judge, e, per_class, inception) if per_class else None for e in evs], key,
                   key_of({**key, "sampler": ev.key(), "unlearned": unlearned["key"]}),
                   unlearned.get("unlearn", {}).get("sample_gradients"), [output_dir(cfg, plan, e) for e in evs])

    @property
    def records_path(self) -> Path:
        return Path(self.cfg.paths.results) / "records.jsonl"

    @property
    def overwrite(self) -> bool:
        return bool(self.cfg.get("overwrite"))  # recompute points that are already recorded (and replace them)

    def recorded(self) -> set[str]:
        return set() if self.overwrite else existing_keys(self.records_path)

    def point_keys(self, model_key: str) -> dict[tuple[int, int], str]:
        """(budget, index of the scoring sampler) -> the point's record key."""
        return {(b, i): key_of({**self.key, "sampler": ev.key(), "model": model_key, "steps": b})
                for b in self.budgets for i, ev in enumerate(self.evs)}


def run_attack(cfg: DictConfig, plan: Plan, ctx: Context | None = None) -> list[dict]:
    """Run `plan` on the unlearned model and the references; one record per (role, budget); returns them."""
    ctx = ctx or Context.from_cfg(cfg)
    job = AttackJob.from_cfg(cfg, ctx, plan)
    wanted = set()
    for role in job.roles:
        folder = ctx.model_folder(role)
        prov = ctx.provenance(folder)
        keys = job.point_keys(prov["key"])
        wanted |= set(keys.values())
        have = job.recorded()
        if all(k in have for k in keys.values()):
            log.info("%s: all %d points already recorded", role, len(keys))
            continue
        model = ctx.load(folder)
        torch.manual_seed(ctx.seed)  # what draws from the global generator (a testbed model's dropout) replays too
        for state in plan.states(model, torch.Generator().manual_seed(ctx.seed)):
            for i in range(len(job.evs)):
                if keys[state.steps, i] not in have:
                    rec = _score(job, role, prov, state, keys[state.steps, i], i)
                    append_record(job.records_path, rec, replace=job.overwrite)
    return [r for r in read_records(job.records_path) if r["key"] in wanted]


def point_line(role: str, setting: str, steps: int, s: dict, guard: dict) -> str:
    """The one INFO line of a scored point: RA with its CI, then the guards that decide whether it counts."""
    line = f"{role} {setting} steps={steps}: RA {s['ra']:.3f} [{s['ra_ci_low']:.3f}, {s['ra_ci_high']:.3f}]"
    if guard:
        line += (f", on-data {guard['ra_ondata']:.3f}, retained RA {guard['retained_ra']:.3f}, "
                 f"FID c_f {guard['fid_cf']:.1f}, KID c_f {guard['kid_cf']:.4f}")
    return line


def _score(job: AttackJob, role: str, prov: dict, state: AttackState, key: str, i: int = 0) -> dict:
    """Sample c_f from the attacked model with scoring sampler i (unless the attack drew the samples), score them,
    build the record."""
    ctx, ev, n, guards = job.ctx, job.evs[i], job.n, job.guards[i]
    drawn = state.samples is not None  # drawing the samples was the attack: their cost is the attack's
    x, timer = ((state.samples, Timer(ctx.device)) if drawn else
                ev.sample(state.model, ctx.schedule, torch.full((n,), ctx.forget_class), ctx.ds.image_shape, ctx.seed))
    probs = job.judge.probs(x)
    hits = probs.argmax(-1) == ctx.forget_class
    s = {k: round(v, 5) for k, v in score(probs, ctx.forget_class).items()}
    guard, gtimer = guards(state.model, x, hits) if guards else ({}, Timer(ctx.device))
    _save_strip(x[:16], job.out_dirs[i] / "samples" / f"{role}_steps{state.steps}.npy")
    log.info("%s", point_line(role, job.plan.setting + ("" if i == 0 else f" @{ev.label}"), state.steps, s, guard))
    log.debug("%s guard %s", role, guard)
    n_eval = (0 if drawn else n) + (len(guards.labels) if guards else 0)
    return AttackPoint(
        key=key, run_id=job.run_id, study=job.cfg.get("study"), adversary=job.cfg.get("adversary"), dataset=ctx.ds.name,
        data_fingerprint=ctx.ds.fingerprint, model=ctx.arch_name, model_key=prov["key"],
        model_code_version=prov.get("code_version"), method=ctx.method_label if role == "unlearned" else role,
        role=role, forget_class=ctx.forget_class, seed=ctx.seed, attack=job.params["name"], setting=job.plan.setting,
        attack_params=job.params, budget=_budget(state, job.unlearn_sg if role == "unlearned" else None),
        judge_id=job.judge.id, judge_test_accuracy=job.judge.meta["test_accuracy"], sampler=ev.record(),
        guidance_w=ev.guidance_w, n=n,
        eval={"nfe": ev.nfe(n_eval), "wall_s": round((0 if drawn else timer.wall_s) + gtimer.wall_s, 3),
              "device_s": round((0 if drawn else timer.device_s) + gtimer.device_s, 3)},
        **s, hit_any=_hit_any(hits), guard=guard, device=device_name(ctx.device), fast=ctx.fast_tag(),
    ).to_dict()


def _budget(state: AttackState, unlearn_sg: int | None) -> dict:
    """What the attack spent up to this point. unlearning_equivalents: in units of the attacked method's own
    unlearning run; reference records are shared across methods, so they carry none (unlearn_sg None)."""
    prior = ({f"prior_{k}": round(v, 3) if isinstance(v, float) else v for k, v in asdict(state.prior).items()}
             if state.prior != Prior() else {})
    return {"steps": state.steps, "sample_gradients": state.sample_gradients, "nfe": state.nfe, **prior,
            "unlearning_equivalents": state.sample_gradients / unlearn_sg if unlearn_sg else None,
            "wall_s": round(state.wall_s, 3), "device_s": round(state.device_s, 3)}


def output_dir(cfg: DictConfig, plan: Plan, ev: SamplerSpec | None = None) -> Path:
    """The folder of a plan's figures and sample strips: under the run folder, named by the setting (and the
    scoring sampler `ev`, by default the evaluation's, when it is not the default: an attacker's sampler never
    overwrites the default run's)."""
    run = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.paths.results) / "run"
    if plan.subdir:
        return run / plan.subdir
    slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", plan.setting).strip("_") or "default"
    return run / (slug + (ev or SamplerSpec.from_cfg(cfg.sampler).with_(**plan.sampler)).variant)


def _save_strip(x: torch.Tensor, path: Path) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, x.numpy().astype(np.float32))


def run_audit(cfg: DictConfig, audit: Audit, ctx: Context | None = None) -> list[dict]:
    """Run an audit (membership inference) on the unlearned model and the references; one record (kind "mia") per
    (role, score name). Resumable like run_attack: a role whose scores are all recorded is skipped; otherwise
    only the missing scores are appended. Audits always run in fp32 (no bf16 / TF32, whatever `fast` says):
    their keys carry no fast tag."""
    ctx = ctx or Context.from_cfg(cfg)
    audit_roles = ctx.roles(cfg.references)
    records_path, overwrite = Path(cfg.paths.results) / "records.jsonl", bool(cfg.get("overwrite"))
    params = OmegaConf.to_container(cfg.attack, resolve=True)
    # "scores": 2 is the version of the score definitions (2: SecMI as published): older audits are recomputed
    job = {"attack": {k: v for k, v in params.items() if k not in ("budgets", "t")}, "seed": ctx.seed,
           "forget_class": ctx.forget_class, "scores": 2, **({"study": cfg.study} if cfg.get("study") else {})}
    run_id = key_of({**job, "unlearned": ctx.provenance(ctx.model_folder("unlearned"))["key"]})
    wanted = set()
    for role in audit_roles:
        folder = ctx.model_folder(role)
        prov = ctx.provenance(folder)
        keys = {name: key_of({**job, "model": prov["key"], "score": name}) for name in audit.scores}
        wanted |= set(keys.values())
        have = set() if overwrite else existing_keys(records_path)
        if all(k in have for k in keys.values()):
            log.info("%s: audit already recorded", role)
            continue
        model, timer = ctx.load(folder, fp32=True), Timer(ctx.device)
        with timer, fp32_math():
            results = audit.run(model)
        for res in (r for r in results if keys[r["score"]] not in have):
            rec = AuditPoint(key=keys[res["score"]], run_id=run_id, study=cfg.get("study"), dataset=ctx.ds.name,
                             data_fingerprint=ctx.ds.fingerprint, model=ctx.arch_name, model_key=prov["key"],
                             model_code_version=prov.get("code_version"), role=role, forget_class=ctx.forget_class,
                             method=ctx.method_label if role == "unlearned" else role, seed=ctx.seed,
                             attack=params["name"], attack_params=params, **res, audit_wall_s=round(timer.wall_s, 3),
                             audit_device_s=round(timer.device_s, 3), device=device_name(ctx.device))
            append_record(records_path, rec.to_dict(), replace=overwrite)
        log.info("%s: %s", role, ", ".join(f"{r['score']} AUC {r['metrics']['auc']:.3f}" for r in results))
    return [r for r in read_records(records_path) if r["key"] in wanted]

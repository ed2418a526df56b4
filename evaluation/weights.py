"""Weight-space diagnostics of an unlearned model: how far it moved, and what lies on the way back.

    python -m evaluation.weights unlearned=safemax data.forget_class=0 seed=0
    python -m evaluation.weights --multirun unlearned=safemax,salun,sa,ga,rl data.forget_class=0,3,8 seed=0

One record (kind "weights") per (unlearned model, evaluation): the L2 distance of its weights to the original's
and to the oracle's (total, and per top-level block: conv_in, time/class embeddings, each down / mid / up block,
the output layers), and c_f's on-data RA along the straight line theta(a) = (1 - a) theta_unlearned + a theta_orig
at a = 0, 0.1, ..., 1 (eval.n samples each, the defender's sampler). Weight distance and linear connectivity
predict how easily a classifier's forgetting is undone (arXiv 2505.22310); evaluation/report.py reads these
records beside the worst-case envelope's AURC and gives their rank correlation over methods x classes.
Interpolating toward the original needs the original: a diagnostic, not an attack.
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from evaluation.harness import get_judge
from evaluation.ood import NoiseDetector
from evaluation.records import append_record, check_records_file, read_records
from evaluation.schema import WeightPoint
from unlearn.artifacts import key_of
from unlearn.errors import cli, exit_on_user_error
from unlearn.model import Timer, device_name
from unlearn.paths import CONFIG_PATH
from unlearn.pipeline import Context
from unlearn.sampling import SamplerSpec

ALPHAS = [round(0.1 * i, 1) for i in range(11)]


def block_of(name: str) -> str:
    """The top-level block a parameter belongs to: `down_blocks.1`, `mid_block`, `class_embedding`, ..."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] in ("down_blocks", "up_blocks") else parts[0]


def distances(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    """L2 distance of two state dicts with the same keys: total, and per block (the blocks' squares add up)."""
    if a.keys() != b.keys():
        raise ValueError("state dicts differ in their keys")
    sq: dict[str, float] = {}
    for k in a:
        if a[k].is_floating_point():
            sq[block_of(k)] = sq.get(block_of(k), 0.0) + float(((a[k].double() - b[k].double()) ** 2).sum())
    return math.sqrt(sum(sq.values())), {k: round(math.sqrt(v), 6) for k, v in sorted(sq.items())}


def interpolate(model: torch.nn.Module, start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], a: float) -> None:
    """Load (1 - a) start + a end into model (floating tensors; others from start)."""
    model.load_state_dict({k: torch.lerp(start[k], end[k], a) if start[k].is_floating_point() else start[k]
                           for k in start})


def run(cfg: DictConfig) -> dict:
    records_path = Path(cfg.paths.results) / "records.jsonl"
    check_records_file(records_path)
    ctx = Context.from_cfg(cfg)
    ev, n = SamplerSpec.from_cfg(cfg.sampler), int(cfg.eval.n)
    judge = get_judge(ctx, cfg.judge)
    folders = {r: ctx.model_folder(r) for r in ("unlearned", "original", "oracle")}
    keys = {r: ctx.provenance(f)["key"] for r, f in folders.items()}
    key = key_of({"kind": "weights", **keys, "sampler": ev.key(), "n": n, "seed": ctx.seed, "judge": judge.id,
                  "forget_class": ctx.forget_class, "alphas": ALPHAS, **ctx.fast_key()})
    done = [] if cfg.get("overwrite") else [r for r in read_records(records_path) if r["key"] == key]
    if done:
        rec = done[0]
    else:
        states = {r: {k: v.detach().clone() for k, v in ctx.load(f, fp32=True).state_dict().items()}
                  for r, f in folders.items()}
        d_orig, per_orig = distances(states["unlearned"], states["original"])
        d_oracle, per_oracle = distances(states["unlearned"], states["oracle"])
        model, noise = ctx.load(folders["unlearned"]), NoiseDetector(judge)
        labels = torch.full((n,), ctx.forget_class)
        ra, ra_raw, timer = [], [], Timer(ctx.device)
        for a in ALPHAS:
            interpolate(model, states["unlearned"], states["original"], a)
            x, t = ev.sample(model.eval(), ctx.schedule, labels, ctx.ds.image_shape, ctx.seed)
            hits = judge.probs(x).argmax(-1) == ctx.forget_class
            ra.append(round((hits & ~noise.rejected(x)).float().mean().item(), 5))
            ra_raw.append(round(hits.float().mean().item(), 5))
            timer.wall_s += t.wall_s
        rec = WeightPoint(
            key=key, dataset=ctx.ds.name, model=ctx.arch_name, model_key=keys["unlearned"],
            model_code_version=ctx.provenance(folders["unlearned"]).get("code_version"), method=ctx.method_label,
            forget_class=ctx.forget_class, seed=ctx.seed, device=device_name(ctx.device), judge_id=judge.id,
            sampler=ev.record(), guidance_w=ev.guidance_w, n=n, original_key=keys["original"],
            oracle_key=keys["oracle"], dist_original=round(d_orig, 6), dist_oracle=round(d_oracle, 6),
            dist_original_blocks=per_orig, dist_oracle_blocks=per_oracle, alphas=ALPHAS, path_ra=ra,
            path_ra_raw=ra_raw, eval={"nfe": ev.nfe(n) * len(ALPHAS), "wall_s": round(timer.wall_s, 3)},
        ).to_dict()
        append_record(records_path, rec, replace=bool(cfg.get("overwrite")))
    print(f"{rec['method']} (class {rec['forget_class']}, seed {rec['seed']}): "
          f"|w - w_orig| {rec['dist_original']:.3f}, "
          f"|w - w_oracle| {rec['dist_oracle']:.3f}; on-data RA of c_f from the unlearned (a=0) to the original "
          f"(a=1): {' '.join(f'{v:.2f}' for v in rec['path_ra'])}")
    return rec


@hydra.main(version_base="1.3", config_path=CONFIG_PATH,
            config_name="weights")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(run)(cfg)


if __name__ == "__main__":
    cli(main)

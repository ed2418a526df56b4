"""Per-class accuracy of a checkpoint's own samples under the defender's sampler.

    python -m evaluation.classes unlearned=safemax            # forget RA and retained-class RA
    python -m evaluation.classes --multirun unlearned=original sampler.guidance_w=0,0.5,1,2   # calibrate w

One record (kind "class_accuracy") per (checkpoint, sampler, N): RA of every class, the forgotten class's
RA, the retained classes' mean RA, entropy and mean p(c) per class.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from evaluation.fid import distances, safe_inception
from evaluation.harness import get_judge
from evaluation.metrics import score
from evaluation.ood import NoiseDetector
from evaluation.records import append_record, check_records_file, read_records
from evaluation.schema import ClassPoint
from unlearn.artifacts import key_of
from unlearn.errors import cli, exit_on_user_error
from unlearn.model import device_name
from unlearn.paths import CONFIG_PATH
from unlearn.pipeline import Context
from unlearn.sampling import SamplerSpec


def class_accuracy(model, ctx: Context, judge, ev: SamplerSpec, n_per_class: int, seed: int):
    """Sample n_per_class images of every class (one batched run); score each class.

    Returns (per-class scores, samples, labels, timer). Each class's samples are also split three ways
    (noise-aware): rejected as off-data noise / in-distribution and judged c / in-distribution, another class."""
    labels = torch.arange(ctx.ds.num_classes).repeat_interleave(n_per_class)
    x, timer = ev.sample(model, ctx.schedule, labels, ctx.ds.image_shape, seed)
    probs = judge.probs(x)
    noise = NoiseDetector(judge).rejected(x)
    per = {}
    for c in range(ctx.ds.num_classes):
        sel = labels == c
        hit = probs[sel].argmax(-1) == c
        per[c] = {**score(probs[sel], c), "noise": noise[sel].float().mean().item(),
                  "in_dist_as_c": (hit & ~noise[sel]).float().mean().item(),
                  "in_dist_other": (~hit & ~noise[sel]).float().mean().item()}
    return per, x, labels, timer


def run(cfg: DictConfig) -> dict:
    records_path = Path(cfg.paths.results) / "records.jsonl"
    check_records_file(records_path)
    ctx = Context.from_cfg(cfg)
    ev = SamplerSpec.from_cfg(cfg.sampler)
    n, inception = int(cfg.eval.n_per_class), cfg.eval.get("inception_weights")
    if inception:
        safe_inception(inception)  # refused now if it is not a plain state dict
    judge = get_judge(ctx, cfg.judge)
    folder = ctx.unlearned()
    prov = ctx.provenance(folder)
    key = key_of({"kind": "class_accuracy", "model": prov["key"], "sampler": ev.key(), "n": n, "seed": ctx.seed,
                  "judge": judge.id, "forget_class": ctx.forget_class,
                  **({"inception": inception} if inception else {}), **ctx.fast_key()})
    done = [] if cfg.get("overwrite") else [r for r in read_records(records_path) if r["key"] == key]
    if done:
        rec = done[0]
    else:
        per, x, labels, timer = class_accuracy(ctx.load(folder), ctx, judge, ev, n, ctx.seed)
        fc, ds, cuda = ctx.forget_class, ctx.ds, ctx.device.type == "cuda"
        retained = [per[c]["ra"] for c in per if c != fc]
        d = distances(x[labels != fc], ds.x_train[ds.y_train != fc], judge.meta["folder"], inception, cuda)
        per_class = {f: {str(c): round(per[c][m], 4) for c in per}
                     for f, m in (("ra", "ra"), ("entropy", "entropy"), ("mean_p", "mean_p"), ("noise", "noise"))}
        rec = ClassPoint(
            key=key, dataset=ctx.ds.name, model=ctx.arch_name, model_key=prov["key"],
            model_code_version=prov.get("code_version"), method=ctx.method_label, method_args=ctx.method_args,
            forget_class=fc, seed=ctx.seed, unlearn=prov.get("unlearn"), judge_id=judge.id,
            judge_test_accuracy=judge.meta["test_accuracy"], sampler=ev.record(), guidance_w=ev.guidance_w,
            n_per_class=n, per_class_ra=per_class["ra"], per_class_entropy=per_class["entropy"],
            per_class_mean_p=per_class["mean_p"], per_class_noise=per_class["noise"], forget_ra=per[fc]["ra"],
            retained_mean_ra=round(sum(retained) / len(retained), 4), forget_noise=round(per[fc]["noise"], 4),
            forget_in_dist_as_c=round(per[fc]["in_dist_as_c"], 4),
            forget_in_dist_other=round(per[fc]["in_dist_other"], 4),
            fid_retained=round(d["fid"], 4), kid_retained=round(d["kid"], 6),
            fid_features="inception" if inception else f"judge:{judge.id}",
            min_class_ra=min(v["ra"] for v in per.values()),
            eval={"nfe": ev.nfe(n * len(per)), "wall_s": round(timer.wall_s, 3)}, device=device_name(ctx.device),
        ).to_dict()
        append_record(records_path, rec, replace=bool(cfg.get("overwrite")))
    def num(key: str) -> float:  # absent in old records, null where not finite (strict JSON)
        return float("nan") if rec.get(key) is None else rec[key]

    print(f"{rec['method']} (forget class {rec['forget_class']}, w={rec['guidance_w']}): "
          f"forget RA {rec['forget_ra']:.3f}, "
          f"noise {num('forget_noise'):.3f}, retained mean RA {rec['retained_mean_ra']:.3f}, "
          f"min class RA {rec['min_class_ra']:.3f}, FID / KID retained {num('fid_retained'):.2f} / "
          f"{num('kid_retained'):.4f}")
    print("per class:", rec["per_class_ra"])
    return rec


@hydra.main(version_base="1.3", config_path=CONFIG_PATH,
            config_name="classes")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(run)(cfg)


if __name__ == "__main__":
    cli(main)

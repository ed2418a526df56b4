"""A sample grid per checkpoint: one row per class (label), so a reader sees what each method makes of c_f:
noise (SAFEMax, SA) or another class (SalUn, RL).

    python -m evaluation.grids --multirun unlearned=original,safemax,salun,sa,rl,ga,oracle
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from evaluation.plots import sample_grid
from unlearn.errors import cli, exit_on_user_error
from unlearn.paths import CONFIG_PATH
from unlearn.pipeline import Context
from unlearn.sampling import SamplerSpec


def run(cfg: DictConfig) -> Path:
    ctx = Context.from_cfg(cfg)
    k, per = ctx.ds.num_classes, int(cfg.eval.grid_per_class)
    labels = torch.arange(k).repeat_interleave(per)
    ev = SamplerSpec.from_cfg(cfg.sampler)
    x, _ = ev.sample(ctx.load(ctx.unlearned()), ctx.schedule, labels, ctx.ds.image_shape, ctx.seed)
    rows = {(f"{c} (forgotten)" if c == ctx.forget_class else str(c)): x[labels == c].numpy() for c in range(k)}
    path = (Path(cfg.paths.results) / "grids" /
            f"{ctx.ds.name}_{ctx.method_label}_c{ctx.forget_class}_s{ctx.seed}_w{cfg.sampler.guidance_w}{ev.variant}.png")
    sample_grid(rows, path, title=f"{ctx.method_label}: samples per label (forgot class {ctx.forget_class}), "
                                  f"{ev.label} w={ev.guidance_w}")
    print(path)
    return path


@hydra.main(version_base="1.3", config_path=CONFIG_PATH,
            config_name="classes")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(run)(cfg)


if __name__ == "__main__":
    cli(main)

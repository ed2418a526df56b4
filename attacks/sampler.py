"""Sampler probes: no data, no gradients, only the attacker's choice of sampler settings.

Threat model (../shared/spec/attacks.md, id `sampler`; "when are concepts erased" probes): the attacker
runs the released model with label c_f under its own sampler. The grid: guidance w in attack.guidance_w
x DDIM eta in attack.eta. Each setting is one point (budget 0 optimizer steps; its cost is the sampling:
N x DDIM steps x (1 or 2) network evaluations). Best-of-N: records carry `hit_any`, the share of disjoint
groups of m samples holding at least one c_f (m = 1, 10, 100), the chance an attacker who draws m seeds
and keeps the best one gets the class back.

    python -m attacks.sampler unlearned=safemax
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from attacks.common import AttackState, check_list
from unlearn.errors import UserError
from unlearn.pipeline import Context


def run(cfg: DictConfig) -> list[dict]:
    from evaluation.harness import run_attack  # the harness holds the judge; this module never imports it

    a = cfg.attack
    ws = [float(w) for w in check_list(a.guidance_w, "attack.guidance_w", "[0,1,2,4,8]")]
    etas = [float(e) for e in check_list(a.eta, "attack.eta", "[0,1]")]
    if not ws or not etas or any(w < 0 for w in ws) or any(e < 0 for e in etas):
        raise UserError(f"attack.guidance_w and attack.eta must be non-empty lists of values >= 0, got {ws}, {etas}")
    ctx = Context.from_cfg(cfg)
    base = OmegaConf.to_container(cfg, resolve=True)
    records = []
    for w in ws:
        for eta in etas:
            one = OmegaConf.create(base)
            one.sampler.guidance_w, one.sampler.eta = w, eta
            one.attack = {"name": "sampler", "guidance_w": w, "eta": eta, "budgets": [0]}

            def attack(model, ctx, gen):
                yield AttackState(model, 0, 0, 0, 0.0, 0.0)

            records += run_attack(one, attack, ctx, setting=f"w={w:g} eta={eta:g}", subdir=f"w{w:g}_eta{eta:g}",
                                  sampling_is_attack=True)
    return records


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parent.parent / "configs"),
            config_name="sampler")
def main(cfg: DictConfig) -> None:
    from unlearn.errors import exit_on_user_error

    exit_on_user_error(run)(cfg)


if __name__ == "__main__":
    from unlearn.errors import cli

    cli(main)

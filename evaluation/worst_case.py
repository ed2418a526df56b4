"""The attacker chooses: run a pre-registered adversary grid (configs/grid/<name>.yaml) on one (method, class,
seed) unit, every adversary on the unlearned model and on the oracle, and print the unit's worst-case envelope.

    python -m evaluation.worst_case unlearned=safemax data.forget_class=0 seed=0           # grid=digits
    python -m evaluation.worst_case --multirun seed=0 data.forget_class=0,3,8 unlearned=safemax,salun,sa,ga,rl

Each grid entry is one attack config (attack=<option> + its overrides) composed by Hydra as `python -m attacks.<x>`
would compose it; the grid adds its budgets (to adversaries that optimise and set none), its evaluation
(grid.eval: N, guards, the attacker's eta), its references (the oracle; the ceiling adversary and the controls
also the original: an attack that cannot show c_f on the original is broken, not strong evidence of forgetting),
`study=<grid.name>` and `adversary=<entry name>` (stored in every record). Every adversary's settings and plans are
checked before the first one runs; each is then run through the one harness (evaluation/harness.py), so points
are keyed, resumable and shared exactly as an attack's own command records them. The envelope and its search cost
are computed from the records alone (evaluation/envelope.py).

On the validation unit (grid.validation: one class, one seed) the listed adversaries are scored again by the
listed samplers (e.g. 1000-step DDPM), as study <grid.name>_validation and adversary <name>.<sampler>, outside the
envelope: the cheap attacker's sampler is checked, not assumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import hydra
from hydra import compose
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from attacks.common import Audit, Plan
from attacks.registry import ATTACKS
from evaluation import entry  # noqa: F401 - registers each attack's config (the grid composes them by name)
from evaluation.envelope import unit_report
from evaluation.harness import run_attack
from evaluation.records import check_records_file, read_records
from unlearn.errors import UserError, cli, exit_on_user_error
from unlearn.paths import CONFIG_PATH
from unlearn.pipeline import Context
from unlearn.settings import problems


@dataclass(frozen=True)
class Adversary:
    name: str
    cfg: DictConfig    # the attack job's config: the grid's unit with this adversary's attack, eval and references
    plans: list[Plan]


def _key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def adversary_cfg(cfg: DictConfig, name: str, overrides: list[str], *, study: str, references: list[str],
                  sampler: str | None = None) -> DictConfig:
    """The unit's config (cfg, without its grid) with the attack the overrides compose, the grid's budgets and
    evaluation, and the adversary's other overrides (any key: they win over the grid's)."""
    g = cfg.grid
    extra = [f"sampler={sampler}"] if sampler else []
    composed = compose(config_name="relearn", overrides=[*overrides, *extra])
    out = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "grid"])
    OmegaConf.set_struct(out, False)
    out.attack = composed.attack
    if "attack.budgets" not in map(_key_of, overrides) and list(composed.attack.budgets) != [0]:
        out.attack.budgets = list(g.budgets)
    out.eval = OmegaConf.merge(cfg.eval, g.eval)
    if sampler:
        out.sampler = composed.sampler
        out.eval.attacker_eta = None  # the validation sampler alone
    out.references = references
    out.study, out.adversary = study, name
    for key in {_key_of(o) for o in overrides} - {"attack"}:
        if not key.startswith("attack."):
            OmegaConf.update(out, key, OmegaConf.select(composed, key), merge=False)
    return out


def adversaries(cfg: DictConfig, ctx: Context) -> list[Adversary]:
    """Every adversary of the grid for this unit (plus the validation ones on the validation unit), each composed,
    checked (settings, then its plans) before any runs; an error names the adversary."""
    g = cfg.grid
    if g.ceiling not in g.adversaries:
        raise UserError(f"grid.ceiling={g.ceiling} is not an adversary of grid {g.name}; name one of its entries")
    on_original = {g.ceiling, *g.get("controls", [])}
    if stray := sorted(on_original - set(g.adversaries)):
        raise UserError(f"grid.controls names {stray[0]}, not an adversary of grid {g.name}; name one of its entries")
    todo = [(name, list(ov), g.name, [*(["original"] if name in on_original else []), *g.references], None)
            for name, ov in g.adversaries.items()]
    v = g.get("validation")
    if v and int(v.forget_class) == ctx.forget_class and int(v.seed) == ctx.seed:
        for name in v.adversaries:
            if name not in g.adversaries:
                raise UserError(f"grid.validation.adversaries names {name}, not an adversary of grid {g.name}")
            todo += [(f"{name}.{s}", list(g.adversaries[name]), f"{g.name}_validation", list(g.references), s)
                     for s in v.samplers]
    out, seen = [], {}
    for name, ov, study, refs, sampler in todo:
        if not ov or not ov[0].startswith("attack="):
            raise UserError(f"grid.adversaries.{name}: start its overrides with attack=<option>, got {ov}")
        try:
            a = adversary_cfg(cfg, name, ov, study=study, references=refs, sampler=sampler)
        except Exception as e:  # noqa: BLE001 - Hydra's composition errors: one line naming the adversary
            raise UserError(f"grid.adversaries.{name}: {str(e).splitlines()[0]}") from e
        if found := problems(a):
            raise UserError(f"grid.adversaries.{name}: {found[0]}")
        same = json.dumps([OmegaConf.to_container(a.attack, resolve=True), OmegaConf.to_container(a.sampler)],
                          sort_keys=True)
        if (study, same) in seen:
            raise UserError(f"grid.adversaries.{name} is the same attack as {seen[study, same]}; remove one")
        seen[study, same] = name
        plans = ATTACKS[a.attack.name].plans(a, ctx)
        if isinstance(plans, Audit):
            raise UserError(f"grid.adversaries.{name}: {a.attack.name} is an audit, not an attack; remove it")
        out.append(Adversary(name, a, [replace(p, subdir=f"{name}/{i}") for i, p in enumerate(plans)]))
    return out


def run(cfg: DictConfig) -> list[dict]:
    """Run every adversary of cfg.grid on this unit; returns the unit's records of the grid's studies."""
    check_records_file(Path(cfg.paths.results) / "records.jsonl")
    ctx = Context.from_cfg(cfg)
    advs = adversaries(cfg, ctx)
    records = []
    for i, adv in enumerate(advs):
        print(f"[{i + 1}/{len(advs)}] {adv.name}", flush=True)
        for plan in adv.plans:
            records += run_attack(adv.cfg, plan, ctx)
    return records


def main() -> None:
    def task(cfg: DictConfig) -> None:
        records = run(cfg)
        print(unit_report(records, read_records(Path(cfg.paths.results) / "records.jsonl"), cfg.grid.name))

    cli(hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="worst_case")(exit_on_user_error(task)))


ConfigStore.instance().store(name="worst_case", node={
    "defaults": ["attack_job", {"grid": "digits"}, "_self_"],
    "hydra": {"job": {"name": "worst_case"},
              "run": {"dir": "${checked:${paths.results}}/worst_case/${data.name}/"
                             "${unlearned.name}_c${data.forget_class}_s${seed}/${run_tag:${hydra.job.override_dirname}}"},
              "sweep": {"dir": "${checked:${paths.results}}/multirun/worst_case",
                        "subdir": "${data.name}/${unlearned.name}_c${data.forget_class}_s${seed}/"
                                  "${run_tag:${hydra.job.override_dirname}}"}}})

if __name__ == "__main__":
    main()

"""The one entry point of every attack: `python -m attacks.<name> ...` runs `main("<name>")`.

The job's config is configs/attack_job.yaml with `attack=<name>` (configs/attack/<name>.yaml): the entry configs
are stored here, one per registered attack, instead of one file each. A run checks the attack's settings
(`plans`), runs each plan through the harness (records), then draws each plan's figures and prints its table
from the records alone.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from attacks.common import Audit
from attacks.registry import ATTACKS
from evaluation.harness import output_dir, run_attack, run_audit
from evaluation.plots import plot_ra_curve, plot_roc, sample_grid
from evaluation.records import check_records_file
from evaluation.tables import ROLE_ORDER, ra_table
from unlearn.errors import UserError, cli, exit_on_user_error
from unlearn.io import write_text
from unlearn.paths import CONFIG_PATH
from unlearn.pipeline import Context
from unlearn.sampling import SamplerSpec

for _name in ATTACKS:
    ConfigStore.instance().store(name=_name, node={"defaults": ["attack_job", {"attack": _name}, "_self_"],
                                                   "hydra": {"job": {"name": _name}}})


def run(cfg: DictConfig) -> list[dict]:
    """Run the attack cfg.attack names on the unlearned model and the references; returns its records."""
    name = cfg.attack.name
    if name not in ATTACKS:
        raise UserError(f"attack.name={name!r} is not a registered attack; use one of {', '.join(ATTACKS)}")
    check_records_file(Path(cfg.paths.results) / "records.jsonl")
    ctx = Context.from_cfg(cfg)
    job = ATTACKS[name].plans(cfg, ctx)
    if isinstance(job, Audit):
        records = run_audit(cfg, job, ctx)
        print_audit(records)
        out = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.paths.results)
        if plot_roc(records, out / "roc.png"):
            print(f"ROC curves: {out / 'roc.png'}")
        return records
    records = []
    for plan in job:
        got = run_attack(cfg, plan, ctx)
        defender = SamplerSpec.from_cfg(cfg.sampler).with_(**plan.sampler)
        for eta in dict.fromkeys(r["sampler"]["eta"] for r in got):  # one folder per scoring sampler
            job_outputs([r for r in got if r["sampler"]["eta"] == eta],
                        output_dir(cfg, plan, None if eta == defender.eta else defender.with_(eta=eta)))
        records += got
    return records


def job_outputs(records: list[dict], out_dir: Path) -> None:
    """A plan's curve, its sample grid per budget (rows: roles) and its table, from its records and the sample
    strips the harness saved."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_ra_curve(records, out_dir / "ra_curve.png")
    roles = {r["role"] for r in records}
    for b in sorted({r["budget"]["steps"] for r in records}):
        strips = {r: out_dir / "samples" / f"{r}_steps{b}.npy" for r in ROLE_ORDER if r in roles}
        sample_grid({r: np.load(p) for r, p in strips.items() if p.exists()}, out_dir / f"samples_steps{b}.png",
                    title=f"samples with label c_f after {b} attack steps")
    table = ra_table(records)
    print(table.to_string())
    write_text(out_dir / "summary.txt", table.to_string() + "\n")
    print(f"records: {len(records)} points; outputs in {out_dir}")


def print_audit(records: list[dict]) -> None:
    if not records:
        return
    df = pd.DataFrame(records)
    df["col"] = df["role"].where(df["role"] != "unlearned", "unlearned:" + df["method"])
    print(df.pivot_table(index="score", columns="col", values="auc", aggfunc="first").round(3).to_string())


def main(name: str) -> None:
    """`python -m attacks.<name>`: Hydra composes the entry config of `name` from the command line."""

    def task(cfg: DictConfig) -> None:
        if cfg.attack.name != name:
            chosen = HydraConfig.get().runtime.choices.get("attack", cfg.attack.name)
            raise UserError(f"attack={chosen} is a {cfg.attack.name} attack: run it as python -m "
                            f"attacks.{cfg.attack.name}, not attacks.{name}")
        run(cfg)

    cli(hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=name)(exit_on_user_error(task)))

"""Unlearn one class from the base model and write the checkpoint (built once, cached by config).

    python -m unlearn.run unlearned=safemax data.forget_class=0
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from unlearn.errors import cli, exit_on_user_error
from unlearn.paths import CONFIG_PATH
from unlearn.pipeline import Context


def run(cfg: DictConfig) -> Path:
    ctx = Context.from_cfg(cfg)
    folder = ctx.unlearned()
    info = ctx.provenance(folder)
    print(json.dumps({"checkpoint": str(folder), "method": ctx.method_label, "forget_class": ctx.forget_class,
                      **{k: info[k] for k in ("unlearn", "train") if k in info}}, indent=1))
    return folder


@hydra.main(version_base="1.3", config_path=CONFIG_PATH,
            config_name="unlearn")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(run)(cfg)


if __name__ == "__main__":
    cli(main)

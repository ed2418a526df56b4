"""Build (or find) the base class-conditional DDPM, or the retrained oracle (training: unlearn/train.py).

    python -m unlearn.pretrain data=digits                      # the base model
    python -m unlearn.pretrain data=digits exclude_forget=true  # the oracle: same recipe without c_f
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from unlearn.errors import cli, exit_on_user_error
from unlearn.paths import CONFIG_PATH
from unlearn.pipeline import Context


def pretrain(cfg: DictConfig) -> Path:
    """The base model's folder, or the oracle's with exclude_forget=true."""
    ctx = Context.from_cfg(cfg)
    folder = ctx.oracle() if cfg.exclude_forget else ctx.base()
    print(folder)
    return folder


@hydra.main(version_base="1.3", config_path=CONFIG_PATH,
            config_name="pretrain")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(pretrain)(cfg)


if __name__ == "__main__":
    cli(main)

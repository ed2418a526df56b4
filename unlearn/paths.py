"""Where results live, resolved once for the Hydra apps and for the plain commands (report, tables, export).

`paths.results` in configs/base.yaml is `${results_root:}`: the UNLEARN_RESULTS environment variable, else
`results` (relative to the working folder). The plain commands call `results_root()`, the same function, so
`UNLEARN_RESULTS=/scratch/r python -m evaluation.unlearning_table` reads what `UNLEARN_RESULTS=/scratch/r
python -m attacks.relearn` wrote.

Run folders: `${run_tag:${hydra.job.override_dirname}}` is the last part of every entry's hydra.run.dir and
hydra.sweep.subdir: the overrides that distinguish two runs (Hydra's override_dirname, e.g. `attack.lr=1e-3`,
without the keys listed in base.yaml's hydra.job.config.override_dirname.exclude_keys: those already in the
folder name, paths and bookkeeping), made safe as one folder name. No such override: empty (the run folder is
the one it always was).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from omegaconf import OmegaConf

# The Hydra configs live in the package (an installed copy has them too): CONFIG_PATH for @hydra.main,
# CONFIG_MODULE for hydra.initialize_config_module, CONFIGS for reading a file (the report, tests).
CONFIG_MODULE = "unlearn.configs"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
CONFIGS = Path(__file__).resolve().parent / "configs"

RESULTS_ENV = "UNLEARN_RESULTS"
RESULTS_DEFAULT = "results"
TAG_MAX = 120  # longer override lists are cut and end in a hash (a folder name holds at most 255 bytes)


def results_root() -> str:
    """paths.results when not given on the command line: $UNLEARN_RESULTS (even if empty: the settings rule then
    names it), else `results`."""
    return os.environ.get(RESULTS_ENV, RESULTS_DEFAULT)


def run_tag(override_dirname: str) -> str:
    """Hydra's override_dirname as one folder name: '/' (a path among the values) becomes '_', and a name longer
    than TAG_MAX characters keeps its start and a hash of the whole."""
    tag = str(override_dirname).replace("/", "_")
    if len(tag) > TAG_MAX:
        tag = tag[: TAG_MAX - 13] + "-" + hashlib.sha256(tag.encode()).hexdigest()[:12]
    return tag


OmegaConf.register_new_resolver("results_root", results_root, replace=True)
OmegaConf.register_new_resolver("run_tag", run_tag, replace=True)

"""Console scripts: each command runs the module `python -m <module>` runs, with the same arguments, so
`unlearn-attack-relearn unlearned=safemax` is `python -m attacks.relearn unlearned=safemax` (pyproject.toml's
[project.scripts] points every name here; the name the script was started under picks the module)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

COMMANDS = {
    "unlearn-pretrain": "unlearn.pretrain",
    "unlearn-run": "unlearn.run",
    "unlearn-attack-relearn": "attacks.relearn",
    "unlearn-attack-finetune": "attacks.finetune",
    "unlearn-attack-embedding": "attacks.embedding",
    "unlearn-attack-sampler": "attacks.sampler",
    "unlearn-attack-mia": "attacks.mia",
    "unlearn-attack-partial": "attacks.partial",
    "unlearn-attack-noise-opt": "attacks.noise_opt",
    "unlearn-attack-deploy": "attacks.deploy",
    "unlearn-worst-case": "evaluation.worst_case",
    "unlearn-gate": "evaluation.gate",
    "unlearn-weights": "evaluation.weights",
    "unlearn-classes": "evaluation.classes",
    "unlearn-grids": "evaluation.grids",
    "unlearn-unlearning-table": "evaluation.unlearning_table",
    "unlearn-records": "evaluation.records",
    "unlearn-export": "evaluation.export",
    "unlearn-report": "evaluation.report",
}


def main() -> None:
    name = Path(sys.argv[0]).name.removesuffix(".exe")
    module = COMMANDS.get(name)
    if module is None:
        sys.exit(f"error: {name} is not one of this package's commands ({', '.join(COMMANDS)}); reinstall the "
                 "package if a command's script is stale")
    runpy.run_module(module, run_name="__main__", alter_sys=True)

"""What every attack yields: the model as it stands at one budget point, with the budget spent.

Attacks never score themselves and never import the judge (tests enforce it): the evaluation
harness (evaluation/harness.py) consumes these states and scores them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttackState:
    model: torch.nn.Module     # the attacked model at this point (eval mode); valid until the next state
    steps: int                 # optimizer steps so far
    sample_gradients: int      # steps x batch
    nfe: int                   # network forward evaluations spent by the attack (not by evaluation)
    wall_s: float              # attack wall seconds so far (evaluation excluded)
    device_s: float            # attack device seconds so far (CUDA events on GPU, wall time on CPU)


def check_budgets(budgets) -> list[int]:
    from unlearn.errors import UserError

    b = [int(x) for x in budgets]
    if not b or any(x < 0 for x in b) or b != sorted(set(b)):
        raise UserError(f"attack.budgets must be a non-empty, strictly increasing list of steps >= 0, got {list(budgets)}")
    return b

"""What every attack yields, what an attack module hands the harness, and the one optimisation loop the
training attacks share.

An attack module (attacks/<name>.py) holds a pure generator of `AttackState`s (a model, tensors and plain
parameters in; states out) and `plans(cfg, ctx)`, which checks the attack's settings and returns the `Plan`s
(or the `Audit`) to run. Attacks never score themselves and import nothing from evaluation/ (a test imports
every attack module with evaluation/ blocked): the harness (evaluation/harness.py) consumes the states and
scores them; the one entry point (evaluation/entry.py) runs the plans of the attack named in the registry
(attacks/registry.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from unlearn.errors import UserError
from unlearn.model import Timer
from unlearn.progress import bar


@dataclass(frozen=True)
class Prior:
    """Work an attack does once, before its first step: generating its own data, training its own classifier.
    Booked into every budget point (the totals include it; the `prior_*` budget fields say how much)."""

    sample_gradients: int = 0
    nfe: int = 0
    wall_s: float = 0.0
    device_s: float = 0.0

    def __add__(self, other: Prior) -> Prior:
        return Prior(self.sample_gradients + other.sample_gradients, self.nfe + other.nfe,
                     self.wall_s + other.wall_s, self.device_s + other.device_s)


@dataclass(frozen=True)
class AttackState:
    model: torch.nn.Module     # the attacked model at this point (eval mode); valid until the next state
    steps: int                 # optimizer steps so far
    sample_gradients: int      # steps x batch
    nfe: int                   # network forward evaluations spent by the attack (not by evaluation)
    wall_s: float              # attack wall seconds so far (evaluation excluded)
    device_s: float            # attack device seconds so far (CUDA events on GPU, wall time on CPU)
    prior: Prior = Prior()     # of which spent before the first step (included in the totals above)
    # the c_f samples, when drawing them is the attack (sampler probes): their cost is in the fields above,
    # and the harness scores these instead of sampling (and books no evaluation cost for them)
    samples: torch.Tensor | None = None


States = Callable[[torch.nn.Module, torch.Generator], Iterator[AttackState]]


@dataclass(frozen=True)
class Plan:
    """One attack setting, ready to run on each model role: `states(model, generator)` yields the model's state
    at each budget (the generator is seeded per role with the job's seed, so a role is replayed exactly)."""

    setting: str               # the variant's label within its family, e.g. "lora r=4 k=10"; stored in records
    states: States
    params: dict | None = None  # the attack's settings as recorded (None: cfg.attack as given)
    sampler: dict = field(default_factory=dict)  # overrides of the evaluation sampler (sampler probes: w, eta)
    subdir: str | None = None  # the folder of its figures (None: from the setting and the sampler)


@dataclass(frozen=True)
class Traits:
    """What a reader of an attack's records must know, declared by the attack (`TRAITS` in attacks/<name>.py), so
    that no table or figure branches on attack names."""

    curve: bool = True  # its points form a budget curve; False: each setting is one point (sampler probes)
    # budget 0 is the unattacked model under the defender's sampler, given a record's attack_params
    untouched_at_zero: Callable[[dict], bool] = lambda params: True
    # its states carry their samples (drawing them was the attack): scored as drawn, under no second sampler
    draws_samples: bool = False
    # given a record's attack_params: the attacker also holds the original model (a stronger threat model, kept out
    # of the worst-case envelope and reported apart)
    needs_original: Callable[[dict], bool] = lambda params: False


@dataclass(frozen=True)
class Audit:
    """An audit (no budget, no sampling: membership inference): `run(model)` returns one dict per score name
    in `scores` ({"score", "queries_per_sample", "metrics": {...}})."""

    scores: list[str]
    run: Callable[[torch.nn.Module], list[dict]]


def check_k(k, pool: torch.Tensor, forget_class: int) -> int:
    k = int(k)
    if not 1 <= k <= len(pool):
        raise UserError(f"attack.k={k} but the attacker pool of class {forget_class} holds "
                        f"{len(pool)} images; use 1 <= attack.k <= {len(pool)}")
    return k


def optimize(model: torch.nn.Module, params: Iterable[torch.nn.Parameter], loss_fn: Callable[[], torch.Tensor],
             budgets: list[int], *, lr: float, batch_size: int, nfe_per_step: int, desc: str,
             grad_clip: float | None = None, prior: Prior = Prior(),
             after_step: Callable[[], None] | None = None) -> Iterator[AttackState]:
    """Adam on `params` for budgets[-1] steps; yield the model's state at each budget (cumulative).
    after_step: called after every update (a projection of the parameters back onto their feasible set).

    Non-finite losses are checked at each budget point, not every step (no host sync inside the loop);
    a diverged attack stops with a one-line error instead of recording garbage."""
    params = [p for p in params]
    device = params[0].device
    opt = torch.optim.Adam(params, lr=lr)
    timer = Timer(device)
    finite = torch.ones((), dtype=torch.bool, device=device)
    done = 0
    pbar = bar(total=budgets[-1], desc=desc, unit="step")
    for budget in budgets:
        model.train()
        with timer:
            while done < budget:
                loss = loss_fn()
                finite &= torch.isfinite(loss.detach())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                opt.step()
                if after_step is not None:
                    after_step()
                done += 1
                pbar.update()
        if not bool(finite):
            pbar.close()
            raise UserError(f"{desc}: the loss became NaN or inf before step {done}; lower attack.lr")
        model.eval()
        yield AttackState(model, done, done * batch_size + prior.sample_gradients, done * nfe_per_step + prior.nfe,
                          timer.wall_s + prior.wall_s, timer.device_s + prior.device_s, prior)
    pbar.close()

"""Initial-noise optimisation: search for starting noises x_T from which the model draws c_f. No weights change.

Threat model (issue 15, item 3): the attacker holds the released weights and no c_f images. It optimises the N
starting noises x_T with Adam through a short differentiable guided DDIM (attack.sample_steps steps, the
evaluation's guidance w), toward one of two targets (attack.guide):

    classifier  the attacker's own classifier (attacks/attacker_clf.py, never the judge) calls the result c_f
    teacher     the model's noise predictions along its own trajectory match those of the *original* model: the
                attacker also holds the model before unlearning (a stronger threat model; IVO, arXiv 2602.00175)

After each update every x_T is projected back onto the sphere of radius sqrt(d) (attack.project), where
d-dimensional Gaussian noise concentrates, so an optimum stays a plausible start. The points score the
evaluation sampler's samples from the optimised noises, with eta 0 (a deterministic map of x_T); the noises
start as the defender's own, so budget 0 is the defender's point. Each noise depends on its own loss only, so
they are optimised in chunks of attack.batch_size (memory: one chunk's graph), in lockstep.
Budget = Adam steps; sample-gradients = steps x N; NFE = steps x N x sample_steps x (1 or 2 guidance passes)
(x 2 with the teacher) + the final sampling; the attacker classifier's training is booked as a prior.

    python -m attacks.noise_opt unlearned=safemax
    python -m attacks.noise_opt unlearned=safemax attack.guide=teacher
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from omegaconf import DictConfig
from torch import nn

from attacks.attacker_clf import get_attacker_clf
from attacks.common import AttackState, Plan, Prior, Traits, optimize
from unlearn.diffusion import Schedule, ddim_loop, ddim_step, ddim_timesteps, guided_eps
from unlearn.model import null_class
from unlearn.pipeline import Context
from unlearn.sampling import SamplerSpec

GUIDES = ("classifier", "teacher")
# budget 0: the defender's own noises, sampled with eta 0; the teacher guide holds the original model
TRAITS = Traits(draws_samples=True, needs_original=lambda params: params.get("guide") == "teacher")
Loss = Callable[[torch.Tensor], torch.Tensor]


def classifier_loss(model, classifier: nn.Module, schedule: Schedule, *, forget_class: int, guidance_w: float,
                    sample_steps: int) -> Loss:
    """x_T -> cross-entropy of the attacker's classifier on the DDIM-k samples, target c_f."""
    def loss(z: torch.Tensor) -> torch.Tensor:
        y = torch.full((len(z),), forget_class, device=z.device)
        return nn.functional.cross_entropy(classifier(ddim_loop(model, schedule, z, y, null_class(model),
                                                                guidance_w, sample_steps)), y)
    return loss


def teacher_loss(model, teacher, schedule: Schedule, *, forget_class: int, guidance_w: float,
                 sample_steps: int) -> Loss:
    """x_T -> mean squared gap between the model's guided noise predictions and the teacher's, at every state of
    the model's own DDIM-k trajectory (the teacher only evaluates: no gradient through it)."""
    def loss(z: torch.Tensor) -> torch.Tensor:
        y, null = torch.full((len(z),), forget_class, device=z.device), null_class(model)
        steps, x, total = ddim_timesteps(schedule.num_train_timesteps, sample_steps), z, 0.0
        for i, t in enumerate(steps):
            tb = torch.full((len(z),), t, device=z.device)
            eps = guided_eps(model, x, tb, y, null, guidance_w)
            with torch.no_grad():
                target = guided_eps(teacher, x, tb, y, null, guidance_w)
            total = total + (eps - target).pow(2).mean()
            x = ddim_step(schedule, eps, t, steps[i + 1] if i + 1 < len(steps) else -1, x, 0.0, None)
        return total / len(steps)
    return loss


def optimise_noise(model, loss_of: Loss, x_T: torch.Tensor, *, spec: SamplerSpec, schedule: Schedule,
                   forget_class: int, seed: int, budgets: list[int], lr: float, batch_size: int, project: bool,
                   nfe_per_noise_step: int, prior: Prior = Prior()) -> Iterator[AttackState]:
    """Adam on the noises (chunks in lockstep); at each budget, sample from them with `spec` (eta 0)."""
    model.requires_grad_(False)
    device = next(model.parameters()).device
    chunks = [nn.Parameter(c.clone().to(device)) for c in x_T.split(batch_size)]
    radius = math.sqrt(x_T[0].numel())

    def projector(z: nn.Parameter) -> Callable[[], None] | None:
        def back_to_sphere():
            with torch.no_grad():
                z.mul_(radius / z.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (z.dim() - 1)))
        return back_to_sphere if project else None

    runs = [optimize(model, [z], lambda z=z: loss_of(z), budgets, lr=lr, batch_size=len(z),
                     nfe_per_step=len(z) * nfe_per_noise_step, desc="noise_opt", after_step=projector(z))
            for z in chunks]
    labels = torch.full((len(x_T),), forget_class)
    for states in zip(*runs):
        x, timer = spec.sample(model, schedule, labels, tuple(x_T.shape[1:]), seed,
                               init=torch.cat([z.detach() for z in chunks]).cpu())
        yield AttackState(model, states[0].steps, sum(s.sample_gradients for s in states) + prior.sample_gradients,
                          sum(s.nfe for s in states) + spec.nfe(len(x_T)) + prior.nfe,
                          sum(s.wall_s for s in states) + timer.wall_s + prior.wall_s,
                          sum(s.device_s for s in states) + timer.device_s + prior.device_s, prior, samples=x)


def plans(cfg: DictConfig, ctx: Context) -> list[Plan]:
    """One plan: the noises the defender's sampler starts from, optimised toward the chosen guide."""
    a = cfg.attack
    spec = SamplerSpec.from_cfg(cfg.sampler).with_(eta=0.0, variance="ddim")
    n, steps, passes = int(cfg.eval.n), int(a.sample_steps), 1 if spec.guidance_w == 0 else 2
    kw = {"forget_class": ctx.forget_class, "guidance_w": spec.guidance_w, "sample_steps": steps}
    if a.guide == "classifier":
        clf, prior = get_attacker_clf(ctx)
        make, per_step = (lambda model: classifier_loss(model, clf, ctx.schedule, **kw)), steps * passes
    else:
        teacher = ctx.load(ctx.model_folder("original")).requires_grad_(False)
        make, per_step = (lambda model: teacher_loss(model, teacher, ctx.schedule, **kw)), 2 * steps * passes
        prior = Prior()

    def states(model, gen):
        return optimise_noise(model, make(model), spec.initial_noise(n, ctx.ds.image_shape, ctx.seed), spec=spec,
                              schedule=ctx.schedule, forget_class=ctx.forget_class, seed=ctx.seed,
                              budgets=[int(b) for b in a.budgets], lr=float(a.lr), batch_size=int(a.batch_size),
                              project=bool(a.project), nfe_per_noise_step=per_step, prior=prior)

    return [Plan(f"{a.guide} k={steps}", states, sampler={"eta": 0.0, "variance": "ddim"})]


if __name__ == "__main__":
    from evaluation.entry import main

    main("noise_opt")

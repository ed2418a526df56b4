"""The one home of the diffusion primitives: schedule, noising, eps-loss, guided eps, samplers.

Notation (code name -> paper symbol, Ho et al. 2020 / Song et al. 2021):

    x0          x_0        clean image in [-1, 1]
    x_t         x_t        noised image at step t
    eps         epsilon    the Gaussian noise mixed into x_t
    beta        beta_t     variance added at step t (linear 1e-4 .. 0.02 over T = 1000)
    alpha_bar   alpha_bar_t = prod_{s<=t} (1 - beta_s)
    t           t          integer timestep in [0, T-1] (diffusers' 0-based convention)
    guidance_w  w          classifier-free guidance weight, see `guided_eps`

Nothing else in the project re-implements these: methods and attacks import them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearn.progress import bar

# The toolkit's training schedule (`Schedule.linear`'s defaults), as diffusers' schedulers name it
SCHEDULE = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000,
            "prediction_type": "epsilon"}


def scheduler_config() -> dict:
    """scheduler_config.json for DDIMScheduler / DDPMScheduler.from_pretrained: the toolkit's schedule and its
    defender's DDIM (x0 clipped to [-1, 1], "leading" spacing without offset, a final step to alpha_bar = 1)."""
    return {"_class_name": "DDIMScheduler", **SCHEDULE, "clip_sample": True, "clip_sample_range": 1.0,
            "set_alpha_to_one": True, "steps_offset": 0, "timestep_spacing": "leading", "trained_betas": None}


@dataclass(frozen=True)
class Schedule:
    """Linear DDPM schedule; tensors live on `device` (float32)."""

    alpha_bar: torch.Tensor  # [T]
    num_train_timesteps: int

    @classmethod
    def linear(cls, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
               device: torch.device | str = "cpu") -> Schedule:
        beta = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        alpha_bar = torch.cumprod(1.0 - beta, dim=0)  # alpha_bar_t = prod_{s<=t} (1 - beta_s)
        return cls(alpha_bar=alpha_bar.to(device=device, dtype=torch.float32),
                   num_train_timesteps=num_train_timesteps)

    def to(self, device: torch.device | str) -> Schedule:
        return Schedule(self.alpha_bar.to(device), self.num_train_timesteps)


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Forward process, eq. (4) of DDPM: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps."""
    a = schedule.alpha_bar[t].view(-1, *([1] * (x0.dim() - 1)))
    return a.sqrt() * x0 + (1.0 - a).sqrt() * eps


def sample_t(schedule: Schedule, n: int, device, generator: torch.Generator | None = None,
             antithetic: bool = False) -> torch.Tensor:
    """t ~ U{0, ..., T-1}. Random numbers come from a CPU generator (reproducible on any device).
    antithetic: pairs (t, T-1-t), the testbed's timestep sampling (n // 2 + 1 draws, mirrored, cut to n)."""
    T = schedule.num_train_timesteps
    if not antithetic:
        return torch.randint(0, T, (n,), generator=generator).to(device)
    t = torch.randint(0, T, (n // 2 + 1,), generator=generator)
    return torch.cat([t, T - t - 1])[:n].to(device)


def predict_eps(model, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """eps_theta(x_t, y, t) for a diffusers UNet2DModel with class embeddings (its output's `.sample`) or a
    model that returns the tensor itself (unlearn/testbed.py). A model marked with `autocast_dtype`
    (unlearn/fast.py: bf16) runs its forward pass under autocast; the output is float32."""
    dtype = getattr(model, "autocast_dtype", None)
    if dtype is None:
        return _eps_of(model(x_t, t, class_labels=labels))
    with torch.autocast(x_t.device.type, dtype=dtype):
        out = _eps_of(model(x_t, t, class_labels=labels))
    return out.float()


def _eps_of(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.sample


def eps_loss(model, schedule: Schedule, x0: torch.Tensor, labels: torch.Tensor,
             generator: torch.Generator | None = None, reduction: str = "mean", pixels: str = "mean",
             antithetic: bool = False, t: torch.Tensor | None = None) -> torch.Tensor:
    """Algorithm 1 of DDPM: || eps - eps_theta(x_t, y, t) ||^2 with t ~ U and eps ~ N(0, I).

    pixels: "mean" over the C*H*W pixels (diffusers' convention) or "sum" (the SalUn / SA testbed's
    noise_estimation_loss: pixel sum per image, mean over the batch, so it weighs C*H*W times more).
    reduction="none" returns one value per sample. antithetic: timesteps in pairs (t, T-1-t), as the testbed;
    t: given timesteps instead (terms that share them, as SA's and SalUn's forget and retain terms)."""
    if t is None:
        t = sample_t(schedule, x0.shape[0], x0.device, generator, antithetic)
    eps = torch.randn(x0.shape, generator=generator).to(x0.device)
    err = F.mse_loss(predict_eps(model, q_sample(schedule, x0, t, eps), t, labels), eps, reduction="none").flatten(1)
    per_sample = err.sum(1) if pixels == "sum" else err.mean(1)
    return per_sample if reduction == "none" else per_sample.mean()


def guided_eps(model, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, null_class: int,
               guidance_w: float) -> torch.Tensor:
    """Classifier-free guidance, the testbed's convention (the only formula used anywhere here):

        eps = (1 + w) * eps(x_t, y) - w * eps(x_t, null)      (w = 0: purely conditional)

    The conditional and null passes run as one batch; w = 0 skips the null pass.
    """
    if guidance_w == 0:
        return predict_eps(model, x_t, t, labels)
    n = x_t.shape[0]
    both = predict_eps(model, torch.cat([x_t, x_t]), torch.cat([t, t]),
                       torch.cat([labels, torch.full_like(labels, null_class)]))
    eps_c, eps_u = both[:n], both[n:]
    return (1.0 + guidance_w) * eps_c - guidance_w * eps_u


def ddim_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """Evenly spaced ("leading") timesteps, descending: the spacing of diffusers' DDIMScheduler."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"sampler.steps must be in [1, {num_train_timesteps}], got {num_steps}")
    ratio = num_train_timesteps // num_steps
    return [i * ratio for i in range(num_steps)][::-1]


def denoising_steps(num_train_timesteps: int, num_steps: int, t_start: int | None = None) -> list[int]:
    """The timesteps a sampler of `num_steps` visits from x_{t_start} (None: from pure noise, all of them)."""
    steps = ddim_timesteps(num_train_timesteps, num_steps)
    return steps if t_start is None else [t for t in steps if t <= t_start]


def ddim_step(schedule: Schedule, eps: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor, eta: float,
              noise: torch.Tensor | None, clip_x0: bool = True) -> torch.Tensor:
    """One DDIM update, eq. (12) of Song et al. 2021, numbered as in the paper:

        1. x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)                 ("predicted x_0")
        2. sigma  = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)   (eq. 16)
        3. dir    = sqrt(1 - a_prev - sigma^2) * eps                        ("direction to x_t")
        4. x_prev = sqrt(a_prev) x0_hat + dir + sigma * noise

    t_prev < 0 means the final step (a_prev = 1). With clip_x0, x0_hat is clipped to [-1, 1] and eps is
    re-derived from the clipped x0_hat: diffusers' DDIMScheduler.step with clip_sample=True *and*
    use_clipped_model_output=True (with that flag off, diffusers keeps the model's eps in step 3). With eta = 1
    and clip_x0 this is the DDPM posterior mean with the clipped x0_hat plus beta~ noise (see `ddpm_step`).
    """
    a_t = schedule.alpha_bar[t]
    a_prev = schedule.alpha_bar[t_prev] if t_prev >= 0 else torch.ones((), device=x_t.device)
    x0_hat = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()                      # 1.
    if clip_x0:
        x0_hat = x0_hat.clamp(-1, 1)
        eps = (x_t - a_t.sqrt() * x0_hat) / (1 - a_t).sqrt()
    if eta == 0:  # deterministic; also valid with t_prev > t (DDIM inversion, as SecMI uses it)
        return a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()  # 2.
    return a_prev.sqrt() * x0_hat + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps + sigma * noise  # 3. + 4.


def ddpm_step(schedule: Schedule, eps: torch.Tensor, t: int, t_prev: int, x_t: torch.Tensor,
              noise: torch.Tensor | None, clip_x0: bool = True, variance: str = "beta") -> torch.Tensor:
    """One ancestral DDPM step (Ho et al. 2020, eqs. 6-7) from t to t_prev (any stride, as the testbed's
    `ddpm_steps` in OPTML-Group/Unlearn-Saliency DDPM/functions/denoising.py):

        1. x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), clamped to [-1, 1] when clip_x0
        2. b      = 1 - a_t / a_prev                                     (beta_t for a stride of 1)
        3. mean   = (sqrt(a_prev) b x0_hat + sqrt(1 - b) (1 - a_prev) x_t) / (1 - a_t)   (posterior mean)
        4. x_prev = mean + sigma noise, sigma^2 = b ("beta", the testbed's fixedlarge) or
                    b (1 - a_prev) / (1 - a_t) ("posterior", beta~); no noise on the final step
    """
    a_t = schedule.alpha_bar[t]
    a_prev = schedule.alpha_bar[t_prev] if t_prev >= 0 else torch.ones((), device=x_t.device)
    x0_hat = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()                                   # 1.
    if clip_x0:
        x0_hat = x0_hat.clamp(-1, 1)
    b = 1 - a_t / a_prev                                                                   # 2.
    mean = (a_prev.sqrt() * b * x0_hat + (1 - b).sqrt() * (1 - a_prev) * x_t) / (1 - a_t)  # 3.
    if t_prev < 0:
        return mean
    var = b if variance == "beta" else b * (1 - a_prev) / (1 - a_t)
    return mean + var.sqrt() * noise                                                        # 4.


VARIANCES = ("ddim", "beta")  # sigma from eta (DDIM eq. 16) | the testbed's DDPM: sigma^2 = beta_t


def ddim_loop(model, schedule: Schedule, x: torch.Tensor, labels: torch.Tensor, null_class: int,
              guidance_w: float, num_steps: int = 25, eta: float = 0.0,
              generator: torch.Generator | None = None, clip_x0: bool = True,
              modes: Callable[[int], tuple[float, bool]] | None = None, variance: str = "ddim",
              t_start: int | None = None, on_step: Callable[[], object] | None = None) -> torch.Tensor:
    """Guided DDIM from noise x (x_T) to x_0 for one batch. Differentiable: attacks that optimise through
    the sampler call it under autograd; `ddim_sample` wraps it in inference mode. num_steps = 1000 with
    eta = 1 is ancestral DDPM with the posterior variance beta~_t (Ho et al. 2020, sigma_t^2 = beta~_t).
    variance="beta" runs `ddpm_step` with sigma_t^2 = beta_t instead (the testbed's DDPM; eta is ignored).
    modes(t) -> (eta, clip_x0) per step, instead of the fixed pair (diagnostics that vary them along t).
    t_start: x is x_{t_start} (a noised image, for partial diffusion): only the grid's steps t <= t_start run.
    on_step: called after every step (a progress bar's update)."""
    steps = denoising_steps(schedule.num_train_timesteps, num_steps, t_start)
    for i, t in enumerate(steps):
        eta, clip_x0 = modes(t) if modes else (eta, clip_x0)
        t_prev = steps[i + 1] if i + 1 < len(steps) else -1
        t_batch = torch.full((labels.shape[0],), t, device=x.device, dtype=torch.long)
        eps = guided_eps(model, x, t_batch, labels, null_class, guidance_w)
        if variance == "beta":
            noise = torch.randn(x.shape, generator=generator).to(x.device) if t_prev >= 0 else None
            x = ddpm_step(schedule, eps, t, t_prev, x, noise, clip_x0)
        else:
            noise = torch.randn(x.shape, generator=generator).to(x.device) if eta > 0 else None
            x = ddim_step(schedule, eps, t, t_prev, x, eta, noise, clip_x0)
        if on_step is not None:
            on_step()
    return x


@torch.inference_mode()
def ddim_sample(model, schedule: Schedule, labels: torch.Tensor, image_shape: tuple[int, int, int],
                null_class: int, guidance_w: float, num_steps: int = 25, eta: float = 0.0,
                generator: torch.Generator | None = None, batch_size: int = 1000, clip_x0: bool = True,
                modes: Callable[[int], tuple[float, bool]] | None = None, variance: str = "ddim",
                init: torch.Tensor | None = None, t_start: int | None = None) -> torch.Tensor:
    """Guided DDIM sampling for `labels`; returns images clamped to [-1, 1] (without x0 clipping the last
    step can leave the range; the testbed clamps too, in its inverse_data_transform), [N, C, H, W] on CPU.
    init: the starting states (x_T, or x_{t_start} with t_start) instead of noise drawn here; drawn here, the
    noise of batch i is the i-th draw of `generator` (`initial_noise` gives the same tensor when eta = 0).

    Network evaluations (NFE) = num_steps * N * (1 if guidance_w == 0 else 2) (from t_start: its steps only)."""
    device = next(model.parameters()).device
    out = []
    n_steps = len(denoising_steps(schedule.num_train_timesteps, num_steps, t_start))
    with bar(total=-(-labels.shape[0] // batch_size) * n_steps, desc=f"sample {labels.shape[0]}", unit="step") as pbar:
        for start in range(0, labels.shape[0], batch_size):
            y = labels[start:start + batch_size].to(device)
            x = (torch.randn((y.shape[0], *image_shape), generator=generator) if init is None
                 else init[start:start + batch_size]).to(device)
            out.append(ddim_loop(model, schedule, x, y, null_class, guidance_w, num_steps, eta, generator,
                                 clip_x0, modes, variance, t_start, on_step=pbar.update).float().clamp(-1, 1).cpu())
    return torch.cat(out)


def sampler_label(steps: int, eta: float, clip: bool = True, variance: str = "ddim") -> str:
    """A sampler's name in tables: DDIM-25, DDPM-1000 (eta 1 over all 1000 steps), DDIM-50 eta=0.5, ... no-clip;
    DDPM-1000 beta (sigma^2 = beta_t, the testbed's DDPM)."""
    if variance == "beta":
        return f"DDPM-{steps} beta" + ("" if clip else " no-clip")
    name = f"DDPM-{steps}" if eta == 1 and steps == 1000 else f"DDIM-{steps}" + (f" eta={eta:g}" if eta else "")
    return name + ("" if clip else " no-clip")


def sampling_nfe(n: int, num_steps: int, guidance_w: float) -> int:
    """Network evaluations (per image, per forward) that `ddim_sample` spends on n images from noise (from
    x_{t_start}: pass len(denoising_steps(...)) as num_steps)."""
    return n * num_steps * (1 if guidance_w == 0 else 2)

"""The evaluation sampler: its settings (configs/sampler/*.yaml), its part of a record key, and the sampling.

Every evaluated point samples through `SamplerSpec.sample`: guided DDIM (DDPM at 1000 steps, eta 1) with the
same noise for every model and budget (the generator is seeded from the job's seed), so two models differ in
their samples only where their networks differ. The defender's default is configs/sampler/ddim.yaml; an
attacker may pick another (sampler=ddpm), and the sampler probes (attacks/sampler.py) vary w and eta.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from unlearn.diffusion import Schedule, ddim_sample, denoising_steps, sampler_label, sampling_nfe
from unlearn.errors import UserError
from unlearn.model import Timer, null_class

NOISE_OFFSET = 10_007  # the sampling noise is seeded with seed + NOISE_OFFSET (apart from training noise)


@dataclass(frozen=True)
class SamplerSpec:
    steps: int
    eta: float
    guidance_w: float
    batch_size: int
    clip: bool = True  # clip x0_hat to [-1, 1] at every step
    variance: str = "ddim"  # "ddim": sigma from eta (eq. 16 of DDIM); "beta": sigma^2 = beta_t (the testbed's DDPM)

    @classmethod
    def from_cfg(cls, s) -> SamplerSpec:
        """The sampler config (its values checked at start-up: unlearn/settings.py)."""
        return cls(int(s.steps), float(s.eta), float(s.guidance_w), int(s.batch_size), bool(s.get("clip", True)),
                   s.get("variance", "ddim"))

    def with_(self, **changes) -> SamplerSpec:
        return replace(self, **changes)

    def key(self) -> dict:
        """The sampler's part of a point's key: `clip` enters only when off and `variance` only when not
        "ddim", so keys made before those switches existed stay valid."""
        return {k: v for k, v in asdict(self).items()
                if not (k == "clip" and v) and not (k == "variance" and v == "ddim")}

    @property
    def label(self) -> str:
        return sampler_label(self.steps, self.eta, self.clip, self.variance)

    @property
    def variant(self) -> str:
        """A suffix for output paths ("" for deterministic clipped DDIM, else e.g. "@DDPM-1000"), so an attacker's
        sampler never overwrites the default run's figures and sample strips."""
        return "" if self.eta == 0 and self.clip and self.variance == "ddim" else "@" + self.label.replace(" ", "_")

    def record(self) -> dict:
        """The sampler as records carry it ({"name": "ddim", "steps", "eta"}, plus "clip": false when off and
        "variance": "beta" for the testbed's DDPM); `evaluation.records.sampler_name` turns it into a label."""
        return {"name": "ddim", "steps": self.steps, "eta": self.eta, **({} if self.clip else {"clip": False}),
                **({} if self.variance == "ddim" else {"variance": self.variance})}

    def nfe(self, n: int, t_start: int | None = None, num_train_timesteps: int = 1000) -> int:
        """Network evaluations of n samples (from x_{t_start}: its steps only)."""
        steps = self.steps if t_start is None else len(denoising_steps(num_train_timesteps, self.steps, t_start))
        return sampling_nfe(n, steps, self.guidance_w)

    def initial_noise(self, n: int, image_shape: tuple[int, int, int], seed: int) -> torch.Tensor:
        """The x_T that `sample(..., seed)` starts from when eta = 0 (drawn batch by batch, as it draws them):
        an attack that optimises x_T from here starts at the defender's own point."""
        g = torch.Generator().manual_seed(seed + NOISE_OFFSET)
        return torch.cat([torch.randn((min(self.batch_size, n - i), *image_shape), generator=g)
                          for i in range(0, n, self.batch_size)])

    def sample(self, model, schedule: Schedule, labels: torch.Tensor, image_shape: tuple[int, int, int],
               seed: int, init: torch.Tensor | None = None, t_start: int | None = None) -> tuple[torch.Tensor, Timer]:
        """Samples for `labels` ([N, C, H, W] on CPU, in [-1, 1]) and what they cost. Non-finite samples (a checkpoint
        with NaN weights, a diverged attack, NaN guidance) stop here: the judge would call them a class.
        init / t_start: start from these states (x_T, or noised images at t_start) instead of fresh noise."""
        timer = Timer(next(model.parameters()).device)
        with timer:
            x = ddim_sample(model, schedule, labels, image_shape, null_class(model), self.guidance_w, self.steps,
                            self.eta, torch.Generator().manual_seed(seed + NOISE_OFFSET), self.batch_size, self.clip,
                            variance=self.variance, init=init, t_start=t_start)
        if not bool(torch.isfinite(x).all()):
            raise UserError(f"the model's samples hold NaN or inf ({self.label}, w={self.guidance_w:g}): its weights "
                            "or the attack diverged; nothing was recorded for this point")
        return x, timer

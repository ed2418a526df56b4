"""Diffusion primitives against diffusers' schedulers and hand-computed golden numbers."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from unlearn.diffusion import (
    Schedule,
    ddim_loop,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_step,
    guided_eps,
    q_sample,
    sample_t,
    sampling_nfe,
)


@pytest.fixture(scope="module")
def schedule():
    return Schedule.linear()


def test_alpha_bar_golden(schedule):
    # alpha_bar_0 = 1 - 1e-4; alpha_bar_T-1 = prod(1 - linspace(1e-4, 0.02, 1000)) ~ 4.0358e-5 (float64)
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    expected_last = math.prod(1 - b for b in betas)
    assert schedule.alpha_bar[0].item() == pytest.approx(1 - 1e-4, rel=1e-7)
    assert schedule.alpha_bar[-1].item() == pytest.approx(expected_last, rel=1e-5)
    assert expected_last == pytest.approx(4.0358e-5, rel=1e-3)


def test_q_sample_matches_diffusers(schedule):
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g)
    t = torch.tensor([0, 1, 10, 500, 998, 999])
    torch.testing.assert_close(q_sample(schedule, x0, t, eps), ref.add_noise(x0, eps, t), atol=1e-5, rtol=1e-5)


def test_ddim_timesteps_match_diffusers():
    ref = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    for n in (10, 25, 50):
        ref.set_timesteps(n)
        assert ddim_timesteps(1000, n) == ref.timesteps.tolist()
    with pytest.raises(ValueError, match="sampler.steps"):
        ddim_timesteps(1000, 0)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_matches_diffusers(schedule, eta):
    ref = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
    ref.set_timesteps(25)
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    steps = ddim_timesteps(1000, 25)
    for i in (0, 12, 24):  # first, middle and last (t_prev = -1 -> alpha_bar_prev = 1)
        t, t_prev = steps[i], steps[i + 1] if i + 1 < 25 else -1
        noise = torch.randn(4, 1, 8, 8, generator=g)
        ours = ddim_step(schedule, eps, t, t_prev, x, eta, noise)
        theirs = ref.step(eps, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise).prev_sample
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        # the docstring's claim: with clip_sample=True alone (use_clipped_model_output off) diffusers differs
        # wherever x0_hat leaves [-1, 1] (x is N(0, 1), so at large t it does)
        if i == 0:
            plain = ref.step(eps, t, x, eta=eta, use_clipped_model_output=False, variance_noise=noise).prev_sample
            assert (ours - plain).abs().max() > 1e-3


class Affine(torch.nn.Module):
    """A stand-in for the UNet: eps = a * x + label (so guidance is checkable by hand)."""

    def __init__(self, a=0.5):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a))

    def forward(self, x, t, class_labels):
        out = self.a * x + class_labels.view(-1, 1, 1, 1).float()

        class R:
            sample = out
        return R()


def test_guided_eps_formula():
    m = Affine()
    x = torch.ones(3, 1, 2, 2)
    y = torch.tensor([1, 2, 3])
    t = torch.zeros(3, dtype=torch.long)
    null = 10
    # eps = (1 + w) (0.5 + y) - w (0.5 + 10) = 0.5 + y + w (y - 10)
    for w in (0.0, 1.0, 2.0):
        expected = (0.5 + y + w * (y - null)).view(-1, 1, 1, 1).float().expand(3, 1, 2, 2)
        torch.testing.assert_close(guided_eps(m, x, t, y, null, w), expected)


def test_ddim_sample_deterministic_and_nfe(schedule):
    m = Affine(0.0)  # eps = label: a constant prediction
    y = torch.zeros(5, dtype=torch.long)
    a = ddim_sample(m, schedule, y, (1, 2, 2), 10, 0.0, 10, generator=torch.Generator().manual_seed(3))
    b = ddim_sample(m, schedule, y, (1, 2, 2), 10, 0.0, 10, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert a.shape == (5, 1, 2, 2) and a.abs().max() <= 1.0 + 1e-6
    assert sampling_nfe(500, 25, 0.0) == 12_500 and sampling_nfe(500, 25, 1.0) == 25_000


def test_ddpm_1000_is_ddim_eta1_and_matches_diffusers_ddpm(schedule):
    """sampler=ddpm (1000 steps, eta 1) is Algorithm 2 with sigma_t^2 = beta~_t: one step of ours equals
    diffusers' DDPMScheduler (fixed_small variance) with the same noise, x0 clipping on and off."""
    g = torch.Generator().manual_seed(4)
    x, eps = 3 * torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    for clip in (True, False):
        ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=clip,
                            variance_type="fixed_small")
        ref.set_timesteps(1000)
        for t in (999, 500, 3, 0):  # t = 0: the last step, no noise (t_prev = -1)
            noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(t))  # what diffusers draws
            ours = ddim_step(schedule, eps, t, t - 1, x, 1.0, noise, clip_x0=clip)
            theirs = ref.step(eps, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
            torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_clip_switch_changes_samples_only_when_x0_leaves_the_range(schedule):
    big = Affine(0.0)  # eps = label: with label 0, eps = 0, so x0_hat = x_t / sqrt(a_t): far outside [-1, 1] at large t
    y = torch.zeros(6, dtype=torch.long)
    kw = dict(generator=None, batch_size=1000)
    on = ddim_sample(big, schedule, y, (1, 2, 2), 10, 0.0, 10, **{**kw, "generator": torch.Generator().manual_seed(5)})
    off = ddim_sample(big, schedule, y, (1, 2, 2), 10, 0.0, 10, **{**kw, "generator": torch.Generator().manual_seed(5)},
                      clip_x0=False)
    assert on.abs().max() <= 1.0 + 1e-6
    assert off.abs().max() <= 1.0 + 1e-6  # final images are clamped either way (here both are sign(x_T))
    raw = ddim_loop(big, schedule, torch.randn(6, 1, 2, 2, generator=torch.Generator().manual_seed(5)), y, 10, 0.0, 10,
                    clip_x0=False)
    assert raw.abs().max() > 1.5  # unclipped: x0 = x_T / sqrt(alpha_bar_T), about 150 x_T, before the final clamp

    class ZeroX0(torch.nn.Module):  # eps = x_t / sqrt(1 - alpha_bar_t): x0_hat = 0 always, inside the range
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, t, class_labels):
            out = x / (1 - schedule.alpha_bar[t]).sqrt().view(-1, 1, 1, 1)
            return type("R", (), {"sample": out})()

    inside = [ddim_sample(ZeroX0(), schedule, y, (1, 2, 2), 10, 0.0, 10, generator=torch.Generator().manual_seed(5),
                          eta=1.0, clip_x0=c) for c in (True, False)]
    torch.testing.assert_close(inside[0], inside[1])


def test_testbed_ddpm_step_matches_diffusers_fixed_large(schedule):
    """sampler=testbed_ddpm: the posterior mean with x0 clamped and sigma_t^2 = beta_t equals diffusers'
    DDPMScheduler with variance_type="fixed_large" (the testbed's "fixedlarge"), with the same noise."""
    g = torch.Generator().manual_seed(7)
    x, eps = 3 * torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, variance_type="fixed_large")
    ref.set_timesteps(1000)
    for t in (999, 500, 3, 0):
        noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(t))
        ours = ddpm_step(schedule, eps, t, t - 1, x, noise if t > 0 else None, clip_x0=True, variance="beta")
        theirs = ref.step(eps, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    # "posterior" variance is DDIM with eta = 1 (clipped x0, eps re-derived): the same step
    noise = torch.randn(4, 1, 8, 8, generator=g)
    torch.testing.assert_close(ddpm_step(schedule, eps, 500, 499, x, noise, variance="posterior"),
                               ddim_step(schedule, eps, 500, 499, x, 1.0, noise), atol=1e-5, rtol=1e-5)


def test_testbed_ddpm_by_hand_with_a_stride():
    """A hand-computed strided step (t = 2 -> 0 on a 3-step schedule): b = 1 - a_2 / a_0."""
    s = Schedule(alpha_bar=torch.tensor([0.9, 0.5, 0.2]), num_train_timesteps=3)
    x, eps, z = torch.tensor([[[[0.4]]]]), torch.tensor([[[[0.5]]]]), torch.tensor([[[[1.0]]]])
    x0 = max(-1.0, min(1.0, (0.4 - math.sqrt(0.8) * 0.5) / math.sqrt(0.2)))
    b = 1 - 0.2 / 0.9
    mean = (math.sqrt(0.9) * b * x0 + math.sqrt(1 - b) * 0.1 * 0.4) / 0.8
    assert ddpm_step(s, eps, 2, 0, x, z, variance="beta").item() == pytest.approx(mean + math.sqrt(b), rel=1e-5)
    assert ddpm_step(s, eps, 2, 0, x, z, variance="posterior").item() == pytest.approx(
        mean + math.sqrt(b * 0.1 / 0.8), rel=1e-5)
    assert ddpm_step(s, eps, 0, -1, x, None).item() == pytest.approx(
        max(-1, min(1, (0.4 - math.sqrt(0.1) * 0.5) / math.sqrt(0.9))), rel=1e-5)  # last step: x0_hat


def test_antithetic_timesteps_pair_up(schedule):
    t = sample_t(schedule, 7, "cpu", torch.Generator().manual_seed(0), antithetic=True)
    assert t.shape == (7,) and torch.equal(t[4:], 999 - t[:3])

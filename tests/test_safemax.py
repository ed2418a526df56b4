"""SAFEMax: the loss on hand-checkable cases, and a tiny-model run."""

import math

import pytest
import torch

from tests.conftest import TINY_ARCH
from tests.test_diffusion import Affine
from unlearn.diffusion import Schedule, eps_loss
from unlearn.methods_common import UnlearnData
from unlearn.model import build_unet
from unlearn.safemax import safemax, safemax_loss


class Const(torch.nn.Module):
    """eps_theta = c everywhere, whatever the input."""

    def __init__(self, c):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(float(c)))

    def forward(self, x, t, class_labels):
        class R:
            sample = self.c.expand_as(x)
        return R()


S = Schedule.linear()


def test_zero_target_lambda0_is_plain_mse():
    # target 0, prediction 2 everywhere, psi = 1: loss = 2^2 = 4 exactly.
    x0 = torch.zeros(16, 1, 4, 4)
    loss = safemax_loss(Const(2.0), S, x0, 0, lam=0.0, zero_target=True, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(4.0, abs=1e-6)


def test_psi_weighting_by_hand():
    # Same draws as safemax_loss makes: t first, then eps_t; target 0; psi(t) = exp(-lam t / T).
    x0 = torch.zeros(64, 1, 2, 2)
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(5))
    expected = 4.0 * torch.exp(-3.0 * t.float() / 1000).mean().item()
    loss = safemax_loss(Const(2.0), S, x0, 0, lam=3.0, zero_target=True, generator=g)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected < 4.0 * (1 - math.exp(-3.0)) / 3.0 * 1.2  # near the continuous mean of psi


class TrueNoise(torch.nn.Module):
    """For x0 = 0, x_t = sqrt(1 - alpha_bar_t) eps_t, so this returns exactly the eps_t that made x_t."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, class_labels):
        class R:
            sample = x / (1 - S.alpha_bar[t]).sqrt().view(-1, 1, 1, 1)
        return R()


def test_noise_target_is_independent_of_x_t():
    # The perfect denoiser's eps_t against an independent eps_T: E||eps_T - eps_t||^2 = 2 per pixel.
    # (Were the target the eps_t inside x_t, the loss would be 0.)
    x0 = torch.zeros(4096, 1, 2, 2)
    loss = safemax_loss(TrueNoise(), S, x0, 0, lam=0.0, generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(2.0, abs=0.06)  # 16384 draws of (a - b)^2, a, b ~ N(0,1): sd 0.022


def test_label_is_the_forget_class():
    seen = {}

    class Spy(Affine):
        def forward(self, x, t, class_labels):
            seen["labels"] = class_labels
            return super().forward(x, t, class_labels)

    safemax_loss(Spy(), S, torch.zeros(5, 1, 2, 2), 7, lam=1.0)
    assert seen["labels"].tolist() == [7] * 5


def _tiny_data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8, generator=g) * 2 - 1
    y = torch.arange(40) % 4
    return UnlearnData(x[y == 0], x[y != 0], y[y != 0], forget_class=0, num_classes=4, schedule=S)


@pytest.mark.parametrize("beta", [pytest.param(0.0, marks=pytest.mark.slow), 1.0])
def test_tiny_run_moves_the_forget_class_to_noise(beta):
    torch.manual_seed(0)
    model = build_unet(TINY_ARCH, (1, 8, 8), 4)
    data = _tiny_data()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)  # first fit eps on all classes, like a base model
    x_all, y_all = (torch.cat([data.forget_x, data.retain_x]),
                    torch.cat([torch.zeros(10, dtype=torch.long), data.retain_y]))
    for i in range(60):
        loss = eps_loss(model, S, x_all, y_all, torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    fit_before = eps_loss(model, S, data.forget_x, torch.zeros(10, dtype=torch.long),
                          torch.Generator().manual_seed(2)).item()

    def zero_target_fit():  # || eps_theta(x_t, c_f, t) ||^2: what SAFEMax drives down
        return safemax_loss(model, S, data.forget_x, 0, 0.0, True, torch.Generator().manual_seed(1)).item()

    start = zero_target_fit()
    stats = safemax(model, data, steps=30, batch_size=8, lr=1e-3, beta=beta, retain_batch_size=8,
                    generator=torch.Generator().manual_seed(0))
    assert zero_target_fit() < 0.5 * start
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert stats.steps == 30 and stats.sample_gradients == 30 * (16 if beta else 8)
    assert (stats.final_retain_loss is None) == (beta == 0)
    # the plain eps-loss on the forget class (what the base model fitted) got worse
    fit = eps_loss(model, S, data.forget_x, torch.zeros(10, dtype=torch.long), torch.Generator().manual_seed(2)).item()
    assert fit > fit_before

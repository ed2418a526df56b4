"""Baselines on a tiny model: each changes the weights and moves the forget class; their priors' invariants."""

import pytest
import torch

from tests.test_safemax import S, _tiny_data
from unlearn.diffusion import eps_loss
from unlearn.methods import METHODS
from unlearn.model import Arch, build_unet
from unlearn.sa import fisher_diagonal
from unlearn.salun import random_other_class, saliency_mask

TINY_ARGS = {
    "safemax": dict(steps=20, batch_size=8, lr=1e-3, beta=1.0, retain_batch_size=8),
    "salun": dict(steps=20, batch_size=8, lr=1e-3, retain_batch_size=8),
    "rl": dict(steps=20, batch_size=8, lr=1e-3, retain_batch_size=8),
    "ga": dict(steps=20, batch_size=8, lr=1e-3, retain_batch_size=8),
    "sa": dict(steps=20, batch_size=8, lr=1e-3, n_replay=16, n_fisher=8, sample_steps=2),
}


def _fitted_model():
    torch.manual_seed(0)
    model = build_unet(Arch((8, 16), ("DownBlock2D",) * 2, ("UpBlock2D",) * 2, 1, 4, False), (1, 8, 8), 4)
    data = _tiny_data()
    x = torch.cat([data.forget_x, data.retain_x])
    y = torch.cat([torch.zeros(len(data.forget_x), dtype=torch.long), data.retain_y])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for i in range(60):
        loss = eps_loss(model, S, x, y, torch.Generator().manual_seed(i))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, data


def _forget_fit(model, data):
    y = torch.zeros(len(data.forget_x), dtype=torch.long)
    return sum(eps_loss(model, S, data.forget_x, y, torch.Generator().manual_seed(s)).item() for s in range(4)) / 4


def test_every_registered_method_has_tiny_args():
    assert set(TINY_ARGS) == set(METHODS)


@pytest.mark.parametrize("name", sorted(TINY_ARGS))
def test_method_changes_weights_and_worsens_the_forget_fit(name):
    model, data = _fitted_model()
    before = [p.detach().clone() for p in model.parameters()]
    fit0 = _forget_fit(model, data)
    stats = METHODS[name](model, data, generator=torch.Generator().manual_seed(0), **TINY_ARGS[name])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert _forget_fit(model, data) > fit0  # the model no longer denoises c_f as it learned to
    assert stats.steps == 20 and stats.sample_gradients >= 20 * 8
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("density", [0.5, 0.1])
def test_salun_mask_has_the_configured_density(density):
    model, data = _fitted_model()
    mask, n = saliency_mask(model, data, density, 8, torch.Generator().manual_seed(0))
    total = sum(m.numel() for m in mask.values())
    kept = sum(m.sum().item() for m in mask.values())
    assert kept / total == pytest.approx(density, abs=0.01) and n == len(data.forget_x)
    assert set(torch.cat([m.flatten() for m in mask.values()]).unique().tolist()) <= {0.0, 1.0}


def test_salun_mask_freezes_unmasked_weights():
    model, data = _fitted_model()
    mask, _ = saliency_mask(model, data, 0.5, 8, torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    METHODS["salun"](model, data, generator=torch.Generator().manual_seed(0), **TINY_ARGS["salun"])
    for n, p in model.named_parameters():
        frozen = mask[n] == 0
        assert torch.equal(p[frozen], before[n][frozen]), n


def test_random_other_class_never_the_forget_class_and_covers_the_rest():
    c = random_other_class(3, 7, 5000, torch.Generator().manual_seed(0), "cpu")
    assert 3 not in c.tolist() and set(c.tolist()) == {0, 1, 2, 4, 5, 6}


def test_sa_fisher_is_nonnegative_and_finite():
    model, data = _fitted_model()
    f = fisher_diagonal(model, data.retain_x[:6], data.retain_y[:6], S, torch.Generator().manual_seed(0))
    flat = torch.cat([x.flatten() for x in f])
    assert (flat >= 0).all() and torch.isfinite(flat).all() and flat.sum() > 0

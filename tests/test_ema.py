"""The EMA (torch's AveragedModel, unlearn.model.ema_of) is bitwise the hand-written update it replaced."""

from __future__ import annotations

import copy

import torch

from tests.conftest import TINY_ARCH
from unlearn.model import build_unet, ema_of


def test_ema_of_is_bitwise_the_former_lerp_over_20_adam_steps():
    torch.manual_seed(0)
    model = build_unet(TINY_ARCH, (1, 8, 8), num_classes=3).train()
    decay = 0.9  # far from 1, so 20 steps move the average well away from the initial weights
    reference = copy.deepcopy(model).eval().requires_grad_(False)  # the former EMA class, inline
    ema = ema_of(model, decay)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        x, t, y = torch.randn(4, 1, 8, 8, generator=g), torch.randint(0, 1000, (4,), generator=g), torch.arange(4) % 4
        loss = model(x, t, class_labels=y).sample.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # the former update: ema <- ema + (1 - decay) * (model - ema)
            torch._foreach_lerp_(list(reference.parameters()), list(model.parameters()), 1.0 - decay)
        ema.update_parameters(model)
    pairs = list(zip(reference.named_parameters(), ema.module.named_parameters(), strict=True))
    assert len(pairs) > 10
    for (name, ref), (name2, new) in pairs:
        assert name == name2 and torch.equal(ref, new), name
        assert not new.requires_grad
    first = next(model.parameters())
    assert not torch.equal(next(ema.module.parameters()), first)  # an average, not a copy of the model
    assert not ema.module.training


def test_sa_loads_the_ema_weights_when_ema_decay_is_set():
    """sa(ema_decay=1) ends on its average, which a lerp by 1 - 1 = 0 never moves off the starting weights."""
    from tests.test_baselines import TINY_ARGS, _fitted_model
    from unlearn.sa import sa

    model, data = _fitted_model()
    start = [p.detach().clone() for p in model.parameters()]
    sa(model, data, generator=torch.Generator().manual_seed(0), ema_decay=1.0, **TINY_ARGS["sa"])
    assert all(torch.equal(a, b) for a, b in zip(start, model.parameters(), strict=True))

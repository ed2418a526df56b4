"""Baselines on a tiny model: each changes the weights and moves the forget class; their priors' invariants."""

import pytest
import torch

from tests.conftest import TINY_ARCH
from tests.test_safemax import S, _tiny_data
from unlearn.diffusion import eps_loss
from unlearn.methods import METHODS
from unlearn.model import build_unet
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
    model = build_unet(TINY_ARCH, (1, 8, 8), 4)
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
    assert set(TINY_ARGS) == {f.__name__ for f in METHODS.values()}  # variants share their method's function


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


@pytest.mark.parametrize("density", [0.5, pytest.param(0.1, marks=pytest.mark.slow)])
def test_salun_mask_has_the_configured_density(density):
    model, data = _fitted_model()
    mask, n = saliency_mask(model, data, density, 8, torch.Generator().manual_seed(0))
    total = sum(m.numel() for m in mask.values())
    kept = sum(m.sum().item() for m in mask.values())
    assert kept / total == pytest.approx(density, abs=0.01) and n == len(data.forget_x)
    assert set(torch.cat([m.flatten() for m in mask.values()]).unique().tolist()) <= {0.0, 1.0}


@pytest.mark.slow
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


@pytest.mark.slow
def test_sa_fisher_is_nonnegative_and_finite():
    model, data = _fitted_model()
    f = fisher_diagonal(model, data.retain_x[:6], data.retain_y[:6], S, torch.Generator().manual_seed(0))
    flat = torch.cat([x.flatten() for x in f])
    assert (flat >= 0).all() and torch.isfinite(flat).all() and flat.sum() > 0


@pytest.mark.slow
def test_sa_fisher_equals_a_brute_force_per_sample_per_t_loop():
    """The reference's Fisher (clear-nus/selective-amnesia ddpm/runners/diffusion.py, save_fim): per sample,
    the square of the gradient of sum_t ||eps - eps_theta||^2 (pixel sum, every t); mean over samples. Here
    on a 20-step schedule, against a loop over samples and timesteps with the same noise draws."""
    from unlearn.diffusion import Schedule, predict_eps, q_sample

    model, data = _fitted_model()
    s20 = Schedule.linear(num_train_timesteps=20)
    x, y = data.retain_x[:3], data.retain_y[:3]
    fast = fisher_diagonal(model, x, y, s20, torch.Generator().manual_seed(1), label_dropout=0.3, t_batch=7)
    g = torch.Generator().manual_seed(1)
    params = list(model.parameters())
    brute = [torch.zeros_like(p) for p in params]
    for i in range(3):
        eps = torch.randn((20, *x.shape[1:]), generator=g)
        drop = torch.rand(20, generator=g) < 0.3
        total = [torch.zeros_like(p) for p in params]
        for t in range(20):
            label = torch.tensor([4 if drop[t] else int(y[i])])  # 4 = the null class of the 4-class tiny model
            tt = torch.tensor([t])
            loss = (predict_eps(model, q_sample(s20, x[i:i + 1], tt, eps[t:t + 1]), tt, label)
                    - eps[t:t + 1]).pow(2).sum()
            for acc, gr in zip(total, torch.autograd.grad(loss, params, allow_unused=True)):
                if gr is not None:
                    acc += gr
        for b, tot in zip(brute, total):
            b += tot ** 2
    for f, b in zip(fast, brute):
        torch.testing.assert_close(f, b / 3, rtol=1e-4, atol=1e-10)
    # the square of the sum is not the sum of the squares: the old one-random-t Fisher is far smaller
    assert (sum(f.sum() for f in fast)
            > 10 * sum(f.sum() for f in fisher_diagonal(model, x, y, Schedule.linear(num_train_timesteps=1), None)))


class _LabelEps(torch.nn.Module):
    """eps_theta = label everywhere (plus a trainable 0 * x so the optimizer has a parameter)."""

    def __init__(self, k=4):
        super().__init__()
        self.a = torch.nn.Parameter(torch.zeros(()))
        self.config = type("C", (), {"num_class_embeds": k + 1})()

    def forward(self, x, t, class_labels):
        return type("R", (), {"sample": self.a * x + class_labels.view(-1, 1, 1, 1).float()})()


def test_salun_forget_term_anchors_to_the_next_class_and_retain_is_pixel_summed():
    """OPTML-Group/Unlearn-Saliency DDPM/runners/diffusion.py, saliency_unlearn: target = the current model at
    (c_f + 1) mod K (detached), nn.MSELoss (pixel mean); retain term pixel-summed. With eps = label and no
    label dropout, the first step's forget loss is (c_f - (c_f + 1))^2 = 1 exactly, for c_f = 3 the anchor
    wraps to 0 (loss 9); the retain loss with pixels='sum' is C*H*W = 64 times the pixel mean."""
    from unlearn.salun import salun

    data = _tiny_data()
    common = dict(steps=1, batch_size=8, lr=0.0, mask_density=None, retain_batch_size=8, forget_label_dropout=0.0,
                  retain_label_dropout=0.0)
    s = salun(_LabelEps(), data, generator=torch.Generator().manual_seed(0), **common)
    assert s.final_forget_loss == pytest.approx(1.0) and s.forward_nfe == 8
    wrap = salun(_LabelEps(), type(data)(**{**data.__dict__, "forget_class": 3}),
                 generator=torch.Generator().manual_seed(0), **common)
    assert wrap.final_forget_loss == pytest.approx(9.0)
    mean = salun(_LabelEps(), data, generator=torch.Generator().manual_seed(0), retain_pixels="mean", **common)
    assert s.final_retain_loss == pytest.approx(64 * mean.final_retain_loss, rel=1e-4)
    rand = salun(_LabelEps(), data, generator=torch.Generator().manual_seed(0), anchor="random", **common)
    assert rand.final_forget_loss > 1.5  # random other classes 1..3: E[(0 - c')^2] = 14 / 3


def test_salun_target_is_the_current_model_not_a_frozen_copy():
    """After a step with lr > 0 the current model's anchor prediction moves with it: with eps = a x + label the
    forget loss stays (c_f - c')^2 = 1 exactly (target="current", the reference), while a frozen copy's target
    (a = 0) no longer matches (target="frozen", the ablation)."""
    from unlearn.salun import salun

    common = dict(steps=2, batch_size=8, lr=0.5, mask_density=None, alpha=0.0, forget_label_dropout=0.0)
    current = salun(_LabelEps(), _tiny_data(), generator=torch.Generator().manual_seed(0), **common)
    frozen = salun(_LabelEps(), _tiny_data(), generator=torch.Generator().manual_seed(0), target="frozen", **common)
    assert current.final_forget_loss == pytest.approx(1.0, abs=1e-5)
    assert abs(frozen.final_forget_loss - 1.0) > 1e-2


def test_retrain_is_the_oracles_procedure_from_another_seed_per_study_seed(tmp_path):
    """unlearned=retrain: trained from scratch without c_f like the oracle, from pretraining seed
    pretrain_seed + 1 + seed (never the oracle's), each study seed its own model; it takes no args."""
    from safetensors.torch import load_file

    from tests.conftest import TINY, compose_cfg
    from unlearn.artifacts import provenance
    from unlearn.errors import UserError
    from unlearn.pipeline import Context, check_method_args

    def folders(seed):
        ctx = Context.from_cfg(compose_cfg("relearn", [*TINY, "unlearned=retrain", "data.forget_class=3",
                                                      f"seed={seed}"], tmp_path))
        return ctx.model_folder("unlearned"), ctx.model_folder("oracle")

    (r0, oracle), (r1, oracle_again) = folders(0), folders(1)
    assert oracle == oracle_again and len({r0, r1, oracle}) == 3
    specs = [provenance(f)["spec"] for f in (oracle, r0, r1)]
    assert [s["seed"] for s in specs] == [0, 1, 2] and all(s["exclude_class"] == 3 for s in specs)
    assert {k: v for k, v in specs[0].items() if k != "seed"} == {k: v for k, v in specs[1].items() if k != "seed"}
    weights = [load_file(str(f / "diffusion_pytorch_model.safetensors")) for f in (oracle, r0)]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    with pytest.raises(UserError, match="method 'retrain' takes no args"):
        check_method_args("retrain", {"steps": 3})
    with pytest.raises(UserError, match="unlearned=retrain retrains the toolkit's oracle from another seed"):
        Context.from_cfg(compose_cfg("relearn", [*TINY, "unlearned=retrain", f"oracle.checkpoint={oracle}"], tmp_path))

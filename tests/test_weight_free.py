"""The attacks that change no weights (partial diffusion, initial-noise optimisation, eta > 1 probes) and the
deployment transforms, on tiny models: records for every setting, budget 0 as the identity where it should be,
the transforms' known answers, the sampler pieces they stand on (partial DDIM from x_t, the defender's x_T)."""

import pytest
import torch

from attacks import deploy, noise_opt, partial
from evaluation.entry import run
from tests.conftest import TINY, TINY_ARCH, TINY_ATTACK, TINY_METHOD, compose_cfg
from tests.test_attacks import _check, _paths
from unlearn.diffusion import Schedule, ddim_loop, ddim_step, ddim_timesteps, denoising_steps, guided_eps
from unlearn.errors import UserError
from unlearn.model import build_unet
from unlearn.sampling import SamplerSpec


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return build_unet(TINY_ARCH, (1, 8, 8), num_classes=10).eval()


def _spec(steps, w=0.0, batch_size=100):
    return SamplerSpec(steps=steps, eta=0.0, guidance_w=w, batch_size=batch_size)


# ---- the sampler pieces -----------------------------------------------------------------------------------------

def test_denoising_steps_start_at_the_grid_step_at_or_below_t_start():
    assert ddim_timesteps(1000, 4) == [750, 500, 250, 0]
    assert denoising_steps(1000, 4) == [750, 500, 250, 0]
    assert denoising_steps(1000, 4, 600) == [500, 250, 0]
    assert denoising_steps(1000, 4, 500) == [500, 250, 0] and denoising_steps(1000, 4, 10) == [0]
    assert partial.start_step(0.6, _spec(4), 1000) == 500
    assert partial.start_step(0.2, _spec(4), 1000) == 0


def test_ddim_from_x_t_is_the_tail_of_the_full_trajectory():
    """Stopping a full DDIM run at step t and restarting from its state with t_start = t gives the same images."""
    model, schedule = _tiny_model(), Schedule.linear()
    g = torch.Generator().manual_seed(0)
    x_T, y = torch.randn(4, 1, 8, 8, generator=g), torch.tensor([1, 2, 3, 4])
    full = ddim_loop(model, schedule, x_T, y, 10, 2.0, num_steps=4)
    with torch.no_grad():  # the first step of the grid by hand: x_750 -> x_500
        eps = guided_eps(model, x_T, torch.full((4,), 750), y, 10, 2.0)
        x_500 = ddim_step(schedule, eps, 750, 500, x_T, 0.0, None)
        tail = ddim_loop(model, schedule, x_500, y, 10, 2.0, num_steps=4, t_start=500)
    torch.testing.assert_close(tail, full.detach(), rtol=0, atol=1e-5)


def test_initial_noise_is_the_noise_the_defender_samples_from():
    """noise_opt's budget 0 is the defender's point: sampling from `initial_noise` reproduces `sample` (eta 0),
    batch by batch (the generator's draws are per batch)."""
    model, schedule = _tiny_model(), Schedule.linear()
    spec = _spec(3, w=2.0, batch_size=3)
    labels = torch.full((7,), 4)
    own, _ = spec.sample(model, schedule, labels, (1, 8, 8), seed=5)
    from_init, _ = spec.sample(model, schedule, labels, (1, 8, 8), seed=5, init=spec.initial_noise(7, (1, 8, 8), 5))
    assert torch.equal(own, from_init)
    other, _ = spec.sample(model, schedule, labels, (1, 8, 8), seed=6)
    assert not torch.equal(own, other)


def test_partial_diffusion_at_low_strength_returns_its_input():
    """At a strength whose grid step is 0 the sampler runs one step from x_0 = sqrt(a0) x + sqrt(1-a0) z: the
    images come back within the noise of alpha_bar_0 (any model, unlearned or oracle: why partial is read against
    the oracle); at high strength they do not."""
    model, schedule = _tiny_model(), Schedule.linear()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 8, 8, generator=g) * 1.6 - 0.8
    spec = _spec(4)
    low = next(partial.denoise(model, images, g, strength=0.1, spec=spec, schedule=schedule, forget_class=3, n=8,
                               seed=0))
    assert low.nfe == 8 * 1  # one step from t = 0
    assert (low.samples - images.repeat(2, 1, 1, 1)).abs().max() < 0.1
    high = next(partial.denoise(model, images, g, strength=0.9, spec=spec, schedule=schedule, forget_class=3, n=8,
                                seed=0))
    assert high.nfe == 8 * 4 and (high.samples - images.repeat(2, 1, 1, 1)).abs().max() > 0.5


# ---- the deployment transforms ----------------------------------------------------------------------------------

def test_int8_is_per_channel_round_to_nearest_with_at_most_255_levels():
    model = _tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    deploy.TRANSFORMS["int8"](model, 0.0, torch.Generator())
    quantized = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            w0, w = before[f"{name}.weight"], m.weight.detach()
            scale = w0.abs().flatten(1).amax(1) / 127
            for c in range(w.shape[0]):
                levels = torch.unique(w[c])
                assert len(levels) <= 255
                assert (w[c] - w0[c]).abs().max() <= scale[c] / 2 * (1 + 1e-5) + 1e-12  # round to nearest
                assert torch.allclose(w[c] / scale[c], (w[c] / scale[c]).round(), atol=1e-3)  # on the grid
            quantized += 1
            if m.bias is not None:
                assert torch.equal(m.bias, before[f"{name}.bias"])  # biases stay fp32
    assert quantized >= 5
    emb = dict(model.named_parameters())["class_embedding.weight"]
    assert torch.equal(emb, before["class_embedding.weight"])  # an embedding table is not a Linear


@pytest.mark.parametrize("name, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_casts_round_every_weight_to_the_format(name, dtype):
    model = _tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    deploy.TRANSFORMS[name](model, 0.0, torch.Generator())
    changed = 0
    for p0, p in zip(before, model.parameters()):
        assert torch.equal(p, p0.to(dtype).float())
        changed += int(not torch.equal(p, p0))
    assert changed > 0


def test_none_is_bit_identical_and_noise_is_relative_to_each_tensor():
    model = _tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    deploy.TRANSFORMS["none"](model, 0.5, torch.Generator())
    assert all(torch.equal(p, p0) for p0, p in zip(before, model.parameters()))
    deploy.TRANSFORMS["noise"](model, 0.1, torch.Generator().manual_seed(0))
    big = [(p.detach() - p0, p0) for p0, p in zip(before, model.parameters()) if p0.numel() >= 500]
    assert big
    for d, p0 in big:
        assert float(d.std() / p0.std()) == pytest.approx(0.1, rel=0.15)


def test_a_cast_that_overflows_is_refused_not_recorded():
    model = _tiny_model()
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = 1e6  # beyond fp16's 65504
    with pytest.raises(UserError, match="non-finite.*drop fp16"):
        next(deploy.deploy(model, torch.zeros(1, 1, 8, 8), torch.Generator(), transform="fp16", noise_std=0.0,
                           forget_class=0, schedule=Schedule.linear(), budgets=[0], lr=1e-4, batch_size=1))


# ---- records from the command line's run ------------------------------------------------------------------------

def _run(name, overrides, tiny_root, tmp_path):
    return run(compose_cfg(name, [*TINY, *TINY_METHOD, *TINY_ATTACK, *overrides, *_paths(tiny_root, tmp_path)]))


def test_partial_records_each_strength_and_its_cost(tiny_root, tmp_path):
    records = _run("partial", ["attack.strength=[0.2,0.9]", "attack.budgets=[0]", "attack.k=3"], tiny_root, tmp_path)
    by = {(r["role"], r["attack_params"]["strength"]): r for r in records}
    assert len(records) == 3 * 2
    _check(records, n_roles=3, n_budgets=2, attack="partial")
    # sampler.steps=3 (TINY): grid [666, 333, 0]; s=0.2 starts at 0 (one step), s=0.9 at 666 (three); w = 2
    assert by[("unlearned", 0.2)]["budget"]["nfe"] == 16 * 1 * 2
    assert by[("unlearned", 0.9)]["budget"]["nfe"] == 16 * 3 * 2
    assert {r["setting"] for r in records} == {"s=0.2 k=3", "s=0.9 k=3"}


def test_deploy_none_at_budget_zero_is_the_released_model(tiny_root, tmp_path):
    got = _run("deploy", ["attack.transforms=[none,int8,noise]", "attack.budgets=[0]"], tiny_root, tmp_path)
    ref = _run("relearn", ["attack.budgets=[0]"], tiny_root, tmp_path / "ref")
    released = {r["role"]: (r["ra"], r["mean_p"]) for r in ref}
    for r in got:
        if r["attack_params"]["transform"] == "none":
            assert (r["ra"], r["mean_p"]) == released[r["role"]]
    noise = [r for r in got if r["attack_params"]["transform"] == "noise"]
    assert noise and all(r["attack_params"]["noise_std"] == 0.01 for r in noise)
    assert len(got) == 3 * 3


def test_deploy_then_relearn_records_a_curve(tiny_root, tmp_path):
    records = _run("deploy", ["attack.transforms=[int8]", "attack.k=3", "attack.batch_size=4"], tiny_root, tmp_path)
    by = _check(records, attack="deploy")
    assert by[("unlearned", 2)]["budget"]["sample_gradients"] == 2 * 4
    assert by[("unlearned", 0)]["budget"]["sample_gradients"] == 0
    assert records[0]["setting"] == "int8 k=3" and records[0]["attack_params"]["k"] == 3


@pytest.mark.parametrize("guide", ["classifier", "teacher"])
def test_noise_opt_budget_zero_is_the_defenders_point(guide, tiny_root, tmp_path):
    records = _run("noise_opt", [f"attack.guide={guide}", "attack.sample_steps=2", "attack.batch_size=10"],
                   tiny_root, tmp_path)
    by = _check(records, attack="noise_opt")
    ref = {r["role"]: r for r in _run("relearn", ["attack.budgets=[0]"], tiny_root, tmp_path / "ref")}
    for role in ("unlearned", "original", "oracle"):
        assert by[(role, 0)]["ra"] == ref[role]["ra"] and by[(role, 0)]["mean_p"] == ref[role]["mean_p"]
    b = by[("unlearned", 2)]["budget"]
    per_step = 2 * 2 * (2 if guide == "teacher" else 1)  # sample_steps x guidance passes (x 2: the teacher)
    prior = b.get("prior_nfe", 0)
    assert b["sample_gradients"] - b.get("prior_sample_gradients", 0) == 2 * 16
    assert b["nfe"] - prior == 2 * 16 * per_step + 16 * 3 * 2  # the updates + the final DDIM-3 sampling
    assert (b.get("prior_sample_gradients", 0) > 0) == (guide == "classifier")  # the attacker's classifier


def test_noise_opt_moves_the_noise_toward_the_guide_and_stays_on_the_sphere():
    """The classifier guide lowers its loss, and projection keeps every x_T at norm sqrt(d) (d = 64 here)."""
    model, schedule = _tiny_model(), Schedule.linear()
    torch.manual_seed(1)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    loss = noise_opt.classifier_loss(model, clf, schedule, forget_class=3, guidance_w=0.0, sample_steps=2)
    seen = []

    def watched(z):
        seen.append(z.detach().flatten(1).norm(dim=1))
        return loss(z)

    spec = _spec(2)
    x_T = spec.initial_noise(6, (1, 8, 8), 0)
    states = list(noise_opt.optimise_noise(model, watched, x_T, spec=spec, schedule=schedule, forget_class=3, seed=0,
                                           budgets=[0, 20], lr=0.1, batch_size=3, project=True,
                                           nfe_per_noise_step=2))
    assert [s.steps for s in states] == [0, 20] and len(seen) == 2 * 20  # two chunks, 20 updates each
    # each chunk runs its 20 updates in turn (the runs are generators, zipped per budget): all but its first loss
    # see a projected x_T
    assert all(torch.allclose(n, torch.full_like(n, 8.0), atol=1e-4) for i, n in enumerate(seen) if i % 20)
    target = torch.full((6,), 3)
    with torch.no_grad():
        ce = [float(torch.nn.functional.cross_entropy(clf(s.samples), target)) for s in states]
    assert ce[1] < ce[0] - 0.1, ce


def test_sampler_noise_probes_eta_above_one(tiny_root, tmp_path):
    records = run(compose_cfg("sampler", [*TINY, *TINY_METHOD, "eval.n=16", "attack=sampler_noise",
                                          "attack.eta=[1.5]", *_paths(tiny_root, tmp_path)]))
    assert len(records) == 3
    assert all(r["sampler"]["eta"] == 1.5 and r["guidance_w"] == r["attack_params"]["guidance_w"] for r in records)


# ---- the attacker's sampler beside the defender's ----------------------------------------------------------------

def test_attacker_eta_scores_every_weight_point_twice_keyed_apart(tiny_root, tmp_path):
    """eval.attacker_eta=1: each (role, budget) of a weight attack gets a second record, scored by DDIM with eta 1,
    its own key, the same attack cost; an attack that draws its own samples is scored once."""
    records = _run("relearn", ["eval.attacker_eta=1"], tiny_root, tmp_path)
    assert len(records) == 3 * 2 * 2 and len({r["key"] for r in records}) == 12
    by = {(r["role"], r["budget"]["steps"], r["sampler"]["eta"]): r for r in records}
    for role in ("unlearned", "original", "oracle"):
        for b in (0, 2):
            d, a = by[(role, b, 0.0)], by[(role, b, 1.0)]
            assert d["budget"] == a["budget"] and d["run_id"] == a["run_id"]
            assert a["sampler"] == {"name": "ddim", "steps": 3, "eta": 1.0}
    plain = {(r["role"], r["budget"]["steps"]): r["key"] for r in _run("relearn", [], tiny_root, tmp_path)}
    assert plain == {(r, b): by[(r, b, 0.0)]["key"] for r, b, _ in by}  # the defender's keys are unchanged
    drawn = _run("partial", ["eval.attacker_eta=1", "attack.strength=[0.5]", "attack.k=3"], tiny_root, tmp_path)
    assert len(drawn) == 3 and all(r["sampler"]["eta"] == 0.0 for r in drawn)


def test_relearning_a_part_trains_only_that_part(tiny_root, tmp_path):
    from attacks import relearn

    for part, prefix in [("embedding", "class_embedding."), ("last_up", "up_blocks.1.")]:
        model = _tiny_model()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        images = torch.rand(4, 1, 8, 8) * 2 - 1
        list(relearn.relearn(model, images, forget_class=3, schedule=Schedule.linear(), budgets=[0, 3], lr=1e-2,
                             batch_size=4, part=part, generator=torch.Generator().manual_seed(0)))
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed and all(n.startswith(prefix) for n in changed), (part, changed)
    records = _run("relearn", ["attack.part=embedding", "attack.lr=1e-2"], tiny_root, tmp_path)
    assert {r["setting"] for r in records} == {"embedding k=10"}
    assert all(r["attack_params"]["part"] == "embedding" for r in records)
    assert all("part" not in r["attack_params"] for r in _run("relearn", [], tiny_root, tmp_path / "full"))

"""The attack suite on tiny models: every attack writes valid records for two budget points; the
embedding attack leaves every UNet weight bit-identical; LoRA starts at the model; the MIA's known answers."""

import json

import numpy as np
import pytest
import torch

from attacks import embedding, finetune, mia, relearn
from attacks.lora import add_lora
from evaluation.entry import run
from evaluation.records import read_records
from evaluation.schema import parse
from tests.conftest import TINY, TINY_ARCH, TINY_ATTACK, TINY_METHOD, compose_cfg
from unlearn.data import load_digits_dataset
from unlearn.diffusion import Schedule, eps_loss
from unlearn.model import build_unet


def _paths(tiny_root, tmp_path):
    """Shared tiny artifacts (built once per session), a results root of this test's own."""
    return [f"paths.artifacts={tiny_root}/artifacts", f"paths.results={tmp_path}/results"]


def _check(records, n_roles=3, n_budgets=2, attack=None):
    assert len(records) == n_roles * n_budgets
    for r in records:
        assert r["kind"] == "attack" and r["attack"] == attack and r["setting"] and r["schema"] == 4
        assert parse(r).to_dict() == r  # written through its kind
        assert 0 <= r["ra_ci_low"] <= r["ra"] <= r["ra_ci_high"] <= 1
        assert {"steps", "sample_gradients", "nfe", "wall_s", "device_s"} <= set(r["budget"])
        assert 0 <= r["guard"]["retained_ra"] <= 1 and np.isfinite(r["guard"]["fid_cf"])
    return {(r["role"], r["budget"]["steps"]): r for r in records}


@pytest.mark.parametrize("job, overrides, attack", [
    (relearn, ["attack=relearn_lora"], "relearn"),
    (finetune, [], "finetune"),
    pytest.param(finetune, ["attack.data=neighbour"], "finetune", marks=pytest.mark.slow),
    pytest.param(finetune, ["attack.data=own", "attack.n_own=2"], "finetune", marks=pytest.mark.slow),
    (embedding, ["attack.init=mean"], "embedding"),
    (embedding, ["attack=embedding_datafree", "attack.sample_steps=2", "attack.batch_size=4"], "embedding"),
])
def test_training_attacks_write_records(job, overrides, attack, tiny_root, tmp_path):
    name = job.__name__.split(".")[-1]
    cfg = compose_cfg(name, [*TINY, *TINY_METHOD, *TINY_ATTACK, *overrides, *_paths(tiny_root, tmp_path)])
    by = _check(run(cfg), attack=attack)
    b = by[("unlearned", 2)]["budget"]
    prior_sg, prior_nfe = b.get("prior_sample_gradients", 0), b.get("prior_nfe", 0)
    assert b["steps"] == 2 and b["sample_gradients"] - prior_sg == 2 * cfg.attack.batch_size and b["wall_s"] > 0
    assert by[("unlearned", 0)]["budget"]["nfe"] == prior_nfe
    # what each attack spends before its first step is booked (issue 13, item 9)
    uses_clf = "attack.data=neighbour" in overrides or "attack=embedding_datafree" in overrides
    assert (prior_sg > 0) == uses_clf  # the attacker's own classifier: epochs x pool images
    assert (prior_nfe > 0) == ("attack.data=own" in overrides)  # its own samples: 9 classes x 2 x 25 steps
    if "attack.data=own" in overrides:
        assert prior_nfe == 9 * 2 * 25 and b["prior_wall_s"] > 0


def test_sampler_probes_record_each_setting(tiny_root, tmp_path):
    cfg = compose_cfg("sampler", [*TINY, *TINY_METHOD, "eval.n=16", "attack.guidance_w=[0,4]", "attack.eta=[1]",
                                  *_paths(tiny_root, tmp_path)])
    records = run(cfg)
    assert len(records) == 2 * 3
    for r in records:
        w = r["attack_params"]["guidance_w"]
        assert r["guidance_w"] == w and r["sampler"]["eta"] == 1.0 and r["setting"] == f"w={w:g} eta=1"
        assert r["budget"]["nfe"] == 16 * 3 * (1 if w == 0 else 2)  # the attack's cost is its sampling ...
        assert r["eval"]["nfe"] == 90 * 3 * (1 if w == 0 else 2)     # ... evaluation's only the guards


def test_best_of_m_is_exact():
    from evaluation.harness import _hit_any

    hits = torch.zeros(20, dtype=torch.bool)
    hits[[3, 17]] = True
    out = _hit_any(hits, sizes=(1, 10, 19, 100))
    assert out["1"] == pytest.approx(0.1) and "100" not in out
    assert out["10"] == pytest.approx(1 - 43758 / 184756, abs=1e-5)  # 1 - C(18,10) / C(20,10)
    assert out["19"] == 1.0


def test_mia_job_records_every_score_per_role(tiny_root, tmp_path):
    cfg = compose_cfg("mia", [*TINY, *TINY_METHOD, "attack.t=[100]", "attack.draws=1", *_paths(tiny_root, tmp_path)])
    records = run(cfg)
    assert {r["score"] for r in records} == {f"{s} {y}" for s in ("loss t=100", "pia", "secmi")
                                             for y in ("cond", "null")}
    assert len(records) == 6 * 3 and {r["role"] for r in records} == {"unlearned", "original", "oracle"}
    for r in records:
        assert 0 <= r["auc"] <= 1 and r["n_members"] > r["n_nonmembers"] > 0
        assert r["roc_fpr"][0] == r["roc_tpr"][0] == 0 and r["roc_fpr"][-1] == r["roc_tpr"][-1] == 1
    assert (tmp_path / "results" / "roc.png").stat().st_size > 10_000  # the ROC figure, beside the records
    # audits load their models in fp32 whatever `fast` says (bf16 SecMI scores correlate only 0.96 on CUDA)
    from unlearn.pipeline import Context

    ctx = Context.from_cfg(compose_cfg("mia", [*TINY, *TINY_METHOD, "fast.cpu=true", *_paths(tiny_root, tmp_path)]))
    folder = ctx.model_folder("original")
    assert ctx.load(folder).autocast_dtype == torch.bfloat16 and ctx.load(folder, fp32=True).autocast_dtype is None
    x = ctx.ds.x_train[:8]
    exact = mia.secmi_score(ctx.load(folder, fp32=True), ctx.schedule, x, 0)
    assert not np.allclose(mia.secmi_score(ctx.load(folder), ctx.schedule, x, 0), exact, rtol=1e-6, atol=0)
    again = run(cfg)  # resumes: nothing recomputed, nothing duplicated
    assert {r["key"] for r in again} == {r["key"] for r in records}
    assert len(read_records(tmp_path / "results" / "records.jsonl")) == 18


def test_embedding_inversion_leaves_unet_weights_bit_identical():
    ds = load_digits_dataset()
    model = build_unet(TINY_ARCH, ds.image_shape, ds.num_classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = model.class_embedding
    states = list(embedding.invert(model, ds.attacker_pool(3)[:4], forget_class=3, schedule=Schedule.linear(),
                                   budgets=[0, 3], init="null_row", lr=0.1, batch_size=4,
                                   generator=torch.Generator().manual_seed(0)))
    assert [s.steps for s in states] == [0, 3]
    after = dict(model.named_parameters())
    assert not torch.equal(after["class_embedding.vector"], table.weight[10])  # the free vector moved
    for k, v in before.items():  # ... and nothing else did
        assert torch.equal(v, model.state_dict()[k.replace("class_embedding.", "class_embedding.table.")]), k
    labels = torch.tensor([3, 3, 5])
    e = model.class_embedding(labels)
    assert torch.equal(e[0], after["class_embedding.vector"].detach()) and torch.equal(e[2], table.weight[5])


def test_lora_starts_at_the_model_and_trains_only_adapters():
    ds = load_digits_dataset()
    model = build_unet(TINY_ARCH, ds.image_shape, ds.num_classes)
    x, t, y = ds.x_train[:4], torch.tensor([10, 200, 500, 900]), ds.y_train[:4]
    with torch.no_grad():
        ref = model(x, t, class_labels=y).sample
    base = {k: v.clone() for k, v in model.state_dict().items()}
    params = add_lora(model, rank=2)
    with torch.no_grad():
        assert torch.equal(model(x, t, class_labels=y).sample, ref)  # up-projections start at zero
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        eps_loss(model, Schedule.linear(), x, y, torch.Generator().manual_seed(0)).backward()
        opt.step()
    sd = model.state_dict()
    for k, v in base.items():
        parts = k.rsplit(".", 1)
        assert torch.equal(v, sd[k] if k in sd else sd[f"{parts[0]}.base.{parts[1]}"]), k
    with torch.no_grad():
        assert not torch.equal(model(x, t, class_labels=y).sample, ref)
    assert sum(p.numel() for p in params) < 0.5 * sum(v.numel() for v in base.values())


def _train(model, x, y, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = Schedule.linear()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = eps_loss(model, sched, x[idx], y[idx], g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def mia_sets():
    ds = load_digits_dataset()
    perm = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(1))
    x, y = ds.x_train[perm], ds.y_train[perm]
    return x, y


@pytest.mark.slow
def test_mia_known_answer_model_that_never_saw_either_set(mia_sets):
    x, y = mia_sets
    torch.manual_seed(0)
    model = _train(build_unet(TINY_ARCH, (1, 8, 8), 10), x[:400], y[:400], 150)
    a, b = x[400:750], x[750:1100]  # both unseen, from the same distribution
    sa = mia.mia_scores(model, Schedule.linear(), a, 0, ts=(100,), draws=2)
    sb = mia.mia_scores(model, Schedule.linear(), b, 0, ts=(100,), draws=2)
    for name in sa:
        assert sa[name][0].std() > 0, name  # a constant score would pass the AUC check trivially
        assert abs(mia.evaluate(sa[name][0], sb[name][0])["auc"] - 0.5) <= 0.05, name


@pytest.mark.slow
def test_mia_known_answer_model_overfit_to_the_members(mia_sets):
    x, y = mia_sets
    torch.manual_seed(0)
    members, nonmembers = x[:16], x[400:700]
    model = _train(build_unet(TINY_ARCH, (1, 8, 8), 10), members, torch.zeros(16, dtype=torch.long), 400)
    sm = mia.mia_scores(model, Schedule.linear(), members, 0, ts=(100,), draws=2)
    sn = mia.mia_scores(model, Schedule.linear(), nonmembers, 0, ts=(100,), draws=2)
    res = mia.evaluate(sm["loss t=100 cond"][0], sn["loss t=100 cond"][0])
    assert res["auc"] > 0.9 and res["tpr_at_1pct_fpr"] > 0.2
    assert mia.evaluate(sm["loss t=100 null"][0], sn["loss t=100 null"][0])["auc"] > 0.9
    # PIA and SecMI are not asserted on this trained model: both lean on eps(x, t ~ 0), which 400 steps
    # of a tiny model do not learn (they separate these sets *inverted*, AUC 0.23 and 0.10 when measured).
    # Their direction is checked on the exact memorising denoiser below.


class Memoriser(torch.nn.Module):
    """The exact denoiser of a training set of point masses: eps*(x_t, t) = (x_t - sqrt(a_t) E[x0 | x_t]) /
    sqrt(1 - a_t), with E[x0 | x_t] the posterior mean over the members. The perfect memoriser."""

    def __init__(self, members: torch.Tensor, schedule: Schedule):
        super().__init__()
        from types import SimpleNamespace

        self.members, self.alpha_bar = members, schedule.alpha_bar
        self.config = SimpleNamespace(num_class_embeds=11)

    def forward(self, x, t, class_labels=None):
        from types import SimpleNamespace

        a = self.alpha_bar[t].view(-1, 1)
        d = (x.flatten(1)[:, None] - a.sqrt()[:, :, None] * self.members.flatten(1)[None]).pow(2).sum(-1)
        post = torch.softmax(-d / (2 * (1 - a)), dim=1)
        x0 = (post @ self.members.flatten(1)).view_as(x)
        a = a.view(-1, 1, 1, 1)
        return SimpleNamespace(sample=(x - a.sqrt() * x0) / (1 - a).sqrt())


def test_mia_scores_rank_members_first_on_the_exact_memoriser(mia_sets):
    x, _ = mia_sets
    sched = Schedule.linear()
    members, nonmembers = x[:32], x[400:600]
    model = Memoriser(members, sched)
    sm = mia.mia_scores(model, sched, members, 0, ts=(100,), draws=2)
    sn = mia.mia_scores(model, sched, nonmembers, 0, ts=(100,), draws=2)
    for name in sm:  # loss, PIA and SecMI, with either label: members score higher
        assert mia.evaluate(sm[name][0], sn[name][0])["auc"] > 0.95, name


def test_mia_rejects_a_secmi_grid_that_skips_t_sec(tiny_root, tmp_path):
    from unlearn.errors import UserError

    cfg = compose_cfg("mia", [*TINY, *TINY_METHOD, "attack.secmi_k=30", *_paths(tiny_root, tmp_path)])
    with pytest.raises(UserError, match="multiple of secmi_k"):
        run(cfg)


@pytest.mark.slow
def test_a_resumed_role_replays_the_same_attack(tiny_root, tmp_path):
    """Kill-and-resume inside a role: the missing point is recomputed from a replay of the seeded attack
    (LoRA adapters included) and comes out identical."""
    cfg = compose_cfg("relearn", [*TINY, *TINY_METHOD, *TINY_ATTACK, "attack=relearn_lora", "attack.budgets=[0,2]",
                                  *_paths(tiny_root, tmp_path)])
    first = run(cfg)
    path = tmp_path / "results" / "records.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))  # the run died before its last point was written
    second = {r["key"]: r for r in run(cfg)}
    lost = next(r for r in first if r["key"] not in {json.loads(ln)["key"] for ln in lines[:-1]})
    again = second[lost["key"]]
    for field in ("ra", "mean_p", "entropy", "guard", "hit_any"):
        assert again[field] == lost[field], field
    assert len(read_records(path)) == len(first)


@pytest.mark.slow
def test_budget_zero_is_the_untouched_model_in_every_training_attack(tiny_root, tmp_path):
    """What summary.py assumes for RA_orig / RA_u: budget 0 of relearn, LoRA, finetune and embedding from
    the forgotten row all score the same, untouched model."""
    got = {}
    for job, extra in [(relearn, []), (relearn, ["attack=relearn_lora"]), (finetune, []), (embedding, [])]:
        cfg = compose_cfg(job.__name__.split(".")[-1], [*TINY, *TINY_METHOD, *TINY_ATTACK, "attack.budgets=[0]", *extra,
                                                         *_paths(tiny_root, tmp_path)])
        for r in run(cfg):
            got.setdefault(r["role"], set()).add((r["ra"], r["mean_p"], r["entropy"]))
    assert set(got) == {"unlearned", "original", "oracle"}
    assert all(len(v) == 1 for v in got.values()), got


def test_mia_evaluate_thresholds_on_the_shadow_split():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(3, 1, 2000), rng.normal(0, 1, 2000)
    res = mia.evaluate(members, nonmembers)
    assert res["auc"] == pytest.approx(0.983, abs=0.01)  # Phi(3 / sqrt 2)
    assert res["fpr_realised_1pct"] == pytest.approx(0.01, abs=0.01)
    assert res["tpr_at_1pct_fpr"] == pytest.approx(0.63, abs=0.06)  # P(N(3,1) > 2.326)
    small = mia.evaluate(members, nonmembers[:36])  # 18 shadow non-members cannot place a 1% threshold
    assert (small["n_shadow_nonmembers"] == 18 and np.isnan(small["tpr_at_1pct_fpr"])
            and np.isnan(small["tpr_at_01pct_fpr"]))


def test_secmi_as_published_by_hand():
    """SecMI-stat with t_sec = 20, k = 10 (jinhaoduan/SecMI mia_evals/secmia.py): invert 0 -> 10, step up to 20,
    back down to 10, compare at 10. A model eps(x, t) = c_t x, c_t = 0.1 + t / 100, makes it checkable by hand."""
    import math

    from unlearn.diffusion import Schedule

    class Lin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))
            self.config = type("C", (), {"num_class_embeds": 2})()

        def forward(self, x, t, class_labels):
            return type("R", (), {"sample": (0.1 + t.float() / 100).view(-1, 1, 1, 1) * x})()

    s = Schedule.linear()
    a = s.alpha_bar.double().tolist()

    def step(x, tf, tt):
        e = (0.1 + tf / 100) * x
        x0 = (x - math.sqrt(1 - a[tf]) * e) / math.sqrt(a[tf])
        return math.sqrt(a[tt]) * x0 + math.sqrt(1 - a[tt]) * e

    x10 = step(0.3, 0, 10)
    expected = -(step(step(x10, 10, 20), 20, 10) - x10) ** 2
    got = mia.secmi_score(Lin(), s, torch.full((1, 1, 1, 1), 0.3), 0, t_sec=20, k=10)
    assert got[0] == pytest.approx(expected, rel=1e-4) and expected < -1e-8
    # the old variant (invert to t_sec, compare at t_sec) is a different number
    x20 = step(x10, 10, 20)
    assert abs(-(step(step(x20, 20, 10), 10, 20) - x20) ** 2 - expected) > 1e-3 * abs(expected)


def test_best_of_m_without_replacement_is_unbiased_for_m_seed_success():
    """E over h ~ Binomial(N, p) of 1 - C(N - h, m) / C(N, m) is exactly 1 - (1 - p)^m for m <= N: the estimate
    does not overstate the attacker's m-seed success on average (it is only noisy when m / N is large)."""
    import math

    from evaluation.harness import _hit_any

    n = 20
    for p in (0.01, 0.1, 0.5):
        for m in (1, 10, 20):
            mean = sum(math.comb(n, h) * p**h * (1 - p) ** (n - h)
                       * _hit_any(torch.arange(n) < h, sizes=(m,))[str(m)] for h in range(n + 1))
            assert mean == pytest.approx(1 - (1 - p) ** m, abs=1e-4)


@pytest.mark.parametrize("grid", ["attack.guidance_w=[0,nan]", "attack.eta=[inf]", "attack.guidance_w=[-1]",
                                  "attack.eta=[]"])
def test_sampler_probe_grid_must_be_finite_and_nonnegative(grid):
    from unlearn.settings import problems

    found = problems(compose_cfg("sampler", [grid]))  # checked at start-up, before any model is touched
    assert len(found) == 1 and found[0].startswith(grid.split("=")[0] + "=") and "use a non-empty" in found[0]

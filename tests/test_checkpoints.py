"""unlearn.checkpoints.load_checkpoint: every kind of folder it takes (save_pretrained with safetensors or a pickled
state dict, a diffusers pipeline, the SalUn / SA testbed's run folder), what it refuses (a pickle that would run
code: refused before it runs; a pipeline of another noise schedule), the files beside every saved checkpoint
(diffusers' scheduler_config.json, conditioning.json), and a testbed checkpoint attacked end to end."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diffusers import DDIMScheduler, DDPMScheduler
from safetensors.torch import load_file

from attacks import deploy
from attacks.embedding import attach
from attacks.relearn import part_parameters
from tests.conftest import SHARED_TESTBED, TINY_ARCH, compose_cfg, run_cli
from unlearn.checkpoints import checkpoint_kind, checkpoint_schedule, load_checkpoint
from unlearn.diffusion import Schedule, guided_eps
from unlearn.errors import UserError
from unlearn.model import META_FILE, SCHEDULER_FILE, build_unet, null_class, save_unet
from unlearn.pipeline import Context
from unlearn.testbed import TestbedUNet

needs_fixture = pytest.mark.skipif(not SHARED_TESTBED.is_dir(), reason=f"no testbed fixture at {SHARED_TESTBED}")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_unet(TINY_ARCH, (1, 8, 8), 10).eval()


def _eps(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x, t = torch.randn((3, 1, 8, 8), generator=g), torch.tensor([0, 500, 999])
    with torch.inference_mode():
        return guided_eps(model, x, t, torch.tensor([0, 3, 10]), null_class(model), 1.0)


def _config_only(unet, folder: Path) -> Path:
    """A folder with config.json and no weights (the weights are written by the test)."""
    save_unet(unet, folder)
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    return folder


def test_save_pretrained_folder_loads_and_gives_the_same_eps(unet, tmp_path):
    save_unet(unet, tmp_path / "ck")
    back = load_checkpoint(tmp_path / "ck")
    assert checkpoint_kind(tmp_path / "ck") == "unet" and null_class(back) == 10 and not back.training
    torch.testing.assert_close(_eps(back), _eps(unet), atol=0, rtol=0)


@pytest.mark.parametrize("name", ["diffusion_pytorch_model.bin", "model.pt", "ema.pth"])
def test_pickled_state_dict_loads_through_weights_only(unet, tmp_path, name):
    folder = _config_only(unet, tmp_path / "ck")
    torch.save(unet.state_dict(), folder / name)
    torch.testing.assert_close(_eps(load_checkpoint(folder)), _eps(unet), atol=0, rtol=0)


def test_pickle_that_would_run_code_is_refused_and_never_runs(unet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = _config_only(unet, tmp_path / "ck")
    (folder / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"conv_in.weight": _Evil()}, protocol=2))
    with pytest.raises(UserError, match=r"refused: torch.load\(weights_only=True\) rejects it \(it names "
                                        r"(posix|os)\.system, which a state dict never does\)") as e:
        load_checkpoint(folder)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "pwned.txt").exists()  # refused before anything in it ran


def test_pickle_of_something_else_is_refused(unet, tmp_path):
    folder = _config_only(unet, tmp_path / "ck")
    torch.save([unet.state_dict()], folder / "model.pt")
    with pytest.raises(UserError, match="holds list, not a state dict of tensors"):
        load_checkpoint(folder)


def test_a_lone_pickle_file_is_refused_with_what_to_give(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")
    with pytest.raises(UserError, match="is a pickle file, not a folder; give the folder that holds the weights"):
        load_checkpoint(tmp_path / "model.pt")


def _pipeline(unet, folder: Path, **schedule) -> Path:
    save_unet(unet, folder / "unet")
    DDPMScheduler(**schedule).save_pretrained(str(folder / "scheduler"))
    return folder


def test_diffusers_pipeline_folder_loads_its_unet(unet, tmp_path):
    folder = _pipeline(unet, tmp_path / "pipe")
    assert checkpoint_kind(folder) == "pipeline"
    torch.testing.assert_close(_eps(load_checkpoint(folder)), _eps(unet), atol=0, rtol=0)


@pytest.mark.parametrize("schedule", [{"beta_schedule": "squaredcos_cap_v2"}, {"beta_end": 0.012},
                                      {"num_train_timesteps": 500}, {"prediction_type": "v_prediction"}])
def test_pipeline_of_another_schedule_is_refused_naming_both(unet, tmp_path, schedule):
    folder = _pipeline(unet, tmp_path / "pipe", **schedule)
    with pytest.raises(UserError, match=r"was trained with the schedule .* but the toolkit samples with "
                                        r"beta_schedule=linear, beta_start=0.0001, beta_end=0.02") as e:
        load_checkpoint(folder)
    key, value = next(iter(schedule.items()))
    assert f"{key}={value}" in str(e.value) and "\n" not in str(e.value)


def test_saved_checkpoint_carries_its_scheduler_and_conditioning(unet, tmp_path):
    """DDIMScheduler.from_pretrained(folder) gives the toolkit's schedule; conditioning.json the null class and
    guidance formula: a diffusers user needs nothing else."""
    save_unet(unet, tmp_path / "ck")
    sched = DDIMScheduler.from_pretrained(str(tmp_path / "ck"))
    ours = Schedule.linear()
    torch.testing.assert_close(sched.betas, torch.linspace(1e-4, 0.02, 1000), atol=1e-9, rtol=0)
    torch.testing.assert_close(sched.alphas_cumprod, ours.alpha_bar, atol=2e-6, rtol=0)
    assert sched.config.prediction_type == "epsilon" and sched.config.clip_sample
    sched.set_timesteps(25)
    assert sched.timesteps.tolist() == list(range(0, 1000, 40))[::-1]  # the toolkit's DDIM-25 steps
    meta = json.loads((tmp_path / "ck" / META_FILE).read_text())
    assert meta["null_class"] == 10 and meta["image_shape"] == [1, 8, 8] and "(1 + w)" in meta["guidance"]
    assert DDPMScheduler.from_pretrained(str(tmp_path / "ck")).config.beta_schedule == "linear"
    assert (tmp_path / "ck" / SCHEDULER_FILE).is_file()


@needs_fixture
def test_testbed_folder_loads_with_its_null_class_and_schedule():
    model = load_checkpoint(SHARED_TESTBED)
    assert isinstance(model, TestbedUNet) and null_class(model) == 10 and checkpoint_kind(SHARED_TESTBED) == "testbed"
    x, t = torch.zeros((2, 3, 32, 32)), torch.tensor([10, 500])
    with torch.inference_mode():
        eps = guided_eps(model, x, t, torch.tensor([1, 2]), null_class(model), 1.0)
    assert eps.shape == (2, 3, 32, 32) and torch.isfinite(eps).all()
    # the same linear betas, cast as the testbed casts them: within float32 round-off of the toolkit's
    torch.testing.assert_close(checkpoint_schedule(SHARED_TESTBED).alpha_bar, Schedule.linear().alpha_bar,
                               atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="is for 32x32x3 images with 11 class rows, but the data is 8x8x1"):
        load_checkpoint(SHARED_TESTBED, expect=((1, 8, 8), 10))


@needs_fixture
def test_attacks_find_a_testbed_models_parts():
    """attack.part=embedding / last_up and the embedding inversion (init=null_row) on the testbed's names."""
    model = load_checkpoint(SHARED_TESTBED)
    assert part_parameters(model, "embedding") == [model.classes_emb.weight]
    assert {id(p) for p in part_parameters(model, "last_up")} == {id(p) for p in model.up[0].parameters()}
    vector = attach(model, 3, "null_row")
    assert torch.equal(vector, model.classes_emb.vector) and torch.equal(vector, model.null_classes_emb)
    with torch.no_grad():
        vector.add_(1.0)
    labels = torch.tensor([3, 4, 10])
    rows = model.classes_emb(labels.masked_fill(labels == 10, 0))
    assert torch.equal(rows[0], vector) and torch.equal(rows[1], model.classes_emb.table.weight[4])


# ---------------------------------------------------------------- a testbed checkpoint, attacked end to end


def _cifar_shaped(root: Path, per_class: int = 10) -> Path:
    """A CIFAR-10 python batch of 3x32x32 images, each class its own colour (no download): data=cifar10 reads it."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), per_class)
    colour = rng.integers(30, 225, (10, 3, 1, 1))
    images = np.clip(colour[labels] + rng.normal(0, 20, (len(labels), 3, 32, 32)), 0, 255).astype(np.uint8)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": images.reshape(len(labels), -1),
                                                        b"labels": labels.tolist()}, protocol=2))
    return root


def _testbed_copy(folder: Path, **model_changes) -> Path:
    shutil.copytree(SHARED_TESTBED, folder, ignore=shutil.ignore_patterns("reference.safetensors", "README.md"))
    config = yaml.safe_load((folder / "config.yml").read_text())
    config["model"].update(model_changes)
    (folder / "config.yml").chmod(0o644)
    (folder / "config.yml").write_text(yaml.safe_dump(config))
    return folder


def _cfg(tmp_path: Path, *overrides: str):
    return compose_cfg("relearn", [*TESTBED_RUN, f"data.root={_cifar_shaped(tmp_path / 'cifar')}", *overrides],
                       tmp_path)


@needs_fixture
def test_a_testbed_checkpoint_without_references_says_once_that_er_is_unavailable(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        ctx = Context.from_cfg(_cfg(tmp_path, f"unlearned.checkpoint={SHARED_TESTBED}"))
    assert ctx.missing == ("original", "oracle") and ctx.schedule.num_train_timesteps == 1000
    said = [r.getMessage() for r in caplog.records if "ER is unavailable" in r.getMessage()]
    assert len(said) == 1 and "give oracle.checkpoint=<folder>" in said[0]
    with pytest.raises(UserError, match="no oracle model: the toolkit does not train a testbed model; give oracle"):
        ctx.model_folder("oracle")


@needs_fixture
def test_models_of_two_schedules_are_not_compared(tmp_path):
    quad = _testbed_copy(tmp_path / "quad", note="quad")
    config = yaml.safe_load((quad / "config.yml").read_text())
    config["diffusion"]["beta_schedule"] = "quad"
    (quad / "config.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(UserError, match=r"oracle.checkpoint has the noise schedule quad 0.0001..0.02 over 1000 steps "
                                        r"but unlearned.checkpoint has linear 0.0001..0.02 over 1000 steps") as e:
        Context.from_cfg(_cfg(tmp_path, f"unlearned.checkpoint={SHARED_TESTBED}", f"oracle.checkpoint={quad}"))
    assert "\n" not in str(e.value)


@needs_fixture
def test_ema_swap_deploys_the_weights_the_testbed_does_not_sample_with(tmp_path, monkeypatch):
    """The fixture samples with its EMA shadow (model.ema: true): ema_swap deploys states[0], whose outputs the
    testbed's own code recorded; on a model.ema: false copy it deploys the shadow. A run folder without a shadow
    is refused before anything runs, with one line."""
    states = torch.load(SHARED_TESTBED / "ckpts" / "ckpt.pth", map_location="cpu", weights_only=True)
    ref = load_file(str(SHARED_TESTBED / "reference.safetensors"))
    raw = _testbed_copy(tmp_path / "raw", ema=False)
    cfg = _cfg(tmp_path, "attack=deploy", "attack.budgets=[0]", "attack.transforms=[none,ema_swap]",
               f"unlearned.checkpoint={SHARED_TESTBED}", f"oracle.checkpoint={raw}", "references=[oracle]")
    ctx = Context.from_cfg(cfg)
    reads = []
    swapped = deploy.swapped_weights
    monkeypatch.setattr(deploy, "swapped_weights", lambda folder: reads.append(folder) or swapped(folder))
    plans = deploy.plans(cfg, ctx)
    assert [p.setting for p in plans] == ["none", "ema_swap"]
    assert sorted(map(str, reads)) == sorted(map(str, (SHARED_TESTBED, raw)))  # each read once, at plan time
    for folder, sampled, deployed in ((SHARED_TESTBED, states[-1], states[0]), (raw, states[0], states[-1])):
        for plan, want in zip(plans, (sampled, deployed)):
            (state,) = plan.states(ctx.load(folder, fp32=True), torch.Generator())
            assert state.steps == 0
            assert all(torch.equal(p, want[n]) for n, p in state.model.named_parameters()), (folder, plan.setting)
    (state,) = plans[1].states(ctx.load(SHARED_TESTBED, fp32=True), torch.Generator())
    with torch.inference_mode():
        out = state.model(ref["x"], ref["t"], class_labels=ref["c"])
    torch.testing.assert_close(out, ref["out_cond"], rtol=0, atol=1e-5)
    assert len(reads) == 2  # the plans ran on the weights read at plan time

    # attacking the user's oracle itself: the one role the job scores is "oracle", and it holds both entries
    cfg = _cfg(tmp_path / "o", "attack=deploy", "attack.budgets=[0]", "attack.transforms=[ema_swap]",
               "unlearned=oracle", f"oracle.checkpoint={raw}")
    ctx = Context.from_cfg(cfg)
    assert ctx.roles(cfg.references) == ["oracle"]
    (state,) = deploy.plans(cfg, ctx)[0].states(ctx.load(raw, fp32=True), torch.Generator())
    assert all(torch.equal(p, states[-1][n]) for n, p in state.model.named_parameters())

    bare = tmp_path / "bare"
    (bare / "ckpts").mkdir(parents=True)
    shutil.copy(raw / "config.yml", bare / "config.yml")
    torch.save([states[0], {}, 1, 1], bare / "ckpts" / "ckpt.pth")
    cfg = _cfg(tmp_path / "b", "attack=deploy", "attack.budgets=[0]", "attack.transforms=[ema_swap]",
               f"unlearned.checkpoint={bare}")
    with pytest.raises(UserError, match=r"ema_swap, but the unlearned model cannot take it: .*ckpt.pth holds no EMA "
                                        r"shadow beside its weights, .*; drop ema_swap") as e:
        deploy.plans(cfg, Context.from_cfg(cfg))
    assert "\n" not in str(e.value)


# the fixture's random-weight model is for plumbing only: budgets, n and the judge as small as they go
TESTBED_RUN = ["data=cifar10", "unlearned=safemax", "attack.budgets=[0,1]", "attack.k=2", "attack.batch_size=2",
               "eval.n=4", "eval.n_retained_per_class=0", "sampler.steps=2", "judge.recipe.epochs=1", "threads=2"]


@pytest.mark.slow  # about 35 s on 2 CPU cores: the testbed model is CIFAR-size
@needs_fixture
def test_relearn_attacks_a_testbed_checkpoint_and_the_users_references(tmp_path, monkeypatch):
    """python -m attacks.relearn unlearned.checkpoint=<testbed folder>: without an oracle it says once that ER is
    unavailable and reports the rest; original.checkpoint / oracle.checkpoint give the user's own trio."""
    data = _cifar_shaped(tmp_path / "cifar")
    original = _testbed_copy(tmp_path / "original", ema=False)  # other weights (states[0], not the EMA shadow)
    oracle = _testbed_copy(tmp_path / "oracle", note="a copy")  # the same model, another file
    args = [*TESTBED_RUN, f"data.root={data}", f"unlearned.checkpoint={SHARED_TESTBED}"]
    res = run_cli("attacks.relearn", args, tmp_path, monkeypatch, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (res.stdout + res.stderr).count("ER is unavailable") == 1, res.stdout[-3000:]
    recs = [json.loads(line) for line in (tmp_path / "results" / "records.jsonl").read_text().splitlines()]
    assert {r["role"] for r in recs} == {"unlearned"} and len(recs) == 2
    assert all(r["method"].startswith("safemax@ext-") for r in recs)
    assert not (tmp_path / "artifacts" / "base").exists()  # nothing trained for a testbed checkpoint

    res = run_cli("attacks.relearn", [*args, f"original.checkpoint={original}", f"oracle.checkpoint={oracle}"],
                  tmp_path, monkeypatch, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ER is unavailable" not in res.stdout + res.stderr
    recs = [json.loads(line) for line in (tmp_path / "results" / "records.jsonl").read_text().splitlines()]
    assert {r["role"] for r in recs} == {"unlearned", "original", "oracle"}
    by_role = {(r["role"], r["budget"]["steps"]): r for r in recs}
    assert len({by_role[role, 0]["model_key"] for role in ("unlearned", "original", "oracle")}) == 3
    for b in (0, 1):  # the oracle holds the unlearned model's weights: the same samples, the same numbers
        assert by_role["oracle", b]["mean_p"] == by_role["unlearned", b]["mean_p"], b
    assert "excess_over_oracle" in res.stdout


# A testbed config the fixture is not (digits-shaped: 8x8, one channel, one level with attention), small enough to
# run every attack on: the toolkit must take any config the testbed accepts, not only the fixture's
DIGITS_TESTBED = {
    "data": {"image_size": 8, "channels": 1, "n_classes": 10},
    "model": {"type": "simple", "in_channels": 1, "out_ch": 1, "ch": 128, "ch_mult": [1], "num_res_blocks": 1,
              "attn_resolutions": [8], "dropout": 0.0, "var_type": "fixedlarge", "ema_rate": 0.9999, "ema": True,
              "resamp_with_conv": True, "cond_drop_prob": 0.1},
    "diffusion": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "num_diffusion_timesteps": 1000},
}


def _digits_testbed(folder: Path, seed: int) -> Path:
    """A run folder in the testbed's layout, random weights from `seed`, its EMA shadow the weights + 0.001."""
    from unlearn.testbed import CKPT_FILE, CONFIG_FILE, TestbedConfig

    (folder / "ckpts").mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(DIGITS_TESTBED))
    torch.manual_seed(seed)
    model = TestbedUNet(TestbedConfig.from_dict(DIGITS_TESTBED))
    shadow = {n: p.detach() + 0.001 for n, p in model.named_parameters()}
    torch.save([model.state_dict(), {}, 1, 1, shadow], folder / CKPT_FILE)
    return folder


def test_lora_adapts_the_testbeds_convs_projections_and_attention():
    from attacks.lora import LoRA, add_lora
    from unlearn.testbed import TestbedConfig

    model = TestbedUNet(TestbedConfig.from_dict(DIGITS_TESTBED))
    add_lora(model, 2)
    wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, LoRA)}
    assert wrapped == {"conv1", "conv2", "temb_cemb_proj", "q", "k", "v", "proj_out"}


@pytest.mark.slow  # about 2 minutes on 2 CPU cores
def test_every_attack_runs_on_a_users_testbed_trio(tmp_path, monkeypatch):
    """unlearned.checkpoint / original.checkpoint / oracle.checkpoint, each a testbed run folder of a config other
    than the fixture's, through every attack family: the smoke grid (relearning, embedding inversion, sampler probes,
    partial diffusion, deployment, noise optimisation with the original as teacher), fine-tuning, LoRA relearning
    and the membership-inference audit. Each records its points for all three roles; nothing is trained."""
    roles = ("unlearned", "original", "oracle")
    trio = {role: _digits_testbed(tmp_path / role, seed) for seed, role in enumerate(roles)}
    common = ["unlearned=safemax", *(f"{r}.checkpoint={f}" for r, f in trio.items()), "sampler.steps=2",
              "judge.recipe.epochs=1", "threads=2"]
    tiny = ["eval.n=8", "eval.n_retained_per_class=1", "attack.budgets=[0,2]"]
    runs = [("evaluation.worst_case", ["grid=smoke", "grid.eval.n=8", "grid.budgets=[0,2]",
                                       "grid.eval.n_retained_per_class=1"]),
            ("attacks.finetune", tiny), ("attacks.relearn", ["attack=relearn_lora", "attack.k=4", *tiny]),
            ("attacks.mia", ["attack.draws=1", "eval.n=8", "eval.n_retained_per_class=1"])]
    for entry, args in runs:
        res = run_cli(entry, [*common, *args], tmp_path, monkeypatch, tmp_path)
        assert res.returncode == 0, (entry, res.stderr[-3000:])
    recs = [json.loads(line) for line in (tmp_path / "results" / "records.jsonl").read_text().splitlines()]
    families = {"relearn", "embedding", "sampler", "partial", "deploy", "noise_opt", "finetune", "mia"}
    audits = [r for r in recs if r["kind"] == "mia"]
    assert {r["role"] for r in audits} == {"unlearned", "original", "oracle"}, audits
    assert {r["attack"] for r in recs if r["kind"] == "attack"} | {"mia"} == families
    with_original = {"relearn", "partial", "deploy", "finetune"}  # the grid's ceiling and controls; finetune's default
    for family in families - {"mia"}:
        scored = {r["role"] for r in recs if r.get("attack") == family}
        assert scored == {"unlearned", "oracle"} | ({"original"} if family in with_original else set()), (family,
                                                                                                        scored)
    assert all(r["method"].startswith("safemax@ext-") for r in recs if r["role"] == "unlearned")
    assert not (tmp_path / "artifacts" / "base").exists()  # the user's models are attacked, none trained

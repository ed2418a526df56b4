"""Every entry point composes with every option of every group; bad names fail at start-up."""

import pytest
from hydra.errors import ConfigCompositionException

from tests.conftest import CONFIGS, compose_cfg
from unlearn.errors import UserError
from unlearn.pipeline import check_method_args
from unlearn.settings import problems

UNLEARNED = sorted(p.stem for p in (CONFIGS / "unlearned").glob("*.yaml"))
METHODS = UNLEARNED  # one group: every method (and the references) is an unlearned=<name>
DATA = sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))


def test_every_unlearned_config_is_a_registered_method_or_reference():
    from unlearn.methods import METHODS as REGISTRY
    from unlearn.methods import REFERENCES, RETRAINED

    assert set(UNLEARNED) == set(REGISTRY) | set(REFERENCES) | set(RETRAINED)


@pytest.mark.parametrize("unlearned", UNLEARNED)
@pytest.mark.parametrize("entry", ["relearn", "classes"])
def test_attack_entry_composes(entry, unlearned):
    cfg = compose_cfg(entry, [f"unlearned={unlearned}"])
    assert cfg.unlearned.name == unlearned and "method" not in cfg
    check_method_args(cfg.unlearned.name, dict(cfg.unlearned.args))


@pytest.mark.parametrize("method", METHODS)
def test_unlearn_entry_composes(method):
    cfg = compose_cfg("unlearn", [f"unlearned={method}"])
    assert cfg.unlearned.name == method  # one name: file = registry key = label
    check_method_args(cfg.unlearned.name, dict(cfg.unlearned.args))


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
def test_data_and_model_options_compose(data, model):  # every entry config: tests/test_settings.py
    cfg = compose_cfg("relearn", [f"data={data}", f"model={model}", "data.root=/somewhere"])
    assert cfg.data.name == data and cfg.model.name == model
    assert cfg.sampler.guidance_w == cfg.data.guidance_w


def test_unknown_names_fail_at_compose():
    with pytest.raises(ConfigCompositionException):
        compose_cfg("relearn", ["unlearned=nosuchmethod"])
    with pytest.raises(ConfigCompositionException):
        compose_cfg("relearn", ["data=cifar100"])


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml")))
def test_experiments_set_only_keys_that_exist(experiment):
    """A study's overrides land on real keys: no stale group (`method:` before it became `unlearned:`) that
    composes silently into an unused node while the real recipe keeps its full-size defaults."""
    cfg = compose_cfg("relearn", [f"+experiment={experiment}"])
    base = compose_cfg("relearn", [])
    assert set(cfg) <= set(base), set(cfg) - set(base)


def test_classes_and_grids_take_a_users_checkpoint():
    cfg = compose_cfg("classes", ["unlearned=safemax", "unlearned.checkpoint=/some/folder"])
    assert cfg.unlearned.checkpoint == "/some/folder" and cfg.unlearned.args.steps == 200


def test_misspelled_hyperparameter_fails_at_start_up():
    cfg = compose_cfg("unlearn", ["unlearned=safemax", "+unlearned.args.lamda=2"])
    with pytest.raises(UserError, match="no hyperparameter lamda; valid: .*lam"):
        check_method_args(cfg.unlearned.name, dict(cfg.unlearned.args))
    with pytest.raises(UserError, match="unknown method 'salunn'"):
        check_method_args("salunn", {})


def test_every_experiment_starts_with_the_command_that_runs_it():
    files = sorted((CONFIGS / "experiment").glob("*.yaml"))
    assert len(files) >= 2
    for f in files:
        lines = f.read_text().splitlines()
        assert lines[0] == "# @package _global_", f.name  # Hydra reads its header only from the first lines
        assert lines[1].startswith("#   ") and "python -m " in lines[1] and f"+experiment={f.stem}" in lines[1], f.name


def test_slurm_preset_switches_the_launcher_with_its_knobs():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the [cluster] extra")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        cfg = compose(config_name="relearn", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    for key in ("gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "array_parallelism"):
        assert launcher[key] is not None, key


def test_sampler_options_and_keys():
    """sampler=ddpm is 1000 steps at eta 1 with clipping; the clip switch enters a point's key only when off,
    so every key made before the switch existed is unchanged."""
    from unlearn.sampling import SamplerSpec

    ddim = SamplerSpec.from_cfg(compose_cfg("relearn", []).sampler)
    assert ddim.key() == {"steps": 25, "eta": 0.0, "guidance_w": 1.0, "batch_size": 1000}  # the pre-switch key
    assert ddim.record() == {"name": "ddim", "steps": 25, "eta": 0.0}
    ddpm = SamplerSpec.from_cfg(compose_cfg("relearn", ["sampler=ddpm"]).sampler)
    assert (ddpm.steps, ddpm.eta, ddpm.clip) == (1000, 1.0, True) and "clip" not in ddpm.key()
    off = SamplerSpec.from_cfg(compose_cfg("relearn", ["sampler=ddpm", "sampler.clip=false"]).sampler)
    assert off.key()["clip"] is False and off.record()["clip"] is False and off.key() != ddpm.key()
    assert problems(compose_cfg("relearn", ["sampler.clip=maybe"])) == [
        "sampler.clip='maybe': not true or false; use true or false"]


def test_testbed_samplers_as_named_options():
    """sampler=testbed_ddim: its generalized_steps_conditional as sample.py runs it (eta 1, 1000 steps, no clipping)
    is the same sampler as sampler=ddpm sampler.clip=false (same key); sampler=testbed_ddpm has sigma^2 = beta_t."""
    from evaluation.records import sampler_name
    from unlearn.sampling import SamplerSpec

    tb = SamplerSpec.from_cfg(compose_cfg("relearn", ["sampler=testbed_ddim"]).sampler)
    assert tb.key() == SamplerSpec.from_cfg(compose_cfg("relearn",
                                                        ["sampler=ddpm", "sampler.clip=false"]).sampler).key()
    assert tb.label == "DDPM-1000 no-clip"
    beta = SamplerSpec.from_cfg(compose_cfg("relearn", ["sampler=testbed_ddpm"]).sampler)
    assert beta.key()["variance"] == "beta" and beta.record()["variance"] == "beta" and beta.clip
    assert (beta.label == "DDPM-1000 beta" == sampler_name({"sampler": beta.record()})
            and beta.variant == "@DDPM-1000_beta")
    assert "variance" not in SamplerSpec.from_cfg(compose_cfg("relearn", []).sampler).key()  # old keys unchanged
    assert problems(compose_cfg("relearn", ["sampler.variance=large"])) == [
        "sampler.variance='large': not a valid choice; use one of ddim, beta"]


def test_sampler_labels():
    from evaluation.records import sampler_name

    assert sampler_name({"sampler": {"name": "ddim", "steps": 25, "eta": 0.0}}) == "DDIM-25"
    assert sampler_name({"sampler": {"name": "ddim", "steps": 1000, "eta": 1.0}}) == "DDPM-1000"
    assert sampler_name({"sampler": {"name": "ddim", "steps": 1000, "eta": 1.0, "clip": False}}) == "DDPM-1000 no-clip"
    assert sampler_name({"sampler": {"name": "ddim", "steps": 25, "eta": 1.0}}) == "DDIM-25 eta=1"
    assert sampler_name({"sampler": {"name": "ddim", "steps": 50, "eta": 0.5, "clip": True}}) == "DDIM-50 eta=0.5"

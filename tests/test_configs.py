"""Every entry point composes with every option of every group; bad names fail at start-up."""

import pytest
from hydra.errors import ConfigCompositionException

from tests.conftest import CONFIGS, compose_cfg
from unlearn.errors import UserError
from unlearn.pipeline import check_method_args

METHODS = sorted(p.stem for p in (CONFIGS / "method").glob("*.yaml"))
UNLEARNED = sorted(p.stem for p in (CONFIGS / "unlearned").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONFIGS / "data").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))


def test_every_unlearned_has_a_method():
    assert set(UNLEARNED) <= set(METHODS)


@pytest.mark.parametrize("unlearned", UNLEARNED)
@pytest.mark.parametrize("entry", ["relearn", "classes"])
def test_attack_entry_composes(entry, unlearned):
    cfg = compose_cfg(entry, [f"unlearned={unlearned}"])
    assert cfg.unlearned.name == unlearned == cfg.method.label
    check_method_args(cfg.method.name, dict(cfg.method.args))


@pytest.mark.parametrize("method", METHODS)
def test_unlearn_entry_composes(method):
    cfg = compose_cfg("unlearn", [f"method={method}"])
    check_method_args(cfg.method.name, dict(cfg.method.args))


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("entry", ["pretrain", "unlearn", "relearn", "classes"])
def test_data_and_model_options_compose(entry, data, model):
    cfg = compose_cfg(entry, [f"data={data}", f"model={model}", "data.root=/somewhere"])
    assert cfg.data.name == data and cfg.model.name == model
    assert cfg.sampler.guidance_w == cfg.data.guidance_w


def test_unknown_names_fail_at_compose():
    with pytest.raises(ConfigCompositionException):
        compose_cfg("relearn", ["unlearned=nosuchmethod"])
    with pytest.raises(ConfigCompositionException):
        compose_cfg("relearn", ["data=cifar100"])


def test_misspelled_hyperparameter_fails_at_start_up():
    cfg = compose_cfg("unlearn", ["method=safemax", "+method.args.lamda=2"])
    with pytest.raises(UserError, match="no hyperparameter lamda; valid: .*lam"):
        check_method_args(cfg.method.name, dict(cfg.method.args))
    with pytest.raises(UserError, match="unknown method 'salunn'"):
        check_method_args("salunn", {})

"""The SalUn / SA testbed's model (unlearn/testbed.py) against the reference fixture made by the testbed's own
code (see SHARED_TESTBED/README.md): its outputs, its DDIM, which weights a checkpoint's entries give, and the
configs and folders that are refused with one line."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import SHARED_TESTBED, compose_cfg
from unlearn import testbed as tb  # the module, not its names: pytest would collect testbed_* as tests
from unlearn.diffusion import guided_eps
from unlearn.errors import UserError
from unlearn.sampling import SamplerSpec
from unlearn.testbed import CKPT_FILE, CONFIG_FILE, TestbedConfig, load_testbed

needs_fixture = pytest.mark.skipif(not SHARED_TESTBED.is_dir(),
                                   reason=f"the testbed fixture folder {SHARED_TESTBED} is not on this machine")

# the fixture's config.yml (the testbed's CIFAR-10 keys, two levels): the config tests run without the fixture
CONFIG = {
    "data": {"image_size": 32, "channels": 3, "n_classes": 10},
    "model": {"type": "simple", "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 1], "num_res_blocks": 1,
              "attn_resolutions": [16], "dropout": 0.1, "var_type": "fixedlarge", "ema_rate": 0.9999, "ema": True,
              "resamp_with_conv": True, "cond_drop_prob": 0.1},
    "diffusion": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                  "num_diffusion_timesteps": 1000},
}


def _run_folder(root: Path, config: dict, states: list | None = None) -> Path:
    """A testbed run folder: this config.yml, and the fixture's checkpoint (linked) or `states` saved."""
    (root / "ckpts").mkdir(parents=True)
    (root / CONFIG_FILE).write_text(yaml.safe_dump(config))
    if states is None:
        (root / CKPT_FILE).symlink_to(SHARED_TESTBED / CKPT_FILE)
    else:
        torch.save(states, root / CKPT_FILE)
    return root


def _with(section: str, **changes) -> dict:
    config = copy.deepcopy(CONFIG)
    config[section].update(changes)
    return config


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(str(SHARED_TESTBED / "reference.safetensors"))


@pytest.fixture(scope="module")
def states() -> list:
    return torch.load(SHARED_TESTBED / CKPT_FILE, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def raw_model(tmp_path_factory):
    """The fixture's checkpoint with model.ema: false, i.e. states[0]: the weights its reference outputs used."""
    return load_testbed(_run_folder(tmp_path_factory.mktemp("raw"), _with("model", ema=False)))


@needs_fixture
def test_outputs_match_the_reference(raw_model, reference):
    """eps(x, t, c), eps(x, t, null) with the null label n_classes, and the testbed's guidance at w = 2."""
    model, config = raw_model
    x, t, c = reference["x"], reference["t"], reference["c"]
    with torch.inference_mode():
        got = {"out_cond": model(x, t, class_labels=c),
               "out_null": model(x, t, class_labels=torch.full_like(c, config.n_classes)),
               "out_cfg_w2": guided_eps(model, x, t, c, model.null_class, 2.0)}
    assert model.null_class == config.n_classes == 10 and not model.training
    for name, out in got.items():
        torch.testing.assert_close(out, reference[name], atol=1e-5, rtol=0, msg=name)


@needs_fixture
def test_ddim_matches_the_reference(raw_model, reference):
    """The testbed's deterministic guided DDIM (eta 0, w = 2, no x0 clipping) over ddim10_seq.

    Tolerance: without clipping, this random-weight model's x_0 reaches |x| = 282, where float32 round-off
    (amplified by 1/sqrt(alpha_bar) at the early steps) is the floor: the reference code itself, run on this
    machine, differs from the fixture by 2.2e-4 to 2.5e-4 (1 or 2 threads), as does a float64 run. So the
    bound is 2e-6 of the tensor's scale (5.6e-4); a wrong step, skip or guidance is off by far more."""
    model, config = raw_model
    seq = tb.testbed_timesteps(config.num_timesteps, 10)
    assert seq == reference["ddim10_seq"].tolist()
    with torch.inference_mode():
        x0 = tb.testbed_ddim(model, tb.testbed_schedule(config), reference["ddim10_xT"], reference["c"], seq, 2.0)
    want = reference["ddim10_x0"]
    torch.testing.assert_close(x0, want, atol=2e-6 * want.abs().max().item(), rtol=0)
    # the sampler every attack scores with (sampler=testbed_ddim sampler.eta=0 sampler.steps=10) is this DDIM, its
    # final images clamped to [-1, 1] as the testbed's inverse_data_transform does
    cfg = compose_cfg("relearn", ["sampler=testbed_ddim", "sampler.eta=0", "sampler.steps=10", "sampler.guidance_w=2"])
    x, _ = SamplerSpec.from_cfg(cfg.sampler).sample(model, tb.testbed_schedule(config), reference["c"],
                                                     tuple(want.shape[1:]), 0, init=reference["ddim10_xT"])
    torch.testing.assert_close(x, x0.clamp(-1, 1), atol=1e-6, rtol=0)
    assert 0 < int((want.abs() < 1).sum()) and (x - want.clamp(-1, 1)).abs().max() < 5e-4


def test_timesteps_follow_the_testbeds_uniform_skip():
    assert tb.testbed_timesteps(1000, 10) == list(range(0, 1000, 100))
    assert tb.testbed_timesteps(1000, 3) == [0, 333, 666, 999]  # range(0, T, T // steps): one more than asked


@needs_fixture
def test_ema_shadow_is_chosen_exactly_when_config_says_ema(tmp_path, states, raw_model, reference):
    """model.ema: true -> the shadow states[-1] (the fixture's shadow is the weights + 0.001), false -> states[0];
    a DataParallel checkpoint ("module." names, as the testbed saves states[0]) loads the same."""
    shadow_model, config = load_testbed(SHARED_TESTBED)
    assert config.ema
    for name, p in shadow_model.named_parameters():
        assert torch.equal(p, states[-1][name]), name
    for name, p in raw_model[0].named_parameters():
        assert torch.equal(p, states[0][name]), name
    with torch.inference_mode():
        out = shadow_model(reference["x"], reference["t"], class_labels=reference["c"])
    assert (out - reference["out_cond"]).abs().max() > 1e-2  # the wrong entry would be caught above
    wrapped = [{f"module.{k}": v for k, v in states[0].items()}, *states[1:]]
    model, _ = load_testbed(_run_folder(tmp_path / "dp", _with("model", ema=False), wrapped))
    assert all(torch.equal(p, states[0][n]) for n, p in model.named_parameters())


@pytest.mark.parametrize(("changes", "message"), [
    ({"model.ch": 64}, "set model.ch: 128"),
    ({"model.ch_mult": []}, "give one positive integer per level"),
    ({"model.ch_mult": [1, 2, 2], "data.image_size": 30}, "data.image_size=30 cannot be halved 2 times"),
    ({"model.num_res_blocks": 0}, "model.num_res_blocks=0 in config.yml: set it to at least 1"),
    ({"model.ema": "yes"}, "model.ema must be a bool"),
    ({"model.attn_resolutions": 16}, "model.attn_resolutions must be a list of integers"),
    ({"diffusion.beta_schedule": "cosine"}, "use one of the testbed's"),
])
def test_configs_the_reference_cannot_run_are_refused(changes, message):
    config = copy.deepcopy(CONFIG)
    for key, value in changes.items():
        section, name = key.split(".")
        config[section][name] = value
    with pytest.raises(UserError, match=message) as e:
        TestbedConfig.from_dict(config)
    assert "\n" not in str(e.value)


def test_a_missing_key_is_named():
    config = copy.deepcopy(CONFIG)
    del config["diffusion"]["beta_end"]
    with pytest.raises(UserError, match="config.yml has no diffusion.beta_end; add it"):
        TestbedConfig.from_dict(config)


@needs_fixture
def test_bad_folders_are_one_line_errors(tmp_path, states):
    """Refused through the entry point: a config the reference cannot run, a missing or wrong-layout checkpoint,
    model.ema without a shadow, and a checkpoint of another architecture."""
    cases = {
        "ch64": (_with("model", ch=64), None, "set model.ch: 128"),
        "other_arch": (_with("model", ch_mult=[1, 2]), None, "does not match the model of config.yml"),
        "no_shadow": (CONFIG, [states[0], {}, 1, 1], "holds no EMA shadow .* set model.ema: false"),
        "not_a_list": (CONFIG, {"state_dict": states[0]}, "is not in the testbed's layout"),
    }
    for name, (config, ckpt, message) in cases.items():
        folder = _run_folder(tmp_path / name, config, ckpt)
        with pytest.raises(UserError, match=message) as e:
            load_testbed(folder)
        assert "\n" not in str(e.value), name
    shutil.rmtree(tmp_path / "no_shadow" / "ckpts")
    with pytest.raises(UserError, match=r"ckpts/ckpt.pth does not exist; give the testbed's run folder") as e:
        load_testbed(tmp_path / "no_shadow")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"config.yml does not exist"):
        load_testbed(tmp_path / "nowhere")


# Configs the testbed accepts beyond the fixture's: (image size, channels, ch_mult, num_res_blocks, attn_resolutions,
# model.type, resamp_with_conv) -> (parameters, state-dict entries, sha256[:16] of the sorted "key shape" lines),
# as the reference's own Conditional_Model (OPTML-Group/Unlearn-Saliency DDPM/models/diffusion.py) gives them: it was
# run on the side for these numbers (2026-12-07); only the numbers are here
REFERENCE_LAYOUTS = {
    (32, 3, (1, 2, 2, 2), 2, (16,), "simple", True): (38632323, 334, "493563285bdd17f1"),  # its CIFAR-10 config
    (28, 1, (1, 2, 2), 1, (14, 7), "simple", True): (20076289, 218, "a9317415f36d511f"),
    (8, 1, (1,), 1, (8,), "simple", True): (3422337, 110, "1711a4af62338eed"),
    (64, 3, (1, 1, 2, 2, 4), 1, (16,), "bayesian", False): (47214315, 251, "072bd1932e7779b1"),  # STL-size, logvar
}


@pytest.mark.parametrize("layout", list(REFERENCE_LAYOUTS), ids=lambda k: f"{k[0]}px-{len(k[2])}levels-{k[5]}")
def test_any_testbed_config_gives_the_references_state_dict(layout):
    """Key for key and shape for shape the model the reference code builds from the same config (so its checkpoints
    load with strict=True), for levels, multipliers, res blocks, attention resolutions, sizes and channels other
    than the fixture's; the small ones also run a forward pass of the data's shape."""
    import hashlib

    size, chans, mult, blocks, attn, kind, conv = layout
    config = _with("model", in_channels=chans, out_ch=chans, ch_mult=list(mult), num_res_blocks=blocks,
                   attn_resolutions=list(attn), type=kind, resamp_with_conv=conv)
    config["data"].update(image_size=size, channels=chans)
    model = tb.TestbedUNet(TestbedConfig.from_dict(config))
    sd = model.state_dict()
    lines = "\n".join(f"{k} {tuple(v.shape)}" for k, v in sorted(sd.items()))
    got = (sum(p.numel() for p in model.parameters()), len(sd), hashlib.sha256(lines.encode()).hexdigest()[:16])
    assert got == REFERENCE_LAYOUTS[layout]
    if size <= 28:
        with torch.inference_mode():
            out = model.eval()(torch.randn(2, chans, size, size), torch.tensor([0, 999]),
                               class_labels=torch.tensor([0, 10]))
        assert out.shape == (2, chans, size, size) and bool(torch.isfinite(out).all())

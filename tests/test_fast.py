"""Fast-path switches (unlearn/fast.py), the CIFAR-10 reader on files in the real format, and the samplers
the speed benchmarks compare, against known answers."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.diagnostics import naive_ddpm
from unlearn.data import load_dataset, read_cifar_batch
from unlearn.diffusion import Schedule, ddim_sample, predict_eps
from unlearn.fast import Fast
from unlearn.model import Arch, build_unet, load_unet, save_unet

ROOT = Path(__file__).resolve().parent.parent
ARCH = Arch(block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4)
CPU = torch.device("cpu")


def _model():
    torch.manual_seed(0)
    return build_unet(ARCH, (1, 8, 8), 10).eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    return (torch.randn((6, 1, 8, 8), generator=g), torch.tensor([0, 10, 999, 500, 3, 7]),
            torch.tensor([0, 1, 2, 3, 10, 5]))


def test_defaults_change_nothing_on_cpu():
    fast = Fast()
    assert fast.tag(CPU) == {} and not fast.applies(CPU)
    m = fast.model(_model(), CPU)
    assert m.autocast_dtype is None
    x, t, y = _inputs()
    with torch.no_grad():
        assert torch.equal(predict_eps(m, x, t, y), predict_eps(_model(), x, t, y))


def test_bf16_autocast_is_float32_out_and_close_but_not_equal():
    x, t, y = _inputs()
    fast = Fast(cpu=True, channels_last=False)
    assert fast.tag(CPU) == {"bf16": True}
    m = fast.model(_model(), CPU)
    with torch.no_grad():
        ref, low = predict_eps(_model(), x, t, y), predict_eps(m, x, t, y)
    assert low.dtype == torch.float32
    err = (low - ref).abs().max().item()
    assert 0 < err < 0.05 * ref.abs().max().item()  # the switch really runs bf16, and bf16 is close


def test_channels_last_same_numbers_and_saves_plain(tmp_path):
    x, t, y = _inputs()
    m = Fast(cpu=True, bf16=False).model(_model(), CPU)
    assert next(p for p in m.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(predict_eps(m, x, t, y), predict_eps(_model(), x, t, y), atol=1e-5)
    save_unet(m, tmp_path / "ck")
    back = load_unet(tmp_path / "ck")
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), _model().state_dict().values()))


class _Exact(torch.nn.Module):
    """The exact denoiser for data concentrated at one image x*: eps = (x_t - sqrt(a) x*) / sqrt(1 - a)."""

    def __init__(self, schedule, target):
        super().__init__()
        self.schedule, self.target = schedule, target
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.config = type("C", (), {"num_class_embeds": 11})()

    def forward(self, x, t, class_labels=None):
        a = self.schedule.alpha_bar[t].view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * self.target) / (1 - a).sqrt()
        return type("Out", (), {"sample": eps})()


@pytest.mark.parametrize("sampler", ["naive ddpm-1000", "ddim-50", "ddpm-1000 fast"])
def test_samplers_recover_the_single_training_image(sampler):
    schedule = Schedule.linear()
    target = torch.linspace(-0.9, 0.9, 64).view(1, 1, 8, 8)
    model = _Exact(schedule, target)
    labels = torch.zeros(4, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    if sampler == "naive ddpm-1000":
        x = naive_ddpm(model, schedule, labels, (1, 8, 8), 10, 1.0, g)
    else:
        steps, eta = (50, 0.0) if sampler == "ddim-50" else (1000, 1.0)
        x = ddim_sample(model, schedule, labels, (1, 8, 8), 10, 1.0, steps, eta, g)
    assert (x - target).abs().max().item() < 0.02


def _write_batch(path: Path, images: np.ndarray, labels: list[int], str_keys: bool) -> None:
    d = {"batch_label": "training batch 1 of 5", "labels": labels, "data": images.reshape(len(images), -1),
         "filenames": [f"img_{i}.png" for i in range(len(images))]}
    if not str_keys:  # how a Python 3 writer would store them
        d = {k.encode(): v for k, v in d.items()}
    path.write_bytes(pickle.dumps(d, protocol=2))


def test_cifar10_reader_on_synthetic_batches_in_the_real_format(tmp_path):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (50, 3, 32, 32), dtype=np.uint8)
    labels = [i % 10 for i in range(50)]
    _write_batch(folder / "data_batch_1", imgs[:30], labels[:30], str_keys=True)
    _write_batch(folder / "test_batch", imgs[30:], labels[30:], str_keys=False)
    x, y = read_cifar_batch(folder / "data_batch_1")
    assert x.shape == (30, 3, 32, 32) and np.array_equal(x, imgs[:30]) and y.tolist() == labels[:30]
    ds = load_dataset("cifar10", root=str(tmp_path / "cifar"))
    assert ds.image_shape == (3, 32, 32) and ds.num_classes == 10
    assert len(ds.x_train) + len(ds.x_test) == 50
    assert ds.x_train.min() >= -1 and ds.x_train.max() <= 1
    # the pixel layout survives: a train image maps back to one of the source images exactly
    back = np.rint((ds.x_train[0].numpy() + 1) * 127.5).astype(np.uint8)
    assert any(np.array_equal(back, im) for im in imgs)
    assert all(len(ds.attacker_pool(c)) >= 1 for c in range(10))


@pytest.mark.slow
def test_cifar_gpu_benchmark_smoke_runs_on_cpu():
    res = subprocess.run([sys.executable, "benchmarks/cifar_gpu.py", "--smoke", "--device", "cpu"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert sum(ln.startswith(("naive fp32", "fast")) for ln in lines) == 8


class _Scaled(_Exact):
    """The exact denoiser's noise estimate times `scale` (a shrunk or overshooting model)."""

    def __init__(self, schedule, target, scale):
        super().__init__(schedule, target)
        self.scale = scale

    def forward(self, x, t, class_labels=None):
        out = super().forward(x, t, class_labels)
        out.sample = self.scale * out.sample
        return out


def test_eps_profile_hand_numbers():
    """benchmarks/eps_profile.py on data at one image: the exact denoiser has shrink 1 and err 0 at every t; a
    model predicting 1.5 eps has shrink 2.25 and err 0.25; one predicting 0 (SAFEMax's optimum) 0 and 1."""
    from evaluation.diagnostics import T_GRID, profile

    schedule = Schedule.linear()
    target = torch.linspace(-0.9, 0.9, 64).view(1, 1, 8, 8).repeat(5, 1, 1, 1)
    for scale, shrink, err in [(1.0, 1.0, 0.0), (1.5, 2.25, 0.25), (0.0, 0.0, 1.0)]:
        rows = profile(_Scaled(schedule, target[:1], scale), schedule, target, fc=0, w=1.0)
        assert set(rows) == set(T_GRID)
        for t, (s, e, e_w) in rows.items():
            assert s == pytest.approx(shrink, abs=1e-3) and e == pytest.approx(err, abs=1e-3), (scale, t)
            assert e_w == pytest.approx(err, abs=1e-3)  # guidance of a label-blind model changes nothing


@pytest.mark.parametrize("mode,eta,clip", [("d", 0.0, True), ("s", 1.0, True), ("dn", 0.0, False), ("sn", 1.0, False)])
def test_split_sampler_with_one_mode_is_the_plain_sampler(mode, eta, clip):
    """benchmarks/ra_point.py's split sampler (one (eta, clip) above t_split, another below) reduces to
    ddim_sample when both halves agree, noise draws included; halves that differ give other samples."""
    from evaluation.diagnostics import SPLIT_MODES, parse_split, split_sample

    model, schedule = _model(), Schedule.linear()
    y = torch.tensor([0, 3, 5])
    plain = ddim_sample(model, schedule, y, (1, 8, 8), 10, 1.0, 10, eta, torch.Generator().manual_seed(2), clip_x0=clip)
    steps, t_split, above, below = parse_split(f"split-10-500-{mode}-{mode}")
    split = split_sample(model, schedule, y, (1, 8, 8), 10, 1.0, steps, t_split, above, below,
                         torch.Generator().manual_seed(2))
    torch.testing.assert_close(split, plain)
    other = "s" if mode == "d" else "d"
    mixed = split_sample(model, schedule, y, (1, 8, 8), 10, 1.0, 10, 500, SPLIT_MODES[other], SPLIT_MODES[mode],
                         torch.Generator().manual_seed(2))
    assert not torch.allclose(mixed, plain)

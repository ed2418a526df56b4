"""The attacker's worst case (issue 15): the pre-registered grid, its runner on tiny models, the envelope's known
answers (max over adversaries and samplers up to each budget, guards, the teacher kept out, the search cost
summed), the gate's decisions and intervals, and fine-tuning on other real data."""

import copy
import gzip
import json
import os
import struct
import subprocess
import sys
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import initialize_config_dir
from omegaconf import OmegaConf

from attacks import finetune
from evaluation import envelope, gate
from evaluation.records import COMMITTED, read_records
from evaluation.report_worst_case import validation_section
from evaluation.worst_case import adversary_cfg
from tests.conftest import CONFIGS, SHARED_MNIST, TINY, TINY_METHOD, compose_cfg, run_cli
from unlearn.errors import UserError
from unlearn.settings import problems

TINY_GRID = [*TINY, *TINY_METHOD, "grid=smoke", "grid.eval.n=16", "grid.budgets=[0,2]",
             "grid.adversaries.noise_opt_teacher=['attack=noise_opt','attack.guide=teacher','attack.budgets=[0,2]']"]


def _grid_run(tiny_root, tmp_path, monkeypatch, extra=()):
    paths = [f"paths.artifacts={tiny_root}/artifacts", f"paths.results={tmp_path}/results"]
    got = run_cli("evaluation.worst_case", [*TINY_GRID, *extra, *paths], tmp_path, monkeypatch)
    assert got.returncode == 0, got.stderr
    return got, read_records(tmp_path / "results" / "records.jsonl")


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory, tiny_root):
    """The smoke grid once on tiny models (module-scoped: several tests read it)."""
    tmp = tmp_path_factory.mktemp("grid")
    mp = pytest.MonkeyPatch()
    try:
        return _grid_run(tiny_root, tmp, mp)[1]
    finally:
        mp.undo()


def test_the_digits_grid_is_preregistered_and_every_adversary_composes_valid():
    cfg = compose_cfg("worst_case", [])
    g = cfg.grid
    assert g.name == "worst_case_digits" and len(g.adversaries) >= 30
    assert g.ceiling in g.adversaries and set(g.validation.adversaries) <= set(g.adversaries)
    families = set()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        for name, ov in g.adversaries.items():
            a = adversary_cfg(cfg, name, list(ov), study=g.name, references=list(g.references))
            assert problems(a) == [], name
            assert a.adversary == name and a.study == g.name and a.eval.n == g.eval.n
            assert "grid" not in a
            budgets = list(a.attack.budgets)
            assert budgets == [0] or budgets == list(g.budgets) or "attack.budgets" in " ".join(ov), name
            families.add(a.attack.name)
    assert families == {"relearn", "finetune", "embedding", "sampler", "partial", "noise_opt", "deploy"}


def test_a_fresh_interpreter_running_only_the_grid_composes_every_adversary():
    """`python -m evaluation.worst_case` in a new process (no other entry point imported first, unlike the tests
    above, which share one process): each adversary's attack config is found (a missing registration once made
    every unit exit 2 with "Cannot find primary config 'relearn'")."""
    code = ("import evaluation.worst_case as w\n"
            "from hydra import initialize_config_module, compose\n"
            "from unlearn.paths import CONFIG_MODULE\n"
            "with initialize_config_module(CONFIG_MODULE, version_base='1.3'):\n"
            "    g = compose(config_name='worst_case').grid\n"
            "    names = {compose(config_name='relearn', overrides=list(ov)).attack.name\n"
            "             for ov in g.adversaries.values()}\n"
            "print(sorted(names))\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert got.returncode == 0, got.stderr
    assert "'relearn'" in got.stdout and "'deploy'" in got.stdout and "'noise_opt'" in got.stdout


def test_a_bad_adversary_is_refused_by_name_before_anything_runs(tiny_root, tmp_path, monkeypatch):
    paths = [f"paths.artifacts={tmp_path}/artifacts", f"paths.results={tmp_path}/results"]
    got = run_cli("evaluation.worst_case", [*TINY_GRID, "grid.adversaries.relearn_lr1e-3_k10=['attack=relearn',"
                                            "'attack.lr=-1']", *paths], tmp_path, monkeypatch)
    assert got.returncode == 2
    assert got.stderr.strip() == ("error: grid.adversaries.relearn_lr1e-3_k10: attack.lr=-1: out of range; use a "
                                  "finite number in (0, 1e+06]")
    assert not (tmp_path / "results" / "records.jsonl").exists() and not (tmp_path / "artifacts").exists()
    got = run_cli("evaluation.worst_case", [*TINY_GRID, "+grid.adversaries.x=['attack.lr=1']", *paths], tmp_path,
                  monkeypatch)
    assert got.returncode == 2 and "grid.adversaries.x: start its overrides with attack=<option>" in got.stderr
    got = run_cli("evaluation.worst_case", [*TINY_GRID, "+grid.adversaries.copy=['attack=relearn','attack.lr=1e-3',"
                                            "'attack.k=10']", *paths], tmp_path, monkeypatch)
    assert got.returncode == 2 and "is the same attack as relearn_lr1e-3_k10" in got.stderr


def test_the_grid_records_every_adversary_on_the_unlearned_model_and_the_oracle(smoke_records):
    recs = smoke_records
    cfg = compose_cfg("worst_case", ["grid=smoke"])
    assert {r["adversary"] for r in recs} == set(cfg.grid.adversaries)
    assert {r["study"] for r in recs} == {"worst_case_smoke"} and all(r["schema"] == 4 for r in recs)
    roles = {(r["adversary"], r["role"]) for r in recs}
    for name in cfg.grid.adversaries:
        assert {(name, "unlearned"), (name, "oracle")} <= roles
        assert ((name, "original") in roles) == (name in {cfg.grid.ceiling, *cfg.grid.controls})
    relearn = [r for r in recs if r["adversary"] == "relearn_lr1e-3_k10" and r["role"] == "unlearned"]
    assert {(r["budget"]["steps"], r["sampler"]["eta"]) for r in relearn} == {(0, 0.0), (2, 0.0), (0, 1.0), (2, 1.0)}
    probes = [r for r in recs if r["adversary"] == "sampler_w" and r["role"] == "unlearned"]
    assert len(probes) == 4  # w in {0, 4} x eta in {0, 1}, each scored as drawn (once)


@pytest.mark.slow
def test_the_grid_runs_on_a_retrain_against_the_oracle(smoke_records, tiny_root, tmp_path, monkeypatch):
    """unlearned=retrain (a model retrained without c_f from another seed) is attacked as an unlearned model: its
    envelope and ER over the oracle's come out of the records, the oracle's points shared with the study's."""
    no_method = [o for o in TINY_GRID if o not in TINY_METHOD]  # retrain takes no args
    paths = [f"paths.artifacts={tiny_root}/artifacts", f"paths.results={tmp_path}/results"]
    (tmp_path / "results").mkdir()
    path = tmp_path / "results" / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in smoke_records))
    got = run_cli("evaluation.worst_case", [*no_method, "unlearned=retrain", *paths], tmp_path, monkeypatch)
    assert got.returncode == 0, got.stderr
    recs = read_records(path)
    new = [r for r in recs if r["role"] == "unlearned" and r["method"] == "retrain"]
    assert new and len(path.read_text().splitlines()) == len(smoke_records) + len(new)  # the oracle's not rerun
    assert {r["method"] for r in recs if r["role"] == "unlearned"} == {"retrain", "safemax"}
    oracle_keys = {r["key"] for r in smoke_records if r["role"] == "oracle"}
    assert {r["key"] for r in recs if r["role"] == "oracle"} == oracle_keys  # the same oracle points, not rerun
    env = envelope.envelopes(envelope.grid_frame(recs, "worst_case_smoke"))
    assert set(env["model"]) == {"retrain", "safemax"} and env["er"].notna().all()


def test_a_rerun_of_the_grid_records_nothing_new(smoke_records, tiny_root, tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    path = tmp_path / "results" / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in smoke_records))
    before = path.read_bytes()
    got, _ = _grid_run(tiny_root, tmp_path, monkeypatch)
    assert path.read_bytes() == before
    assert "steps" in got.stdout and "env_ra" in got.stdout  # the unit's envelope is printed



def test_the_validation_unit_scores_its_adversaries_again_by_the_1000_step_sampler(smoke_records, tiny_root, tmp_path,
                                                                                    monkeypatch):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in smoke_records))
    unit = smoke_records[0]
    extra = [f"grid.validation.forget_class={unit['forget_class']}", f"grid.validation.seed={unit['seed']}",
             "grid.validation.adversaries=[relearn_lr1e-4_k10]", "grid.validation.samplers=[ddpm]"]
    _, recs = _grid_run(tiny_root, tmp_path, monkeypatch, extra)
    val = [r for r in recs if r["study"] == "worst_case_smoke_validation"]
    assert {r["adversary"] for r in val} == {"relearn_lr1e-4_k10.ddpm"}
    assert {(r["role"], r["budget"]["steps"]) for r in val} == {(role, b) for role in ("unlearned", "oracle")
                                                                 for b in (0, 2)}
    assert {(r["sampler"]["steps"], r["sampler"]["eta"]) for r in val} == {(1000, 1.0)}  # the 1000-step sampler only
    assert len(recs) == len(smoke_records) + len(val)  # the grid's own points were all reused
    section = validation_section(recs)
    assert "worst_case_smoke" in section and "DDPM-1000" in section and "DDIM-3 eta=1" in section

def _set(recs, adversary, role, steps, ra, eta=None, retained=None, setting=None):
    """Give the matching points a known on-data RA (and retained-class RA)."""
    for r in recs:
        if (r["adversary"] == adversary and r["role"] == role and r["budget"]["steps"] == steps
                and (eta is None or r["sampler"]["eta"] == eta) and (setting is None or r["setting"] == setting)):
            r["guard"]["ra_ondata"] = ra
            if retained is not None:
                r["guard"]["retained_ra"] = retained


def _known(smoke_records):
    recs = copy.deepcopy(smoke_records)
    for r in recs:
        r["guard"]["ra_ondata"], r["guard"]["retained_ra"] = 0.0, 1.0
    _set(recs, "relearn_lr1e-4_k10", "original", 0, 0.9)
    _set(recs, "relearn_lr1e-3_k10", "unlearned", 2, 0.6, eta=1.0)   # the max at 2, under the attacker's sampler
    _set(recs, "relearn_lr1e-4_k10", "unlearned", 2, 0.8, retained=0.1)  # higher, but its guard fails
    _set(recs, "noise_opt_teacher", "unlearned", 2, 1.0)              # holds the original: never in the envelope
    _set(recs, "sampler_w", "unlearned", 0, 0.3, setting="w=4 eta=1")  # a zero-budget adversary: in every budget
    _set(recs, "relearn_lr1e-3_k10", "oracle", 2, 0.2, eta=0.0)
    return recs


def test_the_envelope_is_the_max_over_adversaries_samplers_and_budgets_up_to_b(smoke_records):
    recs = _known(smoke_records)
    env = envelope.envelopes(envelope.grid_frame(recs, "worst_case_smoke")).set_index("steps")
    assert list(env.index) == [0, 2]
    assert env.loc[0, "env_ra"] == 0.3 and env.loc[0, "adversary"] == "sampler_w w=4 eta=1"
    assert env.loc[2, "env_ra"] == 0.6 and env.loc[2, "adversary"].startswith("relearn_lr1e-3_k10 @DDIM-3 eta=1")
    assert env.loc[2, "env_oracle"] == 0.2 and env.loc[2, "er"] == pytest.approx(0.4)
    assert env.loc[0, "ra_orig"] == 0.9 and env.loc[0, "ra_u"] == 0.0
    assert env.loc[2, "nr"] == pytest.approx(0.6 / 0.9)
    # the defender's scope: points scored by its own sampler only (the eta-1 point and the probes' eta 1 are out)
    dfd = envelope.envelopes(envelope.grid_frame(recs, "worst_case_smoke"), "defender").set_index("steps")
    assert dfd.loc[2, "env_ra"] == 0.0 and dfd.loc[2, "er"] == pytest.approx(-0.2)



def test_both_envelopes_are_over_the_points_both_models_hold(smoke_records):
    """A unit whose grid has run further on one side (the oracle's points still running) is compared over the
    points both hold; with no oracle point at all, the envelope stands and ER is unavailable."""
    recs = [r for r in _known(smoke_records) if not (r["role"] == "oracle" and r["budget"]["steps"] == 2
                                                     and r["adversary"] == "relearn_lr1e-3_k10")]
    env = envelope.envelopes(envelope.grid_frame(recs, "worst_case_smoke")).set_index("steps")
    assert env.loc[2, "env_ra"] == 0.3 and env.loc[2, "env_oracle"] == 0.0  # the 0.6 point lost its counterpart
    assert (env["unpaired"] == 2).all()  # that point under its two samplers, on the unlearned side only
    alone = [r for r in _known(smoke_records) if r["role"] != "oracle"]
    env = envelope.envelopes(envelope.grid_frame(alone, "worst_case_smoke")).set_index("steps")
    assert env.loc[2, "env_ra"] == 0.6 and env["er"].isna().all() and env["unpaired"].isna().all()

def test_the_search_cost_sums_every_adversary_tried(smoke_records):
    df = envelope.grid_frame(smoke_records, "worst_case_smoke")
    env = envelope.envelopes(df).set_index("steps")
    u = df[(df["model"] == "safemax") & ~df["needs_original"]]
    at2 = u[u["steps"] <= 2].groupby(["adversary", "base_setting"])["budget_sample_gradients"].max().sum()
    assert env.loc[2, "search_sample_gradients"] == at2 > 0
    assert env.loc[0, "search_sample_gradients"] == 0 and env.loc[0, "search_nfe"] > 0  # the probes' sampling
    teacher = df[df["needs_original"] & (df["model"] == "safemax")]["budget_nfe"].max()
    assert teacher > 0 and env.loc[2, "search_nfe"] == u[u["steps"] <= 2].groupby(
        ["adversary", "base_setting"])["budget_nfe"].max().sum()


def test_headline_and_the_gate_read_the_same_envelope(smoke_records, tmp_path):
    recs = _known(smoke_records)
    t = envelope.headline(recs, "worst_case_smoke", n_boot=200).set_index("method")
    assert t.loc["safemax", "ER@2"] == pytest.approx(0.4) and t.loc["safemax", "units"] == 1
    assert t.loc["safemax", "max by"].startswith("relearn_lr1e-3_k10 @DDIM-3 eta=1")
    stat = gate.er_at(recs, "worst_case_smoke", "safemax", 2)
    lo, hi = gate.newcombe(0.6, 16, 0.2, 16)
    assert (stat["er"], stat["lo"], stat["hi"]) == (pytest.approx(0.4), pytest.approx(lo), pytest.approx(hi))
    assert gate.verdict(stat, 0.05, "lower")[0] is (lo <= 0.05)
    assert gate.verdict(stat, 0.3, "point")[0] is False and gate.verdict(stat, 0.5, "point")[0] is True
    assert gate.verdict(stat, 0.5, "upper")[0] is (hi <= 0.5)
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    common = ["--records", str(path), "--study", "worst_case_smoke", "--method", "safemax", "--at", "2"]
    assert gate.main([*common, "--max-er", "0.5", "--fail-on", "point"]) == 0
    assert gate.main([*common, "--max-er", "0.3", "--fail-on", "point"]) == 1
    assert gate.main([*common[:-1], "3", "--max-er", "0.3"]) == 2  # no such budget: one line, exit 2


def test_newcombe_interval_known_values():
    # Newcombe (1998) Table II, example (a): 56/70 - 48/80 -> 0.2000 [0.0524, 0.3339]
    lo, hi = gate.newcombe(56 / 70, 70, 48 / 80, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_the_gate_runs_a_grid_on_a_checkpoint(tiny_root, tmp_path, monkeypatch, capsys):
    paths = [f"paths.artifacts={tiny_root}/artifacts", f"paths.results={tmp_path}/results"]
    rc = gate.main(["--max-er", "0.5", "--at", "2", "--", *TINY_GRID, *paths])
    out = capsys.readouterr().out
    assert rc == 0 and out.splitlines()[-1].startswith("gate PASS: safemax at 2 steps: worst-case ER")
    assert read_records(tmp_path / "results" / "records.jsonl")


# ---- fine-tuning on other real data ------------------------------------------------------------------------------

def _idx(folder, images: np.ndarray, labels: np.ndarray):
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, *images.shape) + images.astype(np.uint8).tobytes())
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def test_foreign_images_are_resized_by_area_and_never_hold_the_forgotten_class(tmp_path):
    images, labels = np.zeros((40, 28, 28)), np.repeat(np.arange(10), 4)
    images[0, :14, :14] = 255  # a top-left white quarter: by area, the 8x8 image's top-left 4x4 is white
    _idx(tmp_path / "m", images, labels)
    x, y, ident = finetune.foreign_images(str(tmp_path / "m"), (1, 8, 8), exclude=3)
    assert x.shape == (36, 1, 8, 8) and not (y == 3).any() and ident.startswith("mnist:")
    assert torch.all(x[0, :, :4, :4] == 1) and torch.all(x[0, :, 4:] == -1) and torch.all(x[0, :, :, 4:] == -1)
    assert torch.all(x[1:] == -1)
    with pytest.raises(UserError, match="attack.data=foreign needs attack.foreign_root"):
        finetune.foreign_images(None, (1, 8, 8), 0)
    with pytest.raises(UserError, match="holds 1-channel images, the model 3"):
        finetune.foreign_images("digits", (3, 8, 8), 0)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="the shared MNIST files are not on this machine")
def test_foreign_mnist_for_digits_from_the_shared_files():
    x, y, _ = finetune.foreign_images(str(SHARED_MNIST), (1, 8, 8), exclude=0)
    assert x.shape[1:] == (1, 8, 8) and len(x) > 8000 and not (y == 0).any()
    assert -1 <= float(x.min()) and float(x.max()) <= 1 and float(x.mean()) < -0.5  # mostly black background


def test_finetune_on_foreign_data_records_a_curve_keyed_by_the_data_not_the_path(tiny_root, tmp_path):
    from evaluation.entry import run

    _idx(tmp_path / "m", np.random.default_rng(0).integers(0, 255, (30, 28, 28)), np.repeat(np.arange(10), 3))
    paths = [f"paths.artifacts={tiny_root}/artifacts", f"paths.results={tmp_path}/results"]
    cfg = compose_cfg("finetune", [*TINY, *TINY_METHOD, "attack.budgets=[0,2]", "eval.n=16", "attack.data=foreign",
                                   f"attack.foreign_root={tmp_path / 'm'}", *paths])
    recs = run(cfg)
    assert len(recs) == 6 and {r["setting"] for r in recs} == {"foreign"}
    assert all(r["attack_params"]["foreign"].startswith("mnist:") and "foreign_root" not in r["attack_params"]
               for r in recs)
    assert OmegaConf.select(cfg, "attack.foreign_root")


# ---- weight-space diagnostics ------------------------------------------------------------------------------------

def test_block_distances_add_up_to_the_total_and_the_line_ends_at_both_models():
    from evaluation import weights
    from tests.conftest import TINY_ARCH
    from unlearn.model import build_unet

    torch.manual_seed(0)
    a, b = build_unet(TINY_ARCH, (1, 8, 8), 10), build_unet(TINY_ARCH, (1, 8, 8), 10)
    sa, sb = a.state_dict(), b.state_dict()
    total, blocks = weights.distances(sa, sb)
    assert total == pytest.approx(np.sqrt(sum(v ** 2 for v in blocks.values())), rel=1e-6)
    assert {"conv_in", "class_embedding", "down_blocks.0", "up_blocks.1", "mid_block"} <= set(blocks)
    assert weights.distances(sa, sa)[0] == 0
    one = {k: v.clone() for k, v in sa.items()}
    one["class_embedding.weight"][3, 0] += 2.0  # one weight moved by 2: distance 2, all of it in that block
    total, blocks = weights.distances(sa, one)
    assert total == pytest.approx(2.0) and blocks["class_embedding"] == pytest.approx(2.0)
    for alpha, want in ((0.0, sa), (1.0, sb)):
        weights.interpolate(a, sa, sb, alpha)
        assert all(torch.equal(a.state_dict()[k], want[k]) for k in sa)
    weights.interpolate(a, sa, sb, 0.5)
    k = "conv_in.weight"
    torch.testing.assert_close(a.state_dict()[k], (sa[k] + sb[k]) / 2)


def test_the_weights_record_starts_at_the_unlearned_model_and_ends_at_the_original(tiny_root, tmp_path, monkeypatch):
    from evaluation.entry import run

    paths = [f"paths.artifacts={tiny_root}/artifacts", f"paths.results={tmp_path}/results"]
    got = run_cli("evaluation.weights", [*TINY, *TINY_METHOD, "eval.n=16", *paths], tmp_path, monkeypatch)
    assert got.returncode == 0, got.stderr
    (rec,) = read_records(tmp_path / "results" / "records.jsonl")
    assert rec["kind"] == "weights" and len(rec["path_ra"]) == 11 and rec["alphas"][0] == 0 and rec["alphas"][-1] == 1
    assert rec["dist_original"] > 0 and rec["dist_oracle"] > 0
    # a = 0 and a = 1 are the untouched unlearned model and the original, sampled as every budget-0 point is
    ref = run(compose_cfg("relearn", [*TINY, *TINY_METHOD, "attack.budgets=[0]", "eval.n=16",
                                      f"paths.artifacts={tiny_root}/artifacts", f"paths.results={tmp_path}/ref"]))
    ondata = {r["role"]: r["guard"]["ra_ondata"] for r in ref}
    assert rec["path_ra"][0] == ondata["unlearned"] and rec["path_ra"][-1] == ondata["original"]
    again = run_cli("evaluation.weights", [*TINY, *TINY_METHOD, "eval.n=16", *paths], tmp_path, monkeypatch)
    assert again.returncode == 0 and len(read_records(tmp_path / "results" / "records.jsonl")) == 1  # resumed


# ---- on the committed records of the digits grid (data/records/worst_case_digits.jsonl.gz) ------------------------

GRID_RECORDS = COMMITTED / "worst_case_digits.jsonl.gz"


@pytest.fixture(scope="module")
def digits_grid():
    return envelope.grid_frame(read_records(GRID_RECORDS), "worst_case_digits")


def test_budget_zero_is_one_point_across_every_family(digits_grid):
    """Relearning, LoRA, inversion, fine-tuning and noise optimisation at budget 0 all leave the model untouched:
    per model, unit and scoring sampler they record the same RA (the same samples), whichever adversary ran."""
    df = digits_grid
    zero = df[(df["steps"] == 0) & df["unattacked"]]
    assert zero["attack"].nunique() >= 4
    spread = zero.groupby(["model", "forget_class", "seed", "sampler"])["ra"].agg(["min", "max", "count"])
    assert (spread["count"] > 1).any() and (spread["min"] == spread["max"]).all(), spread[spread["min"] < spread["max"]]


def test_the_gate_on_the_committed_grid_passes_safemax_and_fails_a_leaking_model(capsys):
    """Selective Amnesia at this scale never forgets (RA 1.0 untouched): the gate fails it at budget 0, where
    SAFEMax passes; gradient ascent relearns past the oracle's envelope within 30 steps and fails there."""
    read = ["--records", str(GRID_RECORDS), "--study", "worst_case_digits", "--max-er", "0.1"]
    assert gate.main([*read, "--at", "0", "--method", "safemax"]) == 0
    assert gate.main([*read, "--at", "0", "--method", "sa"]) == 1
    assert "gate FAIL: sa at 0 steps" in capsys.readouterr().out
    assert gate.main([*read, "--at", "30", "--method", "ga"]) == 1


def test_every_control_shows_the_forgotten_class_on_the_original(digits_grid):
    """The positive controls: each adversary that also runs on the original (the ceiling and grid.controls) finds
    c_f there at its best setting, in every unit where it ran; an attack that cannot proves nothing elsewhere."""
    g = compose_cfg("worst_case", []).grid
    orig = digits_grid[digits_grid["model"] == "original"]
    best = orig.groupby(["adversary", "forget_class", "seed"])["ra"].max()
    ran = set(best.index.get_level_values(0))
    assert {g.ceiling, *g.controls} <= ran, sorted({g.ceiling, *g.controls} - ran)
    assert set(g.controls) >= {"partial_k10", "noise_opt_classifier", "sampler_noise", "deploy_int8"}
    low = best[best < 0.9]
    assert low.empty, low.to_dict()


NEW_ATTACKS = ("noise_opt", "partial", "sampler", "deploy")  # issue 15 items 3-4: no weights changed, or cast


def _beats_the_oracle(grid: pd.DataFrame, model: str, families: tuple[str, ...]) -> pd.DataFrame:
    """Per attack family, unit and budget: `model`'s family envelope against the oracle's, with the Newcombe
    interval of the difference (Bonferroni over every comparison); the rows where `model` beats the oracle by more
    than that noise (the interval above 0)."""
    df = grid[(grid["role"] != "original") & grid["attack"].isin(families)]
    df = df[(df["attack"] != "deploy") | (df["steps"] == 0)]  # deployment itself (then relearning: not new)
    budgets = envelope.grid_budgets(grid)

    def family_envelopes(m: str, shared: pd.DataFrame) -> pd.DataFrame:
        rows = [{"attack": a, "forget_class": c, "seed": s, "steps": r["steps"], "ra": r["env_ra"],
                 "n": int(g["n"].min())}
                for (a, c, s), g in df[df["model"] == m].merge(shared).groupby(["attack", *envelope.UNIT])
                for r in envelope._one_envelope(g, budgets)]
        return pd.DataFrame(rows, columns=["attack", *envelope.UNIT, "steps", "ra", "n"])

    # both envelopes over the (adversary, budget) points both models hold in a unit, as envelope.envelopes takes them
    point = ["attack", "adv", *envelope.UNIT, "steps"]
    shared = df.loc[df["model"] == model, point].merge(df.loc[df["model"] == "oracle", point]).drop_duplicates()
    both = family_envelopes(model, shared).merge(family_envelopes("oracle", shared),
                                                 on=["attack", *envelope.UNIT, "steps"], suffixes=("", "_oracle"))
    both = both.dropna()
    assert len(both.groupby(envelope.UNIT)) >= 3 and set(both["attack"]) == set(families), both
    z = NormalDist().inv_cdf(1 - 0.05 / len(both))  # one-sided: beating, not falling short
    both["lo"] = [gate.newcombe(r.ra, r.n, r.ra_oracle, r.n_oracle, z)[0] for r in both.itertuples()]
    return both[both["lo"] > 0]


def _untouched_differ(grid: pd.DataFrame, model: str) -> set[tuple[int, int]]:
    """The units where `model` untouched (budget 0, the defender's sampler) and the oracle untouched differ by more
    than the Newcombe interval of the two points (Bonferroni over the units)."""
    u = grid[(grid["steps"] == 0) & grid["unattacked"] & grid["defender"] & grid["model"].isin([model, "oracle"])]
    u = u.groupby(["model", *envelope.UNIT]).agg(ra=("ra", "mean"), n=("n", "min")).reset_index()
    both = u[u["model"] == model].merge(u[u["model"] == "oracle"], on=envelope.UNIT, suffixes=("", "_oracle"))
    z = NormalDist().inv_cdf(1 - 0.025 / len(both))
    ci = {(r.forget_class, r.seed): gate.newcombe(r.ra, r.n, r.ra_oracle, r.n_oracle, z) for r in both.itertuples()}
    return {unit for unit, (lo, hi) in ci.items() if lo > 0 or hi < 0}


def test_a_model_that_never_saw_the_class_cannot_beat_the_oracle_by_more_than_noise(digits_grid):
    """unlearned=retrain (retrained without c_f from another seed) against the oracle, for each attack that
    changes no weights or only casts them (initial-noise optimisation, partial diffusion, sampler and eta > 1
    probes, deployment transforms). Where the two models untouched agree within binomial noise, no such attack
    makes the retrain beat the oracle by more than the Newcombe interval of the two points (Bonferroni), at any
    budget. They do not always agree untouched: the class-8 retrain draws 8s for label 8 far more often than the
    oracle does before any attack (REPORT Q4, the noise floor: the oracle is one realisation). The same test
    fails on every one of these families for Selective Amnesia (which at this scale never forgets), and for
    SAFEMax relearned 30 steps (the relearning family)."""
    differ = _untouched_differ(digits_grid, "retrain")
    assert any(c == 8 for c, _ in differ), differ  # the finding: realisations differ beyond binomial noise
    units = set(zip(*(digits_grid.loc[digits_grid["model"] == "retrain", k] for k in envelope.UNIT)))
    assert len(units - differ) >= 3, (units, differ)  # the property is asserted on at least 3 units
    bad = _beats_the_oracle(digits_grid, "retrain", NEW_ATTACKS)
    bad = bad[[(c, s) not in differ for c, s in zip(bad["forget_class"], bad["seed"])]]
    assert bad.empty, bad.to_string()
    # the test can fail: on these families for a model that never forgot (SA at this scale), and on relearning
    assert set(_beats_the_oracle(digits_grid, "sa", NEW_ATTACKS)["attack"]) == set(NEW_ATTACKS)
    assert (_beats_the_oracle(digits_grid, "safemax", ("relearn",))["steps"] == 30).any()

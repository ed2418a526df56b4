"""Robustness summaries on hand-made records: AURC, B@50, NR / ER, envelope, bootstrap CI, ledger, figure."""

import math

import numpy as np
import pytest

from evaluation.curves import plot_robustness
from evaluation.summary import (
    aurc,
    b_at,
    bootstrap_ci,
    curve_table,
    envelope,
    ledger,
    mia_table,
    sampler_table,
    scalar_table,
)
from unlearn.errors import UserError
from unlearn.paths import CONFIGS

X10 = math.log(11) / math.log(101)  # x of budget 10 on a 0..100 grid


def _rec(role, steps, ra, *, method=None, attack="relearn", setting="full k=10", fc=0, seed=0, run_id="r0",
         wall=0.0, dev=0.0, ew=1.0, ed=0.5, device="cpu (2 threads)", **extra):
    rec = {"kind": "attack", "key": f"{role}/{method}/{attack}/{setting}/{fc}/{seed}/{steps}/{device}",
           "run_id": run_id, "method": method or role, "role": role, "forget_class": fc, "seed": seed,
           "attack": attack, "setting": setting, "attack_params": {"name": attack},
           "budget": {"steps": steps, "sample_gradients": 10 * steps, "nfe": 0, "unlearning_equivalents": None,
                      "wall_s": wall, "device_s": dev},
           "ra": ra, "ra_ci_low": max(0.0, ra - 0.05), "ra_ci_high": min(1.0, ra + 0.05), "mean_p": ra,
           "entropy": 1.0, "n": 100, "guidance_w": 2.0, "sampler": {"name": "ddim", "steps": 10, "eta": 0.0},
           "device": device, "torch": "2.5.1", "eval": {"nfe": 2000, "wall_s": ew, "device_s": ed}, **extra}
    if setting is None:
        del rec["setting"]
    return rec


def _curve(role, ras, method=None, **kw):
    return [_rec(role, b, ra, method=method, **kw) for b, ra in zip([0, 10, 100], ras)]


def _hand(**kw):
    return (_curve("original", [0.9, 0.92, 0.95], **kw) + _curve("unlearned", [0.1, 0.3, 0.7], "safemax", **kw)
            + _curve("oracle", [0.0, 0.1, 0.4], **kw))


def test_aurc_known_curves():
    b = np.array([0, 1, 10, 100, 1000, 5000])
    x = np.log1p(b) / np.log1p(b.max())
    assert aurc(b, x) == pytest.approx(0.5, abs=1e-9)
    assert aurc(b, np.ones(6)) == pytest.approx(1.0, abs=1e-12)
    assert aurc(b, np.zeros(6)) == 0.0
    assert aurc(b, 3 * np.ones(6)) == pytest.approx(3.0, abs=1e-12)  # not clipped
    noisy_zero = np.array([0.0, -0.1, 0.1, -0.1, 0.1, -0.1])
    assert aurc(b, noisy_zero) == pytest.approx(float(np.trapezoid(noisy_zero, x)))  # noise around 0 stays around 0
    assert aurc(b, noisy_zero) < aurc(b, np.clip(noisy_zero, 0, None))
    assert aurc([100, 0, 10], [1.0, 0.0, 0.0]) == pytest.approx(0.5 * (1 - X10), abs=1e-12)  # unsorted input
    assert math.isnan(aurc([0], [1.0]))


def test_b_at_hand_curve_and_never():
    b, nr = [0, 10, 100, 1000], [0.0, 0.4, 0.55, 0.9]
    assert b_at(b, nr) == 100
    assert b_at(b, nr, level=0.9) == 1000
    assert b_at(b, [0.0, 0.1, 0.2, 0.49]) == math.inf
    assert math.isnan(b_at(b, [0.0, 0.1, float("nan"), 0.49]))  # an excluded point is not "never recovered"
    assert b_at(b, [0.0, 0.6, float("nan"), 0.49]) == 10  # reached before the excluded point


def test_nr_and_er_from_hand_records():
    recs = _hand()
    recs += [_rec("unlearned", b, ra, method="safemax", setting="lora r=4") for b, ra in [(10, 0.5), (100, 0.9)]]
    recs += [_rec("unlearned", 0, 0.2, method="salun", setting=None)]  # old record: no setting, no guards
    t = curve_table(recs).set_index(["method", "setting", "steps"])
    row = t.loc[("safemax", "full k=10", 10)]
    assert (row.ra_orig, row.ra_u, row.ra_oracle) == (0.9, 0.1, 0.1)
    assert row.nr == pytest.approx(0.25) and row.er == pytest.approx(0.2)
    row = t.loc[("safemax", "full k=10", 100)]
    assert row.nr == pytest.approx(0.75) and row.er == pytest.approx(0.3)
    assert row.nr_oracle == pytest.approx(0.375)
    # lora has no budget-0 point of its own: ceiling and floor fall back to the class/seed's other setting
    row = t.loc[("safemax", "lora r=4", 100)]
    assert (row.ra_orig, row.ra_u) == (0.9, 0.1) and row.nr == pytest.approx(1.0) and math.isnan(row.er)
    row = t.loc[("salun", "default", 0)]
    assert row.ra_orig == 0.9 and row.nr == pytest.approx(0.0) and math.isnan(row.guard_fid_cf)


def test_envelope_picks_max_setting_and_worst_case_row():
    recs = (_curve("original", [0.9, 0.9, 0.9], setting="A") + _curve("original", [0.9, 0.9, 0.9], setting="B")
            + _curve("unlearned", [0.1, 0.3, 0.8], "safemax", setting="A")
            + _curve("unlearned", [0.1, 0.5, 0.6], "safemax", setting="B"))
    e = envelope(recs).set_index("steps")
    assert e.loc[10, "ra"] == 0.5 and e.loc[10, "ra_setting"] == "B"
    assert e.loc[100, "ra"] == 0.8 and e.loc[100, "ra_setting"] == "A"
    assert e.loc[10, "nr"] == pytest.approx(0.5) and e.loc[100, "nr_setting"] == "A"
    t = scalar_table(recs, n_boot=200).set_index("setting")
    assert list(t.index) == ["A", "B", "worst case"]
    assert (t.loc["A", "b50"], t.loc["B", "b50"], t.loc["worst case", "b50"]) == (100, 10, 10)
    assert t.loc["worst case", "nr_at_max"] == pytest.approx(0.875)


def test_scalar_table_hand_numbers():
    recs = _hand(fc=0) + _hand(fc=1)
    t = scalar_table(recs, n_boot=200)
    assert len(t) == 1
    r = t.iloc[0]
    area = 0.5 * X10 * 0.25 + 0.5 * (1 - X10) * (0.25 + 0.75)
    assert r.units == 2 and r.b_max == 100
    assert r.aurc == pytest.approx(area) and r.aurc_lo == pytest.approx(area) and r.aurc_hi == pytest.approx(area)
    oracle_area = 0.5 * X10 * (-0.125 + 0.0) + 0.5 * (1 - X10) * 0.375  # oracle NR [-0.125 (not clipped), 0, 0.375]
    assert r.aurc_excess == pytest.approx(area - oracle_area)
    assert (r.b50, r.nr_at_max, r.er_at_max) == (100, pytest.approx(0.75), pytest.approx(0.3))


def test_bootstrap_ci():
    wide = {(c, 0): v for c, v in enumerate([0.0, 1.0, 0.0, 1.0])}
    assert bootstrap_ci(wide) == bootstrap_ci(wide) == (0.5, 0.0, 1.0)
    tight = bootstrap_ci([0.45, 0.55, 0.45, 0.55])
    assert tight == pytest.approx((0.5, 0.45, 0.55))
    p, lo, hi = bootstrap_ci(np.random.default_rng(3).normal(0.3, 0.1, 40), seed=7)
    assert lo < p < hi and 0.02 < hi - lo < 0.1  # 2 x 1.96 x 0.1 / sqrt(40) = 0.062
    assert bootstrap_ci({(0, 0): 0.3}) == (0.3, 0.3, 0.3)
    assert bootstrap_ci([10.0, math.inf, math.inf], stat=np.median) == (math.inf, 10.0, math.inf)  # B@50 may be inf
    assert all(math.isnan(v) for v in bootstrap_ci([float("nan")]))


def test_ledger_sums_attack_and_eval_cost_separately():
    cost = [(0, 0, 0), (10, 5, 2), (100, 20, 8)]  # cumulative attack wall_s / device_s per budget
    recs = [_rec("unlearned", b, 0.5, method="safemax", wall=w, dev=d) for b, w, d in cost]
    recs += [_rec("oracle", b, 0.2, wall=w, dev=d) for b, w, d in [(0, 0, 0), (10, 4, 1), (100, 18, 6)]]
    recs += [_rec("unlearned", 10, 0.5, method="salun", run_id="r1", wall=7, dev=3, ew=2.0, ed=1.5)]
    t = ledger(recs)
    r = t.loc["r0"]
    assert (r.attack_wall_s, r.attack_device_s, r.eval_wall_s, r.eval_device_s, r.points) == (38, 14, 6.0, 3.0, 6)
    assert r.device == "cpu (2 threads)" and r.torch == "2.5.1" and r.method == "oracle, safemax"
    assert tuple(t.loc["r1", ["attack_wall_s", "eval_wall_s", "points"]]) == (7, 2.0, 1)


def test_no_attack_records_is_a_user_error():
    mia = {"kind": "mia", "key": "m", "role": "original", "method": "original", "forget_class": 0, "seed": 0}
    for fn in (curve_table, scalar_table, ledger, lambda r: plot_robustness(r, "unused.png")):
        with pytest.raises(UserError, match="no attack records"):
            fn([mia])


def test_sampler_and_mia_tables():
    ras = {"original": [0.8, 1.0], "unlearned": [0.2, 0.4]}
    recs = [_rec(role, 0, ra, method="safemax" if role == "unlearned" else None, attack="sampler", setting="w=4 eta=1",
                 fc=fc, hit_any={"1": ra, "10": 1.0}) for role in ras for fc, ra in enumerate(ras[role])]
    t = sampler_table(recs).set_index("role")
    assert list(t.index) == ["original", "unlearned:safemax"]
    assert t.loc["unlearned:safemax", "ra"] == pytest.approx(0.3)
    assert t.loc["original", "hit_any_1"] == pytest.approx(0.9)
    assert t.loc["original", "units"] == 2 and math.isnan(t.loc["original", "hit_any_100"])
    mia = [{"kind": "mia", "key": f"m{fc}", "role": "oracle", "method": "oracle", "forget_class": fc, "seed": 0,
            "score": "pia", "auc": auc, "tpr_at_1pct_fpr": 0.02, "tpr_at_01pct_fpr": 0.001, "n_members": 50,
            "n_nonmembers": 50} for fc, auc in enumerate([0.5, 0.7])]
    m = mia_table(mia).iloc[0]
    assert (m.role, m.score, m.units, m.auc, m.tpr_at_1pct_fpr) == ("oracle", "pia", 2, pytest.approx(0.6), 0.02)


def test_plot_robustness_writes_png(tmp_path):
    recs = _hand(setting="A") + _hand(setting="B", fc=1) + _hand(setting="A", fc=1)
    for role in ["original", "unlearned", "oracle"]:
        for w, eta, ra in [(0, 0, 0.1), (2, 0, 0.5), (4, 1, 0.7)]:
            recs.append(_rec(role, 0, ra, method="safemax" if role == "unlearned" else None, attack="sampler",
                             setting=f"w={w} eta={eta}"))
    recs.append(_rec("oracle", 10, 0.9, setting="A", device="cuda:0 (NVIDIA H200)"))  # a minority device: left out
    out = tmp_path / "figs" / "robustness.png"
    plot_robustness(recs, out, title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["robustness.png"]  # no temporary file left behind


def test_one_label_with_different_parameters_is_split():
    recs = (_curve("unlearned", [0.1, 0.2, 0.3], "safemax", setting="init=forgotten")
            + _curve("unlearned", [0.1, 0.5, 0.9], "safemax", setting="init=forgotten", seed=1))
    for r in recs[:3]:
        r["attack_params"] = {"name": "embedding", "lr": 0.01, "budgets": [0, 10, 100]}
    for r in recs[3:]:
        r["attack_params"] = {"name": "embedding", "lr": 0.1, "budgets": [0, 10]}
    from evaluation.summary import attack_frame
    assert sorted(attack_frame(recs)["setting"].unique()) == ["init=forgotten lr=0.01", "init=forgotten lr=0.1"]
    assert attack_frame(recs[:3])["setting"].unique().tolist() == ["init=forgotten"]  # budgets alone never split


def test_report_study_section_from_records_is_idempotent(tmp_path, capsys):
    import json

    from evaluation.report import build_report, main

    recs = _hand(fc=0) + _hand(fc=1) + _curve("unlearned", [0.0, 0.0, 0.1], "salun", fc=0)
    recs += [_rec(role, 0, ra, method=m, attack="sampler", setting="w=4 eta=1", attack_params={"name": "sampler"},
                  hit_any={"1": ra, "10": 0.9})
             for role, m, ra in [("original", None, 1.0), ("unlearned", "safemax", 0.2)]]
    recs += [{"kind": "mia", "key": f"m{role}", "role": role, "method": role, "forget_class": 0, "seed": 0,
              "score": "secmi", "auc": auc, "tpr_at_1pct_fpr": 0.1, "tpr_at_01pct_fpr": 0.0, "n_members": 10,
              "n_nonmembers": 5} for role, auc in [("original", 0.7), ("oracle", 0.55)]]
    for i, r in enumerate(recs):
        r.update(study="s1", dataset="digits", model="small", judge_id="j", judge_test_accuracy=0.98,
                 code_version="abc", time=f"2026-01-01T00:00:{i:02d}")
        r.setdefault("guard", {"fid_cf": 10.0, "retained_ra": 0.95, "retained_n": 90})
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    report = tmp_path / "REPORT.md"
    first = build_report(path, report)
    page = tmp_path / "report" / "s1.md"  # a study not named in PAGES gets a page of its own
    section = first[page].split("<!-- BEGIN GENERATED: study s1 -->")[1].split("<!-- END GENERATED: study s1 -->")[0]
    for needle in ["Summary per attack setting", "RA per budget", "Sampler probes", "Membership inference",
                   "Cost ledger", "](s1_robustness.png)", "| safemax | relearn | full k=10 |"]:
        assert needle in section, needle  # the page sits in report/ beside its figures: links without report/
    assert (tmp_path / "report" / "s1_robustness.png").stat().st_size > 0
    assert page.read_text() == first[page] and "[Back to REPORT.md](../REPORT.md)" in first[page]
    assert build_report(path, report) == first
    path.write_text('{"kind": "attack", "key": "x"\n{"broken\n')
    assert main(["--records", str(path), "--report", str(report)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert report.read_text() == first[report] and page.read_text() == first[page]  # nothing half-written


def test_a_point_failing_its_guard_is_excluded_not_scored_as_zero():
    recs = _hand()
    for r in recs:
        r["guard"] = {"fid_cf": 10.0, "retained_ra": 0.99, "retained_n": 90, "ra_ondata": r["ra"] / 2}
    broken = next(r for r in recs if r["role"] == "unlearned" and r["budget"]["steps"] == 100)
    broken["guard"]["retained_ra"] = 0.5  # the attack destroyed the model's other classes: 0.5 < 0.8 x 0.99
    c = curve_table(recs).set_index("steps")
    assert not c.loc[100, "guard_ok"] and c.loc[10, "guard_ok"] and c.loc[0, "guard_ok"]
    assert c.loc[100, "ra_raw"] == 0.7 and c.loc[100, "ra"] == 0.35 and c.loc[100, "ra_scored"] == "on-data"
    assert math.isnan(c.loc[100, "ra_guarded"]) and math.isnan(c.loc[100, "nr"])
    assert math.isnan(c.loc[100, "er"]) and c.loc[10, "nr"] == pytest.approx(0.25)
    assert scalar_table(recs, n_boot=50).iloc[0]["guard_fail"] == 0.5
    from evaluation.summary import ra_budget_table
    t = ra_budget_table(recs, n_boot=50).set_index("steps")
    assert t.loc[100, "on-data RA safemax"] == pytest.approx(0.35) and t.loc[100, "min retained RA"] == 0.5


def test_guard_is_relative_to_the_same_model_at_budget_zero():
    """A model whose retained classes were already low (forget-only SAFEMax, 0.10) is judged against itself:
    c_f coming back fully at an unchanged 0.10 retained RA is recovery, not a guard failure. An oracle point
    that fails its own guard leaves ER undefined."""
    recs = _hand()
    for r in recs:
        low = r["role"] == "unlearned"
        r["guard"] = {"fid_cf": 1.0, "retained_ra": 0.10 if low else 0.99, "retained_n": 90, "ra_ondata": r["ra"]}
    next(r for r in recs if r["role"] == "unlearned" and r["budget"]["steps"] == 100)["guard"]["retained_ra"] = 0.09
    next(r for r in recs if r["role"] == "oracle" and r["budget"]["steps"] == 10)["guard"]["retained_ra"] = 0.5
    c = curve_table(recs).set_index("steps")
    assert c["guard_ok"].all()  # 0.09 >= 0.8 x 0.10
    assert c.loc[100, "nr"] == pytest.approx(0.75) and c.loc[100, "er"] == pytest.approx(0.3)
    assert not c.loc[10, "oracle_guard_ok"] and math.isnan(c.loc[10, "er"]) and c.loc[10, "nr"] == pytest.approx(0.25)


def test_a_sampler_probe_is_guarded_against_the_untouched_model():
    """Sampler probes have only budget 0 (their own setting): the guard compares them with the same model's
    untouched budget-0 point (here relearn's), so a probe that wrecks the retained classes is excluded."""
    recs = _hand()
    recs += [_rec("unlearned", 0, 0.6, method="safemax", attack="sampler", setting="w=0 eta=0"),
             _rec("original", 0, 0.9, attack="sampler", setting="w=0 eta=0")]
    for r in recs:
        r["guard"] = {"fid_cf": 1.0, "retained_ra": 0.99, "retained_n": 90, "ra_ondata": r["ra"]}
    recs[-2]["guard"]["retained_ra"] = 0.5
    c = curve_table(recs)
    probe = c[c["attack"] == "sampler"].iloc[0]
    assert not probe["guard_ok"] and math.isnan(probe["nr"])
    assert c[c["attack"] == "relearn"]["guard_ok"].all()


def test_guard_samples_keep_false_alarms_below_one_percent():
    """A model at a true retained RA of 0.9 that the attack leaves unchanged fails the guard < 1% of the time,
    for the guard sizes every config uses (samples per retained class x 9 retained digits classes)."""
    import yaml

    from evaluation.summary import guard_false_alarm

    assert guard_false_alarm(18) > 0.01 > guard_false_alarm(27)  # the bar: 2 per class is too few, 3 enough
    root = CONFIGS
    sizes = {"attack_job": yaml.safe_load((root / "attack_job.yaml").read_text())["eval"]["n_retained_per_class"]}
    for f in (root / "experiment").glob("*.yaml"):
        per = (yaml.safe_load(f.read_text()) or {}).get("eval", {}).get("n_retained_per_class")
        if per and f.stem != "sweep_smoke":  # the plumbing smoke test's numbers mean nothing
            sizes[f.stem] = per
    for name, per in sizes.items():
        assert guard_false_alarm(9 * per) < 0.01, name


def test_clustered_bootstrap_covers_the_mean_under_a_class_effect():
    """Known answer: units = 20 classes x 3 seeds, value = class effect N(0, 1) + seed noise N(0, 0.3^2), true
    mean 0. Resampling classes then seeds covers 0 in >= 90% of 200 simulations; resampling units as if
    independent does not (it ignores that a class's seeds share its effect)."""
    rng = np.random.default_rng(0)
    hits = {True: 0, False: 0}
    for sim in range(200):
        v = (rng.normal(0, 1.0, 20)[:, None] + rng.normal(0, 0.3, (20, 3))).ravel()
        for clustered in (True, False):
            _, lo, hi = bootstrap_ci(v, np.mean, 1000, sim, clusters=np.repeat(np.arange(20), 3) if clustered else None)
            hits[clustered] += lo <= 0 <= hi
    assert hits[True] / 200 >= 0.90 and hits[False] / 200 <= 0.85
    # one class holding every unit: no between-class spread to resample, only its seeds
    p, lo, hi = bootstrap_ci([0.2, 0.4], clusters=[3, 3])
    assert (p, lo <= 0.3 <= hi) == (pytest.approx(0.3), True)
    with pytest.raises(ValueError, match="cluster labels"):
        bootstrap_ci([0.1, 0.2], clusters=[0])


def test_sampler_comparison_pairs_units_and_never_mixes_samplers(tmp_path):
    """Two samplers over the same units: ER is built per sampler (an oracle point scored by DDPM never meets an
    unlearned point scored by DDIM) and the difference is paired by unit. Hand numbers: under DDIM the
    unlearned/oracle at 10 steps are 0.3/0.1 (ER 0.2) in both units; under DDPM 0.9/0.3 (unit 0) and
    0.7/0.3 (unit 1): ER 0.6 and 0.4, mean 0.5, paired diff mean 0.3."""
    import json

    from evaluation.report import build_report, sampler_section
    from evaluation.summary import sampler_comparison

    ddpm = {"name": "ddim", "steps": 1000, "eta": 1.0}
    recs = []
    for seed in (0, 1):
        kw = dict(seed=seed, setting="default", study="s1")
        recs += _hand(**kw)
        hi = 0.9 if seed == 0 else 0.7
        kw2 = dict(seed=seed, setting="default", study="s2", sampler=ddpm, device="cpu (1 thread)")
        recs += (_curve("original", [0.95, 0.95, 0.95], **kw2) + _curve("unlearned", [0.1, hi, 1.0], "safemax", **kw2)
                 + _curve("oracle", [0.0, 0.3, 0.6], **kw2))
    for i, r in enumerate(recs):  # keys must differ between samplers
        r["key"] += f"/{r['sampler']['steps']}"
        r.update(dataset="digits", model="small", judge_id="j", judge_test_accuracy=0.98, code_version="abc",
                 time=f"2026-01-01T00:00:{i:02d}")
    from evaluation.summary import attack_frame

    frame = attack_frame(recs)
    assert set(frame["sampler"]) == {"DDIM-10", "DDPM-1000"}
    assert set(frame["setting"]) == {"default @DDIM-10", "default @DDPM-1000"}  # mixed samplers never share a curve
    ct = curve_table(frame).set_index(["setting", "seed", "steps"])
    assert ct.loc[("default @DDPM-1000", 1, 10), "er"] == pytest.approx(0.4)
    t = sampler_comparison(frame, "DDIM-10", "DDPM-1000").set_index("steps")
    assert t.loc[10, "units"] == 2 and t.loc[10, "setting"] == "default"
    assert t.loc[10, "ER DDIM-10"] == pytest.approx(0.2) and t.loc[10, "ER DDPM-1000"] == pytest.approx(0.5)
    assert t.loc[10, "ER diff"] == pytest.approx(0.3)
    assert t.loc[10, "ER diff_lo"] == pytest.approx(0.2) and t.loc[10, "ER diff_hi"] == pytest.approx(0.4)
    assert t.loc[100, "ER diff"] == pytest.approx((1.0 - 0.6) - (0.7 - 0.4))
    # a second DDIM study of the same units at another N pairs with nothing: units are not counted twice
    more = [{**r, "n": 500, "key": r["key"] + "/500"} for r in recs if r["sampler"]["steps"] == 10]
    t2 = sampler_comparison(attack_frame(recs + more), "DDIM-10", "DDPM-1000").set_index("steps")
    assert t2.loc[10, "units"] == 2 and t2.loc[10, "ER diff"] == pytest.approx(0.3)
    # unit 1's DDPM model fails its retained-class guard at 10 steps (ER NaN): every column, units included, is
    # then over unit 0 alone (DDIM ER 0.2, DDPM ER 0.6, diff 0.4), never a mean over different units per column
    broken = [{**r, "guard": {"retained_ra": 1.0 if r["budget"]["steps"] == 0 else 0.1}} if
              (r["seed"], r["role"], r["sampler"]["steps"]) == (1, "unlearned", 1000) else r for r in recs]
    t3 = sampler_comparison(attack_frame(broken), "DDIM-10", "DDPM-1000").set_index("steps")
    assert t3.loc[10, "units"] == 1 and t3.loc[10, "ER DDPM-1000"] == pytest.approx(0.6)
    assert t3.loc[10, "RA DDPM-1000"] == pytest.approx(0.9) and t3.loc[10, "ER diff"] == pytest.approx(0.4)
    # a second guidance weight in both studies: its own rows ("default w=3"), never merged with w = 2's
    w3 = [{**r, "guidance_w": 3.0, "key": r["key"] + "/w3"} for r in recs]
    t4 = sampler_comparison(attack_frame(recs + w3), "DDIM-10", "DDPM-1000")
    assert set(t4["setting"]) == {"default w=2", "default w=3"}
    assert (t4.set_index(["setting", "steps"]).loc[("default w=3", 10), "ER diff"] == pytest.approx(0.3))
    for r in recs:  # the report compares with the defender's DDIM-25
        if r["sampler"]["steps"] == 10:
            r["sampler"] = {"name": "ddim", "steps": 25, "eta": 0.0}
    assert "**digits, model small: DDPM-1000** (study s2) against **DDIM-25** (study s1)" in sampler_section(recs)
    assert "No relearning study" in sampler_section([r for r in recs if r["sampler"]["steps"] == 25])
    other = [{**r, "dataset": "mnist", "key": r["key"] + "/m"} for r in recs]  # another dataset: its own pairing
    both = sampler_section(recs + other)
    assert "**digits, model small: DDPM-1000**" in both and "**mnist, model small: DDPM-1000**" in both
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    once = build_report(path, tmp_path / "REPORT.md")
    assert "BEGIN GENERATED: samplers" in once[tmp_path / "REPORT.md"]
    assert build_report(path, tmp_path / "REPORT.md") == once
    assert "BEGIN GENERATED: study s2" in once[tmp_path / "report" / "s2.md"]  # a study not in PAGES: its own page


def test_sampler_probes_do_not_count_as_a_second_sampler():
    """A study's sampler probes run their own (w, eta) grid: their records must not tag the study's budget
    curves as 'mixed samplers' (which would rename every setting)."""
    from evaluation.summary import attack_frame

    recs = _hand() + [_rec("unlearned", 0, 0.2, method="safemax", attack="sampler", setting="w=4 eta=1",
                           sampler={"name": "ddim", "steps": 10, "eta": 1.0})]
    frame = attack_frame(recs)
    assert set(frame["setting"]) == {"full k=10", "w=4 eta=1"}
    assert set(frame["sampler"]) == {"DDIM-10", "DDIM-10 eta=1"}


def test_points_scored_differently_never_share_a_curve_or_a_reference():
    """Review defects: a DDPM curve without its own budget-0 original gets no RA_orig from the DDIM one; curves at
    two guidance weights stay apart; sampler probes at two step counts stay apart (the probe's setting names only
    w and eta), and probes still take their reference from the untouched model."""
    from evaluation.summary import attack_frame

    ddpm = {"name": "ddim", "steps": 1000, "eta": 1.0}
    recs = _hand() + [r for r in _hand(sampler=ddpm) if r["role"] != "original"]
    for i, r in enumerate(recs):
        r["key"] += f"/{r['sampler']['steps']}/{i}"
    c = curve_table(attack_frame(recs)).set_index(["scoring", "steps"])
    assert c.loc[("DDIM-10", 10), "ra_orig"] == pytest.approx(0.9)
    assert np.isnan(c.loc[("DDPM-1000", 10), "ra_orig"]) and np.isnan(c.loc[("DDPM-1000", 10), "nr"])
    assert c.loc[("DDPM-1000", 10), "er"] == pytest.approx(0.3 - 0.1)  # its own oracle's point

    two_w = _hand() + [{**r, "guidance_w": 4.0, "ra": r["ra"] / 2, "key": r["key"] + "/w4"} for r in _hand()]
    f = attack_frame(two_w)
    assert set(f["setting"]) == {"full k=10 @DDIM-10 w=2", "full k=10 @DDIM-10 w=4"}
    c = curve_table(f).set_index(["setting", "steps"])
    assert c.loc[("full k=10 @DDIM-10 w=4", 10), "ra_orig"] == pytest.approx(0.45)

    probes = [_rec(role, 0, ra, method=m, attack="sampler", setting="w=4 eta=1", sampler=smp,
                   key=f"p/{role}/{smp['steps']}")
              for smp in ({"name": "ddim", "steps": 10, "eta": 1.0}, {"name": "ddim", "steps": 1000, "eta": 1.0})
              for role, m, ra in [("original", None, 1.0), ("unlearned", "safemax", 0.5)]]
    f = attack_frame(_hand() + probes)
    # steps (and clip) only
    assert set(f.loc[f["attack"] == "sampler", "setting"]) == {"w=4 eta=1 @DDIM-10", "w=4 eta=1 @DDIM-1000"}
    assert set(f.loc[f["attack"] != "sampler", "setting"]) == {"full k=10"}
    c = curve_table(f)
    p = c[c["attack"] == "sampler"]
    # the untouched SAFEMax, any scoring
    assert len(p) == 2 and np.allclose(p["ra_u"], 0.1) and np.allclose(p["ra_orig"], 0.9)


def test_method_comparison_pairs_units_and_drops_guarded_points():
    """SAFEMax against SalUn on the same oracle, two classes: hand ERs at 10 steps 0.3-0.1 = 0.2 (both units) for
    SAFEMax and 0.5-0.1 = 0.4 / 0.6-0.1 = 0.5 for SalUn: diffs -0.2 and -0.3, mean -0.25 with a CI inside
    [-0.3, -0.2]. At 100 steps SalUn's class-1 point lost its retained classes: that unit drops out, and both
    means are over the one pair left (SAFEMax 0.7-0.4 = 0.3; over all units it would be 0.35). The same curves
    evaluated at a second N form their own rows: units are never counted twice."""
    from evaluation.summary import method_comparison

    recs = []
    for fc, safemax, salun in ((0, [0.1, 0.3, 0.7], [0.1, 0.5, 0.9]), (1, [0.1, 0.3, 0.8], [0.1, 0.6, 0.9])):
        recs += (_curve("original", [0.9, 0.92, 0.95], fc=fc) + _curve("unlearned", safemax, "safemax", fc=fc)
                 + _curve("oracle", [0.0, 0.1, 0.4], fc=fc) + _curve("unlearned", salun, "salun", fc=fc))
    for r in recs:
        r["guard"] = {"retained_ra": 0.95, "retained_n": 90}
        if r["method"] == "salun" and r["forget_class"] == 1 and r["budget"]["steps"] == 100:
            r["guard"]["retained_ra"] = 0.2
    big = [{**r, "n": 500, "key": r["key"] + "/n500", "guard": dict(r["guard"])} for r in recs]
    t = method_comparison(recs + big, "safemax", "salun")
    assert sorted(t["n"].unique()) == [100, 500] and len(t) == 6  # (n, steps) rows, one per budget and N
    t = t[t["n"] == 100].set_index("steps")
    col = "ER safemax - ER salun"
    assert t.loc[10, "units"] == 2
    assert t.loc[10, col] == pytest.approx(-0.25)
    assert -0.3 - 1e-9 <= t.loc[10, f"{col}_lo"] <= t.loc[10, col] <= t.loc[10, f"{col}_hi"] <= -0.2 + 1e-9
    assert t.loc[100, "units"] == 1 and t.loc[100, col] == pytest.approx(0.3 - 0.5)
    assert t.loc[100, "ER safemax"] == pytest.approx(0.3)  # the mean over the pairs that remain, not over all units
    assert t.loc[100, "ER salun"] == pytest.approx(0.5)
    assert method_comparison(recs, "safemax", "rl").empty


def test_per_job_table_scores_on_data_and_shows_the_k_way_ra():
    """A point whose hits are mostly noise: K-way RA 0.32 over N = 500, on-data 0.05. The table's RA and its
    excess are on-data, with the Wilson CI of 25/500 (0.034, 0.073); the K-way RA follows in parentheses."""
    from evaluation.tables import ra_table

    recs = _hand()
    for r in recs:
        r["n"] = 500
        r["guard"] = {"ra_ondata": r["ra"]}
    pt = next(r for r in recs if r["role"] == "unlearned" and r["budget"]["steps"] == 10)
    pt.update(ra=0.32)
    pt["guard"]["ra_ondata"] = 0.05
    t = ra_table(recs)
    assert t.loc[10, "unlearned:safemax"] == "0.050 [0.03, 0.07] (0.320)"
    assert t.loc[10, "excess_over_oracle"] == "-0.050"  # 0.05 - 0.1
    # on-data == K-way: the record's own CI, no parentheses
    assert t.loc[0, "unlearned:safemax"] == "0.100 [0.05, 0.15]"


def test_headlines_show_defaults_and_the_settings_run_on_every_unit():
    """REPORT.md's headline tables: the unlearning headline keeps each method's default run (a variant named
    "(lam=50)" stays in report/unlearning.md) at the most common w; the suite headline pairs SAFEMax with SalUn
    on the settings every unit ran (a setting run on class 0 alone is left to the study page), budgets > 0."""
    from evaluation.report import headline_suite, headline_unlearning
    from tests.test_evaluation import _rec as _class_rec

    cls = [_class_rec("safemax", 0, 0.1, 0.8, {"lam": 1}), _class_rec("safemax", 1, 0.3, 0.6, {"lam": 1}),
           _class_rec("safemax", 0, 0.5, 0.2, {"lam": 50}), _class_rec("salun", 0, 0.0, 0.0, fidv=3.0),
           {**_class_rec("salun", 0, 0.0, 0.0), "guidance_w": 2.0}]
    for r in cls:
        r.update(n_per_class=100, judge_id="j")
    text = headline_unlearning(cls)
    assert "**digits, w = 1.0, DDIM-25**" in text and "| safemax | 0.800 ± 0.141 |" in text
    assert "lam=50" not in text and text.count("| salun |") == 1
    recs = []
    for fc in (0, 1):
        recs += _hand(fc=fc) + _curve("unlearned", [0.1, 0.5, 0.9], "salun", fc=fc)
    recs += [r for r in _hand(fc=0, setting="lora") + _curve("unlearned", [0.1, 0.2, 0.3], "salun", fc=0,
                                                               setting="lora")]
    for r in recs:
        r.update(study="s1", guard={"retained_ra": 0.95, "retained_n": 90})
    suite = headline_suite(recs)
    assert "**s1** (DDIM-10; 2 units)" in suite and "lora" not in suite
    assert "| relearn | full k=10 | 100 | 10 | 2 | 0.2 | 0.4 | -0.200 [-0.200, -0.200] |" in suite
    assert "| 0 |" not in suite  # budget 0 is the untouched model, not an attack
    assert "No study" in headline_suite([r for r in recs if r["method"] != "salun"])

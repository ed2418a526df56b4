"""Every setting checked at start-up (unlearn/settings.py): each shipped config passes, every key has a rule, and
random bad values for every numeric setting of every entry point give one line and exit 2, never a traceback or
a record (the property test runs them through the real command line)."""

from __future__ import annotations

import math
import random
import re

import pytest

from attacks import deploy, embedding, finetune, noise_opt, relearn
from tests.conftest import compose_cfg, run_cli
from unlearn import salun
from unlearn.diffusion import VARIANCES
from unlearn.methods import METHODS, REFERENCES, RETRAINED
from unlearn.settings import SETTINGS, Bool, Choice, Items, Num, Text, problems

ATTACK_ENTRIES = {"relearn": ["relearn", "relearn_lora"], "finetune": ["finetune"],
                  "embedding": ["embedding", "embedding_datafree"], "sampler": ["sampler", "sampler_noise"],
                  "mia": ["mia"], "partial": ["partial"], "noise_opt": ["noise_opt"], "deploy": ["deploy"]}
ENTRIES = {**{e: f"attacks.{e}" for e in ATTACK_ENTRIES}, "unlearn": "unlearn.run", "pretrain": "unlearn.pretrain",
           "classes": "evaluation.classes", "worst_case": "evaluation.worst_case", "weights": "evaluation.weights"}
VARIANTS = [[], ["data=mnist", "data.root=/x"], ["data=cifar10", "data.root=/x", "model=cifar"], ["model=medium"],
            ["sampler=ddpm"], ["sampler=testbed_ddpm"], ["sampler=testbed_ddim"]]


def _configs():
    """Every entry config, with every attack config, every method, and every dataset, model and sampler option
    shipped (each option once: they are independent config groups)."""
    for entry in ENTRIES:
        for attack in ATTACK_ENTRIES.get(entry, [None]):
            yield entry, [f"attack={attack}"] if attack else []
    for method in [*METHODS, *REFERENCES, *RETRAINED]:
        yield "unlearn", [f"unlearned={method}"]
    for variant in VARIANTS:
        for entry in ("relearn", "classes", "pretrain"):
            yield entry, variant
    yield "worst_case", ["grid=smoke"]


def test_every_shipped_config_passes_and_every_key_it_holds_has_a_rule():
    seen, n = set(), 0
    for entry, overrides in _configs():
        cfg = compose_cfg(entry, overrides)
        assert problems(cfg) == [], (entry, overrides)  # a key without a rule is a problem (method args: below)
        seen |= {k for k in SETTINGS if _has(cfg, k)}
        n += 1
    assert n >= 40
    assert seen == set(SETTINGS), set(SETTINGS) - seen  # no rule for a key nothing reads


def _has(cfg, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if part not in node:
            return False
        node = node[part]
    return True


def test_every_hyperparameter_of_every_method_has_a_rule():
    import inspect

    for name, fn in METHODS.items():
        for p, v in inspect.signature(fn).parameters.items():
            if v.kind is inspect.Parameter.KEYWORD_ONLY and p != "generator":
                assert f"unlearned.args.{p}" in SETTINGS, (name, p)


def test_choices_are_the_codes_own():
    assert SETTINGS["attack.data"].choices == finetune.DATA
    assert SETTINGS["attack.init"].choices == embedding.INITS and SETTINGS["attack.mode"].choices == embedding.MODES
    assert SETTINGS["sampler.variance"].choices == VARIANCES
    assert SETTINGS["attack.guide"].choices == noise_opt.GUIDES and SETTINGS["attack.part"].choices == relearn.PARTS
    assert SETTINGS["attack.transforms"].each.choices == tuple(deploy.TRANSFORMS)
    assert SETTINGS["unlearned.args.anchor"].choices == salun.ANCHORS
    assert SETTINGS["unlearned.args.target"].choices == salun.TARGETS


BAD_NUMBERS = [math.nan, math.inf, -math.inf, -1, -0.5, 1e300, 10**30, "abc", "", True, [1], {"a": 1}]


def test_no_number_rule_accepts_a_non_finite_negative_huge_or_non_number_value():
    for key, rule in SETTINGS.items():
        rules = [rule.each] if isinstance(rule, Items) else [rule]
        for r in (r for r in rules if isinstance(r, Num)):
            for bad in BAD_NUMBERS:
                assert r.problem(bad) is not None, (key, bad)
                if isinstance(rule, Items):
                    assert rule.problem([bad]) is not None, (key, bad)


@pytest.mark.parametrize("rule, good, bad", [
    (Num(0, 1, lo_open=True), [1e-9, 1, 0.5], [0, 1.0000001]),
    (Num(1, 10, integer=True), [1, 10], [0, 11, 3.0, True]),
    (Num(0, 1, null=True), [None, 0], [-1e-9]),
    (Bool(), [True, False], ["no", "yes", 0, 1, None, "true"]),
    (Choice(("a", "b")), ["a"], ["c", None, ""]),
    (Text(pattern=r"cuda(:\d+)?"), ["cuda", "cuda:1"], ["cuda:x", "tpu", "", None]),
    (Items(Num(0, 10, integer=True), increasing=True), [[0], [0, 3, 7]], [[], [3, 3], [3, 1], 5, "0,1"]),
])
def test_rules(rule, good, bad):
    assert all(rule.problem(v) is None for v in good), [(v, rule.problem(v)) for v in good]
    assert all(rule.problem(v) is not None for v in bad), [v for v in bad if rule.problem(v) is None]


def test_the_message_names_the_key_the_value_and_the_valid_range():
    assert problems(compose_cfg("relearn", ["eval.n=nan"])) == [
        "eval.n=nan: not an integer; use an integer in [1, 1000000]"]
    assert problems(compose_cfg("relearn", ["overwrite=no"])) == [
        "overwrite='no': not true or false; use true or false"]
    assert problems(compose_cfg("relearn", ["+attack.kk=3"])) == [
        "attack.kk is not a setting of this command; remove it (a typo?)"]
    assert problems(compose_cfg("relearn", ["+unlearned.args.lamda=3"])) == []  # the method check names those
    assert set(problems(compose_cfg("relearn", ["data.guidance_w=-1"]))) == {  # also through the interpolation
        "sampler.guidance_w=-1: out of range; use a finite number in [0, 1e+06]",
        "data.guidance_w=-1: out of range; use a finite number in [0, 1e+06]"}


# ---------------------------------------------------------------- the property test, through the command line

_TEXTS = ["abc", "''", "true", "{a:1}"]
_NUMBERS = ["nan", "inf", "-inf", "-1", "-1e-3", "1e300", "1000000000000000000000"]


def _numeric_keys(entry: str) -> list[str]:
    cfg = compose_cfg(entry, [])
    return sorted(k for k, r in SETTINGS.items() if isinstance(r, Num | Items) and _has(cfg, k))


def _cases(n: int, seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    pool = [(e, k) for e in ENTRIES for k in _numeric_keys(e)]
    out = []
    for _ in range(n):
        entry, key = rng.choice(pool)
        value = rng.choice(_NUMBERS + _TEXTS)
        if isinstance(SETTINGS[key], Items) and value in _NUMBERS and rng.random() < 0.7:
            value = f"[0,{value}]"  # a bad element in a list
        elif not isinstance(SETTINGS[key], Items) and rng.random() < 0.1:
            value = "[1,2]"  # a list where one number belongs
        out.append((entry, key, value))
    return out


def _property(cases, tmp_path, monkeypatch, seed):
    for i, (entry, key, value) in enumerate(cases):
        root = tmp_path / str(i)
        root.mkdir()
        res = run_cli(ENTRIES[entry], [f"{key}={value}"], root, monkeypatch, env_root=root)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1, (seed, entry, key, value, res.returncode,
                                                                 res.stderr[-2000:])
        assert re.match(rf"error: ({re.escape(key)}=|Error merging override {re.escape(key)}=)", lines[0]), lines[0]
        assert not list(root.rglob("*")), (entry, key, value, list(root.rglob("*")))  # nothing written at all


def test_random_bad_values_never_give_a_traceback_or_a_record(tmp_path, monkeypatch):
    _property(_cases(12, seed=0), tmp_path, monkeypatch, 0)


@pytest.mark.slow
def test_random_bad_values_never_give_a_traceback_or_a_record_many(tmp_path, monkeypatch):
    seed = random.randrange(10**6)
    _property(_cases(60, seed), tmp_path, monkeypatch, seed)

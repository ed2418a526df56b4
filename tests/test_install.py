"""The project as a user installs it: a wheel (not editable) in a fresh venv, run from a folder that is not the
checkout, through a console script and through `python -m`."""

import json
import os
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import TINY, TINY_ATTACK, TINY_METHOD
from unlearn.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent


def test_every_console_script_names_a_runnable_module():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == set(COMMANDS) and set(scripts.values()) == {"unlearn.cli:main"}
    for module in COMMANDS.values():
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        assert 'if __name__ == "__main__":' in source, module


def test_an_unknown_script_name_is_one_line_and_nonzero(monkeypatch):
    from unlearn import cli

    monkeypatch.setattr(sys, "argv", ["/usr/bin/unlearn-nope"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert "unlearn-nope is not one of this package's commands" in str(e.value.code)


def _run(args, cwd, env):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
def test_wheel_install_runs_the_main_job_from_another_folder(tmp_path):
    # a wheel, built offline with this environment's setuptools (no build isolation: no network)
    dist = tmp_path / "dist"
    res = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                str(ROOT)], tmp_path, {**os.environ, "PIP_NO_INDEX": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = dist.glob("unlearning_robustness-*.whl")
    # a fresh venv; the heavy dependencies come from this environment's site-packages through a .pth line (whose
    # own .pth files, this checkout's editable hook among them, are not read), the project only from the wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    res = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                str(wheel)], tmp_path, os.environ.copy())
    assert res.returncode == 0, res.stderr[-2000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "UNLEARN_RESULTS", "UNLEARN_ARTIFACTS")}
    env["HF_HUB_OFFLINE"] = "1"
    where = _run([str(py), "-c", "import attacks, unlearn.configs, evaluation; print(attacks.__file__); "
                  "print(unlearn.configs.__file__)"], elsewhere, env)
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(Path(p).is_relative_to(purelib) for p in where.stdout.split()), where.stdout  # not the checkout

    args = ["unlearned=safemax", *TINY, *TINY_METHOD, *TINY_ATTACK]
    res = _run([str(venv / "bin" / "unlearn-attack-relearn"), *args], elsewhere, env)
    assert res.returncode == 0, res.stderr[-3000:]
    records = elsewhere / "results" / "records.jsonl"  # the defaults: artifacts/ and results/ in the working folder
    recs = [json.loads(line) for line in records.read_text().splitlines()]
    assert {(r["role"], r["budget"]["steps"]) for r in recs} == {(a, b) for a in ("unlearned", "original", "oracle")
                                                                for b in (0, 2)}
    assert all(r["code_version"].startswith("unlearning-robustness ") for r in recs)  # not this checkout's commit
    assert (elsewhere / "artifacts").is_dir() and "excess_over_oracle" in res.stdout
    # python -m, the design card's spelling, runs the same installed job: everything is already recorded
    before = records.read_text()
    res = _run([str(py), "-m", "attacks.relearn", *args], elsewhere, env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert records.read_text() == before and "already recorded" in res.stdout + res.stderr

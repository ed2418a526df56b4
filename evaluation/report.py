"""Rebuild REPORT.md and its pages under report/ from records only (no image is regenerated).

    python -m evaluation.report                       # data/records/*.jsonl.gz (committed) -> REPORT.md, report/
    python -m evaluation.report --check               # exit 1 if a rebuilt document differs from the committed one
    python -m evaluation.report --records results     # a records.jsonl, a results root, or a folder of .jsonl.gz
    python -m evaluation.report --results             # the runs' results root: $UNLEARN_RESULTS, else results/

The records the documents show are committed under data/records/ (python -m evaluation.records export
results/records.jsonl merges a run's records in), so a fresh clone rebuilds them. REPORT.md holds the headline
tables; each page under report/ (PAGES) holds one topic in full. In every document each generated section sits
between `<!-- BEGIN GENERATED: name -->` and `<!-- END GENERATED: name -->`; text outside the markers is
hand-written analysis and is kept. A missing section is appended. Running it twice gives the same files. Sample
grids are not records: the grids section lists the grid images committed under report/ (refreshed from
<results>/grids/ when a results root holds them).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from attacks.registry import traits
from evaluation import report_worst_case as wc
from evaluation.curves import plot_robustness
from evaluation.plots import plot_ra_curve
from evaluation.records import COMMITTED, add_source_arguments, read_source, sampler_name, source_of
from evaluation.summary import (
    attack_frame,
    b50_sample_grads,
    format_ci,
    ledger,
    method_comparison,
    mia_table,
    ra_budget_table,
    sampler_comparison,
    sampler_table,
    scalar_table,
)
from evaluation.tables import markdown as _md
from evaluation.tables import ra_table
from evaluation.unlearning_table import _variant_names, unlearning_table
from unlearn.errors import ArgParser, UserError
from unlearn.io import atomic_write, write_text
from unlearn.paths import CONFIGS

ROOT = Path(__file__).resolve().parent.parent
DEFENDER = "DDIM-25"  # the defender's sampler (configs/sampler/ddim.yaml): other samplers are compared with it


def _devices(recs: list[dict]) -> str:
    return ", ".join(sorted({r["device"] for r in recs}))


HEADLINE_COLUMNS = ["UA", "noise", "other class", "retained RA", "FID retained", "sample-grads", "classes"]


def headline_unlearning(records: list[dict]) -> str:
    """Each method's default run, mean +- std over its forgotten classes, at the (dataset, w, sampler) most
    class-accuracy records share; every variant and guidance weight is in report/unlearning.md."""

    recs = [r for r in records if r.get("kind") == "class_accuracy" and "fid_retained" in r]
    if not recs:
        return "_No class-accuracy records with FID yet._"
    (dataset, w, smp), _ = Counter((r["dataset"], r["guidance_w"], sampler_name(r)) for r in recs).most_common(1)[0]
    t = unlearning_table([r for r in recs if sampler_name(r) == smp], dataset, w)
    t = t.loc[["(" not in m for m in t.index], HEADLINE_COLUMNS]  # defaults only: variants carry "(arg=...)"
    return (f"**{dataset}, w = {w}, {smp}**, {recs[0]['n_per_class']} samples per class, judge {recs[0]['judge_id']}; "
            "UA = 1 - K-way RA of c_f (noise can count); noise: the share of c_f samples the judge calls off-data; "
            "other class: on-data, judged another class. Mean ± std over the forgotten classes.\n\n" + _md(t))


def _method_pairs(atk: list[dict], frame: pd.DataFrame):
    """(first, other, method_comparison) for SAFEMax (or the first method by name) against each other unlearned
    method of these attack records, where the comparison has rows."""

    methods = sorted({r["method"] for r in atk if r["role"] == "unlearned"}, key=lambda m: (m != "safemax", m))
    for other in methods[1:]:
        mc = method_comparison(frame, methods[0], other)
        if not mc.empty:
            yield methods[0], other, mc


def headline_suite(records: list[dict]) -> str:
    """SAFEMax against each other method, paired by (class, seed) unit, in every study that attacked both: the
    attack settings run on every unit of the study, at budgets above 0 (full tables in the study's page)."""

    out = []
    for study in sorted({r["study"] for r in records if r.get("study") and r.get("kind") == "attack"
                         and not wc.is_grid(r)}):  # an adversary grid's headline: headline_worst_case
        atk = [r for r in records
               if r.get("study") == study and r.get("kind") == "attack" and traits(r["attack"]).curve]
        if len({r["method"] for r in atk if r["role"] == "unlearned"}) < 2:
            continue
        frame = attack_frame(atk)
        units = len(frame[["forget_class", "seed"]].drop_duplicates())
        for first, other, mc in _method_pairs(atk, frame):
            full = mc[mc["steps"] == 0].groupby(["attack", "setting"])["units"].max()
            everywhere = set(full[full == units].index)
            mc = mc[(mc["steps"] > 0).to_numpy() & [(a, s) in everywhere for a, s in zip(mc["attack"], mc["setting"])]]
            out.append(f"**{study}** ({', '.join(sorted(set(frame['sampler'])))}; {units} units): ER = on-data RA "
                       "minus the oracle's; `units`: the pairs where neither point fails its guard; negative diff: "
                       f"{first} recovers less than {other}.\n\n" + _md(_fmt(mc).set_index("attack")))
    return "\n\n".join(out) or "_No study attacked SAFEMax and another method on the same units yet._"


def guidance_section(records: list[dict]) -> str:
    recs = [r for r in records if r.get("kind") == "class_accuracy" and r["method"] in ("original", "oracle")]
    # the original's records repeat once per forget class (same model, same samples): keep one per setting
    recs = list({(r["dataset"], r["model_key"], r["guidance_w"], sampler_name(r), r["n_per_class"]): r
                 for r in reversed(recs)}.values())[::-1]
    if not recs:
        return "_No class-accuracy records of the original model yet: run the command below._"
    df = pd.DataFrame([{"dataset": r["dataset"], "model": r["method"],
                        "forget class": r["forget_class"] if r["method"] == "oracle" else "-", "w": r["guidance_w"],
                        "sampler": sampler_name(r), "n/class": r["n_per_class"],
                        "mean RA": round(sum(r["per_class_ra"].values()) / len(r["per_class_ra"]), 3),
                        "min class RA": r["min_class_ra"],
                        "per class": " ".join(f"{v:.2f}" for v in r["per_class_ra"].values())} for r in recs])
    order = df["forget class"].map(lambda c: -1 if c == "-" else c)  # the original ("-") before the oracles
    df = df.assign(_fc=order).sort_values(["dataset", "model", "w", "_fc"], kind="stable").drop(columns="_fc")
    df = df.set_index("dataset")
    return ("Judge accuracy of each class's own samples (each oracle never saw its forget class: that class's "
            f"column is the forget-class floor). Device: {_devices(recs)}.\n\n"
            + _md(df) + "\n\nReproduce: `python -m evaluation.classes --multirun unlearned=original,oracle "
            "sampler.guidance_w=0,0.5,1,2`")


def unlearning_section(records: list[dict]) -> str:
    recs = [r for r in records if r.get("kind") == "class_accuracy"]
    if not recs:
        return "_No class-accuracy records yet._"
    def where(r):  # the original model's record that a row is compared with
        return (r["dataset"], r.get("model"), r["guidance_w"], sampler_name(r), r["forget_class"], r.get("seed"))


    orig = {where(r): r["retained_mean_ra"] for r in recs if r["method"] == "original"}
    names = _variant_names(recs)  # a run with non-default args is named by them: "salun (lr=0.001)"
    rows = []
    for r in recs:
        if r["method"] == "original":
            continue
        u = r.get("unlearn") or {}
        base = orig.get(where(r))
        fc = str(r["forget_class"])
        name = names[(r["method"], json.dumps(r.get("method_args", {}), sort_keys=True))]
        rows.append({"dataset": r["dataset"], "method": name, "forget class": r["forget_class"],
                     "w": r["guidance_w"], "steps": u.get("steps", "-"), "lr": _arg(r, "lr"), "beta": _arg(r, "beta"),
                     "forget RA": round(r["forget_ra"], 3), "UA": round(1 - r["forget_ra"], 3),
                     "forget H (nats)": r["per_class_entropy"][fc],
                     "retained mean RA": r["retained_mean_ra"],
                     "vs original (pp)": f"{100 * (r['retained_mean_ra'] - base):+.1f}" if base is not None else "-",
                     "unlearn wall s": u.get("wall_s", "-"), "sample-grads": u.get("sample_gradients", "-")})
    df = pd.DataFrame(rows).sort_values(["dataset", "w", "method", "forget class"], kind="stable").set_index("dataset")
    return (f"{len(rows)} checkpoints, {recs[0]['n_per_class']} samples per class, judge {recs[0]['judge_id']} "
            f"(test accuracy {recs[0]['judge_test_accuracy']}). Device: {_devices(recs)}.\n\n" + _md(df)
            + "\n\nReproduce: `python -m evaluation.classes --multirun unlearned=safemax,safemax_forget_only,oracle` "
            "(add `unlearned.args.lr=...` / `unlearned.args.steps=...` for the sweep rows).")


def _arg(r: dict, name: str):
    return r.get("method_args", {}).get(name, "-")


def attack_section(records: list[dict], fig_dir: Path) -> str:
    recs = [r for r in records if r.get("kind") == "attack" and r["attack"] == "relearn" and not r.get("study")]
    if not recs:
        return "_No relearn records outside a study yet: run `python -m attacks.relearn unlearned=safemax`._"
    out = []
    groups = {}
    for r in recs:
        if r["role"] == "unlearned":
            groups.setdefault(r["run_id"], []).append(r)
    newest = {}  # one curve per setting: the newest run (older runs of the same setting stay in the records)
    for run_id, unl in groups.items():
        u = unl[0]
        setting = json.dumps([u["attack"], u["dataset"], u["model"], u["method"], u["forget_class"], u["seed"], u["n"],
                              {k: v for k, v in u["attack_params"].items() if k != "budgets"}, u["sampler"],
                              u["guidance_w"]], sort_keys=True)
        if setting not in newest or max(r["time"] for r in unl) > max(r["time"] for r in groups[newest[setting]]):
            newest[setting] = run_id
    groups = {rid: groups[rid] for rid in newest.values()}
    for run_id, unl in sorted(groups.items(), key=lambda kv: (kv[1][0]["dataset"], kv[1][0]["method"],
                                                               kv[1][0]["forget_class"], kv[1][0]["seed"])):
        u = unl[0]
        refs = [r for r in recs if r["role"] != "unlearned" and r["data_fingerprint"] == u["data_fingerprint"]
                and r["model"] == u["model"]
                and r["forget_class"] == u["forget_class"] and r["seed"] == u["seed"]
                and r["attack_params"] == u["attack_params"] and r["n"] == u["n"] and r["sampler"] == u["sampler"]
                and r["guidance_w"] == u["guidance_w"] and r["judge_id"] == u["judge_id"]]
        group = unl + refs
        name = f"{u['attack']}_{u['dataset']}_{u['method']}_c{u['forget_class']}_s{u['seed']}_{run_id[:6]}"
        plot_ra_curve(group, fig_dir / f"{name}.png")
        p = u["attack_params"]
        out.append(
            f"#### {u['attack']}: {u['dataset']}, unlearned = {u['method']}, forget class {u['forget_class']}, "
            f"seed {u['seed']}\n\nAttack: k = {p.get('k')} attacker images, Adam lr {p.get('lr')}, batch "
            f"{p.get('batch_size')}. Evaluation: {sampler_name(u)}, "
            f"w = {u['guidance_w']}, N = {u['n']} per point, judge {u['judge_id']} (test accuracy "
            f"{u['judge_test_accuracy']}). On-data RA [95% Wilson CI] (K-way RA, in which noise counts, in "
            f"parentheses). Device: {_devices(group)}. Code {u['code_version']}.\n\n"
            + _md(ra_table(group))
            + f"\n\n![RA curve](report/{name}.png)\n\nReproduce: `python -m attacks.relearn unlearned={u['method']} "
            f"data={u['dataset']} data.forget_class={u['forget_class']} seed={u['seed']}`")
    return "\n\n".join(out)


def _fmt(t: pd.DataFrame, digits: int = 3) -> pd.DataFrame:

    t = format_ci(t, digits)
    return t.apply(lambda c: c.map(lambda v: f"{v:.{digits}g}" if isinstance(v, float) else v))


def _study_command(study: str) -> str:
    """The commands that run a study: the indented comment lines of configs/experiment/<study>.yaml."""
    path = CONFIGS / "experiment" / f"{study}.yaml"
    if not path.is_file():
        return ""
    lines = [ln[1:].strip() for ln in path.read_text().splitlines() if ln.startswith("#   ")]
    return "\n".join(lines)


def study_section(records: list[dict], study: str, fig_dir: Path) -> str:
    """A named study (attack records tagged `study`): robustness figure, scalar summaries with bootstrap CIs
    over (class, seed) units, RA per budget, SAFEMax against each other method paired by unit, sampler probes,
    membership inference, and the cost ledger."""
    recs = [r for r in records if r.get("study") == study]
    atk = [r for r in recs if r.get("kind") == "attack"]
    mia = [r for r in recs if r.get("kind") == "mia"]
    if not atk and not mia:
        return f"_No records of study {study} yet._"
    out = [*_attack_blocks(atk, study, fig_dir)] if atk else []
    if mia:
        out += _table_block("**Membership inference audit** (members: the forget class's training images; "
                            "non-members: its test images; AUC on all, TPR at FPR with thresholds fitted on a shadow "
                            "half, NaN where the shadow half holds fewer than 1/FPR non-members; the oracle is the "
                            "reference value)", mia_table(mia), "role")
    cmd = _study_command(study)
    if cmd:
        out.append(f"Reproduce:\n\n```\n{cmd}\npython -m evaluation.report\n```")
    return "\n\n".join(out)


def _study_intro(atk: list[dict]) -> str:
    scored = [r for r in atk if traits(r["attack"]).curve] or atk  # sampler probes pick their own sampler and w
    u = scored[0]
    units = sorted({(r["forget_class"], r["seed"]) for r in atk})
    return (f"Dataset {u['dataset']}, model {u['model']}; forget classes {sorted({c for c, _ in units})}, "
            f"seeds {sorted({s for _, s in units})} ({len(units)} units); methods "
            f"{', '.join(sorted({r['method'] for r in atk if r['role'] == 'unlearned'}))}; N = "
            f"{', '.join(map(str, sorted({r['n'] for r in atk})))} samples per point, "
            f"{', '.join(sorted({sampler_name(r) for r in scored}))}, "
            f"w = {', '.join(sorted({str(r['guidance_w']) for r in scored}))}; judge {u['judge_id']} "
            f"(test accuracy {u['judge_test_accuracy']}). "
            f"Means over units with 95% bootstrap CIs (units resampled). Device: {_devices(atk)}; torch "
            f"{', '.join(sorted({r['torch'] for r in atk}))}. "
            f"Code {', '.join(sorted({r['code_version'] for r in atk}))}.")


def _attack_blocks(atk: list[dict], study: str, fig_dir: Path) -> list[str]:
    """The study's attack part: intro, figure, summary, RA per budget, method pairs, sampler probes, ledger."""
    name = f"{study}_robustness.png"
    plot_robustness(atk, fig_dir / name, title=f"{study}: RA of the forgotten class vs attack budget")
    out = [_study_intro(atk), f"![robustness curves](report/{name})"]
    frame = attack_frame(atk)  # flattened once, shared by every table below
    sc = scalar_table(frame)
    if not sc.empty:
        sc["b50_sample_grads"] = b50_sample_grads(frame, sc)
    out += _table_block("**Summary per attack setting** (AURC: area under normalized recovery over log budget, 0..1; "
                        "AURC excess: minus the oracle's on the same scale; B@50: budget in optimizer steps where NR "
                        "first reaches 0.5, median over units, inf = never; NR / ER at the largest budget)",
                        sc.drop(columns=["b_max"], errors="ignore"), "method")
    out += _table_block("**RA per budget** (mean over units [95% CI]; ER = unlearned minus oracle, same attack and "
                        "budget; guards: lowest retained-class RA among the attacked models, and the unlearned "
                        "models' mean FID of c_f samples vs real c_f images on judge features)",
                        ra_budget_table(frame), "attack")
    for first, other, mc in _method_pairs(atk, frame):
        out += _table_block(f"**{first} against {other}, paired by unit** (mean ER of each over the units where "
                            f"both ERs are defined (no guard fails); the difference with a cluster bootstrap CI; "
                            f"negative: {first} recovers less than {other}, relative to the oracle, at that "
                            "budget)", mc, "attack")
    out += _table_block("**Sampler probes** (RA with label c_f under the attacker's sampler; on-data RA: the hits "
                        "the noise detector accepts as digits; hit_any_m: the probability that m samples (seeds) "
                        "hold at least one c_f, i.e. best-of-m, from the N evaluated)", sampler_table(frame), "role")
    return [*out, _ledger_block(atk, study, fig_dir)]


def _table_block(caption: str, table: pd.DataFrame, index: str) -> list[str]:
    """A captioned markdown table ([] when the table is empty)."""
    return [] if table.empty else [f"{caption}:\n\n" + _md(_fmt(table).set_index(index))]


def _ledger_block(atk: list[dict], study: str, fig_dir: Path) -> str:
    led = ledger(atk)
    fig_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(fig_dir / f"{study}_ledger.csv", "--report") as tmp:
        led.to_csv(tmp)
    fam = led.groupby("attack")[["attack_wall_s", "attack_device_s", "eval_wall_s", "eval_device_s",
                                 "points"]].sum().round(1)
    return (f"**Cost ledger** (seconds; attack cost and evaluation cost apart; one row per run in "
            f"[report/{study}_ledger.csv](report/{study}_ledger.csv) with device and torch version):\n\n" + _md(fam))


def sampler_section(records: list[dict]) -> str:
    """Relearning in named studies scored under other evaluation samplers than the defender's DDIM-25,
    paired unit by unit with the DDIM-25 study of the same dataset and model (REPORT finding 8)."""

    atk = [r for r in records if r.get("kind") == "attack" and r.get("study") and r["attack"] == "relearn"
           and not wc.is_grid(r)]  # an adversary grid's samplers: report/worst_case.md
    out = []
    for data in sorted({(r["dataset"], r["model"]) for r in atk}):
        sub = [r for r in atk if (r["dataset"], r["model"]) == data]
        labels = sorted({sampler_name(r) for r in sub}, key=lambda s: (s != DEFENDER, s))
        if DEFENDER not in labels or len(labels) < 2:
            continue
        frame = attack_frame(sub)
        studies = {s: ", ".join(sorted(set(frame.loc[frame["sampler"] == s, "study"]))) for s in labels}
        for other in labels[1:]:
            t = sampler_comparison(frame, DEFENDER, other)
            if not t.empty:
                out.append(f"**{data[0]}, model {data[1]}: {other}** (study {studies[other]}) against **{DEFENDER}** "
                           f"(study {studies[DEFENDER]}):\n\n" + _md(_fmt(t).set_index("attack")))
    if not out:
        return ("_No relearning study scored under a second sampler on the units of a DDIM-25 study yet: run "
                "configs/experiment/resample_suite.yaml._")
    return ("Relearning: the same models and attack, scored under two samplers; means over the (class, seed) units "
            "where both ERs are defined (`units`), 95% bootstrap CIs over units. ER: unlearned minus the oracle "
            "scored by the same sampler. "
            "ER diff: ER under the attacker's sampler minus ER under the defender's, paired by unit. On-data RA (noise "
            "never counts). Device: " + _devices(atk) + ".\n\n" + "\n\n".join(out))


def table_section(records: list[dict]) -> str:

    recs = [r for r in records if r.get("kind") == "class_accuracy" and "fid_retained" in r]
    if not recs:
        return "_No class-accuracy records with FID yet._"
    parts = []
    groups: dict[tuple, list[dict]] = {}
    for r in recs:
        groups.setdefault((r["dataset"], r["guidance_w"], sampler_name(r)), []).append(r)
    for (dataset, w, smp), sub in sorted(groups.items(), key=lambda kv: kv[0]):
        parts.append(f"**{dataset}, w = {w}**, {sub[0]['n_per_class']} samples per class, {smp}, "
                     f"judge {sub[0]['judge_id']}; FID on {sub[0]['fid_features']} features. Device: {_devices(sub)}. "
                     "Mean ± std over the forgotten classes listed in `classes`.\n\n"
                     + _md(unlearning_table(sub, dataset, w)))
    return "\n\n".join(parts) + ("\n\nReproduce: `python -m evaluation.classes --multirun "
                                 "unlearned=original,safemax,salun,sa,ga,rl,safemax_forget_only "
                                 "data.forget_class=0,1,2,3,4,5,6,7,8,9` "
                                 "then `python -m evaluation.unlearning_table --w 1.0`.")


GRID = re.compile(r"^[a-z0-9]+_[A-Za-z0-9_]+_c\d+_s\d+_w[0-9.]+\.png$")  # evaluation.grids' file names


def grids_section(results_root: Path | None, fig_dir: Path, committed: Path) -> str:
    """The grid images under `committed` (report/), refreshed first from <results_root>/grids when it holds any."""
    fresh = sorted((results_root / "grids").glob("*.png")) if results_root else []
    if fresh:
        fig_dir.mkdir(parents=True, exist_ok=True)
        for g in fresh:
            with atomic_write(fig_dir / g.name, "--report") as tmp:
                shutil.copyfile(g, tmp)
    names = sorted({g.name for g in fresh} | {g.name for g in committed.glob("*.png") if GRID.match(g.name)})
    if not names:
        return ("_No sample grids yet: run `python -m evaluation.grids --multirun "
                "unlearned=original,safemax,salun,sa,rl,ga`._")
    return ("One row per label; the forgotten class's row is marked. Reproduce: `python -m evaluation.grids "
            "--multirun unlearned=original,safemax,salun,sa,rl,ga`\n\n"
            + "\n".join(f"![{Path(n).stem}](report/{n})" for n in names))


def replace_section(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- BEGIN GENERATED: {name} -->", f"<!-- END GENERATED: {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip() + f"\n\n{block}\n"


# Where each generated section lives. REPORT.md: the headline of each research question; a page under report/:
# one topic in full. A study not named here gets a page of its own, report/<study>.md.
PAGES = {
    "REPORT.md": ["headline unlearning", "headline worst case", "headline suite", "samplers"],
    "report/worst_case.md": ["worst case units", "worst case argmax", "worst case stronger", "worst case validation",
                             "weights"],
    "report/unlearning.md": ["guidance", "unlearning", "table", "grids"],
    "report/relearn.md": ["relearn"],
    "report/attack_suite.md": ["study attack_suite"],
    "report/samplers.md": ["study resample_suite", "study resample_ddpm"],
}


def _layout(records: list[dict]) -> dict[str, list[str]]:
    pages = {doc: list(names) for doc, names in PAGES.items()}
    placed = {n for names in pages.values() for n in names}
    studies = {r["study"] for r in records if r.get("study") and not wc.is_grid(r)}  # grids: report/worst_case.md
    for study in sorted(studies - {n.removeprefix("study ") for n in placed}):
        pages[f"report/{study}.md"] = [f"study {study}"]
    return pages


def build_report(records_path: Path, report_path: Path, fig_dir: Path | None = None,
                 write: bool = True) -> dict[Path, str]:
    """Every document rebuilt from the records of `records_path` (a file or a folder of record files) onto its
    hand-written text: {path: text} for REPORT.md (`report_path`) and its pages under report/ beside it. Figures
    go to fig_dir (default: report/). write=False leaves every file untouched (--check)."""
    records = read_source(records_path)
    if not records:
        raise UserError(f"no records in {records_path}; run an attack first "
                        "(python -m attacks.relearn unlearned=safemax)")
    committed_figs = report_path.parent / "report"
    fig_dir = fig_dir or committed_figs
    results_root = records_path if records_path.is_dir() and (records_path / "records.jsonl").exists() else (
        records_path.parent if records_path.name == "records.jsonl" else None)
    builders = {"headline unlearning": lambda: headline_unlearning(records),
                "headline suite": lambda: headline_suite(records),
                "guidance": lambda: guidance_section(records), "unlearning": lambda: unlearning_section(records),
                "table": lambda: table_section(records),
                "grids": lambda: grids_section(results_root, fig_dir, committed_figs),
                "relearn": lambda: attack_section(records, fig_dir), "samplers": lambda: sampler_section(records),
                "headline worst case": lambda: wc.headline_section(records),
                "worst case units": lambda: wc.units_section(records),
                "worst case argmax": lambda: wc.argmax_section(records),
                "worst case stronger": lambda: wc.stronger_section(records),
                "worst case validation": lambda: wc.validation_section(records),
                "weights": lambda: wc.weights_section(records)}
    docs = {}
    for doc, names in _layout(records).items():
        path = report_path if doc == "REPORT.md" else report_path.parent / doc
        new = f"# {path.stem.replace('_', ' ')}\n\n[Back to REPORT.md](../REPORT.md)\n"  # a page's first build
        text = path.read_text() if path.exists() else new
        for name in names:
            body = builders[name]() if name in builders else study_section(records, name.removeprefix("study "),
                                                                            fig_dir)
            if doc != "REPORT.md":  # a page sits in report/ beside its figures
                body = body.replace("](report/", "](")
            text = replace_section(text, name, body)
        docs[path] = text
    if write:
        for path, text in docs.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, text, "--report")
    return docs


def check(records_path: Path, report_path: Path) -> int:
    """0 if REPORT.md and every page are what their records rebuild, else 1 (first differing line on stderr)."""
    import tempfile  # only --check needs a scratch folder

    with tempfile.TemporaryDirectory() as tmp:
        docs = build_report(records_path, report_path, fig_dir=Path(tmp), write=False)
    for path, rebuilt in docs.items():
        have = path.read_text() if path.exists() else ""
        if rebuilt != have:
            a, b = have.splitlines(), rebuilt.splitlines()
            line = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            print(f"error: {path} differs from what {records_path} rebuilds (first at line {line + 1}); run "
                  "python -m evaluation.report and commit it", file=sys.stderr)
            return 1
    print(f"{report_path} and its {len(docs) - 1} pages are up to date with {records_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(prog="python -m evaluation.report", description=__doc__.splitlines()[0])
    add_source_arguments(ap, "the committed data/records")
    ap.add_argument("--report", default=str(ROOT / "REPORT.md"))
    ap.add_argument("--check", action="store_true", help="rebuild in memory and exit 1 if REPORT.md differs")
    a = ap.parse_args(argv)
    try:
        records = source_of(a, COMMITTED)
        if a.check:
            return check(records, Path(a.report))
        build_report(records, Path(a.report))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"rebuilt {a.report} and its pages under report/ from {records}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

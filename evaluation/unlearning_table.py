"""The unlearning table, in the form of the paper's: one row per method (and hyperparameter variant),
mean +- std over forgotten classes, from class-accuracy records only.

    python -m evaluation.unlearning_table [--records PATH | --results] [--dataset digits] [--w 1.0]

Without --records it reads the results root the runs wrote: paths.results ($UNLEARN_RESULTS, else results/).

Columns: UA = 1 - RA(c_f); H = judge entropy on c_f samples (nats); p(c_f); the noise-aware split of c_f
samples (noise = rejected as off-data by evaluation/ood.py; other = in-distribution, judged another
class); retained RA; FID of retained-class samples vs real retained images (judge features unless
Inception weights were given); unlearning wall seconds; peak GPU memory (CUDA runs only; n/a on CPU);
sample-gradients (priors included); network evaluations without a gradient (SA's prior sampling, SalUn's and
RL's anchor targets).
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import pandas as pd

from evaluation.records import add_source_arguments, read_source, sampler_name, source_of
from unlearn.errors import ArgParser, UserError, finite

COLUMNS = {  # output column -> function of a record
    "UA": lambda r: 1 - r["forget_ra"],
    "H (nats)": lambda r: r["per_class_entropy"][str(r["forget_class"])],
    "p(c_f)": lambda r: r["per_class_mean_p"][str(r["forget_class"])],
    "noise": lambda r: r["forget_noise"],
    "other class": lambda r: r["forget_in_dist_other"],
    "retained RA": lambda r: r["retained_mean_ra"],
    "FID retained": lambda r: r["fid_retained"],
    "wall s": lambda r: (r.get("unlearn") or {}).get("wall_s", 0.0),
    "prior wall s": lambda r: (r.get("unlearn") or {}).get("prior_wall_s", 0.0),
    "sample-grads": lambda r: (r.get("unlearn") or {}).get("sample_gradients", 0),
    # forward passes without a gradient: SA's replay / Fisher sampling, SalUn's anchor targets
    "NFE no-grad": lambda r: ((r.get("unlearn") or {}).get("prior_nfe", 0)
                              + (r.get("unlearn") or {}).get("forward_nfe", 0)),
    "peak GiB": lambda r: (r.get("unlearn") or {}).get("peak_mem_gib") or float("nan"),  # CUDA only
}
ORDER = ["original", "oracle", "retrain", "safemax", "safemax_forget_only", "salun", "rl", "sa", "ga"]


def _variant_names(recs: list[dict]) -> dict[tuple, str]:
    """Name each (label, args) group; variants of a label show the args that differ from its main group."""
    groups = Counter((r["method"], json.dumps(r.get("method_args", {}), sort_keys=True)) for r in recs)
    main = {}
    for (label, args), _n in groups.most_common():
        main.setdefault(label, json.loads(args))
    names = {}
    for label, args in groups:
        a = json.loads(args)
        diff = {k: v for k, v in a.items() if main[label].get(k) != v}
        names[(label, args)] = label + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(diff.items())) + ")"
                                        if diff else "")
    return names


def unlearning_table(records: list[dict], dataset: str = "digits", w: float | None = None,
                     sampler: str | None = None) -> pd.DataFrame:
    recs = [r for r in records if r.get("kind") == "class_accuracy" and r["dataset"] == dataset
            and "fid_retained" in r and (w is None or r["guidance_w"] == w)
            and (sampler is None or sampler_name(r) == sampler)]
    if not recs:
        raise UserError(f"no class-accuracy records with FID for dataset={dataset}, w={w}; run "
                        "python -m evaluation.classes --multirun unlearned=<methods> data.forget_class=0,1,...")
    for field in ("guidance_w", "model", "n_per_class", "judge_id"):
        values = {str(r.get(field)) for r in recs}
        if len(values) > 1:
            raise UserError(f"class-accuracy records of {dataset} differ in {field} ({sorted(values)}); "
                            f"pick one (e.g. --w) so that rows are comparable")
    samplers = {sampler_name(r) for r in recs}
    if len(samplers) > 1:
        raise UserError(f"class-accuracy records of {dataset} were scored by several samplers ({sorted(samplers)}); "
                        "pick one with --sampler so that rows are comparable")
    names = _variant_names(recs)
    rows = []
    for r in recs:
        row = {"method": names[(r["method"], json.dumps(r.get("method_args", {}), sort_keys=True))],
               "label": r["method"], "forget class": r["forget_class"], "seed": r.get("seed", 0)}
        row.update({k: f(r) for k, f in COLUMNS.items()})
        rows.append(row)
    df = pd.DataFrame(rows).drop_duplicates(["method", "forget class", "seed"])  # means pool classes and seeds
    agg = df.groupby(["label", "method"])[list(COLUMNS)].agg(["mean", "std"])
    out = pd.DataFrame(index=agg.index)
    for col in COLUMNS:
        digits = 0 if col in ("sample-grads", "NFE no-grad") else (1 if col.endswith("s") and "wall" in col else 3)
        m, s = agg[(col, "mean")], agg[(col, "std")].fillna(0)
        out[col] = [f"{a:.{digits}f} ± {b:.{digits}f}" if a == a else "n/a (CPU)" for a, b in zip(m, s)]
    out["classes"] = df.groupby(["label", "method"])["forget class"].nunique()
    out = out.reset_index()
    out["_o"] = out["label"].map(lambda x: ORDER.index(x) if x in ORDER else len(ORDER))
    return out.sort_values(["_o", "method"]).drop(columns=["_o", "label"]).set_index("method")


def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(prog="python -m evaluation.unlearning_table", description=__doc__.splitlines()[0])
    add_source_arguments(ap, "the results root: paths.results")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--w", type=finite, default=None, help="guidance weight of the records to use (default: all)")
    ap.add_argument("--sampler", default=None,
                    help="evaluation sampler of the records to use, e.g. DDIM-25 (default: all)")
    a = ap.parse_args(argv)
    try:
        print(unlearning_table(read_source(source_of(a)), a.dataset, a.w, a.sampler).to_string())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

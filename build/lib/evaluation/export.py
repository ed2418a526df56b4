"""Records as tables for pandas, R or a spreadsheet: the flat records and the curve tables, as parquet or CSV.

    python -m evaluation.export tables/                      # the committed data/records (what evaluation.report reads)
    python -m evaluation.export tables/ --results            # the runs' results root: $UNLEARN_RESULTS, else results/
    python -m evaluation.export tables/ --records results/records.jsonl   # a records file, results root or folder
    python -m evaluation.export tables/ --format csv         # auto (default): parquet if pyarrow is installed, else csv

One file per table, <folder>/<table>.parquet or .csv (TABLES says which function builds each):
    attack          every attack point, one row per (model role, point): evaluation.summary.attack_frame
    curves          per point of an unlearned model: ra_orig, ra_u, nr, ra_oracle, er, guards
                    (evaluation.summary.curve_table, computed per (study, dataset, judge), which lead the row)
    class_accuracy, mia, weights   the other record kinds, nested fields flattened the same way (a_b for a.b)
A table whose records the source lacks is not written. A cell that holds a list or a mapping is JSON text.
Every table is built before the first is written, and each is written to a temporary name and renamed
(unlearn/io.py), so a failure leaves no half-written file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pandas as pd

from evaluation.records import COMMITTED, add_source_arguments, read_source, source_of
from evaluation.schema import KINDS
from evaluation.summary import attack_frame, curve_table
from unlearn.errors import ArgParser, UserError
from unlearn.io import atomic_write

FORMATS = ("auto", "parquet", "csv")
GROUP = ["study", "dataset", "judge_id"]  # curve_table reads one dataset and judge, and one study's curves
TABLES = {  # table -> the function that builds it (README: "Records as DataFrames")
    "attack": "evaluation.summary.attack_frame",
    "curves": "evaluation.summary.curve_table, per (study, dataset, judge_id)",
    **{k: "pandas.json_normalize(records of that kind, sep='_')" for k in KINDS if k != "attack"},
}


def curves(attack: list[dict]) -> tuple[pd.DataFrame, list[str]]:
    """curve_table of each (study, dataset, judge) group of attack records, stacked with those three columns first;
    and a line per group that has no curve (e.g. only references were attacked)."""
    groups: dict[tuple, list[dict]] = {}
    for r in attack:
        groups.setdefault(tuple(r.get(k) for k in GROUP), []).append(r)
    frames, skipped = [], []
    for key in sorted(groups, key=lambda k: tuple("" if v is None else str(v) for v in k)):
        try:
            t = curve_table(groups[key])
        except UserError as e:
            skipped.append(f"curves: no table for study={key[0]}, dataset={key[1]}, judge={key[2]}: {e}")
            continue
        frames.append(pd.concat([pd.DataFrame({k: [v] * len(t) for k, v in zip(GROUP, key)}), t], axis=1))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), skipped


def tables(records: list[dict]) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """{table name: DataFrame} for the records (see the module docstring), and the notes of curves()."""
    out, notes = {}, []
    attack = [r for r in records if r.get("kind") == "attack"]
    if attack:
        out["attack"] = attack_frame(attack)
        out["curves"], notes = curves(attack)
    for kind in KINDS:
        recs = [r for r in records if r.get("kind") == kind]
        if kind != "attack" and recs:
            out[kind] = pd.json_normalize(recs, sep="_")
    return {k: v for k, v in out.items() if not v.empty}, notes


def _cell(v):
    return v if v is None or isinstance(v, (str, bool, int, float)) else json.dumps(v, sort_keys=True, default=str)


def plain(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell a scalar: lists and mappings as JSON text; an object column of mixed types as text (parquet
    stores one type per column)."""
    df = df.copy()
    for col in df.select_dtypes(include="object").columns:
        values = df[col].map(_cell)
        kinds = {type(v) for v in values if v is not None and v == v}
        df[col] = values.map(lambda v: v if v is None or v != v or isinstance(v, str) else str(v)) \
            if len(kinds) > 1 else values
    return df


def pick_format(fmt: str) -> str:
    """auto: parquet where pyarrow is installed, else csv; parquet without pyarrow is one line naming the fix."""
    have = importlib.util.find_spec("pyarrow") is not None
    if fmt == "parquet" and not have:
        raise UserError("--format parquet needs pyarrow (pip install pyarrow); or use --format csv")
    return fmt if fmt != "auto" else ("parquet" if have else "csv")


def _out_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder to write the tables into")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the export folder {out} ({e.strerror or type(e).__name__}); "
                        "give a writable folder") from e
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"the export folder {out} is not writable; give a writable folder")


def write_tables(frames: dict[str, pd.DataFrame], out: str | Path, fmt: str = "auto") -> list[Path]:
    """Write each table to <out>/<name>.<fmt> (atomic: temporary name, then rename); returns the paths."""
    fmt, out = pick_format(fmt), Path(out)
    _out_folder(out)
    written = []
    for name, df in frames.items():
        path = out / f"{name}.{fmt}"
        with atomic_write(path, "the export folder") as tmp:
            if fmt == "parquet":
                plain(df).to_parquet(tmp, index=False)
            else:
                plain(df).to_csv(tmp, index=False)
        written.append(path)
    return written


def export_tables(source: str | Path, out: str | Path, fmt: str = "auto") -> tuple[list[Path], list[str]]:
    """The tables of the records at `source` written under `out`: (paths written, notes)."""
    records = read_source(source)
    frames, notes = tables(records)
    if not frames:
        raise UserError(f"no records in {source}; run an attack first (python -m attacks.relearn unlearned=safemax)")
    pick_format(fmt)  # a missing pyarrow fails before anything is written
    return write_tables(frames, out, fmt), notes


def main(argv: list[str] | None = None) -> int:
    ap = ArgParser(prog="python -m evaluation.export", description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="the folder to write the tables into (created if missing)")
    add_source_arguments(ap, "the committed data/records, what evaluation.report reads")
    ap.add_argument("--format", choices=FORMATS, default="auto",
                    help="parquet, csv, or auto (default): parquet where pyarrow is installed, else csv")
    a = ap.parse_args(argv)
    try:
        source = source_of(a, COMMITTED)
        written, notes = export_tables(source, a.folder, a.format)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in notes:
        print(line)
    for path in written:
        print(path)
    print(f"{len(written)} tables from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

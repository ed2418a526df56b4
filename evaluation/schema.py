"""The record kinds, typed once: every writer builds its record through one of these classes.

A record is one JSON line (evaluation/records.py appends it). Four kinds:
- AttackPoint ("attack"): one (model role, attack setting, budget) point scored by the judge;
- AuditPoint ("mia"): one membership-inference score of one model role (no budget, no sampling);
- ClassPoint ("class_accuracy"): the per-class accuracy of one checkpoint's own samples;
- WeightPoint ("weights", schema 3): one unlearned checkpoint's weight distances and interpolation path.

Schema versions: 1 = the records written before this module (no "schema" field; the same fields otherwise);
2 = the same fields plus "schema": 2; 3 = AttackPoint.adversary (None before: a point of no adversary grid);
4 = ClassPoint.kid_retained and the attack guard's kid_cf / kid_subset (KID beside FID; absent before).
Readers (evaluation.records.read_records) accept 1..SCHEMA and refuse a newer one; tables read fields by name, so
every version builds the same tables. `parse` gives the typed record of any. A new field gets a default here
and a bump of SCHEMA; `upgrade` fills it in older records.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import ClassVar

import torch

from unlearn.errors import UserError
from unlearn.model import code_version

SCHEMA = 4


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, kw_only=True)
class Record:
    """What every record carries: its key, the model it is about, and who wrote it when (the writer fields)."""

    kind: ClassVar[str]
    key: str
    dataset: str
    model: str                 # the architecture's name (e.g. unet-small)
    model_key: str             # the checkpoint's artifact key
    method: str                # the unlearning method, or the reference's role ("original", "oracle")
    forget_class: int
    seed: int
    device: str
    model_code_version: str | None = None  # the code that made the checkpoint (absent in v1 audit records)
    time: str = field(default_factory=_now)
    code_version: str = field(default_factory=code_version)
    torch: str = torch.__version__

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "kind": self.kind, **asdict(self)}


@dataclass(frozen=True, kw_only=True)
class AttackPoint(Record):
    """One scored point of an attack curve. `budget` holds the attack's cost (steps, sample_gradients, nfe,
    wall_s, device_s, prior_* when the attack did work before its first step, unlearning_equivalents), `eval`
    the evaluation's (nfe, wall_s, device_s); ra .. entropy are the judge's scores of the n c_f samples."""

    kind: ClassVar[str] = "attack"
    run_id: str
    study: str | None
    data_fingerprint: str
    role: str                  # unlearned | original | oracle
    attack: str                # the family (relearn, finetune, embedding, sampler)
    setting: str               # the variant within the family, e.g. "lora r=4 k=10"
    attack_params: dict
    budget: dict
    judge_id: str
    judge_test_accuracy: float
    sampler: dict              # {"name": "ddim", "steps", "eta"} (+ "clip": false, "variance": "beta")
    guidance_w: float
    n: int
    eval: dict
    ra: float
    ra_ci_low: float
    ra_ci_high: float
    mean_p: float
    entropy: float
    hit_any: dict              # best-of-m: {"1": .., "10": .., "100": ..}
    guard: dict                # ra_ondata, fid_cf, retained_ra, ... ({} without guards)
    fast: dict
    adversary: str | None = None  # its name in an adversary grid (evaluation/worst_case.py), else None


@dataclass(frozen=True, kw_only=True)
class AuditPoint(Record):
    """One membership-inference score of one model (evaluation/harness.py run_audit; attacks/mia.py)."""

    kind: ClassVar[str] = "mia"
    run_id: str
    study: str | None
    data_fingerprint: str
    role: str
    attack: str
    attack_params: dict
    score: str
    queries_per_sample: int
    metrics: dict              # auc, tpr_at_<f>pct_fpr, fpr_realised_<f>pct, n_members, ...: flat in JSON
    audit_wall_s: float
    audit_device_s: float

    def to_dict(self) -> dict:
        out = super().to_dict()
        metrics = out.pop("metrics")
        return {**out, **metrics}


@dataclass(frozen=True, kw_only=True)
class ClassPoint(Record):
    """The per-class accuracy of one checkpoint's own samples (evaluation/classes.py)."""

    kind: ClassVar[str] = "class_accuracy"
    method_args: dict
    unlearn: dict | None       # the unlearning run's statistics (None for references)
    judge_id: str
    judge_test_accuracy: float
    sampler: dict
    guidance_w: float
    n_per_class: int
    per_class_ra: dict
    per_class_entropy: dict
    per_class_mean_p: dict
    per_class_noise: dict
    forget_ra: float
    retained_mean_ra: float
    min_class_ra: float
    forget_noise: float
    forget_in_dist_as_c: float
    forget_in_dist_other: float
    fid_retained: float
    fid_features: str
    eval: dict
    kid_retained: float | None = None  # KID of the retained samples (schema 4; None before)


@dataclass(frozen=True, kw_only=True)
class WeightPoint(Record):
    """Weight-space diagnostics of one unlearned checkpoint (evaluation/weights.py): L2 distances to the original
    and the oracle (total and per block), and c_f's on-data RA along the line to the original's weights."""

    kind: ClassVar[str] = "weights"
    judge_id: str
    sampler: dict
    guidance_w: float
    n: int
    original_key: str
    oracle_key: str
    dist_original: float
    dist_oracle: float
    dist_original_blocks: dict
    dist_oracle_blocks: dict
    alphas: list               # interpolation weights of the original: 0 (the unlearned model) .. 1 (the original)
    path_ra: list              # on-data RA of c_f at each alpha
    path_ra_raw: list          # the K-way judge's RA at each alpha
    eval: dict


KINDS: dict[str, type[Record]] = {c.kind: c for c in (AttackPoint, AuditPoint, ClassPoint, WeightPoint)}


def upgrade(record: dict) -> dict:
    """A record of any schema version read as the current one. Version 1 lacks only the "schema" field; a record
    of an unknown kind or a future version is refused (a newer toolkit wrote it)."""
    version = record.get("schema", 1)
    if not isinstance(version, int) or not 1 <= version <= SCHEMA:
        raise UserError(f"record {record.get('key')!r} has schema {version!r}; this toolkit reads 1..{SCHEMA} "
                        "(update the toolkit)")
    if record.get("kind") not in KINDS:
        raise UserError(f"record {record.get('key')!r} has kind {record.get('kind')!r}; known: {', '.join(KINDS)}")
    return record if version == SCHEMA else {**record, "schema": SCHEMA}


def parse(record: dict) -> Record:
    """The typed record of a JSON record of any version (for code that wants attributes, and for tests)."""
    record = upgrade(record)
    cls = KINDS[record["kind"]]
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - set(record) - ({"metrics"} if cls is AuditPoint else set()))
    if missing:
        raise UserError(f"record {record.get('key')!r} ({record['kind']}) lacks {', '.join(missing)}")
    if cls is AuditPoint:
        flat = names | {"schema", "kind"}
        record = {**record, "metrics": {k: v for k, v in record.items() if k not in flat}}
    return cls(**{k: v for k, v in record.items() if k in names})

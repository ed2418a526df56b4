"""Record kinds typed once (evaluation/schema.py): every committed record (schema 1) parses into its kind, a
parsed record writes back the same JSON, and both schema versions build the same tables."""

import dataclasses
import json

import pytest

from evaluation.records import COMMITTED, read_records
from evaluation.schema import KINDS, SCHEMA, AttackPoint, AuditPoint, ClassPoint, parse, upgrade
from evaluation.summary import attack_frame
from unlearn.errors import UserError

RECORDS = read_records(COMMITTED / "digits.jsonl.gz")


def test_every_committed_record_parses_and_writes_back_the_same_json():
    kinds = {}
    for r in RECORDS:
        p = parse(r)
        kinds[r["kind"]] = type(p)
        # v1 audit records lack model_code_version (None in v2); attack records before v3 lack adversary (None);
        # class records before v4 lack kid_retained (None)
        want = {"model_code_version": None, **({"adversary": None} if r["kind"] == "attack" else {}),
                **({"kid_retained": None} if r["kind"] == "class_accuracy" else {}), **r, "schema": SCHEMA}
        assert json.dumps(p.to_dict(), sort_keys=True) == json.dumps(want, sort_keys=True), r["key"]  # NaN == NaN
    assert kinds == {"attack": AttackPoint, "mia": AuditPoint, "class_accuracy": ClassPoint}


def test_records_are_frozen_and_carry_kind_and_schema():
    p = parse(next(r for r in RECORDS if r["kind"] == "attack"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.ra = 1.0
    d = p.to_dict()
    assert d["schema"] == SCHEMA == 4 and d["kind"] == "attack" and set(KINDS) == {"attack", "mia", "class_accuracy",
                                                                                   "weights"}


def test_both_schema_versions_build_the_same_tables():
    v1 = [r for r in RECORDS if r["kind"] == "attack"]
    assert all("schema" not in r for r in v1)  # the committed records predate the schema field
    v2 = [parse(r).to_dict() for r in v1]
    old, new = attack_frame(v1), attack_frame(v2)
    assert new.drop(columns="schema")[list(old.columns)].equals(old)


def test_a_missing_field_an_unknown_kind_or_a_future_schema_is_refused():
    r = next(r for r in RECORDS if r["kind"] == "attack")
    with pytest.raises(UserError, match="lacks ra"):
        parse({k: v for k, v in r.items() if k != "ra"})
    with pytest.raises(UserError, match="kind 'nope'"):
        upgrade({**r, "kind": "nope"})
    with pytest.raises(UserError, match="update the toolkit"):
        upgrade({**r, "schema": SCHEMA + 1})

"""Rules as runtime config without a broker: what a rules-topic record does to the rules in
force, and the CLI's validation before it publishes anything."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from marketpulse.cli import main
from marketpulse.codec import codec
from marketpulse.rulebook import RuleBook
from marketpulse.rules import load_rules

ENC = codec().encode


def book() -> RuleBook:
    return RuleBook(load_rules())


def record(version: int, **params: object) -> bytes:
    rec = load_rules()["whale"].to_record()
    rec["version"] = version
    rec["params_json"] = json.dumps({**json.loads(rec["params_json"]), **params})
    return ENC("rule", rec)


def test_a_new_version_replaces_the_old() -> None:
    b = book()
    v = b.offer(b"whale", record(2, min_notional=500.0))
    assert v.accepted and b.rules["whale"].version == 2
    assert b.rules["whale"].params["min_notional"] == 500.0


def test_invalid_definition_names_the_field_and_keeps_the_valid_version() -> None:
    b = book()
    v = b.offer(b"whale", record(2, min_notional=-1))
    assert not v.accepted and "params.min_notional" in v.message
    assert b.rules["whale"].version == 1
    v = b.offer(b"whale", record(3, typo_field=1))
    assert not v.accepted and "params.typo_field" in v.message


def test_stale_or_conflicting_versions_are_rejected() -> None:
    b = book()
    b.offer(b"whale", record(3, min_notional=500.0))
    assert not b.offer(b"whale", record(2)).accepted  # older
    same = b.offer(b"whale", record(3, min_notional=600.0))
    assert not same.accepted and "bump the version" in same.message
    assert b.offer(b"whale", record(3, min_notional=500.0)).accepted  # a redelivery
    assert b.rules["whale"].params["min_notional"] == 500.0


def test_garbage_tombstones_and_wrong_keys_change_nothing() -> None:
    b = book()
    before = dict(b.rules)
    assert not b.offer(b"whale", b"not avro").accepted
    assert not b.offer(b"whale", None).accepted
    assert "is not the record's rule_id" in b.offer(b"spike", record(2)).message
    assert b.rules == before


def test_new_rule_ids_are_added() -> None:
    b = book()
    rec = load_rules()["spike"].to_record() | {"rule_id": "spike_fast", "version": 1}
    assert b.offer(b"spike_fast", ENC("rule", rec)).accepted
    assert "spike_fast" in b.rules


def test_publish_refuses_an_invalid_file_naming_rule_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - {rule_id: s, version: 1, type: spike, params: {min_move: 2}}\n")
    res = CliRunner().invoke(main, ["rules", "publish", "--file", str(bad)])
    assert res.exit_code != 0
    assert "rule 's'" in res.output and "params.min_move" in res.output


def test_publish_dry_run_lists_the_definitions() -> None:
    res = CliRunner().invoke(main, ["rules", "publish", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "complete_set v1 (complete_set, on)" in res.output
    assert "spike v2 (spike, on)" in res.output

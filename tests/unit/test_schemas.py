"""Every schema round-trips through the wire codec; no schema change may break old readers or
old data."""

from __future__ import annotations

import copy
import struct

import pytest
from fastavro.utils import generate_many

from marketpulse import compat
from marketpulse.catalog import CATALOG
from marketpulse.codec import Codec
from marketpulse.errors import BadMessage

SCHEMAS = sorted(CATALOG.schemas)


@pytest.mark.parametrize("name", SCHEMAS)
def test_round_trip_in_confluent_wire_format(name: str) -> None:
    codec = Codec()
    spec = CATALOG.schemas[name]
    for record in generate_many(spec.definition, 20):
        data = codec.encode(name, record)
        magic, schema_id = struct.unpack(">bI", data[:5])
        assert (magic, schema_id) == (0, spec.id)
        assert codec.decode(name, data) == record


def test_every_topic_names_a_schema_and_ids_are_unique() -> None:
    ids = [s.id for s in CATALOG.schemas.values()]
    assert len(ids) == len(set(ids))
    assert {t.schema for t in CATALOG.topics.values()} <= set(CATALOG.schemas)


def test_current_schemas_are_compatible_with_every_released_version() -> None:
    assert compat.check_catalog() == {}


def _tick() -> dict:
    return copy.deepcopy(CATALOG.schemas["tick"].definition)


def test_adding_a_field_without_default_breaks_backward_compatibility() -> None:
    new = _tick()
    new["fields"].append({"name": "venue_seq", "type": "long"})
    problems = compat.check(_tick(), new)
    assert any(p.startswith("backward") for p in problems)


def test_removing_a_field_without_default_breaks_old_readers() -> None:
    new = _tick()
    new["fields"] = [f for f in new["fields"] if f["name"] != "token_id"]
    problems = compat.check(_tick(), new)
    assert any(p.startswith("forward") for p in problems)


def test_changing_a_type_incompatibly_is_caught() -> None:
    new = _tick()
    for f in new["fields"]:
        if f["name"] == "seq":
            f["type"] = "string"
    assert compat.check(_tick(), new)


def test_adding_an_optional_field_is_compatible() -> None:
    new = _tick()
    new["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    assert compat.check(_tick(), new) == []


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "empty"),
        (b"{json}", "bad_magic"),
        (b"\x00\x00\x00\x00\x07abc", "unknown_schema"),
        (b"\x00" + struct.pack(">I", CATALOG.schemas["tick"].id) + b"\xff", "corrupt_avro"),
    ],
)
def test_bad_values_are_rejected_with_a_reason(data: bytes, kind: str) -> None:
    with pytest.raises(BadMessage) as err:
        Codec().decode("tick", data)
    assert err.value.kind == kind


def test_old_writer_data_is_read_by_the_current_reader() -> None:
    """A value written with an older schema id decodes through schema resolution."""
    codec = Codec()
    old = _tick()
    old["fields"] = [f for f in old["fields"] if f["name"] != "last_price"]
    codec.register_writer(9999, old, "tick")
    import io

    import fastavro

    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, 9999))
    rec = next(iter(generate_many(old, 1)))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), rec)
    decoded = codec.decode("tick", buf.getvalue())
    assert decoded["last_price"] is None
    assert decoded["token_id"] == rec["token_id"]

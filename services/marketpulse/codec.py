"""Avro values in the Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then
the Avro binary body. Consumers written elsewhere can decode them with standard deserializers."""

from __future__ import annotations

import io
import struct
from typing import Any

import fastavro

from marketpulse.catalog import CATALOG, Catalog
from marketpulse.errors import BadMessage

MAGIC = 0
_HEADER = struct.Struct(">bI")


class Codec:
    """Encoder/decoder for the catalog's schemas. Writer schemas are looked up by the id in the
    message header, so data written by an older schema version is resolved to the current one."""

    def __init__(self, catalog: Catalog = CATALOG) -> None:
        self._parsed: dict[str, Any] = {}
        self._ids: dict[str, int] = {}
        self._by_id: dict[int, Any] = {}
        self._name_by_id: dict[int, str] = {}
        for name, spec in catalog.schemas.items():
            parsed = fastavro.parse_schema(spec.definition)
            self._parsed[name] = parsed
            self._ids[name] = spec.id
            self._by_id[spec.id] = parsed
            self._name_by_id[spec.id] = name
        self._topic_schema = {tid: t.schema for tid, t in catalog.topics.items()}

    def register_writer(self, schema_id: int, definition: dict[str, Any], name: str) -> None:
        """Make an extra (older or foreign) writer schema decodable, e.g. from a registry."""
        self._by_id[schema_id] = fastavro.parse_schema(definition)
        self._name_by_id[schema_id] = name

    def schema_for_topic(self, topic_id: str) -> str:
        return self._topic_schema[topic_id]

    def encode(self, schema: str, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(_HEADER.pack(MAGIC, self._ids[schema]))
        fastavro.schemaless_writer(buf, self._parsed[schema], record)
        return buf.getvalue()

    def decode(self, schema: str, data: bytes | None) -> dict[str, Any]:
        """Decode a value expected to hold `schema`; raises BadMessage with a clear reason."""
        if not data:
            raise BadMessage("empty", "message has no value")
        if len(data) < 5 or data[0] != MAGIC:
            raise BadMessage("bad_magic", "value is not in the Confluent Avro wire format")
        _, schema_id = _HEADER.unpack_from(data)
        writer = self._by_id.get(schema_id)
        if writer is None:
            raise BadMessage("unknown_schema", f"schema id {schema_id} is not known")
        if self._name_by_id[schema_id] != schema:
            raise BadMessage(
                "wrong_schema",
                f"expected {schema}, got {self._name_by_id[schema_id]} (id {schema_id})",
            )
        try:
            # Resolution against the reader schema is only needed for data from another version.
            reader = None if schema_id == self._ids[schema] else self._parsed[schema]
            record = fastavro.schemaless_reader(io.BytesIO(data[5:]), writer, reader)
        except Exception as exc:  # fastavro raises several types for corrupt input
            raise BadMessage("corrupt_avro", f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(record, dict):
            raise BadMessage("corrupt_avro", f"decoded a {type(record).__name__}, not a record")
        return record


_default: Codec | None = None


def codec() -> Codec:
    global _default
    if _default is None:
        _default = Codec()
    return _default

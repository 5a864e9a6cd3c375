"""Avro object container files built from Kafka messages without decoding them, so ClickHouse
(`FORMAT Avro`) decodes a whole batch in C++ instead of Python decoding it message by message.

An Avro record's binary encoding is its fields' encodings one after another, and a container
block is records one after another. So a message's body (its Confluent value after the 5-byte
header) followed by two zigzag longs is the encoding of the same record with two more fields,
`_partition` and `_offset`, and the batch's bodies joined are one block of that schema."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

from marketpulse.catalog import CATALOG

HEADER_BYTES = 5  # Confluent wire format: magic byte 0, 4-byte big-endian schema id
_MAGIC = b"Obj\x01"
# Any 16 bytes will do: the marker only has to repeat after every block of this one file.
_SYNC = b"marketpulse-sink"
SOURCE_FIELDS = ({"name": "_partition", "type": "long"}, {"name": "_offset", "type": "long"})


def zigzag(n: int) -> bytes:
    """An Avro `long`: zigzag, then little-endian base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(b: bytes) -> bytes:
    return zigzag(len(b)) + b


class Container:
    """Builds container files for one catalog schema (its current version) plus the message's
    partition and offset. Only messages written with that version's id qualify (`accepts`):
    anything else (another version, not Avro at all) is for the Python path to judge."""

    def __init__(self, schema: str) -> None:
        spec = CATALOG.schemas[schema]
        self.prefix = struct.pack(">bI", 0, spec.id)
        definition: dict[str, Any] = dict(spec.definition)
        definition["fields"] = [*definition["fields"], *SOURCE_FIELDS]
        meta = {
            b"avro.schema": json.dumps(definition, separators=(",", ":")).encode(),
            b"avro.codec": b"null",
        }
        entries = b"".join(_string(k) + _string(v) for k, v in meta.items())
        self._header = _MAGIC + zigzag(len(meta)) + entries + zigzag(0) + _SYNC

    def accepts(self, value: bytes | None) -> bool:
        return value is not None and value[:HEADER_BYTES] == self.prefix

    def build(self, messages: Sequence[tuple[int, int, bytes]]) -> bytes:
        """One container holding one block: the value of each (partition, offset, value) of
        `messages` (each `accepts`ed), with its partition and offset appended."""
        parts: dict[int, bytes] = {}
        body = b"".join(
            [
                v[HEADER_BYTES:] + (parts.get(p) or parts.setdefault(p, zigzag(p))) + zigzag(o)
                for p, o, v in messages
            ]
        )
        return b"".join((self._header, zigzag(len(messages)), zigzag(len(body)), body, _SYNC))

"""Avro object container files built from Kafka messages without decoding them, so ClickHouse
(`FORMAT Avro`) decodes a whole batch in C++ instead of Python decoding it message by message.

An Avro record's binary encoding is its fields' encodings one after another, and a container
block is records one after another. So a message's body (its Confluent value after the 5-byte
header) followed by two zigzag longs is the encoding of the same record with two more fields,
`_partition` and `_offset`, and the batch's bodies joined are one block of that schema."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from marketpulse.catalog import CATALOG

HEADER_BYTES = 5  # Confluent wire format: magic byte 0, 4-byte big-endian schema id
_MAGIC = b"Obj\x01"
# Any 16 bytes will do: the marker only has to repeat after every block of this one file.
_SYNC = b"marketpulse-sink"
SOURCE_FIELDS = ({"name": "_partition", "type": "long"}, {"name": "_offset", "type": "long"})


class Message(Protocol):
    """What a container needs of a Kafka message (aiokafka's ConsumerRecord has it)."""

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...


def zigzag(n: int) -> bytes:
    """An Avro `long`: zigzag, then little-endian base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _offset_long(n: int) -> bytes:
    """`zigzag(n)` unrolled for the offsets below 2**27 that most topics hold: it runs once
    per message, and the loop costs twice as much."""
    v = n << 1
    if 0 <= v < 0x80:
        return bytes((v,))
    if 0 <= v < 0x4000:
        return bytes((v & 0x7F | 0x80, v >> 7))
    if 0 <= v < 0x200000:
        return bytes((v & 0x7F | 0x80, v >> 7 & 0x7F | 0x80, v >> 14))
    if 0 <= v < 0x10000000:
        return bytes((v & 0x7F | 0x80, v >> 7 & 0x7F | 0x80, v >> 14 & 0x7F | 0x80, v >> 21))
    return zigzag(n)


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

    def accepted_run(self, messages: Sequence[Message], start: int) -> int:
        """The end of the run of `messages` from `start` that this container `accepts`."""
        prefix, i, n = self.prefix, start, len(messages)
        while i < n:
            value = messages[i].value
            if value is None or not value.startswith(prefix):
                break
            i += 1
        return i

    def build(self, partitions: Iterable[tuple[int, Sequence[Message]]]) -> bytes:
        """One container holding one block: for each (partition, messages) of `partitions`,
        the value of each message (each `accepts`ed) with its partition and offset appended.
        Only bytes are allocated per message: the cyclic GC does not track them, and each of
        its passes holds up every thread (it runs often enough as it is, over the messages a
        sink holds)."""
        pieces: list[bytes] = []
        add = pieces.append
        for partition, messages in partitions:
            p = zigzag(partition)
            for m in messages:
                assert m.value is not None  # accepted
                add(m.value[HEADER_BYTES:])
                add(p)
                add(_offset_long(m.offset))
        body = b"".join(pieces)
        count = len(pieces) // 3
        return b"".join((self._header, zigzag(count), zigzag(len(body)), body, _SYNC))

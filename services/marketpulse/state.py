"""The streams worker's per-key state: Faust tables read through a cache and written behind.

A Faust table pays its whole send path (serializer registry, a future, the producer buffer and
its task) for every single assignment, and the worker's profile showed that path costing more
than the rules themselves. `WriteBehind` keeps the table's semantics for the code that uses it
(a mutable mapping whose writes are visible at once) but:

- reads are cached (decoded once, then plain dict lookups);
- writes are buffered and reach the table once per key per batch (`flush`), which the agent
  calls after the batch's signals are delivered and before Faust acks the batch;
- `TableBacking` writes a flushed change the way Faust's own table would (the in-memory store,
  then the changelog topic, to the partition of the event that made the change) but straight
  through the producer, with values as compact JSON (orjson). Faust recovers the table from
  that changelog as from its own: the table is declared with raw values, so recovery loads the
  bytes and this module decodes them on first read.

Consistency: a buffered write belongs to an event that is not acked yet, so dropping the buffer
(`forget`, on every rebalance) loses nothing: the partition's new owner processes the event
again. Faust flushes the producer before it commits offsets, so a committed offset is never
ahead of the changelog records of the events before it.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, Protocol

import faust
import orjson
from faust.streams import _current_event, current_event

MISSING: Any = object()  # a cached absence (the table has no such key)
DELETED: Any = object()  # a buffered delete

Change = tuple[str, Any, faust.EventT | None]  # key, value or DELETED, the event that made it


@contextlib.contextmanager
def as_current(event: faust.EventT | None) -> Iterator[None]:
    """Make `event` Faust's current event (what a table write takes its partition from)."""
    token = _current_event.set(weakref.ref(event) if event is not None else None)
    try:
        yield
    finally:
        _current_event.reset(token)


class Backing(Protocol):
    def get(self, key: str) -> Any: ...  # the value, or MISSING

    async def write(self, changes: Iterable[Change]) -> None: ...

    def known_keys(self) -> Iterable[str]: ...


class DictBacking:
    """A plain mapping (tests, the in-process benchmark)."""

    def __init__(self, data: MutableMapping[str, Any]) -> None:
        self.data = data

    def get(self, key: str) -> Any:
        return self.data.get(key, MISSING)

    async def write(self, changes: Iterable[Change]) -> None:
        for key, value, _ in changes:
            if value is DELETED:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def known_keys(self) -> Iterable[str]:
        return list(self.data)


class TableBacking:
    """A Faust table declared with raw values (`raw_table`): its store holds the changelog's
    bytes, and changes go to the store and the changelog topic directly."""

    def __init__(self, app: faust.App, table: Any) -> None:
        self._app = app
        self._store = table.data  # Faust's in-memory store, recovered from the changelog
        self._topic = table.changelog_topic.get_topic_name()

    def get(self, key: str) -> Any:
        raw = self._store.get(key)
        return MISSING if raw is None else orjson.loads(raw)

    async def write(self, changes: Iterable[Change]) -> None:
        send = self._app.producer.send
        for key, value, event in changes:
            partition = event.message.partition if event is not None else None
            if partition is None:
                raise RuntimeError(f"table write of {key!r} outside of any event")
            raw = None if value is DELETED else orjson.dumps(value)
            if raw is None:
                self._store.pop(key, None)
            else:
                self._store[key] = raw
            await send(self._topic, orjson.dumps(key), raw, partition, None, None)

    def known_keys(self) -> Iterable[str]:
        return list(self._store.keys())


def raw_table(app: faust.App, name: str, partitions: int) -> Any:
    """A Faust table whose changelog `TableBacking` writes. Faust serializes a str key as JSON
    and a bytes value as is: the changelog holds JSON keys and JSON values, as it did when Faust
    wrote the values itself (its json codec), so older changelogs still recover."""
    return app.Table(name, key_type=str, value_type=bytes, partitions=partitions, help=name)


class WriteBehind(MutableMapping[str, Any]):
    """A table seen through a cache of decoded values and a buffer of changes (module doc)."""

    def __init__(self, backing: Backing | MutableMapping[str, Any]) -> None:
        self.backing: Backing = (
            DictBacking(backing) if isinstance(backing, MutableMapping) else backing
        )
        self._cache: dict[str, Any] = {}
        self._dirty: dict[str, tuple[Any, faust.EventT | None]] = {}

    def __getitem__(self, key: str) -> Any:
        value = self._cache.get(key, MISSING)
        if value is MISSING:
            if key in self._cache:
                raise KeyError(key)
            value = self._cache[key] = self.backing.get(key)
            if value is MISSING:
                raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return self.get(key, MISSING) is not MISSING  # type: ignore[arg-type]

    def __setitem__(self, key: str, value: Any) -> None:
        self._cache[key] = value
        self._dirty[key] = (value, current_event())

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._cache[key] = MISSING
        self._dirty[key] = (DELETED, current_event())

    def __iter__(self) -> Iterator[str]:
        dirty = self._dirty
        known = [k for k in self.backing.known_keys() if k not in dirty]
        return iter(known + [k for k, (v, _) in dirty.items() if v is not DELETED])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def pending(self) -> int:
        """Keys changed since the last flush."""
        return len(self._dirty)

    async def flush(self) -> None:
        """Write every buffered change, once per key, as part of the event that made it last."""
        if self._dirty:
            changes = [(k, v, ev) for k, (v, ev) in self._dirty.items()]
            self._dirty.clear()
            await self.backing.write(changes)

    def forget(self) -> None:
        """Drop the cache and the buffer (the partitions this worker owns changed)."""
        self._cache.clear()
        self._dirty.clear()

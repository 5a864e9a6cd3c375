"""The order books the execution stage fills against, kept cheaply.

Books are keyed by event key on Kafka. Only *watched* events (open intents or positions, or
just signalled) are decoded: their books go into a short per-token history, so that a fill at
event time T takes the latest book with ts_ms <= T. Every other event's messages are kept
undecoded, a bounded ring of raw bytes per event key (an LRU over events bounds the total): no
Avro decode, just a reference. A signal usually arrives after the books that fired it went by;
watching its event then decodes that ring, so the book at the signal's time is at hand."""

from __future__ import annotations

import bisect
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any

from marketpulse.errors import BadMessage

Decode = Callable[[bytes], dict[str, Any]]


class BookStore:
    def __init__(
        self, decode: Decode, ring: int = 64, max_events: int = 5_000, history: int = 16
    ) -> None:
        self._decode = decode
        self._ring = ring
        self._max_events = max_events
        self._history = history
        self.raw: OrderedDict[str, deque[bytes]] = OrderedDict()
        self.watched: set[str] = set()
        self.books: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}  # token -> [(ts, n, b)]
        self.tokens_of: dict[str, set[str]] = {}
        self.undecodable = 0  # ring entries that failed to decode when their event got watched
        self._n = 0  # arrival counter: of two books with one ts, the later arrival wins

    def offer(self, key: bytes | None, value: bytes) -> dict[str, Any] | None:
        """One message of the books topic. Returns the decoded book when its event is watched
        (raises BadMessage if it cannot be decoded), else None after keeping the raw bytes."""
        event = key.decode(errors="replace") if key else ""
        if event in self.watched:
            book = self._decode(value)
            self.add(book)
            return book
        ring = self.raw.get(event)
        if ring is None:
            ring = self.raw[event] = deque(maxlen=self._ring)
            if len(self.raw) > self._max_events:
                self.raw.popitem(last=False)  # the event quiet for longest
        else:
            self.raw.move_to_end(event)
        ring.append(value)
        return None

    def watch(self, event_key: str) -> None:
        """Start decoding an event's books, beginning with what its ring kept."""
        if event_key in self.watched:
            return
        self.watched.add(event_key)
        for value in self.raw.pop(event_key, ()):
            try:
                self.add(self._decode(value))
            except BadMessage:
                self.undecodable += 1

    def unwatch(self, event_key: str) -> None:
        self.watched.discard(event_key)
        for token in self.tokens_of.pop(event_key, ()):
            self.books.pop(token, None)

    def add(self, book: Mapping[str, Any]) -> None:
        token = str(book["token_id"])
        self.tokens_of.setdefault(str(book["event_key"]), set()).add(token)
        history = self.books.setdefault(token, [])
        self._n += 1
        bisect.insort(history, (int(book["ts_ms"]), self._n, dict(book)))
        if len(history) > self._history:
            del history[0]

    def at(self, token_id: str, ts_ms: int) -> dict[str, Any] | None:
        """The latest book of a token with ts_ms <= `ts_ms` (None if none is known)."""
        history = self.books.get(token_id)
        if not history:
            return None
        i = bisect.bisect_right(history, (ts_ms, float("inf")))
        return history[i - 1][2] if i else None

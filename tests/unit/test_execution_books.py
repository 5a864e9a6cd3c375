"""The stage's book store: unwatched events cost no decode, watching one decodes what its ring
kept, and a fill time finds the latest book at or before it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from marketpulse.errors import BadMessage
from marketpulse.execution.books import BookStore


def raw(event: str, token: str, ts: int) -> bytes:
    return json.dumps({"event_key": event, "token_id": token, "ts_ms": ts}).encode()


def counting_decoder() -> tuple[list[int], Any]:
    calls: list[int] = []

    def decode(value: bytes) -> dict[str, Any]:
        calls.append(1)
        try:
            return dict(json.loads(value))
        except ValueError as exc:
            raise BadMessage("undecodable", str(exc)) from exc

    return calls, decode


def test_unwatched_books_are_kept_raw_and_decoded_only_when_watched() -> None:
    calls, decode = counting_decoder()
    store = BookStore(decode, ring=3)
    for ts in range(5):
        assert store.offer(b"ev1", raw("ev1", "t", 1000 + ts)) is None
    store.offer(b"ev1", b"garbage")
    assert calls == [] and store.at("t", 10_000) is None
    store.watch("ev1")
    assert len(calls) == 3 and store.undecodable == 1  # the ring kept the last 3 only
    assert store.at("t", 10_000)["ts_ms"] == 1004
    assert store.offer(b"ev1", raw("ev1", "t", 1005))["ts_ms"] == 1005  # decoded now
    with pytest.raises(BadMessage):
        store.offer(b"ev1", b"garbage")


def test_the_latest_book_at_or_before_a_time() -> None:
    _, decode = counting_decoder()
    store = BookStore(decode)
    store.watch("ev1")
    for ts in (1000, 3000, 2000):
        store.offer(b"ev1", raw("ev1", "t", ts))
    assert store.at("t", 999) is None
    assert store.at("t", 2000)["ts_ms"] == 2000
    assert store.at("t", 2999)["ts_ms"] == 2000
    assert store.at("t", 5000)["ts_ms"] == 3000


def test_the_number_of_raw_events_is_bounded() -> None:
    _, decode = counting_decoder()
    store = BookStore(decode, max_events=2)
    for ev in (b"a", b"b", b"a", b"c"):
        store.offer(ev, raw(ev.decode(), "t", 1))
    assert list(store.raw) == ["a", "c"]  # b was the quietest
    store.unwatch("a")

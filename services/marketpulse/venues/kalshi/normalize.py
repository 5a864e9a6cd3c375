"""Kalshi frames (WebSocket messages and REST responses) → Market, Book, Tick and Trade records.

Stateful: it keeps each subscribed market's bids-only book (snapshot + deltas), the markets it
has seen (so a lifecycle event can update a full record) and per-subscription sequence numbers.
Every failure is a ``BadMessage`` with a reason; nothing else escapes ``normalize``.

Gap policy, on a ``seq`` jump of a subscription (counted in ``mpx_collector_gaps_total``):
  * ``hold`` (live): the books of that subscription are suspect, so none of them is published
    again until its fresh snapshot arrives (the connection resubscribes on the same gap).
  * ``count`` (replay of a *filtered* capture, e.g. one ticker cut out of a shared
    subscription, where every other ticker's messages look like gaps): count and keep applying.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard

from marketpulse import metrics
from marketpulse.errors import BadMessage
from marketpulse.venues.base import Frame, Out
from marketpulse.venues.kalshi import fields as f
from marketpulse.venues.kalshi.book import BidsBook, Side, TokenView
from marketpulse.venues.kalshi.markets import (
    VENUE,
    EventInfo,
    derived_event_ticker,
    event_id,
    event_info,
    market_id,
    market_record,
    token_id,
    with_lifecycle,
)
from marketpulse.venues.kalshi.seq import SeqTracker, Step

GapPolicy = Literal["hold", "count"]
WS_CHANNEL = "ws:kalshi"
REST_CHANNEL = "rest:kalshi"  # + the request path, e.g. "rest:kalshi/markets/T/orderbook"
SIDES: tuple[Side, Side] = ("yes", "no")
# Frames that only confirm commands or describe events, not markets: counted, no record.
_CONTROL = {"subscribed", "unsubscribed", "ok", "error", "event_lifecycle"}


def rest_channel(path: str) -> str:
    """The channel of a REST response: where it came from is what the normalizer dispatches on."""
    return REST_CHANNEL + path


@dataclass(slots=True)
class _Live:
    """A WebSocket-maintained book: which subscription feeds it, and whether it can be trusted."""

    book: BidsBook
    sid: int | None
    stale: bool = False


@dataclass(slots=True)
class Stats:
    gaps: int = 0
    held: int = 0  # deltas skipped while their book waited for a fresh snapshot
    inconsistent: int = 0  # deltas that would have made a level negative
    types: Counter[str] = field(default_factory=Counter)


class KalshiNormalizer:
    """Kalshi's ``Normalizer``. ``depth``: levels a side in each Book record. Books and ticks
    carry a per-token counter as ``seq`` (the venue's seq restarts with every subscription), so
    a replay from the start of a file yields the same (token, ts, seq) keys every time."""

    venue = VENUE

    def __init__(self, *, depth: int = 10, gap_policy: GapPolicy = "hold") -> None:
        self.depth = depth
        self.gap_policy: GapPolicy = gap_policy
        self.stats = Stats()
        self._books: dict[str, _Live] = {}
        self._markets: dict[str, dict[str, Any]] = {}  # ticker → last Market record
        self._events: dict[str, str] = {}  # ticker → event ticker (from REST)
        self._seq = SeqTracker()
        self._token_seq: Counter[str] = Counter()
        self._last_trade: dict[str, float] = {}

    def normalize(self, frame: Frame) -> list[Out]:
        """Records for one frame, or BadMessage(kind, detail)."""
        try:
            if frame.channel.startswith("ws:"):
                return self._ws(frame)
            if frame.channel.startswith(REST_CHANNEL):
                return self._rest(frame, frame.channel[len(REST_CHANNEL) :])
            raise BadMessage("unknown_channel", f"no Kalshi parser for channel {frame.channel!r}")
        except BadMessage:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            # A payload shaped in a way no check above foresaw: still a rejection, not a crash.
            raise BadMessage("malformed", f"{type(exc).__name__}: {exc}") from None

    def book(self, ticker: str) -> BidsBook | None:
        """The maintained WebSocket book of ``ticker`` (for tests and diagnostics)."""
        live = self._books.get(ticker)
        return live.book if live else None

    # WebSocket ------------------------------------------------------------------------------

    def _ws(self, frame: Frame) -> list[Out]:
        data = f.obj(_json(frame.payload), "frame")
        kind = data.get("type")
        if not isinstance(kind, str):
            raise BadMessage("malformed", "frame without a string 'type'")
        self.stats.types[kind] += 1
        # Unknown types keep their name (cut short: a label must not grow without bound).
        metrics.COLLECTOR_MESSAGES.labels(VENUE, frame.conn_id, kind[:40]).inc()
        if kind == "unsubscribed" and _is_int(data.get("sid")):
            self._seq.forget(data["sid"])
        elif kind == "subscribed":
            self._new_subscription(data.get("msg"))
        if not self._in_sequence(data, frame.conn_id):
            raise BadMessage("stale_seq", f"seq {data.get('seq')} already seen on {data['sid']}")
        if kind in _CONTROL:
            return []
        handler = _WS_HANDLERS.get(kind)
        if handler is None:
            raise BadMessage("unknown_type", f"Kalshi message type {kind!r}")
        return handler(self, f.obj(data.get("msg"), f"{kind}.msg"), data, frame)

    def _new_subscription(self, msg: Any) -> None:
        """A (re)connection numbers its subscriptions afresh: a sid seen before now means a new
        stream, whose seq starts over and whose books come again as snapshots."""
        sid = msg.get("sid") if isinstance(msg, dict) else None
        if _is_int(sid):
            self._seq.forget(sid)
            for live in self._books.values():
                if live.sid == sid:
                    live.stale = True

    def _in_sequence(self, data: dict[str, Any], shard: str) -> bool:
        sid, seq = data.get("sid"), data.get("seq")
        if not (_is_int(sid) and _is_int(seq)):
            return True  # ticker and lifecycle messages carry no seq
        step = self._seq.step(sid, seq)
        if step is Step.STALE:
            return False
        if step is Step.GAP:
            self.stats.gaps += 1
            metrics.COLLECTOR_GAPS.labels(VENUE, shard, "seq").inc()
            if self.gap_policy == "hold":
                for live in self._books.values():
                    if live.sid == sid:
                        live.stale = True
        return True

    def _snapshot(self, msg: dict[str, Any], data: dict[str, Any], frame: Frame) -> list[Out]:
        legacy = "yes" in msg or "no" in msg
        if legacy and "yes_dollars_fp" not in msg and "no_dollars_fp" not in msg:
            raise BadMessage("legacy_format", "snapshot in integer cents only")
        ticker = f.text(msg, "market_ticker")
        book = BidsBook(
            yes=f.levels(msg.get("yes_dollars_fp"), "yes_dollars_fp"),
            no=f.levels(msg.get("no_dollars_fp"), "no_dollars_fp"),
        )
        sid = data.get("sid")
        self._books[ticker] = _Live(book, sid if _is_int(sid) else None)
        return self._book_records(ticker, book, f.ts_ms(msg, frame.recv_ms), frame.recv_ms)

    def _delta(self, msg: dict[str, Any], data: dict[str, Any], frame: Frame) -> list[Out]:
        ticker = f.text(msg, "market_ticker")
        side = msg.get("side")
        if side not in SIDES:
            raise BadMessage("bad_field", f"side={side!r}, expected yes or no")
        price = f.price(msg.get("price_dollars"), "price_dollars")
        delta = f.decimal(msg.get("delta_fp"), "delta_fp")
        live = self._books.get(ticker)
        if live is None:
            metrics.COLLECTOR_GAPS.labels(VENUE, frame.conn_id, "delta_without_snapshot").inc()
            return []
        sid = data.get("sid")
        if live.stale or (live.sid is not None and sid != live.sid):
            # Suspect until its fresh snapshot, or a late delta of a replaced subscription.
            self.stats.held += 1
            return []
        if not live.book.apply(side, price, delta):
            self.stats.inconsistent += 1
            metrics.COLLECTOR_GAPS.labels(VENUE, frame.conn_id, "negative_level").inc()
        return self._book_records(ticker, live.book, f.ts_ms(msg, frame.recv_ms), frame.recv_ms)

    def _trade(self, msg: dict[str, Any], data: dict[str, Any], frame: Frame) -> list[Out]:
        ticker = f.text(msg, "market_ticker")
        taker = msg.get("taker_side")
        if taker not in SIDES:
            raise BadMessage("bad_field", f"taker_side={taker!r}, expected yes or no")
        yes_price = f.price(msg.get("yes_price_dollars"), "yes_price_dollars")
        no_raw = msg.get("no_price_dollars")
        no_price = f.ONE - yes_price if no_raw is None else f.price(no_raw, "no_price_dollars")
        size = f.count(msg.get("count_fp"), "count_fp")
        self._last_trade[token_id(ticker, "yes")] = float(yes_price)
        self._last_trade[token_id(ticker, "no")] = float(no_price)
        trade = {
            **self._keys(ticker, taker),
            "trade_id": f.text(msg, "trade_id"),
            "ts_ms": f.ts_ms(msg, frame.recv_ms),
            "recv_ms": frame.recv_ms,
            # The taker bought the side it took: YES at the YES price, or NO at the NO price.
            "price": float(yes_price if taker == "yes" else no_price),
            "size": float(size),
            "side": "BUY",
            "wallet": None,  # Kalshi never discloses account identity
            "tx_hash": None,
        }
        return [("trades", trade["event_key"], trade)]

    def _ticker(self, msg: dict[str, Any], data: dict[str, Any], frame: Frame) -> list[Out]:
        ticker = f.text(msg, "market_ticker")
        bid = _opt(msg, "yes_bid_dollars", f.price)
        ask = _opt(msg, "yes_ask_dollars", f.price)
        bid_size = _opt(msg, "yes_bid_size_fp", f.count)
        ask_size = _opt(msg, "yes_ask_size_fp", f.count)
        last = _opt(msg, "price_dollars", f.price)
        last = None if last == 0 else last  # "0.0000": never traded (no trade prints at 0)
        # A quote of size 0 is no quote (e.g. "yes_ask_dollars": "1.0000" with size "0.00").
        bid = None if bid_size == 0 else bid
        ask = None if ask_size == 0 else ask
        ts, out = f.ts_ms(msg, frame.recv_ms), []
        for side in SIDES:
            if side == "yes":
                quote = (bid, ask, bid_size, ask_size, last)
            else:  # NO bids are YES asks seen from the other side, and vice versa
                quote = (_inv(ask), _inv(bid), ask_size, bid_size, _inv(last))
            tick = {
                **self._keys(ticker, side),
                "ts_ms": ts,
                "recv_ms": frame.recv_ms,
                "seq": self._next_seq(token_id(ticker, side)),
                "best_bid": _float(quote[0]),
                "best_ask": _float(quote[1]),
                "bid_size": _float(quote[2]),
                "ask_size": _float(quote[3]),
                "last_price": _float(quote[4]),
            }
            out.append(("ticks", tick["event_key"], tick))
        return out

    def _lifecycle(self, msg: dict[str, Any], data: dict[str, Any], frame: Frame) -> list[Out]:
        ticker = f.text(msg, "market_ticker")
        known = self._markets.get(ticker)
        if known is None:
            # The channel carries every market on the venue; untracked ones are not ours.
            return []
        record = with_lifecycle(known, msg, frame.recv_ms)
        self._markets[ticker] = record
        return [("markets", record["market_id"], record)]

    # REST -----------------------------------------------------------------------------------

    def _rest(self, frame: Frame, path: str) -> list[Out]:
        body = f.obj(_json(frame.payload), "response")
        parts = [p for p in path.split("?")[0].split("/") if p]
        self.stats.types[f"rest:{parts[0] if parts else ''}"] += 1
        metrics.COLLECTOR_MESSAGES.labels(VENUE, frame.conn_id, f"rest:{'/'.join(parts[:1])}").inc()
        if parts[:1] == ["markets"] and len(parts) == 3 and parts[2] == "orderbook":
            return self._rest_orderbook(parts[1], body, frame.recv_ms)
        if parts == ["markets"]:
            return self._markets_out(_list(body, "markets"), None, frame.recv_ms)
        if parts[:1] == ["markets"] and len(parts) == 2:
            return self._markets_out([f.obj(body.get("market"), "market")], None, frame.recv_ms)
        if parts == ["events"]:
            return [r for ev in _list(body, "events") for r in self._event_out(ev, [], frame)]
        if parts[:1] == ["events"] and len(parts) == 2:
            return self._event_out(body.get("event"), body.get("markets") or [], frame)
        if parts[:1] == ["series"]:
            return []  # series metadata holds no market records
        raise BadMessage("unknown_endpoint", f"no Kalshi parser for REST path {path!r}")

    def _event_out(self, event: Any, markets: list[Any], frame: Frame) -> list[Out]:
        ev = f.obj(event, "event")
        nested = ev.get("markets") or markets
        if not isinstance(nested, list):
            raise BadMessage("malformed", "event markets is not a list")
        return self._markets_out(nested, event_info(ev, len(nested)), frame.recv_ms)

    def _markets_out(self, items: list[Any], event: EventInfo | None, recv_ms: int) -> list[Out]:
        out: list[Out] = []
        for item in items:
            record = market_record(item, event, recv_ms)
            ticker = record["market_id"][3:]
            self._events[ticker] = record["event_id"][3:]
            self._markets[ticker] = record
            out.append(("markets", record["market_id"], record))
        return out

    def _rest_orderbook(self, ticker: str, body: dict[str, Any], recv_ms: int) -> list[Out]:
        book_fp = body.get("orderbook_fp")
        if book_fp is None:
            raise BadMessage("legacy_format", "orderbook without orderbook_fp (cents only)")
        ob = f.obj(book_fp, "orderbook_fp")
        # A REST snapshot is published as is; it never becomes the base of WebSocket deltas,
        # whose own snapshot and seq numbers are the only consistent base for them.
        book = BidsBook(
            yes=f.levels(ob.get("yes_dollars"), "yes_dollars"),
            no=f.levels(ob.get("no_dollars"), "no_dollars"),
        )
        return self._book_records(ticker, book, recv_ms, recv_ms)

    # Records --------------------------------------------------------------------------------

    def _keys(self, ticker: str, side: Side) -> dict[str, Any]:
        event = self._events.get(ticker) or derived_event_ticker(ticker)
        return {
            "event_key": event_id(event),
            "market_id": market_id(ticker),
            "token_id": token_id(ticker, side),
            "venue": VENUE,
        }

    def _next_seq(self, token: str) -> int:
        self._token_seq[token] += 1
        return self._token_seq[token]

    def _book_records(self, ticker: str, book: BidsBook, ts: int, recv_ms: int) -> list[Out]:
        out: list[Out] = []
        for side in SIDES:
            view = book.view(side, self.depth)
            keys = self._keys(ticker, side)
            seq = self._next_seq(keys["token_id"])
            common = {**keys, "ts_ms": ts, "recv_ms": recv_ms, "seq": seq}
            rec = {
                **common,
                "bids": [{"price": p, "size": q} for p, q in view.bids],
                "asks": [{"price": p, "size": q} for p, q in view.asks],
                "hash": None,
            }
            out.append(("books", keys["event_key"], rec))
            out.append(("ticks", keys["event_key"], _tick(common, view, self._last_trade)))
        return out


_WS_HANDLERS = {
    "orderbook_snapshot": KalshiNormalizer._snapshot,
    "orderbook_delta": KalshiNormalizer._delta,
    "trade": KalshiNormalizer._trade,
    "ticker": KalshiNormalizer._ticker,
    "market_lifecycle_v2": KalshiNormalizer._lifecycle,
}


def _tick(common: dict[str, Any], view: TokenView, last: dict[str, float]) -> dict[str, Any]:
    bid, ask = view.best_bid, view.best_ask
    return {
        **common,
        "best_bid": bid[0] if bid else None,
        "best_ask": ask[0] if ask else None,
        "bid_size": bid[1] if bid else None,
        "ask_size": ask[1] if ask else None,
        "last_price": last.get(common["token_id"]),
    }


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessage("bad_json", str(exc)[:200]) from None


def _list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if not isinstance(value, list):
        raise BadMessage("malformed", f"response has no {name!r} list")
    return value


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _opt(msg: dict[str, Any], name: str, read: Any) -> Any:
    return None if msg.get(name) in (None, "") else read(msg[name], name)


def _inv(value: Any) -> Any:
    return None if value is None else f.ONE - value


def _float(value: Any) -> float | None:
    return None if value is None else float(value)

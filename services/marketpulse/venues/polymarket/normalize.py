"""PolymarketNormalizer: raw Polymarket frames into catalog records.

Stateful: it keeps every token's order book (snapshots and deltas), the markets it has published
(so that only new or changed ones are published again, and so that books are keyed by their
event), and the Data API trades it has already seen (de-duplication across overlapping windows).
Because all of that state is built from frames alone, replaying a recording rebuilds it exactly.

Channels: ``ws:market`` (market channel), ``rest:books`` (``POST /books`` / ``GET /book``
answers: book snapshots), ``rest:gamma`` (discovery pages), ``data:trades`` (Data API rows).

Choices worth knowing:
  * A book that disagrees with the venue's own best bid/ask is not published: the token is put in
    ``wanted_snapshots`` (the REST task re-fetches it) and its books resume with the snapshot.
    A delta for a token without a snapshot is a gap, handled the same way.
  * WebSocket ``last_trade_price`` updates the tick's last price; the trades topic gets the Data
    API's rows, which carry the wallet. The same fill in both would count volume twice.
  * A frame holding several messages (the first reply is an array of books) is processed message
    by message: a bad one becomes a dead-letter record of its own, the good ones go on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import OrderedDict
from typing import Any

from marketpulse import metrics
from marketpulse.errors import BadMessage
from marketpulse.venues.base import Frame, Out
from marketpulse.venues.polymarket import PREFIX, VENUE, gamma
from marketpulse.venues.polymarket import parse as p
from marketpulse.venues.polymarket.book import Book

log = logging.getLogger(__name__)

Record = dict[str, Any]
KEEPALIVE = (b"PONG", b"PING", b"")
MAX_UNKNOWN_TYPES = 32
ACTIVITY_TYPES = {"split", "merge", "redeem", "reward", "conversion", "maker_rebate"}
DEDUP_KEEP = 500_000  # Data API trade keys remembered (a few hours of the global feed)


class PolymarketNormalizer:
    venue = VENUE

    def __init__(self, depth: int = 10, dedup_keep: int = DEDUP_KEEP) -> None:
        self.depth = depth
        self.books: dict[str, Book] = {}
        self.markets: dict[str, Record] = {}  # market id -> last published Market record
        self.token_market: dict[str, str] = {}  # token id -> market id
        self.gamma_seen_ms: dict[str, int] = {}  # market id -> last Gamma frame listing it
        self.wanted_snapshots: set[str] = set()  # tokens whose book must be re-fetched
        self._seen_trades: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._dedup_keep = dedup_keep
        self._seq = 0
        self._counters: dict[tuple[str, str], Any] = {}
        self._unknown_logged: set[str] = set()

    # -- entry point ---------------------------------------------------------------------------

    def normalize(self, frame: Frame) -> list[Out]:
        if frame.payload.strip() in KEEPALIVE:
            self._count(frame, "pong")
            return []
        data = p.loads(frame.payload)
        if frame.channel == gamma.CHANNEL:
            return self._gamma(data, frame)
        messages = data if isinstance(data, list) else [data]
        handle = self._trade_row if frame.channel == "data:trades" else self._message
        outs: list[Out] = []
        for msg in messages:
            try:
                handle(p.obj(msg, "message"), frame, outs)
            except (BadMessage, KeyError, TypeError, ValueError, AttributeError) as exc:
                err = exc if isinstance(exc, BadMessage) else BadMessage("malformed", repr(exc))
                if len(messages) == 1:
                    raise err from exc
                outs.append(self._dead_letter(frame, msg, err))
        return outs

    # -- market channel (and REST book snapshots) ----------------------------------------------

    def _message(self, msg: Record, frame: Frame, outs: list[Out]) -> None:
        kind = msg.get("event_type")
        if kind is None and "bids" in msg and "asks" in msg:
            kind = "book"  # REST /book and /books answers carry no event_type
        kind = kind[:40] if isinstance(kind, str) else "missing_type"
        handler = _HANDLERS.get(kind)
        if handler is None:
            self._unknown(frame, kind)
            return
        self._count(frame, kind)
        handler(self, msg, frame, outs)

    def _unknown(self, frame: Frame, kind: str) -> None:
        """Counted under its own name (a few dozen at most: the label set must stay bounded)."""
        if kind not in self._unknown_logged and len(self._unknown_logged) < MAX_UNKNOWN_TYPES:
            self._unknown_logged.add(kind)
            log.warning("polymarket: unknown message type %r (counted, not published)", kind)
        self._count(frame, kind if kind in self._unknown_logged else "unknown_other")

    def _book(self, msg: Record, frame: Frame, outs: list[Out]) -> None:
        token, condition = p.text(msg, "asset_id"), p.text(msg, "market")
        bids, asks = _levels(msg.get("bids"), "bids"), _levels(msg.get("asks"), "asks")
        ts = p.ts_ms(msg.get("timestamp"))
        book = self.books.get(token)
        if book is None:
            book = self.books[token] = Book()
        elif (
            frame.channel != "ws:market" and token not in self.wanted_snapshots and ts < book.ts_ms
        ):
            # A REST snapshot older than the streamed book would undo newer deltas.
            self._count(frame, "stale_snapshot")
            return
        book.replace(bids, asks)
        book.ts_ms, book.hash = ts, p.opt_text(msg.get("hash"))
        last = msg.get("last_trade_price")
        if last not in (None, ""):
            book.last_price = p.price(last, "last_trade_price")
        self.wanted_snapshots.discard(token)
        self._emit_book(token, condition, ts, frame, outs)

    def _price_change(self, msg: Record, frame: Frame, outs: list[Out]) -> None:
        condition, ts = p.text(msg, "market"), p.ts_ms(msg.get("timestamp"))
        touched: dict[str, str | None] = {}
        for change in _changes(msg):
            token = p.text(change, "asset_id")
            buy = _side(change.get("side"))
            price, size = p.price(change.get("price")), p.size(change.get("size"))
            best_bid = p.opt_price(change.get("best_bid"), "best_bid")
            best_ask = p.opt_price(change.get("best_ask"), "best_ask")
            book = self.books.get(token)
            if book is None or token in self.wanted_snapshots:
                if book is None:
                    metrics.COLLECTOR_GAPS.labels(VENUE, frame.conn_id, "no_snapshot").inc()
                self._want(token, "no_snapshot" if book is None else "mismatch")
                continue
            book.set_level(buy, price, size)
            if not book.agrees(best_bid, best_ask):
                metrics.COLLECTOR_BOOK_MISMATCHES.labels(VENUE).inc()
                self._want(token, "mismatch")
                continue
            book.ts_ms = ts
            book.hash = p.opt_text(change.get("hash")) or p.opt_text(msg.get("hash"))
            touched[token] = book.hash
        for token in touched:
            if token not in self.wanted_snapshots:
                self._emit_book(token, condition, ts, frame, outs)

    def _last_trade(self, msg: Record, frame: Frame, outs: list[Out]) -> None:
        token, condition = p.text(msg, "asset_id"), p.text(msg, "market")
        price = p.price(msg.get("price"))
        p.size(msg.get("size"))  # validated: a malformed trade is a dead letter, not a tick
        _side(msg.get("side"))
        ts = p.ts_ms(msg.get("timestamp"))
        book = self.books.get(token)
        if book is not None:  # without a snapshot there is no book to keep the price in
            book.last_price = price
        top = book.summary() if book is not None else {}
        outs.append(self._tick(token, condition, ts, frame, top, price))

    def _best_bid_ask(self, msg: Record, frame: Frame, outs: list[Out]) -> None:
        token, condition = p.text(msg, "asset_id"), p.text(msg, "market")
        bid = p.opt_price(msg.get("best_bid"), "best_bid")
        ask = p.opt_price(msg.get("best_ask"), "best_ask")
        ts = p.ts_ms(msg.get("timestamp"))
        book = self.books.get(token)
        ours = book.summary() if book else {}
        top = {
            "best_bid": bid,
            "best_ask": ask,
            "bid_size": ours.get("bid_size") if ours.get("best_bid") == bid else None,
            "ask_size": ours.get("ask_size") if ours.get("best_ask") == ask else None,
        }
        last = book.last_price if book else None
        outs.append(self._tick(token, condition, ts, frame, top, last))

    def _tick_size_change(self, msg: Record, frame: Frame, outs: list[Out]) -> None:
        condition = p.text(msg, "market")
        new = p.number(msg.get("new_tick_size"), "new_tick_size")
        known = self.markets.get(PREFIX + condition)
        if known is not None:
            ts = p.ts_ms(msg.get("timestamp"))
            self._publish_market({**known, "tick_size": new, "updated_ms": ts}, outs)

    def _new_market(self, msg: Record, frame: Frame, outs: list[Out]) -> None:
        rec = gamma.new_market_record(msg, frame.recv_ms)
        if rec["market_id"] not in self.markets:  # Gamma's record, when known, is richer
            self._publish_market(rec, outs)

    def _market_resolved(self, msg: Record, frame: Frame, outs: list[Out]) -> None:
        market_id = PREFIX + p.text(msg, "market")
        known = self.markets.get(market_id)
        if known is None:
            raise BadMessage("unknown_market", f"market_resolved for unknown {market_id}")
        winner = msg.get("winning_asset_id")
        ts = p.ts_ms(msg.get("timestamp", frame.recv_ms))
        rec = {
            **known,
            "status": "resolved",
            "winning_token_id": winner if isinstance(winner, str) else None,
            "updated_ms": ts,
        }
        self._publish_market(rec, outs)

    # -- Gamma ---------------------------------------------------------------------------------

    def _gamma(self, data: Any, frame: Frame) -> list[Out]:
        self._count(frame, "gamma_page")
        try:
            pairs = list(gamma.items(data))
        except (BadMessage, TypeError, AttributeError) as exc:
            raise (
                exc if isinstance(exc, BadMessage) else BadMessage("bad_shape", repr(exc))
            ) from exc
        outs: list[Out] = []
        for market, event in pairs:
            try:
                rec = gamma.market_record(market, event, frame.recv_ms)
            except (BadMessage, KeyError, TypeError, ValueError, AttributeError) as exc:
                err = exc if isinstance(exc, BadMessage) else BadMessage("malformed", repr(exc))
                if len(pairs) == 1:
                    raise err from exc
                outs.append(self._dead_letter(frame, market, err))
                continue
            self.gamma_seen_ms[rec["market_id"]] = frame.recv_ms
            self._publish_market(rec, outs)
        return outs

    def _publish_market(self, rec: Record, outs: list[Out]) -> None:
        """Publish when new or changed (beyond its update time): reconciliation for free."""
        market_id = rec["market_id"]
        old = self.markets.get(market_id)
        if old is not None and {**old, "updated_ms": 0} == {**rec, "updated_ms": 0}:
            return
        self.markets[market_id] = rec
        for outcome in rec["outcomes"]:
            self.token_market[outcome["token_id"]] = market_id
        outs.append(("markets", market_id, rec))

    def active_tokens(self) -> list[str]:
        """Token ids of every active market, in discovery order (what the WebSocket follows)."""
        return [
            o["token_id"]
            for m in self.markets.values()
            if m["status"] == "active"
            for o in m["outcomes"]
        ]

    # -- Data API trades -----------------------------------------------------------------------

    def _trade_row(self, row: Record, frame: Frame, outs: list[Out]) -> None:
        if row.get("type", "TRADE") != "TRADE":  # /activity also lists splits, redeems, ...
            kind = str(row.get("type")).lower()
            self._count(frame, f"activity_{kind if kind in ACTIVITY_TYPES else 'other'}")
            return
        key = tuple(
            str(row.get(f))
            for f in ("transactionHash", "asset", "proxyWallet", "side", "size", "price")
        )
        condition, token = p.text(row, "conditionId"), p.text(row, "asset")
        price, size = p.price(row.get("price")), p.size(row.get("size"))
        side = "BUY" if _side(row.get("side")) else "SELL"
        ts = p.ts_ms(row.get("timestamp"))
        if key in self._seen_trades:
            self._count(frame, "trade_duplicate")
            return
        self._remember(key)
        self._count(frame, "trade")
        market_id = PREFIX + condition
        wallet, tx = row.get("proxyWallet"), row.get("transactionHash")
        event_key = self._event_key(market_id, frame)
        rec: Record = {
            "event_key": event_key,
            "market_id": market_id,
            "token_id": token,
            "venue": VENUE,
            "trade_id": hashlib.sha1("|".join(key).encode()).hexdigest()[:24],
            "ts_ms": ts,
            "recv_ms": frame.recv_ms,
            "price": price,
            "size": size,
            "side": side,
            "wallet": wallet if isinstance(wallet, str) else None,
            "tx_hash": tx if isinstance(tx, str) else None,
        }
        outs.append(("trades", event_key, rec))

    def _remember(self, key: tuple[str, ...]) -> None:
        self._seen_trades[key] = None
        if len(self._seen_trades) > self._dedup_keep:
            self._seen_trades.popitem(last=False)

    # -- records -------------------------------------------------------------------------------

    def _event_key(self, market_id: str, frame: Frame) -> str:
        known = self.markets.get(market_id)
        if known is not None:
            return str(known["event_id"])
        # Not discovered yet: keyed by its market so it is still published, and counted.
        self._count(frame, "unmapped_market")
        return market_id

    def _emit_book(
        self, token: str, condition: str, ts: int, frame: Frame, outs: list[Out]
    ) -> None:
        book = self.books[token]
        bids, asks = book.top(self.depth)
        market_id = PREFIX + condition
        event_key = self._event_key(market_id, frame)
        self._seq += 1
        rec = {
            "event_key": event_key,
            "market_id": market_id,
            "token_id": token,
            "venue": VENUE,
            "ts_ms": ts,
            "recv_ms": frame.recv_ms,
            "seq": self._seq,
            "bids": bids,
            "asks": asks,
            "hash": book.hash,
        }
        outs.append(("books", event_key, rec))
        outs.append(self._tick(token, condition, ts, frame, book.summary(), book.last_price))

    def _tick(
        self, token: str, condition: str, ts: int, frame: Frame, top: Record, last: float | None
    ) -> Out:
        market_id = PREFIX + condition
        event_key = self._event_key(market_id, frame)
        self._seq += 1
        rec = {
            "event_key": event_key,
            "market_id": market_id,
            "token_id": token,
            "venue": VENUE,
            "ts_ms": ts,
            "recv_ms": frame.recv_ms,
            "seq": self._seq,
            "best_bid": top.get("best_bid"),
            "best_ask": top.get("best_ask"),
            "bid_size": top.get("bid_size"),
            "ask_size": top.get("ask_size"),
            "last_price": last,
        }
        return ("ticks", event_key, rec)

    def _dead_letter(self, frame: Frame, msg: Any, err: BadMessage) -> Out:
        """One bad message of a multi-message frame, as a dead letter of its own."""
        metrics.COLLECTOR_REJECTS.labels(VENUE, err.kind).inc()
        metrics.DEAD_LETTERS.labels("collector", err.kind).inc()
        try:
            payload = json.dumps(msg).encode()
        except (TypeError, ValueError):
            payload = frame.payload
        rec = {
            "stage": "collector",
            "source": f"{VENUE}:{frame.channel}",
            "partition": -1,
            "offset": -1,
            "error_kind": err.kind,
            "error": str(err)[:2000],
            "key": frame.conn_id.encode(),
            "payload": payload,
            "ts_ms": frame.recv_ms,
        }
        return ("dlq", f"{VENUE}:{frame.channel}", rec)

    def _want(self, token: str, cause: str) -> None:
        if token not in self.wanted_snapshots:
            self.wanted_snapshots.add(token)
            metrics.COLLECTOR_RESNAPSHOTS.labels(VENUE, cause).inc()

    def _count(self, frame: Frame, kind: str) -> None:
        key = (frame.conn_id, kind)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = metrics.COLLECTOR_MESSAGES.labels(
                VENUE, frame.conn_id, kind
            )
        counter.inc()


def _levels(value: Any, field: str) -> list[tuple[float, float]]:
    if not isinstance(value, list):
        raise BadMessage("bad_shape", f"{field} is not an array")
    # Fast path (snapshots are most of the parsing work): the usual shape, checked in bulk.
    # Anything unusual falls through to the level-by-level path, which names the problem.
    try:
        fast = [
            (float(pr), float(sz))
            for lv in value
            if type(pr := lv["price"]) is str and type(sz := lv["size"]) is str  # the wire format
        ]
    except (KeyError, TypeError, ValueError, OverflowError):
        pass
    else:
        if len(fast) == len(value) and all(
            0.0 <= pr <= 1.0 and 0.0 <= sz < math.inf for pr, sz in fast
        ):
            return fast
    out = []
    for level in value:
        if isinstance(level, dict):
            out.append((p.price(level.get("price")), p.size(level.get("size"))))
        elif isinstance(level, list) and len(level) == 2:
            out.append((p.price(level[0]), p.size(level[1])))
        else:
            raise BadMessage("bad_shape", f"{field} level {level!r:.80}")
    return out


def _changes(msg: Record) -> list[Record]:
    """The level changes of a price_change in any of its formats: current ``price_changes[]``
    (each with its own asset id and best bid/ask), legacy ``changes[]`` under one asset id, or
    the legacy flat message itself."""
    if isinstance(msg.get("price_changes"), list):
        return [p.obj(c, "price_changes[]") for c in msg["price_changes"]]
    if isinstance(msg.get("changes"), list):
        token = p.text(msg, "asset_id")
        return [{**p.obj(c, "changes[]"), "asset_id": token} for c in msg["changes"]]
    if "price" in msg:
        return [msg]
    raise BadMessage("bad_shape", "price_change without price_changes, changes or price")


def _side(value: Any) -> bool:
    """True for BUY (a bid), False for SELL (an ask)."""
    if value == "BUY":
        return True
    if value == "SELL":
        return False
    raise BadMessage("bad_side", f"side={value!r:.40}")


_HANDLERS = {
    "book": PolymarketNormalizer._book,
    "price_change": PolymarketNormalizer._price_change,
    "last_trade_price": PolymarketNormalizer._last_trade,
    "best_bid_ask": PolymarketNormalizer._best_bid_ask,
    "tick_size_change": PolymarketNormalizer._tick_size_change,
    "new_market": PolymarketNormalizer._new_market,
    "market_resolved": PolymarketNormalizer._market_resolved,
}

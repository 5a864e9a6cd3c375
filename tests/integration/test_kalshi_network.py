"""The Kalshi source against real servers on 127.0.0.1 that replay recorded Kalshi payloads: a
WebSocket server that checks the signed handshake with the test's public key, and an HTTP server
for REST discovery. Every test asserts what reaches the real Kafka topics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from marketpulse import kafka
from marketpulse.codec import codec
from marketpulse.collect import FramePipeline
from marketpulse.kafka import create_topics, describe_topics
from marketpulse.settings import Settings
from marketpulse.venues.kalshi import KalshiNormalizer, KalshiRest, KalshiSource

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "real" / "kalshi"
WS_PATH = "/trade-api/ws/v2"
DEPTH = 10
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not REAL.is_dir(), reason=f"real Kalshi fixtures not found at {REAL}"),
]


# Recorded traffic -----------------------------------------------------------------------------


def recorded_book_messages() -> list[dict[str, Any]]:
    """The 12 snapshots and 245 deltas of the real capture, in the order received."""
    frames = json.loads((REAL / "ws" / "cockpit_ws_orderbook_stream.json").read_text())["frames"]
    return [f["frame"] for f in frames if f["frame"]["type"].startswith("orderbook_")]


def recorded_trades() -> list[dict[str, Any]]:
    lines = (REAL / "ws" / "ssmd_kalshi_trade.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:3]]


class TrueBooks:
    """What the server's books really are, applied with Decimal arithmetic."""

    def __init__(self) -> None:
        self.bids: dict[str, dict[str, dict[Decimal, Decimal]]] = {}

    def apply(self, m: dict[str, Any]) -> None:
        msg = m["msg"]
        if m["type"] == "orderbook_snapshot":
            self.bids[msg["market_ticker"]] = {
                s: {Decimal(p): Decimal(q) for p, q in msg.get(f"{s}_dollars_fp", [])}
                for s in ("yes", "no")
            }
            return
        side = self.bids[msg["market_ticker"]][msg["side"]]
        price = Decimal(msg["price_dollars"])
        side[price] = side.get(price, Decimal(0)) + Decimal(msg["delta_fp"])
        if side[price] <= 0:
            del side[price]

    def snapshot(self, ticker: str) -> dict[str, Any]:
        msg: dict[str, Any] = {"market_ticker": ticker}
        for s in ("yes", "no"):
            msg[f"{s}_dollars_fp"] = [
                [f"{p:.4f}", f"{q:.2f}"] for p, q in sorted(self.bids[ticker][s].items())
            ]
        return {"type": "orderbook_snapshot", "msg": msg}

    def expected(self, ticker: str, side: str) -> dict[str, Any]:
        own, other = self.bids[ticker][side], self.bids[ticker]["no" if side == "yes" else "yes"]
        return {
            "bids": [
                {"price": float(p), "size": float(q)} for p, q in heapq.nlargest(DEPTH, own.items())
            ],
            "asks": [
                {"price": float(1 - p), "size": float(q)}
                for p, q in heapq.nlargest(DEPTH, other.items())
            ],
        }


# The fake venue -------------------------------------------------------------------------------


class FakeKalshi:
    """Kalshi's WebSocket as far as the collector uses it. On the first order-book subscription
    it sends ``first`` recorded messages, *skips one* (a seq gap), then sends two more; on a
    resubscription it sends fresh snapshots of the true books (which include the skipped
    message) and the remaining recorded deltas. ``drop_after`` closes the first connection after
    that many book messages instead (a dropped connection)."""

    def __init__(
        self, public_key: rsa.RSAPublicKey, *, first: int = 40, drop_after: int | None = None
    ) -> None:
        self.public_key = public_key
        self.messages = recorded_book_messages()
        self.tickers = sorted({m["msg"]["market_ticker"] for m in self.messages})
        self.first = first
        self.drop_after = drop_after
        self.truth = TrueBooks()
        self.handshakes: list[str] = []
        self.commands: list[dict[str, Any]] = []
        self.book_subscriptions = 0
        self.sent_to = 0  # index of the next recorded book message to play
        self.done = asyncio.Event()
        self._sid = 0

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        h = request.headers
        try:
            ts = h["KALSHI-ACCESS-TIMESTAMP"]
            sig = base64.b64decode(h["KALSHI-ACCESS-SIGNATURE"])
            self.public_key.verify(
                sig, f"{ts}GET{urlparse(request.path).path}".encode(), PSS, hashes.SHA256()
            )
            assert h["KALSHI-ACCESS-KEY"] == "test-key-id"
            assert abs(int(ts) - time.time() * 1000) < 30_000
        except Exception:
            self.handshakes.append("rejected")
            return conn.respond(HTTPStatus.UNAUTHORIZED, "bad signature\n")
        self.handshakes.append("ok")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        self._sid = 0  # like Kalshi, every connection numbers its subscriptions from 1
        async for raw in ws:
            cmd = json.loads(raw)
            self.commands.append(cmd)
            if cmd["cmd"] == "unsubscribe":
                await ws.send(
                    json.dumps(
                        {"type": "unsubscribed", "id": cmd["id"], "sid": cmd["params"]["sids"][0]}
                    )
                )
                continue
            self._sid += 1
            sid, channel = self._sid, cmd["params"]["channels"][0]
            await ws.send(
                json.dumps(
                    {"type": "subscribed", "id": cmd["id"], "msg": {"channel": channel, "sid": sid}}
                )
            )
            if channel == "trade":
                for seq, t in enumerate(recorded_trades(), 1):
                    await ws.send(json.dumps({**t, "sid": sid, "seq": seq}))
            if channel == "orderbook_delta":
                self.book_subscriptions += 1
                await self._play_books(ws, sid)

    async def _play_books(self, ws: ServerConnection, sid: int) -> None:
        seq = 0

        async def send(m: dict[str, Any]) -> None:
            nonlocal seq
            seq += 1
            await ws.send(json.dumps({**m, "sid": sid, "seq": seq}))

        if self.book_subscriptions > 1 or self.sent_to:  # resubscribed, or reconnected
            for ticker in self.tickers:
                await send(self.truth.snapshot(ticker))
            for m in self.messages[self.sent_to :]:
                self.truth.apply(m)
                await send(m)
            self.sent_to = len(self.messages)
            self.done.set()
            return
        limit = self.drop_after or self.first
        for m in self.messages[:limit]:
            self.truth.apply(m)
            await send(m)
        self.sent_to = limit
        if self.drop_after:
            await ws.close(1011, "dropped by the test server")
            return
        # The gap: one delta applied to the true book but never sent.
        self.truth.apply(self.messages[limit])
        seq += 1
        for m in self.messages[limit + 1 : limit + 3]:
            self.truth.apply(m)
            await send(m)
        self.sent_to = limit + 3


@contextlib.asynccontextmanager
async def fake_kalshi(venue: FakeKalshi) -> AsyncIterator[int]:
    server: Server = await serve(
        venue.handler, "127.0.0.1", 0, process_request=venue.process_request, max_size=None
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


# Kafka ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> SecretStr:
    return SecretStr(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    )


@pytest.fixture
async def base_settings(kafka_bootstrap: str, unique_name: str) -> Settings:
    s = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{unique_name}.")
    await create_topics(s)
    return s


async def read_topic(settings: Settings, topic_id: str, schema: str) -> list[dict[str, Any]]:
    name = settings.topic(topic_id)
    partitions = {row["name"]: row["partitions"] for row in await describe_topics(settings)}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(name, p) for p in range(partitions[name])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[dict[str, Any]] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend(codec().decode(schema, r.value) for r in records)
        return out
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def pipeline(settings: Settings) -> AsyncIterator[tuple[FramePipeline, KalshiNormalizer]]:
    normalizer = KalshiNormalizer(depth=DEPTH)
    prod = kafka.producer(settings)
    await prod.start()
    pipe = FramePipeline(settings, prod, raw_topic=True, normalizers={"kalshi": normalizer})
    try:
        yield pipe, normalizer
        await pipe.flush()
    finally:
        pipe.close()
        await prod.stop()


async def wait_for(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def last_books(books: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for b in books:
        out[b["token_id"]] = b
    return out


# Tests ------------------------------------------------------------------------------------------


async def test_seq_gap_resubscribes_and_resnapshots(
    base_settings: Settings, key: rsa.RSAPrivateKey
) -> None:
    venue = FakeKalshi(key.public_key(), first=40)
    async with fake_kalshi(venue) as port:
        settings = base_settings.model_copy(
            update={
                "kalshi_ws_url": f"ws://127.0.0.1:{port}{WS_PATH}",
                "kalshi_key_id": SecretStr("test-key-id"),
                "kalshi_private_key": pem(key),
            }
        )
        async with pipeline(settings) as (pipe, normalizer):
            source = KalshiSource(settings, pipe, tickers=venue.tickers)
            stop = asyncio.Event()
            task = asyncio.create_task(source.run(stop))
            await asyncio.wait_for(venue.done.wait(), 20)
            # every message the server sent: all recorded ones but the skipped delta, 12 snapshots
            total = len(venue.messages) - 1 + 12
            types = normalizer.stats.types
            await wait_for(lambda: types["orderbook_delta"] + types["orderbook_snapshot"] >= total)
            stop.set()
            stats = await asyncio.wait_for(task, 10)

    assert venue.handshakes == ["ok"]  # one connection, signature verified with the public key
    cmds = [
        (c["cmd"], c["params"].get("channels"), c["params"].get("sids")) for c in venue.commands
    ]
    book_sid = 1  # the first subscription the server granted
    assert cmds == [
        ("subscribe", ["orderbook_delta"], None),
        ("subscribe", ["trade"], None),
        ("subscribe", ["ticker"], None),
        ("subscribe", ["market_lifecycle_v2"], None),
        ("unsubscribe", None, [book_sid]),
        ("subscribe", ["orderbook_delta"], None),
    ]
    assert venue.commands[0]["params"]["market_tickers"] == venue.tickers
    assert stats["resubscribes"] == 1 and stats["reconnects"] == 0
    assert normalizer.stats.gaps == 1 and normalizer.stats.held == 2  # the 2 deltas after the gap

    books = await read_topic(settings, "books", "book")
    # 40 recorded messages, then (held) nothing, then 12 fresh snapshots and the remaining deltas.
    assert len(books) == 2 * (40 + 12 + len(venue.messages) - 43)
    final = last_books(books)
    for ticker in venue.tickers:
        for side in ("yes", "no"):
            got = final[f"ks:{ticker}:{side}"]
            assert {"bids": got["bids"], "asks": got["asks"]} == venue.truth.expected(ticker, side)
    trades = await read_topic(settings, "trades", "trade")
    assert [t["trade_id"] for t in trades] == [t["msg"]["trade_id"] for t in recorded_trades()]
    raw = await read_topic(settings, "raw", "raw_frame")
    assert len(raw) == pipe.frames and {r["channel"] for r in raw} == {"ws:kalshi"}
    assert await read_topic(settings, "dlq", "dead_letter") == []


async def test_dropped_connection_reconnects_and_rebuilds(
    base_settings: Settings, key: rsa.RSAPrivateKey
) -> None:
    venue = FakeKalshi(key.public_key(), drop_after=30)
    async with fake_kalshi(venue) as port:
        settings = base_settings.model_copy(
            update={
                "kalshi_ws_url": f"ws://127.0.0.1:{port}{WS_PATH}",
                "kalshi_key_id": SecretStr("test-key-id"),
                "kalshi_private_key": pem(key),
            }
        )
        async with pipeline(settings) as (pipe, normalizer):
            source = KalshiSource(settings, pipe, tickers=venue.tickers)
            stop = asyncio.Event()
            task = asyncio.create_task(source.run(stop))
            await asyncio.wait_for(venue.done.wait(), 20)
            await wait_for(
                lambda: normalizer.stats.types["orderbook_delta"] >= len(venue.messages) - 12
            )
            stop.set()
            stats = await asyncio.wait_for(task, 10)
    assert venue.handshakes == ["ok", "ok"] and stats["reconnects"] == 1
    books = await read_topic(settings, "books", "book")
    assert len(books) == 2 * (30 + 12 + len(venue.messages) - 30)
    final = last_books(books)
    for ticker in venue.tickers:
        got = final[f"ks:{ticker}:yes"]
        assert {"bids": got["bids"], "asks": got["asks"]} == venue.truth.expected(ticker, "yes")


async def test_wrong_key_is_refused_and_retried(
    base_settings: Settings, key: rsa.RSAPrivateKey
) -> None:
    venue = FakeKalshi(key.public_key())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with fake_kalshi(venue) as port:
        settings = base_settings.model_copy(
            update={
                "kalshi_ws_url": f"ws://127.0.0.1:{port}{WS_PATH}",
                "kalshi_key_id": SecretStr("test-key-id"),
                "kalshi_private_key": pem(other),
            }
        )
        async with pipeline(settings) as (pipe, _):
            source = KalshiSource(settings, pipe, tickers=venue.tickers)
            stop = asyncio.Event()
            task = asyncio.create_task(source.run(stop))
            await wait_for(lambda: len(venue.handshakes) >= 2)
            stop.set()
            stats = await asyncio.wait_for(task, 10)
    assert (
        set(venue.handshakes) == {"rejected"} and stats["reconnects"] >= 2 and stats["frames"] == 0
    )
    assert await read_topic(settings, "books", "book") == []


# REST -------------------------------------------------------------------------------------------


class FakeRest(BaseHTTPRequestHandler):
    """/events pages (cursor-paginated; one 429 first) and one order book, from real payloads."""

    events: list[dict[str, Any]] = []
    orderbook: dict[str, Any] = {}
    requests: list[tuple[str, dict[str, list[str]]]] = []
    throttled = False
    PAGE = 10

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        type(self).requests.append((url.path, query))
        if not type(self).throttled:
            type(self).throttled = True
            self._send(429, {"error": "too many requests"}, {"Retry-After": "0.05"})
        elif url.path.endswith("/events"):
            start = int(query.get("cursor", ["0"])[0])
            page = self.events[start : start + self.PAGE]
            nxt = start + self.PAGE
            self._send(200, {"events": page, "cursor": str(nxt) if nxt < len(self.events) else ""})
        elif url.path.endswith("/orderbook"):
            self._send(200, self.orderbook)
        else:
            self._send(404, {"error": "not found"})

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def rest_server() -> Iterator[str]:
    FakeRest.events = json.loads((REAL / "rest" / "cockpit_events_sports_nested.json").read_text())
    FakeRest.orderbook = json.loads(
        (REAL / "rest" / "cockpit_market_single_with_orderbook.json").read_text()
    )["orderbook"]
    FakeRest.requests, FakeRest.throttled = [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/trade-api/v2"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_rest_discovery_paginates_into_the_markets_topic(
    base_settings: Settings, rest_server: str
) -> None:
    settings = base_settings.model_copy(update={"kalshi_rest_url": rest_server})
    async with pipeline(settings) as (pipe, _):
        rest = KalshiRest(settings, pipe)
        try:
            tickers = await KalshiSource(settings, pipe, rest=rest).discover()
            await rest.orderbook("KXNCAAFGAME-26SEP19MSUND-ND")
        finally:
            await rest.aclose()
    events = FakeRest.events
    assert len(tickers) == 245 == len({m["ticker"] for e in events for m in e["markets"]})
    paths = [(p, q.get("cursor", [None])[0]) for p, q in FakeRest.requests]
    # one 429 retried, then 4 pages of 10/10/10/2 events, each passing the previous cursor back
    assert paths[:5] == [("/trade-api/v2/events", None)] * 2 + [
        ("/trade-api/v2/events", c) for c in ("10", "20", "30")
    ]
    assert FakeRest.requests[1][1]["with_nested_markets"] == ["true"]
    markets = await read_topic(settings, "markets", "market")
    assert len(markets) == 245 and {m["market_id"] for m in markets} == {f"ks:{t}" for t in tickers}
    books = await read_topic(settings, "books", "book")
    yes = next(b for b in books if b["token_id"].endswith(":yes"))
    assert yes["bids"][0] == {"price": 0.89, "size": 343.49} and yes["asks"][0] == {
        "price": 0.94,
        "size": 641.0,
    }


async def test_rediscovery_restreams_a_changed_market_set(
    base_settings: Settings, key: rsa.RSAPrivateKey, rest_server: str
) -> None:
    venue = FakeKalshi(key.public_key())
    async with fake_kalshi(venue) as port:
        settings = base_settings.model_copy(
            update={
                "kalshi_rest_url": rest_server,
                "kalshi_ws_url": f"ws://127.0.0.1:{port}{WS_PATH}",
                "kalshi_key_id": SecretStr("test-key-id"),
                "kalshi_private_key": pem(key),
                "kalshi_reconcile_s": 0.2,
            }
        )
        async with pipeline(settings) as (pipe, _):
            stop = asyncio.Event()
            task = asyncio.create_task(KalshiSource(settings, pipe).run(stop))
            await wait_for(lambda: len(venue.handshakes) >= 1)
            closed = FakeRest.events.pop()  # an event leaves the open set on the venue
            await wait_for(lambda: len(venue.handshakes) >= 2)
            stop.set()
            stats = await asyncio.wait_for(task, 10)
    subscribed = [
        c["params"]["market_tickers"]
        for c in venue.commands
        if c["cmd"] == "subscribe" and c["params"]["channels"] == ["orderbook_delta"]
    ]
    gone = {m["ticker"] for m in closed["markets"]}
    assert len(subscribed[0]) == 245 and gone <= set(subscribed[0])
    assert set(subscribed[-1]) == set(subscribed[0]) - gone
    assert stats["restreams"] == 1 and stats["markets"] == 245 - len(gone)
    # Every discovery pass republished the markets it found (the compacted topic keeps the last).
    markets = await read_topic(settings, "markets", "market")
    assert len(markets) >= 245 + 245 - len(gone)


async def test_rest_books_stand_in_while_the_stream_is_down(
    base_settings: Settings, key: rsa.RSAPrivateKey, rest_server: str
) -> None:
    venue = FakeKalshi(key.public_key())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # refused: WS down
    tickers = venue.tickers[:3]
    async with fake_kalshi(venue) as port:
        settings = base_settings.model_copy(
            update={
                "kalshi_rest_url": rest_server,
                "kalshi_ws_url": f"ws://127.0.0.1:{port}{WS_PATH}",
                "kalshi_key_id": SecretStr("test-key-id"),
                "kalshi_private_key": pem(other),
                "kalshi_fallback_after_s": 0.2,
            }
        )
        async with pipeline(settings) as (pipe, _):
            stop = asyncio.Event()
            task = asyncio.create_task(KalshiSource(settings, pipe, tickers=tickers).run(stop))
            polled = lambda: {p for p, _ in FakeRest.requests if p.endswith("/orderbook")}  # noqa: E731
            await wait_for(lambda: len(polled()) == 3)
            stop.set()
            await asyncio.wait_for(task, 10)
    assert polled() == {f"/trade-api/v2/markets/{t}/orderbook" for t in tickers}
    assert set(venue.handshakes) == {"rejected"}
    books = await read_topic(settings, "books", "book")
    yes = {b["token_id"]: b for b in books if b["token_id"].endswith(":yes")}
    assert set(yes) == {f"ks:{t}:yes" for t in tickers}
    for b in yes.values():  # the recorded REST book, served for every ticker
        assert b["bids"][0] == {"price": 0.89, "size": 343.49}
        assert b["asks"][0] == {"price": 0.94, "size": 641.0}

"""A Polymarket stand-in on 127.0.0.1 for the collector's network tests: an HTTP server (Gamma,
CLOB, Data API) and a WebSocket market channel, both serving real recorded payloads (cloned with
new ids where a test needs many markets). Per-test behaviour is set through attributes: how many
429s to answer first, when to drop a connection, which deltas to send after the snapshots."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "real" / "polymarket"


def real(rel: str) -> Any:
    path = REAL / rel
    if not path.is_file():
        pytest.skip(f"real fixtures absent ({REAL}): they live in ../shared, outside the repo")
    return json.loads(path.read_bytes())


def cloned_events(n: int) -> list[dict[str, Any]]:
    """``n`` copies of the real World Cup negRisk event (60 markets, 32 active), each with its
    own event id, condition ids and token ids."""
    base = real("gamma/polyarb_gamma_event_negrisk_world-cup-winner.json")
    events = []
    for k in range(n):
        ev = copy.deepcopy(base)
        ev["id"] = f"{base['id']}{k:03d}"
        for m in ev["markets"]:
            m["conditionId"] = f"{m['conditionId'][:-4]}{k:04x}"
            tokens = json.loads(m["clobTokenIds"])
            m["clobTokenIds"] = json.dumps([f"{t}{k:03d}" for t in tokens])
        events.append(ev)
    return events


class Venue:
    def __init__(self, events: list[dict[str, Any]], trades: list[dict[str, Any]] | None = None):
        self.events = events
        self.trades = trades or []
        self.page_size = max(1, (len(events) + 1) // 2)  # discovery takes two keyset pages
        self.book = real("ws/originalgoku_ws_book_sample.json")
        self.condition = {
            t: m["conditionId"]
            for e in events
            for m in e["markets"]
            for t in json.loads(m.get("clobTokenIds") or "[]")
        }
        self.fail_first: Counter[str] = Counter()  # path -> how many 429s to answer first
        self.requests: Counter[str] = Counter()
        self.keyset_params: list[dict[str, str]] = []
        self.books_requested: list[str] = []
        self.book_overrides: dict[str, dict[str, Any]] = {}  # token -> REST book answer
        self.subscriptions: list[list[str]] = []  # one per WebSocket connection
        self.ops: list[dict[str, Any]] = []
        self.pings = 0
        self.drop_first = 0  # close this many connections right after their snapshots
        self.after_snapshot: list[str] = []  # frames sent to every connection after snapshots
        self.http_url = ""
        self.ws_url = ""
        self._runner: web.AppRunner | None = None
        self._ws: Server | None = None

    def book_for(self, token: str, ts_ms: int | None = None) -> dict[str, Any]:
        book = dict(
            self.book, asset_id=token, market=self.condition.get(token, self.book["market"])
        )
        book["timestamp"] = str(ts_ms if ts_ms is not None else time.time_ns() // 1_000_000)
        return book

    # -- HTTP ----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests[path] += 1
        if self.fail_first[path] > 0:
            self.fail_first[path] -= 1
            return web.Response(status=429, text="rate limited", headers={"Retry-After": "0"})
        if path == "/events/keyset":
            self.keyset_params.append(dict(request.query))
            start = int(request.query.get("after_cursor", "0"))
            page = self.events[start : start + self.page_size]
            body: dict[str, Any] = {"events": page}
            if start + self.page_size < len(self.events):
                body["next_cursor"] = str(start + self.page_size)
            return web.json_response(body)
        if path == "/markets":
            wanted = set(request.query.getall("condition_ids", []))
            found = [m for e in self.events for m in e["markets"] if m["conditionId"] in wanted]
            return web.json_response(found)
        if path == "/books":
            tokens = [item["token_id"] for item in await request.json()]
            self.books_requested.extend(tokens)
            return web.json_response(
                [self.book_overrides.get(t) or self.book_for(t) for t in tokens]
            )
        if path == "/trades":
            q = request.query
            start, end = int(q["start"]), int(q["end"])
            offset, limit = int(q["offset"]), int(q["limit"])
            rows = [r for r in self.trades if start <= int(r["timestamp"]) <= end]
            return web.json_response(rows[offset : offset + limit])
        return web.Response(status=404)

    # -- WebSocket -----------------------------------------------------------------------------

    async def _serve_ws(self, conn: ServerConnection) -> None:
        first = json.loads(await conn.recv())
        assets = list(first["assets_ids"])
        self.subscriptions.append(assets)
        await conn.send(json.dumps([self.book_for(a) for a in assets]))
        if self.drop_first > 0:
            self.drop_first -= 1
            await conn.close()
            return
        for frame in self.after_snapshot:
            await conn.send(frame)
        async for message in conn:
            if message == "PING":
                self.pings += 1
                await conn.send("PONG")
            else:
                op = json.loads(message)
                self.ops.append(op)
                if op.get("operation") == "subscribe":  # snapshots of the joining assets
                    await conn.send(json.dumps([self.book_for(a) for a in op["assets_ids"]]))

    async def __aenter__(self) -> Venue:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.http_url = f"http://127.0.0.1:{port}"
        self._ws = await serve(self._serve_ws, "127.0.0.1", 0, max_size=None)
        ws_port = next(iter(self._ws.sockets)).getsockname()[1]
        self.ws_url = f"ws://127.0.0.1:{ws_port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            self._ws.close()
            await asyncio.wait_for(self._ws.wait_closed(), 5)
        if self._runner is not None:
            await self._runner.cleanup()

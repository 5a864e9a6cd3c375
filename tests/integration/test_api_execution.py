"""The execution routes over a real chDB warehouse filled through the real broker and the API's
in-process sink: intents, positions and PnL read back with exact figures; commands published to
the real intent_commands topic and read back from it. One app (and warehouse) for the module."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from execution_records import (
    DAY,
    FAILED,
    LIFECYCLES,
    N_POSITIONS,
    STATUS,
    publish,
    signal,
    signal_id,
)
from fastapi.testclient import TestClient

from marketpulse.api import create_app
from marketpulse.codec import codec
from marketpulse.execution.ids import intent_id_for
from marketpulse.kafka import create_topics
from marketpulse.settings import Settings
from marketpulse.warehouse import Warehouse, connect

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
BULK = 9
API_KEY = "exec-key-5678"
KEY = {"X-API-Key": API_KEY}
LOAD_DEADLINE_S = 60.0


def iid(name: str) -> str:
    return intent_id_for(signal_id(name))


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str) -> Settings:
    tag = uuid.uuid4().hex[:12]
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"x{tag}.",
        sink_group=f"xs{tag}",
        sink_batch_ms=100,
        api_key=API_KEY,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def wh(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    path = tmp_path_factory.mktemp("exec") / "wh"
    warehouse = connect(settings.model_copy(update={"warehouse_url": f"chdb://{path}"}))
    try:
        yield warehouse
    finally:
        warehouse.close()


def count(wh: Warehouse, table: str) -> int:
    return wh.query(f"SELECT count() AS n FROM {table} FINAL")[0]["n"]


@pytest.fixture(scope="module")
def client(settings: Settings, wh: Warehouse) -> Iterator[TestClient]:
    asyncio.run(create_topics(settings))
    _, distinct = asyncio.run(publish(settings, T0, bulk=BULK))
    with TestClient(create_app(settings, warehouse=wh, with_sink=True)) as c:
        deadline = time.monotonic() + LOAD_DEADLINE_S
        want = {"intents": distinct, "positions": N_POSITIONS, "signals": 7 + BULK}
        while (have := {t: count(wh, t) for t in want}) != want:
            assert time.monotonic() < deadline, f"the sink did not load {want}: {have}"
            time.sleep(0.1)
        yield c


def read_commands(settings: Settings, n: int) -> list[tuple[bytes, dict[str, Any]]]:
    async def read() -> list[tuple[bytes, dict[str, Any]]]:
        consumer = AIOKafkaConsumer(
            settings.topic("intent_commands"),
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        out: list[tuple[bytes, dict[str, Any]]] = []
        deadline = time.monotonic() + 20
        try:
            while len(out) < n and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=200)).values():
                    out += [(m.key, codec().decode("intent_command", m.value)) for m in msgs]
        finally:
            await consumer.stop()
        return out

    return asyncio.run(read())


def walk(client: TestClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items, cursor = [], None
    for _ in range(50):
        r = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


# ---- intents -------------------------------------------------------------------------------


def test_intents_show_each_current_state_newest_first(client: TestClient) -> None:
    items = walk(client, "/api/intents", limit=4)
    bulk = [i for i in items if i["rule_id"] == "ladder"]
    assert len(items) == len(LIFECYCLES) + BULK and len(bulk) == BULK
    # Bulk intents were created a day later, two per minute: ties broken by id, descending.
    newest_first = sorted(range(BULK), key=lambda i: (i // 2, iid(f"bulk{i}")), reverse=True)
    assert [i["intent_id"] for i in items[:BULK]] == [iid(f"bulk{i}") for i in newest_first]
    created_ms = [i["created"] for i in items]
    assert created_ms == sorted(created_ms, reverse=True)
    lifecycle = items[BULK:]
    assert [i["intent_id"] for i in lifecycle] == [iid(n) for n in reversed(LIFECYCLES)]
    assert {i["intent_id"]: i["status"] for i in lifecycle} == {
        iid(n): s for n, s in STATUS.items()
    }
    b = next(i for i in lifecycle if i["intent_id"] == iid("b"))
    assert (b["seq"], b["filled_size"], b["fee"], b["actor"]) == (2, 20.0, 0.25, "api:ana")
    assert b["created"] == "2026-01-01T00:01:00Z" and b["ts"] == "2026-01-01T00:30:00.001000Z"
    assert (b["rule_id"], b["level"], b["market_ids"], b["failed_checks"]) == (
        "complete_set",
        "P1",
        ["mk:m1"],
        [],
    )
    c = next(i for i in lifecycle if i["intent_id"] == iid("c"))
    assert (c["failed_checks"], c["reason"]) == (["total_exposure"], "total_exposure")
    a = next(i for i in lifecycle if i["intent_id"] == iid("a"))
    assert a["expires"] == "2026-01-01T00:10:00Z"


def test_intent_filters(client: TestClient) -> None:
    def ids(**params: Any) -> set[str]:
        return {i["intent_id"] for i in walk(client, "/api/intents", **params)}

    assert ids(status="approved") == {iid("f")}
    assert ids(status=["filled", "partially_filled"]) == {iid("b"), iid("d")}
    assert ids(rule="spike") == {iid(n) for n in "def"}
    assert ids(level="P2") == {iid(n) for n in "cdf"}
    assert ids(market="mk:m3") == {iid("d"), iid("e")}
    assert ids(rule="spike", level="P2", status="approved") == {iid("f")}
    # Created in [00:02, 00:04): c and d (e at 00:04 is excluded: until is exclusive).
    assert ids(since="2026-01-01T00:02:00Z", until=str(T0 + 4 * 60_000)) == {iid("c"), iid("d")}
    assert len(ids(since=str(T0 + DAY))) == BULK


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"status": "open"}, "status"),
        ({"level": "P9"}, "level"),
        ({"limit": 0}, "limit"),
        ({"since": "yesterday"}, "since: expected ISO 8601"),
        ({"since": "2026-01-01", "until": "2026-03-01"}, "more than 31 days"),
        ({"since": "2026-01-02", "until": "2026-01-01"}, "since must be before until"),
        ({"cursor": "bm9wZQ"}, "cursor is not a cursor of /api/intents"),
    ],
)
def test_intent_list_rejects_bad_input_clearly(
    client: TestClient, params: dict[str, Any], needle: str
) -> None:
    r = client.get("/api/intents", params=params)
    assert r.status_code == 422 and needle in json.dumps(r.json()["detail"]), r.text


def test_page_size_is_capped(client: TestClient) -> None:
    body = client.get("/api/intents", params={"limit": 10_000}).json()
    assert body["limit"] == 500 and body["next_cursor"] is None
    assert client.get("/api/positions", params={"limit": 10_000}).json()["limit"] == 500


def test_intent_detail_has_the_whole_lifecycle_once(client: TestClient) -> None:
    r = client.get(f"/api/intents/{iid('b')}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["intent"]["status"] == "filled"
    events = body["events"]
    # The filled event was delivered twice: it shows once.
    assert [(e["seq"], e["status"]) for e in events] == [
        (0, "suggested"),
        (1, "approved"),
        (2, "filled"),
    ]
    assert [c["name"] for c in events[0]["checks"]] == ["order_notional", "total_exposure"]
    assert events[0]["expires"] == "2026-01-01T00:11:00Z" and events[1]["expires"] is None
    assert events[0]["fills"] == [] and events[0]["actor"] == "risk"
    assert [leg["token_id"] for leg in events[0]["legs"]] == ["mk:m1:y", "mk:m1:n"]
    filled = events[2]
    assert filled["fills"] == [
        {
            "market_id": "mk:m1",
            "token_id": "mk:m1:y",
            "side": "BUY",
            "price": 0.5,
            "size": 10.0,
            "fee": 0.125,
            "levels": 1,
            "book_ts": "2026-01-01T00:29:59.995000Z",
        },
        {
            "market_id": "mk:m1",
            "token_id": "mk:m1:n",
            "side": "BUY",
            "price": 0.375,
            "size": 10.0,
            "fee": 0.125,
            "levels": 1,
            "book_ts": "2026-01-01T00:29:59.995000Z",
        },
    ]
    assert (filled["filled_size"], filled["fee"]) == (20.0, 0.25)
    rejected = client.get(f"/api/intents/{iid('c')}").json()["events"][1]
    assert rejected["checks"] == [{**c, "detail": c.get("detail", "")} for c in FAILED]


def test_unknown_intent_is_404(client: TestClient) -> None:
    r = client.get("/api/intents/int-nope")
    assert r.status_code == 404 and "int-nope" in r.json()["detail"]


# ---- positions and PnL ---------------------------------------------------------------------


def test_positions_default_to_open_with_the_latest_version(client: TestClient) -> None:
    items = walk(client, "/api/positions", limit=2)
    assert [p["position_id"] for p in items] == [
        "complete_set|mk:m1:n",
        "complete_set|mk:m1:y",
        "spike|mk:m4:y",
    ]
    y = items[1]
    assert (y["unrealised_pnl"], y["mark_price"], y["ts"]) == (1.0, 0.6, "2026-01-02T00:00:00Z")
    short = items[2]
    assert (short["size"], short["cost"], short["avg_price"]) == (-8.0, -4.0, 0.5)


def test_position_filters(client: TestClient) -> None:
    def ids(**params: Any) -> list[str]:
        return [p["position_id"] for p in walk(client, "/api/positions", **params)]

    assert ids(status=["closed", "settled"]) == ["spike|mk:m3:y", "spike|mk:m5:y"]
    assert ids(status=["open", "closed", "settled"], rule="spike") == [
        "spike|mk:m3:y",
        "spike|mk:m4:y",
        "spike|mk:m5:y",
    ]
    assert ids(market="mk:m1") == ["complete_set|mk:m1:n", "complete_set|mk:m1:y"]
    assert client.get("/api/positions", params={"status": "gone"}).status_code == 422
    settled = walk(client, "/api/positions", status="settled")[0]
    assert settled["mark_price"] is None


def test_pnl_per_rule_and_total_is_exact(client: TestClient) -> None:
    r = client.get("/api/pnl")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rules"] == [
        {
            "rule_id": "complete_set",
            "realised_pnl": 0.0,
            "unrealised_pnl": 0.75,
            "total_pnl": 0.75,
            "fees": 0.375,
            "open_exposure": 8.75,
            "open_positions": 2,
            "positions": 2,
        },
        {
            "rule_id": "spike",
            "realised_pnl": 1.0,
            "unrealised_pnl": 0.5,
            "total_pnl": 1.5,
            "fees": 0.8125,
            "open_exposure": 4.0,
            "open_positions": 1,
            "positions": 3,
        },
    ]
    assert body["total"] == {
        "realised_pnl": 1.0,
        "unrealised_pnl": 1.25,
        "total_pnl": 2.25,
        "fees": 1.1875,
        "open_exposure": 12.75,
        "open_positions": 3,
        "positions": 5,
    }
    assert body["days"] is None
    only = client.get("/api/pnl", params={"rule": "spike"}).json()
    assert [r["rule_id"] for r in only["rules"]] == ["spike"] and only["total"]["positions"] == 3


def test_pnl_by_day_is_as_of_each_day_end(client: TestClient) -> None:
    r = client.get("/api/pnl", params={"by": "day", "since": "2026-01-01", "until": "2026-01-03"})
    assert r.status_code == 200, r.text
    days = [
        (d["day"], d["rule_id"], d["realised_pnl"], d["unrealised_pnl"]) for d in r.json()["days"]
    ]
    # complete_set|mk:m1:y was re-marked on day 2 (0.5 → 1.0); the others carry over.
    assert days == [
        ("2026-01-01", "complete_set", 0.0, 0.25),
        ("2026-01-01", "spike", 1.0, 0.5),
        ("2026-01-02", "complete_set", 0.0, 0.75),
        ("2026-01-02", "spike", 1.0, 0.5),
    ]
    bad = client.get("/api/pnl", params={"by": "day"})
    assert bad.status_code == 422 and "needs since and until" in bad.json()["detail"]
    stray = client.get("/api/pnl", params={"since": "2026-01-01"})
    assert stray.status_code == 422 and "by=day only" in stray.json()["detail"]
    long = client.get(
        "/api/pnl", params={"by": "day", "since": "2025-01-01", "until": "2026-01-01"}
    )
    assert long.status_code == 422


# ---- commands ------------------------------------------------------------------------------

MUTATIONS = [
    ("/api/intents", {"signal_id": "sig-new"}),
    (f"/api/intents/{intent_id_for('sig-a')}/approve", {}),
    (f"/api/intents/{intent_id_for('sig-a')}/reject", {}),
    (f"/api/intents/{intent_id_for('sig-f')}/cancel", {}),
    ("/api/risk/kill", {}),
    ("/api/risk/resume", {}),
]


@pytest.mark.parametrize(("path", "body"), MUTATIONS, ids=[p for p, _ in MUTATIONS])
def test_every_mutating_route_needs_the_key(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    missing = client.post(path, json=body)
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["detail"]
    assert client.post(path, json=body, headers={"X-API-Key": "guess"}).status_code == 401


def test_commands_are_validated_checked_against_state_and_published(
    client: TestClient, settings: Settings
) -> None:
    # Refused before anything is published.
    r = client.post("/api/intents", json={"signal_id": "sig-nope"}, headers=KEY)
    assert r.status_code == 404 and "sig-nope" in r.json()["detail"]
    r = client.post("/api/intents", json={"signal_id": "sig-a"}, headers=KEY)
    assert r.status_code == 409 and f"already has intent {iid('a')} (suggested)" in r.text
    assert client.post("/api/intents", json={}, headers=KEY).status_code == 422
    extra = client.post("/api/intents", json={"signal_id": "sig-x", "size": 5}, headers=KEY)
    assert extra.status_code == 422
    r = client.post(f"/api/intents/{iid('b')}/approve", headers=KEY)
    assert r.status_code == 409 and "it is filled" in r.json()["detail"]
    assert client.post(f"/api/intents/{iid('c')}/cancel", headers=KEY).status_code == 409
    assert client.post(f"/api/intents/{iid('e')}/cancel", headers=KEY).status_code == 409
    assert client.post(f"/api/intents/{iid('f')}/reject", headers=KEY).status_code == 409
    assert client.post("/api/intents/int-nope/approve", headers=KEY).status_code == 404
    bad_by = client.post(f"/api/intents/{iid('a')}/approve", json={"by": "a b"}, headers=KEY)
    assert bad_by.status_code == 422 and "by" in bad_by.text
    long = client.post("/api/risk/kill", json={"reason": "x" * 501}, headers=KEY)
    assert long.status_code == 422

    # Accepted: each becomes one command on the topic, in order (one partition).
    accepted = [
        client.post("/api/intents", json={"signal_id": "sig-new", "by": "ana"}, headers=KEY),
        client.post(
            f"/api/intents/{iid('a')}/approve", json={"by": "bo", "reason": "ok"}, headers=KEY
        ),
        client.post(f"/api/intents/{iid('f')}/cancel", headers=KEY),
        client.post(f"/api/intents/{iid('d')}/cancel", headers=KEY),  # partially filled
        client.post("/api/risk/kill", json={"reason": "venue down"}, headers=KEY),
        client.post("/api/risk/resume", headers=KEY),
    ]
    assert [r.status_code for r in accepted] == [202] * 6, [r.text for r in accepted]
    bodies = [r.json() for r in accepted]
    assert bodies[0]["intent_id"] == intent_id_for("sig-new")
    assert [b["offset"] for b in bodies] == [0, 1, 2, 3, 4, 5]
    assert {b["topic"] for b in bodies} == {settings.topic("intent_commands")}

    commands = read_commands(settings, 6)
    assert [(k.decode(), c["action"]) for k, c in commands] == [
        (intent_id_for("sig-new"), "create"),
        (iid("a"), "approve"),
        (iid("f"), "cancel"),
        (iid("d"), "cancel"),
        ("risk", "kill"),
        ("risk", "resume"),
    ]
    assert [c["command_id"] for _, c in commands] == [b["command_id"] for b in bodies]
    assert len({c["command_id"] for _, c in commands}) == 6
    create, approve, cancel, _, kill, resume = (c for _, c in commands)
    assert (create["signal_id"], create["actor"]) == ("sig-new", "api:ana")
    # The signal travels whole, as the stage would have read it from the signals topic.
    sent = codec().decode("signal", codec().encode("signal", signal("new", T0)))
    assert json.loads(create["signal_json"]) == sent
    assert (approve["intent_id"], approve["signal_id"]) == (iid("a"), "sig-a")
    assert (approve["actor"], approve["reason"]) == ("api:bo", "ok")
    assert (cancel["actor"], cancel["signal_json"]) == ("api", "")
    assert (kill["intent_id"], kill["reason"], resume["reason"]) == ("", "venue down", "")
    now = time.time() * 1000
    assert all(now - 60_000 < c["ts_ms"] <= now for _, c in commands)


def test_the_routes_are_documented(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    approve = paths["/api/intents/{intent_id}/approve"]["post"]
    assert {"202", "401", "404", "409", "422"} <= set(approve["responses"])
    assert approve["security"] == [{"APIKeyHeader": []}]
    assert "security" not in paths["/api/intents"]["get"]
    for path in ("/api/positions", "/api/pnl", "/api/intents/{intent_id}"):
        assert paths[path]["get"]["description"], path

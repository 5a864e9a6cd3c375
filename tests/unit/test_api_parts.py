"""The API's pieces that need neither a broker nor ClickHouse: the API-key dependency, the
server URL of the warehouse, the live stream's filters and framing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from marketpulse.api.auth import API_KEY_HEADER, key_matches, require_api_key
from marketpulse.api.live import StreamSlots, matches, sse
from marketpulse.errors import ConfigError
from marketpulse.settings import Settings
from marketpulse.warehouse import parse_url, server_options

# ---- the API key ---------------------------------------------------------------------------


@pytest.fixture
def guarded() -> TestClient:
    app = FastAPI()
    app.state.settings = Settings(api_key="s3cret-key", _env_file=None)  # type: ignore[arg-type]

    @app.post("/thing", dependencies=[Depends(require_api_key)])
    def thing() -> dict[str, bool]:
        return {"ok": True}

    return TestClient(app)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({API_KEY_HEADER: ""}, 401),
        ({API_KEY_HEADER: "s3cret-ke"}, 401),
        ({API_KEY_HEADER: "s3cret-key "}, 401),
        ({API_KEY_HEADER: "S3CRET-KEY"}, 401),
        ({API_KEY_HEADER: "s3cret-key"}, 200),
        ({"x-api-key": "s3cret-key"}, 200),  # header names are case-insensitive
    ],
)
def test_only_the_exact_key_passes(guarded: TestClient, headers: dict, status: int) -> None:
    r = guarded.post("/thing", headers=headers)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["WWW-Authenticate"] == API_KEY_HEADER


def test_a_missing_key_says_which_header() -> None:
    app = FastAPI()
    app.state.settings = Settings(api_key="k", _env_file=None)  # type: ignore[arg-type]
    app.post("/x", dependencies=[Depends(require_api_key)])(lambda: None)
    r = TestClient(app).post("/x")
    assert r.status_code == 401 and "missing X-API-Key" in r.json()["detail"]


def test_keys_compare_in_constant_time_and_take_any_text() -> None:
    assert key_matches("clé-✓", "clé-✓")
    assert not key_matches("clé", "cle")


def test_the_openapi_document_names_the_header(guarded: TestClient) -> None:
    schemes = guarded.get("/openapi.json").json()["components"]["securitySchemes"]
    assert [s["name"] for s in schemes.values()] == [API_KEY_HEADER]


# ---- the warehouse server URL --------------------------------------------------------------


def test_server_url_becomes_client_options() -> None:
    opts = server_options(parse_url("https://ana:p%40ss@ch.example.org:9440"))
    assert (opts["host"], opts["port"], opts["secure"]) == ("ch.example.org", 9440, True)
    assert (opts["username"], opts["password"]) == ("ana", "p@ss")
    assert opts["autogenerate_session_id"] is False  # one client, many threads


def test_server_url_defaults() -> None:
    opts = server_options(parse_url("http://clickhouse"))
    assert (opts["port"], opts["secure"], opts["username"], opts["password"]) == (
        8123,
        False,
        "default",
        "",
    )
    assert server_options(parse_url("https://ch"))["port"] == 8443


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://ch:port", "port is not a number"),
        ("http://:8123", "no host"),
        ("http://ch:8123/marketpulse", "no path or query"),
        ("http://ch:8123?database=x", "no path or query"),
    ],
)
def test_bad_server_urls_are_config_errors(url: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        server_options(parse_url(url))


def test_a_server_url_error_never_shows_the_password() -> None:
    with pytest.raises(ConfigError) as err:
        server_options(parse_url("http://u:hunter2@ch:8123/db"))
    assert "hunter2" not in str(err.value)


def test_chdb_urls_are_not_server_urls(tmp_path: Path) -> None:
    assert parse_url(f"chdb://{tmp_path}").embedded


# ---- the live stream -----------------------------------------------------------------------

SIGNAL = {"signal_id": "s1", "rule_id": "spike", "level": "P1", "market_ids": ["a", "b"]}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, True),
        ({"rule": "spike"}, True),
        ({"rule": "whale"}, False),
        ({"level": "P2"}, False),
        ({"market": "b", "level": "P1"}, True),
        ({"market": "c"}, False),
    ],
)
def test_stream_filters_match_the_list_filters(filters: dict, expected: bool) -> None:
    full = {"rule": None, "level": None, "market": None, **filters}
    assert matches(SIGNAL, **full) is expected


def test_an_event_is_one_sse_frame() -> None:
    frame = sse({**SIGNAL, "summary": "two\nlines"}, event="signal", event_id="s1")
    lines = frame.split("\n")
    assert lines[:2] == ["event: signal", "id: s1"]
    assert json.loads(lines[2].removeprefix("data: "))["summary"] == "two\nlines"
    assert frame.endswith("\n\n") and frame.count("\n") == 4


def test_stream_slots_are_capped() -> None:
    slots = StreamSlots(2)
    assert slots.acquire() and slots.acquire() and not slots.acquire()
    slots.release()
    assert slots.acquire()

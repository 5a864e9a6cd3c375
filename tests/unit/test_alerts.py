"""Alerts without a broker: config and routing, the Block Kit payload, the retry schedule against
a real HTTP server on loopback standing in for Slack, de-dup and cooldown decisions."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from marketpulse.alerts import format as fmt
from marketpulse.alerts.channels import build
from marketpulse.alerts.config import ChannelConfig, load_config, parse_config
from marketpulse.alerts.delivery import RetryPolicy, deliver
from marketpulse.alerts.service import Alerter
from marketpulse.errors import ConfigError
from marketpulse.settings import Settings
from slack_standin import OK, Reply, SlackStandIn, hang

GRAFANA = "https://grafana.example.org"


def signal(**over: Any) -> dict[str, Any]:
    base = {
        "signal_id": "a1b2c3d4e5f6a1b2c3d4e5f6",
        "rule_id": "complete_set",
        "rule_version": 1,
        "level": "P1",
        "subject": "pm:ev-42",
        "event_key": "pm:ev-42",
        "market_ids": ["pm:will-it-rain", "ks:KXRAIN-26JAN01"],
        "ts_ms": 1_767_225_600_000,
        "trigger_recv_ms": 1_767_225_600_050,
        "edge_bps": 508.25,
        "edge_score": 9.5,
        "size": 200.0,
        "notional": 188.0,
        "legs": [
            {
                "market_id": "pm:will-it-rain",
                "token_id": "t-yes",
                "side": "BUY",
                "price": 0.41,
                "size": 200.0,
            },
            {
                "market_id": "ks:KXRAIN-26JAN01",
                "token_id": "t-no",
                "side": "BUY",
                "price": 0.53,
                "size": 200.0,
            },
        ],
        "evidence": {
            "direction": "buy",
            "set": "binary",
            "sum_best_asks": "0.94",
            "fees": "0.12",
            "leg0.book_seq": "17",
        },
        "summary": "binary market: buy every outcome, Σ asks 0.94",
    }
    return {**base, **over}


# ---- config ------------------------------------------------------------------------------


ROUTES = {
    "channels": {
        "p1": {"type": "slack"},
        "all": {"type": "slack"},
        "tg": {"type": "telegram", "chat_id": "-100"},
    },
    "routes": [
        {"levels": ["P1"], "channels": ["p1", "all"], "cooldown_s": 30},
        {"rules": ["complete_set"], "channels": ["all"]},
    ],
}


def test_routes_pick_the_first_match_by_level_and_rule() -> None:
    cfg = parse_config(ROUTES, {"p1": SecretStr("http://x/secret")})
    assert cfg.route_for("complete_set", "P1").channels == ("p1", "all")  # type: ignore[union-attr]
    assert cfg.route_for("complete_set", "P3").channels == ("all",)  # type: ignore[union-attr]
    assert cfg.route_for("other_rule", "P2") is None
    assert not cfg.channels["p1"].dry_run and cfg.channels["all"].dry_run
    assert "secret" not in repr(cfg)


@pytest.mark.parametrize(
    ("raw", "webhooks", "message"),
    [
        ({"channels": {"a": {"type": "email"}}, "routes": []}, {}, "type must be one of"),
        ({"channels": {"a": {"type": "slack"}}, "routes": []}, {}, "no routes"),
        ({"channels": {"a": {"type": "slack"}}, "routes": [{"channels": ["b"]}]}, {}, "unknown"),
        ({"channels": {"a": {"type": "telegram"}}, "routes": []}, {}, "chat_id"),
        (
            {"channels": {"a": {"type": "slack"}}, "routes": [{"channels": ["a"]}]},
            {"zz": SecretStr("u")},
            "unknown channel",
        ),
    ],
)
def test_bad_routes_are_clear_config_errors(raw: dict, webhooks: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, webhooks)


def test_the_packaged_routes_file_loads_as_a_dry_run() -> None:
    cfg = load_config(Settings())
    assert cfg.channels["slack"].dry_run
    assert cfg.route_for("complete_set", "P2") is not None


# ---- format ------------------------------------------------------------------------------


def _texts(blocks: list[dict[str, Any]]) -> str:
    out = []
    for b in blocks:
        if "text" in b:
            out.append(b["text"]["text"])
        out += [f["text"] for f in b.get("fields", []) + b.get("elements", [])]
    return "\n".join(out)


def test_block_kit_message_says_everything_needed_to_act() -> None:
    msg = fmt.slack_message(signal(), GRAFANA)
    assert msg["text"] == "[P1] complete_set pm:ev-42: edge 508.2 bps, size 200, notional $188.00"
    assert msg["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "P1 complete_set · pm:ev-42", "emoji": True},
    }
    text = _texts(msg["blocks"])
    assert "*Edge*\n508.2 bps" in text and "*Executable size*\n200 per leg" in text
    assert "<https://polymarket.com/market/will-it-rain|Polymarket>" in text
    assert "<https://kalshi.com/markets/KXRAIN-26JAN01|Kalshi>" in text
    assert f"<{GRAFANA}/d/mpx-market?var-market=pm%3Awill-it-rain|Grafana>" in text
    assert "BUY 200 x `t-yes` @ 0.41 (pm:will-it-rain)" in text
    assert "direction: buy" in text and "sum_best_asks: 0.94" in text
    assert "leg0.book_seq" not in text  # only the key evidence
    assert "a1b2c3d4e5f6a1b2c3d4e5f6" in text and "2026-01-01 00:00:00.000 UTC" in text
    assert len(msg["blocks"]) <= 50
    assert all(b["type"] in {"header", "section", "context"} for b in msg["blocks"])


def test_mock_markets_get_a_grafana_link_but_no_venue_link() -> None:
    text = _texts(fmt.slack_message(signal(market_ids=["mk:m1"]), GRAFANA)["blocks"])
    assert "Grafana>" in text and "Polymarket" not in text


def test_telegram_text_escapes_html() -> None:
    text = fmt.telegram_text(signal(summary="a <b> & c"), GRAFANA)
    assert "a &lt;b&gt; &amp; c" in text and text.startswith("<b>P1 complete_set</b>")


# ---- delivery: the retry schedule against a real server --------------------------------------


def _channel(url: str | None, client: httpx.AsyncClient, kind: str = "slack") -> Any:
    return build(
        ChannelConfig("c", kind, SecretStr(url) if url else None, "1"),  # type: ignore[arg-type]
        client,
        GRAFANA,
    )


NO_JITTER = RetryPolicy(base_s=0.05, max_s=10, give_up_s=30, jitter=lambda: 1.0)


async def test_500s_back_off_exponentially_and_429_waits_for_retry_after() -> None:
    with SlackStandIn() as slack:
        slack.script(Reply(500), Reply(503), Reply(429, retry_after=1), OK)
        async with httpx.AsyncClient(timeout=2) as client:
            result = await deliver(_channel(slack.url, client), {"text": "x"}, NO_JITTER)
        assert result.ok and result.attempts == 4
        assert result.waits == [0.05, 0.1, 1.0]
        gaps = [b.at - a.at for a, b in zip(slack.received, slack.received[1:], strict=False)]
        assert gaps[0] >= 0.05 and gaps[1] >= 0.1
        assert gaps[2] >= 1.0  # Retry-After honoured, not our shorter backoff
        assert [r.status for r in slack.received] == [500, 503, 429, 200]


async def test_jitter_stays_within_half_to_full_backoff() -> None:
    policy = RetryPolicy(base_s=1.0, max_s=8.0)
    for retry in range(1, 8):
        full = min(8.0, 2 ** (retry - 1))
        assert all(full / 2 <= policy.delay(retry, None) <= full for _ in range(50))


async def test_a_hang_times_out_and_is_retried() -> None:
    with SlackStandIn() as slack:
        slack.script(hang(5), OK)
        async with httpx.AsyncClient(timeout=0.3) as client:
            started = time.monotonic()
            result = await deliver(_channel(slack.url, client), {"text": "x"}, NO_JITTER)
        assert result.ok and result.attempts == 2
        assert time.monotonic() - started < 3


async def test_a_4xx_is_given_up_at_once_and_a_long_outage_after_the_deadline() -> None:
    with SlackStandIn() as slack:
        slack.script(Reply(404))
        async with httpx.AsyncClient(timeout=1) as client:
            gone = await deliver(_channel(slack.url, client), {"text": "x"}, NO_JITTER)
            slack.default = Reply(500)
            policy = RetryPolicy(base_s=0.05, max_s=0.1, give_up_s=0.5, jitter=lambda: 1.0)
            down = await deliver(_channel(slack.url, client), {"text": "x"}, policy)
    assert (gone.ok, gone.attempts, gone.reason) == (False, 1, "http_404")
    assert not down.ok and down.reason == "gave_up_http_500" and 3 <= down.attempts <= 8


async def test_webhook_urls_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "http://127.0.0.1:9/services/T/B/very-secret-token"
    async with httpx.AsyncClient(timeout=0.5) as client:
        ch = _channel(secret, client)
        policy = RetryPolicy(base_s=0.01, max_s=0.01, give_up_s=0.05)
        result = await deliver(ch, ch.render(signal()), policy)
    assert not result.ok and result.reason.startswith("gave_up_transport")
    assert "very-secret-token" not in caplog.text
    assert "very-secret-token" not in repr(ch.__dict__.get("_config"))


async def test_no_webhook_is_a_dry_run_that_logs_the_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with httpx.AsyncClient() as client:
        ch = _channel(None, client)
        result = await deliver(ch, ch.render(signal()), NO_JITTER)
    assert result.ok and "dry run: channel c would send" in caplog.text
    assert "complete_set" in caplog.text


# ---- decisions: de-dup, cooldown, digest ----------------------------------------------------


async def _alerter(routes: dict[str, Any]) -> Alerter:
    settings = Settings(alerts_webhooks={})
    return Alerter(settings, parse_config(routes, {}))


async def test_seen_ids_and_cooldowns_are_suppressed_per_channel() -> None:
    alerter = await _alerter(ROUTES)  # every channel a dry run: decisions stay in memory
    try:
        first = signal()
        alerter.state._remember({**first, "channel": "p1", "outcome": "sent"})
        later = signal(signal_id="s2", ts_ms=1_767_225_600_000 + 10_000)
        much_later = signal(signal_id="s3", ts_ms=1_767_225_600_000 + 31_000)
        plans = alerter.plan([first, later, much_later])
        # p1: the first was already sent, and s2 is 10 s after it (cooldown 30 s).
        assert [s["signal_id"] for s in plans["p1"].singles] == ["s3"]
        assert [(s["signal_id"], why) for s, why in plans["p1"].suppressed] == [
            ("a1b2c3d4e5f6a1b2c3d4e5f6", "seen"),
            ("s2", "cooldown"),
        ]
        for channel, plan in plans.items():
            await alerter._execute(alerter.channels[channel], plan)
        # all: nothing sent before this poll; the first one sent starts the cooldown for s2.
        outcomes = {k: v for k, v in alerter.state.decided.items() if k.endswith("|all")}
        assert outcomes == {
            "a1b2c3d4e5f6a1b2c3d4e5f6|all": "sent",
            "s2|all": "suppressed",
            "s3|all": "sent",
        }
    finally:
        await alerter.close()


async def test_a_burst_of_one_rule_becomes_a_digest() -> None:
    routes = {
        "channels": {"all": {"type": "slack"}},
        "routes": [{"channels": ["all"], "digest": {"min_signals": 3}}],
    }
    alerter = await _alerter(routes)
    try:
        burst = [signal(signal_id=f"s{i}", subject=f"pm:e{i}") for i in range(4)]
        other = signal(signal_id="o", rule_id="other")
        bursts, singles = alerter.plan([*burst, other])["all"].digests()
        assert [[s["signal_id"] for s in b] for b in bursts] == [["s0", "s1", "s2", "s3"]]
        assert [s["signal_id"] for s in singles] == ["o"]
        digest = fmt.slack_digest(bursts[0], GRAFANA)
        assert digest["text"] == "4 complete_set signals, best edge 508.2 bps"
    finally:
        await alerter.close()


async def test_telegram_and_generic_webhooks_post_their_own_bodies() -> None:
    with SlackStandIn() as server:
        async with httpx.AsyncClient(timeout=2) as client:
            for kind in ("telegram", "webhook"):
                ch = _channel(server.url, client, kind)
                assert (await deliver(ch, ch.render(signal()), NO_JITTER)).ok
        telegram, webhook = server.payloads()
    assert telegram["chat_id"] == "1" and telegram["parse_mode"] == "HTML"
    assert "<b>P1 complete_set</b> pm:ev-42" in telegram["text"]
    assert 'href="https://polymarket.com/market/will-it-rain"' in telegram["text"]
    assert webhook["type"] == "signal" and webhook["signal"]["signal_id"] == signal()["signal_id"]
    assert webhook["links"]["pm:will-it-rain"] == {
        "grafana": f"{GRAFANA}/d/mpx-market?var-market=pm%3Awill-it-rain",
        "venue": "https://polymarket.com/market/will-it-rain",
    }

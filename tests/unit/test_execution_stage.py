"""The execution stage's state machine: signals to intents through sizing and risk, auto and
semi_auto approval, paper fills, expiry, commands, settlement, and a rebuild from its own output
that equals the live state."""

from __future__ import annotations

import json
from typing import Any

import pytest

from marketpulse.execution.books import BookStore
from marketpulse.execution.config import ExecutionConfig, parse_config
from marketpulse.execution.ids import intent_id_for
from marketpulse.execution.stage import Stage

T0 = 1_767_225_600_000
ID = {f"sig{n}": intent_id_for(f"sig{n}") for n in range(1, 5)}
FEE = {"model": "polymarket", "rate": 0.02, "exponent": 1.0}


def market(mid: str, tokens: tuple[str, str], **over: Any) -> dict[str, Any]:
    rec = {
        "market_id": mid,
        "event_id": "pm:e1",
        "venue": "pm",
        "outcomes": [{"name": "Yes", "token_id": tokens[0]}, {"name": "No", "token_id": tokens[1]}],
        "status": "active",
        "tick_size": 0.01,
        "min_size": 1.0,
        "fee": FEE,
        "winning_token_id": None,
        "updated_ms": T0,
    }
    rec.update(over)
    return rec


def book(
    token: str, ts: int, asks: list[tuple[float, float]], bids: list[tuple[float, float]] = ()
) -> dict[str, Any]:
    return {
        "event_key": "pm:e1",
        "market_id": "pm:m1",
        "token_id": token,
        "ts_ms": ts,
        "asks": [{"price": p, "size": s} for p, s in asks],
        "bids": [{"price": p, "size": s} for p, s in bids],
    }


def signal(n: int = 1, ts: int = T0 + 1000, **over: Any) -> dict[str, Any]:
    sig = {
        "signal_id": f"sig{n}",
        "rule_id": "complete_set",
        "rule_version": 1,
        "level": "P1",
        "subject": "pm:m1",
        "event_key": "pm:e1",
        "market_ids": ["pm:m1"],
        "ts_ms": ts,
        "trigger_recv_ms": ts,
        "edge_bps": 400.0,
        "edge_score": 4.0,
        "size": 100.0,
        "notional": 0.0,
        "legs": [
            {"market_id": "pm:m1", "token_id": "yes", "side": "BUY", "price": 0.45, "size": 100.0},
            {"market_id": "pm:m1", "token_id": "no", "side": "BUY", "price": 0.50, "size": 100.0},
        ],
        "evidence": {},
        "summary": "",
    }
    sig.update(over)
    return sig


def config(**over: Any) -> ExecutionConfig:
    raw: dict[str, Any] = {
        "approval": "auto",
        "sizing": {"method": "fixed", "fixed_notional": 95.0},
        "orders": {"expiry_ms": 10_000, "approval_timeout_ms": 60_000, "mark_interval_ms": 0},
    }
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_config(raw)


def make_stage(cfg: ExecutionConfig | None = None, depth: float = 1000) -> tuple[Stage, BookStore]:
    store = BookStore(decode=lambda b: json.loads(b))
    store.watch("pm:e1")
    store.add(book("yes", T0, [(0.45, depth)], [(0.44, 500)]))
    store.add(book("no", T0, [(0.50, depth)], [(0.49, 500)]))
    stage = Stage(cfg or config(), store.at)
    stage.on_market(market("pm:m1", ("yes", "no")))
    return stage, store


def statuses(events: list[dict[str, Any]]) -> list[str]:
    return [e["status"] for e in events]


def test_auto_mode_suggests_approves_and_fills_against_the_book() -> None:
    stage, _ = make_stage()
    out = stage.on_signal(signal())
    assert statuses(out.intents) == ["suggested", "approved", "filled"]
    assert [e["seq"] for e in out.intents] == [0, 1, 2]
    assert {e["intent_id"] for e in out.intents} == {intent_id_for("sig1")}
    filled = out.intents[-1]
    assert [leg["size"] for leg in filled["legs"]] == [100.0, 100.0]  # 95 / 0.95
    assert filled["filled_size"] == 200.0
    assert [f["price"] for f in filled["fills"]] == [0.45, 0.50]
    assert filled["fee"] == pytest.approx(100 * 0.02 * (0.45 * 0.55 + 0.5 * 0.5))
    assert all(c["passed"] for c in filled["checks"]) and len(filled["checks"]) == 10
    assert filled["actor"] == "auto" and filled["ts_ms"] == T0 + 1000
    assert {p["position_id"] for p in out.positions} == {"complete_set|yes", "complete_set|no"}
    assert all(p["status"] == "open" and p["size"] == 100 for p in out.positions)


def test_a_redelivered_signal_makes_no_second_intent() -> None:
    stage, _ = make_stage()
    stage.on_signal(signal())
    again = stage.on_signal(signal())
    assert again.intents == [] and again.ignored == "duplicate"


def test_closed_intents_are_forgotten_after_the_horizon_and_their_signals_stay_done() -> None:
    day = 86_400_000
    stage, store = make_stage(config(orders={"forget_closed_ms": day, "expiry_ms": 10 * day}))
    assert statuses(stage.on_signal(signal(1)).intents)[-1] == "filled"  # closed at T0+1s
    store.add(book("yes", T0 + 2000, [(0.45, 10)], [(0.44, 500)]))  # too thin: partial fill
    assert statuses(stage.on_signal(signal(2, ts=T0 + 2000)).intents)[-1] == "partially_filled"
    stage.advance(T0 + 1000 + day)  # exactly the horizon: nothing forgotten yet
    assert set(stage.intents) == {ID["sig1"], ID["sig2"]}
    stage.advance(T0 + 1001 + day)
    assert set(stage.intents) == {ID["sig2"]}  # open intents are kept, however old
    assert stage.forgotten == 1
    # sig1 redelivered (a rewind): not a second intent, whether by signal or by a create
    assert stage.on_signal(signal(1)).ignored == "stale"
    create = {"action": "create", "signal_json": json.dumps(signal(1)), "ts_ms": T0 + 2 * day}
    assert stage.on_command(create).ignored == "stale"
    assert not stage.is_new(signal(1)) and stage.is_new(signal(3, ts=T0 + 2 * day))
    # sig2 expires (closes) at T0+2s+10 days and is forgotten a day later
    stage.advance(T0 + 2000 + 10 * day)
    assert stage.intents[ID["sig2"]]["status"] == "expired"
    stage.advance(T0 + 2001 + 11 * day)
    assert stage.intents == {} and stage.forgotten == 2


def test_a_rebuild_forgets_what_closed_before_the_horizon() -> None:
    day = 86_400_000
    live, store = make_stage(config(orders={"forget_closed_ms": day}))
    events = live.on_signal(signal(1)).intents + live.on_signal(signal(2, ts=T0 + day)).intents
    rebuilt = Stage(live.config, store.at)
    for e in events:
        rebuilt.restore(e)
    assert rebuilt.forget_closed() == 0  # the clock (T0 + 1 day) is not past sig1's horizon
    events += rebuilt.on_signal(signal(3, ts=T0 + 2 * day)).intents
    assert set(rebuilt.intents) == {ID["sig2"], ID["sig3"]}
    assert sum(p.record()["size"] for p in rebuilt.portfolio.positions.values()) == 600
    assert rebuilt.on_signal(signal(1)).ignored == "stale"


def test_levels_not_configured_and_signals_without_legs_are_filtered() -> None:
    stage, _ = make_stage()
    assert stage.on_signal(signal(level="P3")).ignored == "filtered"
    assert stage.on_signal(signal(2, legs=[])).ignored == "filtered"


def test_a_failed_check_rejects_with_its_numbers() -> None:
    stage, _ = make_stage(config(limits={"max_order_notional": 50.0}))
    out = stage.on_signal(signal())
    assert statuses(out.intents) == ["suggested", "rejected"]
    rejected = out.intents[-1]
    assert rejected["actor"] == "risk"
    assert rejected["reason"].startswith("order_notional 95 > 50")
    failed = [c for c in rejected["checks"] if not c["passed"]]
    assert [c["name"] for c in failed] == ["order_notional"]


def test_too_small_to_trade_is_rejected_by_sizing() -> None:
    stage, _ = make_stage(config(sizing={"fixed_notional": 0.5}))
    out = stage.on_signal(signal())
    assert statuses(out.intents) == ["suggested", "rejected"]
    assert out.intents[-1]["reason"].startswith("sizing: 0.52 shares < min size 1")


def test_partial_fill_then_the_unfilled_part_expires_in_event_time() -> None:
    stage, _ = make_stage(depth=60)
    out = stage.on_signal(signal())
    assert statuses(out.intents) == ["suggested", "approved", "partially_filled"]
    assert out.intents[-1]["filled_size"] == 120.0
    assert out.intents[-1]["expires_ms"] == T0 + 1000 + 10_000
    assert stage.advance(T0 + 10_999).intents == []
    expired = stage.advance(T0 + 11_000).intents
    assert statuses(expired) == ["expired"] and expired[0]["actor"] == "expiry"
    assert "unfilled part of 80 of 200 shares" in expired[0]["reason"]


def test_no_depth_within_the_limit_leaves_it_approved_until_it_expires() -> None:
    stage, store = make_stage(config(limits={"max_slippage_bps": 10_000.0}))
    store.add(book("yes", T0 + 500, [(0.60, 1000)]))  # the asks moved above the limits
    store.add(book("no", T0 + 500, [(0.65, 1000)]))
    out = stage.on_signal(signal())
    assert statuses(out.intents) == ["suggested", "approved"]
    assert statuses(stage.advance(T0 + 11_000).intents) == ["expired"]


def test_fills_use_the_latest_book_at_or_before_the_signals_time() -> None:
    stage, store = make_stage()
    store.add(book("yes", T0 + 2000, [(0.30, 1000)]))  # after the signal: not used
    out = stage.on_signal(signal(ts=T0 + 1000))
    assert out.intents[-1]["fills"][0]["price"] == 0.45
    assert out.intents[-1]["fills"][0]["book_ts_ms"] == T0


def test_semi_auto_waits_for_approval_through_a_command() -> None:
    stage, _ = make_stage(config(approval="semi_auto"))
    out = stage.on_signal(signal())
    assert statuses(out.intents) == ["suggested"]
    iid = out.intents[0]["intent_id"]
    cmd = {
        "command_id": "c1",
        "action": "approve",
        "intent_id": iid,
        "actor": "api:ops",
        "ts_ms": T0 + 2000,
    }
    approved = stage.on_command(cmd)
    assert statuses(approved.intents) == ["approved", "filled"]
    assert approved.intents[0]["actor"] == "api:ops" and approved.intents[0]["seq"] == 1
    assert stage.on_command(cmd).ignored == "approve does not apply to a filled intent"


def test_semi_auto_reject_cancel_and_approval_timeout() -> None:
    stage, _ = make_stage(config(approval="semi_auto"))
    for n in (1, 2, 3):
        stage.on_signal(signal(n))
    rej = stage.on_command(
        {
            "action": "reject",
            "intent_id": ID["sig1"],
            "actor": "api:a",
            "reason": "no",
            "ts_ms": T0 + 1500,
        }
    )
    assert statuses(rej.intents) == ["rejected"] and rej.intents[0]["reason"] == "no"
    can = stage.on_command(
        {"action": "cancel", "intent_id": ID["sig2"], "actor": "api:a", "ts_ms": T0 + 1600}
    )
    assert statuses(can.intents) == ["cancelled"]
    late = stage.advance(T0 + 1000 + 60_000)
    assert statuses(late.intents) == ["expired"] and late.intents[0]["intent_id"] == ID["sig3"]
    assert "approval timeout" in late.intents[0]["reason"]
    assert (
        stage.on_command({"action": "approve", "intent_id": "nope", "ts_ms": T0}).ignored
        == "unknown intent"
    )


def test_approval_re_checks_the_limits_at_its_own_time() -> None:
    stage, _ = make_stage(config(approval="semi_auto"))
    stage.on_signal(signal())
    stage.on_command(
        {"action": "kill", "actor": "api:ops", "reason": "venue incident", "ts_ms": T0 + 1100}
    )
    out = stage.on_command({"action": "approve", "intent_id": ID["sig1"], "ts_ms": T0 + 1200})
    assert statuses(out.intents) == ["rejected"]
    assert out.intents[0]["reason"].startswith("kill_switch 1 > 0 (venue incident)")
    stage.on_command({"action": "resume", "ts_ms": T0 + 1300})
    assert statuses(stage.on_signal(signal(2)).intents) == ["suggested"]  # and checks pass again


def test_create_command_makes_an_intent_from_any_level_at_its_own_time() -> None:
    stage, store = make_stage()
    store.add(book("yes", T0 + 4000, [(0.44, 1000)]))  # the book when the person asks
    cmd = {"action": "create", "signal_json": json.dumps(signal(level="P3")), "ts_ms": T0 + 5000}
    out = stage.on_command(cmd).intents
    assert statuses(out) == ["suggested", "approved", "filled"]
    assert {e["ts_ms"] for e in out} == {T0 + 5000}  # not the signal's (old) event time
    assert out[-1]["fills"][0]["price"] == 0.44 and out[-1]["fills"][0]["book_ts_ms"] == T0 + 4000
    assert stage.on_command(cmd).intents == []  # the same signal again: no second intent
    bad = stage.on_command({"action": "create", "signal_json": "[]", "ts_ms": T0})
    assert bad.ignored == "create without a signal"


def test_open_intents_limit_counts_waiting_intents() -> None:
    stage, _ = make_stage(config(approval="semi_auto", limits={"max_open_intents": 2}))
    assert statuses(stage.on_signal(signal(1)).intents) == ["suggested"]
    assert statuses(stage.on_signal(signal(2)).intents) == ["suggested"]
    third = stage.on_signal(signal(3)).intents
    assert statuses(third) == ["suggested", "rejected"]
    assert "open_intents 3 > 2" in third[-1]["reason"]


def test_rejections_trip_the_rules_breaker_which_then_cools_down() -> None:
    cfg = config(
        limits={"max_order_notional": 50.0},
        breaker={"max_events": 2, "window_ms": 10_000, "cooldown_ms": 30_000},
    )
    stage, _ = make_stage(cfg)
    stage.on_signal(signal(1, ts=T0 + 1000))
    stage.on_signal(signal(2, ts=T0 + 2000))  # second rejection: trips rule and market
    third = stage.on_signal(signal(3, ts=T0 + 3000, legs=signal()["legs"]))
    names = [c["name"] for c in third.intents[-1]["checks"] if not c["passed"]]
    assert "circuit_breaker" in names
    # a smaller order after the cooldown passes every check again
    stage.config = config(breaker={"max_events": 2, "window_ms": 10_000, "cooldown_ms": 30_000})
    assert statuses(stage.on_signal(signal(4, ts=T0 + 32_000)).intents)[-1] != "rejected"


def test_settlement_realises_pnl_and_a_loss_feeds_the_breaker() -> None:
    stage, _ = make_stage()
    stage.on_signal(signal())
    out = stage.on_market(
        market(
            "pm:m1", ("yes", "no"), status="resolved", winning_token_id="yes", updated_ms=T0 + 9000
        )
    )
    by_token = {p["token_id"]: p for p in out.positions}
    assert by_token["yes"]["status"] == "settled"
    assert by_token["yes"]["realised_pnl"] == pytest.approx(100 - 45 - 100 * 0.02 * 0.45 * 0.55)
    assert by_token["no"]["realised_pnl"] == pytest.approx(-50 - 100 * 0.02 * 0.25)
    assert stage.breaker.count("rule:complete_set", T0 + 9000) == 1  # the losing leg


def test_books_mark_open_positions() -> None:
    stage, _ = make_stage()
    stage.on_signal(signal())
    out = stage.on_book(book("yes", T0 + 3000, [(0.52, 10)], [(0.50, 10)]))
    assert len(out.positions) == 1 and out.positions[0]["mark_price"] == 0.51
    assert out.positions[0]["unrealised_pnl"] == pytest.approx(
        100 * 0.51 - out.positions[0]["cost"]
    )


def test_a_rebuild_from_the_stages_own_output_equals_the_live_state() -> None:
    live, store = make_stage(config(approval="semi_auto", limits={"max_open_intents": 3}))
    events: list[dict[str, Any]] = []
    for n in range(1, 5):
        events += live.on_signal(signal(n, ts=T0 + 1000 * n)).intents
    events += live.on_command(
        {"action": "approve", "intent_id": ID["sig1"], "ts_ms": T0 + 5000}
    ).intents
    events += live.advance(T0 + 120_000).intents

    rebuilt = Stage(live.config, store.at)
    rebuilt.on_market(market("pm:m1", ("yes", "no")))
    # Kafka keeps each intent's events in order, not the order between intents
    by_intent = sorted(events, key=lambda e: (e["intent_id"][::-1], e["seq"]))
    for e in by_intent + by_intent[:3]:  # and a redelivered few change nothing
        rebuilt.restore(e)
    assert rebuilt.intents == live.intents
    assert rebuilt.open == live.open
    assert {k: p.record() for k, p in rebuilt.portfolio.positions.items()} == {
        k: p.record() for k, p in live.portfolio.positions.items()
    }
    assert rebuilt.daily == live.daily


def test_resume_finishes_a_lifecycle_a_crash_cut_short_and_nothing_else() -> None:
    live, store = make_stage()
    events = live.on_signal(signal(1)).intents + live.on_signal(signal(2, ts=T0 + 1100)).intents
    assert statuses(events) == ["suggested", "approved", "filled"] * 2
    # the crash lost sig1's approval and fill, and sig2's fill
    written = [
        e
        for e in events
        if (e["intent_id"], e["seq"]) not in {(ID["sig1"], 1), (ID["sig1"], 2), (ID["sig2"], 2)}
    ]
    rebuilt = Stage(live.config, store.at)
    rebuilt.on_market(market("pm:m1", ("yes", "no")))
    for e in written:
        rebuilt.restore(e)
    out = rebuilt.resume()
    assert [(e["intent_id"], e["seq"], e["status"]) for e in out.intents] == [
        (ID["sig1"], 1, "approved"),
        (ID["sig1"], 2, "filled"),
        (ID["sig2"], 2, "filled"),
    ]
    assert rebuilt.intents == live.intents
    assert rebuilt.resume().intents == []  # complete now: nothing more


def test_without_a_book_the_signals_own_legs_stand_in_and_say_so() -> None:
    stage = Stage(config(), lambda token, ts: None)
    stage.on_market(market("pm:m1", ("yes", "no")))
    out = stage.on_signal(signal())
    assert statuses(out.intents) == ["suggested", "approved", "filled"]
    assert [f["price"] for f in out.intents[-1]["fills"]] == [0.45, 0.50]
    assert "signal's own legs stood in" in out.intents[-1]["reason"]
    # a person's approval later needs a real book: there is none, so nothing fills
    semi = Stage(config(approval="semi_auto"), lambda token, ts: None)
    semi.on_signal(signal())
    approved = semi.on_command({"action": "approve", "intent_id": ID["sig1"], "ts_ms": T0 + 2000})
    assert statuses(approved.intents) == ["rejected"]  # slippage: no book to fill from

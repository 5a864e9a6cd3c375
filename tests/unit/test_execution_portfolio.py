"""Paper positions: cost basis, realised and unrealised PnL, marks, settlement, and the same
position whatever order its fills were booked in."""

from __future__ import annotations

import pytest

from marketpulse.execution.portfolio import FillEvent, Portfolio, fold, mid_price

META = {"rule_id": "r", "venue": "pm", "event_key": "pm:e", "market_id": "pm:m", "token_id": "t"}


def fill(
    ts: int, side: str, price: float, size: float, fee: float = 0.0, iid: str = "i"
) -> FillEvent:
    return FillEvent(ts, iid, 2, 0, side, price, size, fee)


def test_buys_average_their_cost_fees_included() -> None:
    size, cost, fees, realised = fold([fill(1, "BUY", 0.40, 100, 1.0), fill(2, "BUY", 0.50, 100)])
    assert (size, fees, realised) == (200, 1.0, 0.0)
    assert cost == pytest.approx(40 + 1 + 50)


def test_selling_part_realises_against_the_average_cost() -> None:
    size, cost, _, realised = fold(
        [fill(1, "BUY", 0.40, 100), fill(2, "BUY", 0.50, 100), fill(3, "SELL", 0.60, 50, 0.5)]
    )
    assert size == 150
    assert realised == pytest.approx(50 * 0.60 - 0.5 - 50 * 0.45)
    assert cost == pytest.approx(150 * 0.45)


def test_a_short_covered_realises_the_difference_and_a_flip_opens_the_rest() -> None:
    size, cost, _, realised = fold([fill(1, "SELL", 0.60, 10), fill(2, "BUY", 0.50, 15)])
    assert realised == pytest.approx(10 * (0.60 - 0.50))
    assert size == 5 and cost == pytest.approx(5 * 0.50)


def test_mark_gives_unrealised_pnl_and_is_throttled_in_event_time() -> None:
    pf = Portfolio(mark_interval_ms=1000)
    pf.add_fill(META, fill(1, "BUY", 0.40, 100))
    assert [p.record()["unrealised_pnl"] for p in pf.mark("t", 0.45, 10)] == [pytest.approx(5.0)]
    assert pf.mark("t", 0.47, 500) == []  # within the interval: not republished
    assert pf.mark("t", 0.45, 2000) == []  # same price: nothing to say
    moved = pf.mark("t", 0.50, 2000)
    assert moved and moved[0].record()["unrealised_pnl"] == pytest.approx(10.0)
    assert moved[0].record()["mark_price"] == 0.50


def test_settlement_pays_the_winner_and_zeroes_the_loser() -> None:
    pf = Portfolio()
    pf.add_fill(META, fill(1, "BUY", 0.40, 100, 1.0))
    pf.add_fill({**META, "token_id": "u"}, fill(1, "BUY", 0.55, 100, iid="j"))
    market = {
        "market_id": "pm:m",
        "status": "resolved",
        "winning_token_id": "t",
        "outcomes": [{"name": "Yes", "token_id": "t"}, {"name": "No", "token_id": "u"}],
        "updated_ms": 99,
    }
    records = {p.token_id: p.record() for p in pf.settle(market)}
    assert records["t"]["status"] == "settled" and records["t"]["size"] == 0
    assert records["t"]["realised_pnl"] == pytest.approx(100 - 41)
    assert records["u"]["realised_pnl"] == pytest.approx(-55)
    assert records["t"]["ts_ms"] == 99
    assert pf.settle(market) == []  # settled once
    assert pf.total_pnl() == pytest.approx(59 - 55)
    assert pf.open_positions() == []


def test_the_same_fills_in_any_order_give_the_same_position() -> None:
    fills = [
        fill(3, "SELL", 0.6, 50, iid="c"),
        fill(1, "BUY", 0.4, 100, iid="a"),
        fill(2, "BUY", 0.5, 100, iid="b"),
    ]
    a, b = Portfolio(), Portfolio()
    for f in fills:
        a.add_fill(META, f)
    for f in reversed(fills):
        b.add_fill(META, f)
    assert a.positions["r|t"].record() == b.positions["r|t"].record()
    assert a.add_fill(META, fills[0]) is None  # a redelivered fill is booked once


def test_drawdown_is_measured_from_the_peak() -> None:
    pf = Portfolio()
    pf.add_fill(META, fill(1, "BUY", 0.40, 100))
    pf.mark("t", 0.50, 2)  # +10: the peak
    pf.mark("t", 0.35, 3)  # -5
    assert pf.drawdown() == pytest.approx(15.0)


def test_mid_price() -> None:
    assert (
        mid_price({"bids": [{"price": 0.4, "size": 1}], "asks": [{"price": 0.5, "size": 1}]})
        == 0.45
    )
    assert mid_price({"bids": [], "asks": [{"price": 0.5, "size": 1}]}) == 0.5
    assert mid_price({"bids": [], "asks": []}) is None

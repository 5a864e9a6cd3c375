"""Rules over ticks, trades and metadata changes (spike, trend, endgame, whale, longshot), with
their state in tables: the same code runs in the worker (Faust tables) and in the backtest
(dicts). No clock, no Kafka: every input carries its event time.

Table keys (`state`, one table so that one changelog holds it; values are plain JSON):
- ``px|<event>|<token>``: the token's recent prices (spike, trend), and ``…+`` the later prices
  of its last time bucket (`window.push_parts`: most ticks of a busy token write only that);
- ``vb|<event>|<token>``: the token's per-bucket traded volume (endgame);
- ``mv|<event>|<market>`` and ``…+``: the market's recent trades (whale: share of recent
  volume), kept the same way;
- ``cd|<event>``: cooldown marks, {rule id: {subject: event time of its last signal}}.
`wallets` maps a wallet to the earliest event time it was seen trading.

Evaluation returns the signals and the table writes separately: the caller delivers the signals
before it applies the writes (at-least-once, see the worker).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from marketpulse.rules import RuleDef, endgame, longshot, spike, trend, whale
from marketpulse.rules.common import tick_price
from marketpulse.rules.params import EndgameParams, SpikeParams, TrendParams, WhaleParams
from marketpulse.rules.window import Samples, add_volume, joined, push_parts, within

Table = MutableMapping[str, Any]
Write = tuple[Table, str, Any]
Result = tuple[list[dict[str, Any]], list[Write]]

TICK_TYPES = ("spike", "trend", "longshot")
TRADE_TYPES = ("endgame", "whale")
FLOW_TYPES = frozenset(TICK_TYPES + TRADE_TYPES)


class FlowRules:
    """The enabled flow rules of one rule set, over two tables (see the module doc)."""

    def __init__(self, rules: Sequence[RuleDef], state: Table, wallets: Table) -> None:
        self.rules = [r for r in rules if r.enabled and r.type in FLOW_TYPES]
        # Whether any rule reads ticks (trades): if not, the worker does not even decode them.
        self.wants_ticks = any(r.type in TICK_TYPES for r in self.rules)
        self.wants_trades = any(r.type in TRADE_TYPES for r in self.rules)
        self.state = state
        self.wallets = wallets
        self._keep_px = max(
            [r.params_as(SpikeParams).window_ms for r in self._of("spike")]
            + [r.params_as(TrendParams).window_ms for r in self._of("trend")],
            default=0,
        )
        endgames = [r.params_as(EndgameParams) for r in self._of("endgame")]
        self._bucket_ms = min((p.bucket_ms for p in endgames), default=0)
        self._keep_buckets = max((p.history_buckets * p.bucket_ms for p in endgames), default=0)
        self._keep_mv = max(
            (r.params_as(WhaleParams).volume_window_ms for r in self._of("whale")), default=0
        )

    def _of(self, rule_type: str) -> list[RuleDef]:
        return [r for r in self.rules if r.type == rule_type]

    def on_tick(self, tick: Mapping[str, Any], market: Mapping[str, Any] | None) -> Result:
        """Signals of one tick; `market` is its Market record (None: unknown, then only the
        rules that need no metadata run)."""
        if not self.wants_ticks:
            return [], []
        event = tick["event_key"]
        writes: list[Write] = []
        samples: Sequence[Sequence[float]] = []
        if self._keep_px:
            price = tick_price(tick)
            samples = self._window(
                f"px|{event}|{tick['token_id']}", price, int(tick["ts_ms"]), self._keep_px, writes
            )
        marks = _Marks(self.state, f"cd|{event}")
        signals = []
        for rule in self.rules:
            last = marks.of(rule.rule_id)
            sig = None
            if rule.type == "spike":
                sig = spike.evaluate(rule, tick, samples, last)
            elif rule.type == "trend" and market is not None:
                sig = trend.evaluate(rule, tick, market, samples, last)
            elif rule.type == "longshot" and market is not None:
                sig = longshot.evaluate(rule, tick, market, last)
            if sig is not None:
                signals.append(sig)
        if signals:
            writes.append((self.state, f"cd|{event}", marks.value()))
        return signals, writes

    def on_trade(self, trade: Mapping[str, Any], market: Mapping[str, Any] | None) -> Result:
        if not self.wants_trades:
            return [], []
        event, ts, size = trade["event_key"], int(trade["ts_ms"]), float(trade["size"])
        writes: list[Write] = []
        buckets: Sequence[Sequence[float]] = []
        if self._bucket_ms:
            key = f"vb|{event}|{trade['token_id']}"
            keep = self._keep_buckets // self._bucket_ms
            buckets = add_volume(self.state.get(key) or [], ts, size, self._bucket_ms, keep)
            writes.append((self.state, key, buckets))
        recent: Sequence[Sequence[float]] = []
        if self._keep_mv:
            key = f"mv|{event}|{trade['market_id']}"
            recent = self._window(key, size, ts, self._keep_mv, writes, add=True)
        wallet = trade.get("wallet")
        seen = self.wallets.get(wallet) if wallet else None
        marks = _Marks(self.state, f"cd|{event}")
        signals = []
        for rule in self.rules:
            last = marks.of(rule.rule_id)
            sig = None
            if rule.type == "endgame" and market is not None:
                sig = endgame.on_trade(rule, trade, market, buckets, last)
            elif rule.type == "whale":
                window = rule.params_as(WhaleParams).volume_window_ms
                volume = sum(s[1] for s in within(recent, ts, window))
                sig = whale.on_trade(rule, trade, seen, volume, last)
            if sig is not None:
                signals.append(sig)
        if wallet:
            first = whale.first_seen(seen, ts)
            if first != seen:
                writes.append((self.wallets, wallet, first))
        if signals:
            writes.append((self.state, f"cd|{event}", marks.value()))
        return signals, writes

    def _window(
        self,
        key: str,
        value: float | None,
        ts_ms: int,
        keep_ms: int,
        writes: list[Write],
        *,
        add: bool = False,
    ) -> Samples:
        """The window at `key` with (ts_ms, value) pushed (None: nothing to push), queueing the
        writes of what changed (`window.push_parts`): `key` + "+" (its last bucket) on most
        samples of a busy token, `key` (the whole window) when a bucket is added."""
        stored, head = self.state.get(key) or [], self.state.get(key + "+")
        if value is None:
            return joined(stored, head, keep_ms)
        window, new_stored, new_head = push_parts(stored, head, ts_ms, value, keep_ms, add=add)
        if new_stored is not None:
            writes.append((self.state, key, new_stored))
        if new_head is not None:
            writes.append((self.state, key + "+", new_head))
        return window

    def on_market(self, previous: Mapping[str, Any] | None, market: Mapping[str, Any]) -> Result:
        """Signals of a metadata change (endgame: tick size, resolution)."""
        event = market["event_id"]
        marks = _Marks(self.state, f"cd|{event}")
        signals = []
        for rule in self._of("endgame"):
            signals += endgame.on_market(rule, previous, market, marks.of(rule.rule_id))
        if not signals:
            return [], []
        return signals, [(self.state, f"cd|{event}", marks.value())]


class _Marks:
    """An event's cooldown marks, read from the table only if a rule gets as far as asking
    (nearly every input fails a threshold first: a table read per input would be waste)."""

    def __init__(self, table: Table, key: str) -> None:
        self._table, self._key = table, key
        self._data: dict[str, dict[str, int]] | None = None

    def of(self, rule_id: str) -> MutableMapping[str, int]:
        return _LazyRuleMarks(self, rule_id)

    def data(self) -> dict[str, dict[str, int]]:
        if self._data is None:
            # A private copy: table values are written whole, never mutated in place.
            stored = self._table.get(self._key) or {}
            self._data = {rule: dict(subjects) for rule, subjects in stored.items()}
        return self._data

    def value(self) -> dict[str, dict[str, int]]:
        return {rule: subjects for rule, subjects in self.data().items() if subjects}


class _LazyRuleMarks(MutableMapping[str, int]):
    """subject -> event time of one rule's last signal, loaded on first access."""

    def __init__(self, marks: _Marks, rule_id: str) -> None:
        self._marks, self._rule = marks, rule_id

    def _d(self) -> dict[str, int]:
        return self._marks.data().setdefault(self._rule, {})

    def __getitem__(self, key: str) -> int:
        return self._d()[key]

    def __setitem__(self, key: str, value: int) -> None:
        self._d()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._d()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d())

    def __len__(self) -> int:
        return len(self._d())

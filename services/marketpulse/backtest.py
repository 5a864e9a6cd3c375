"""`marketpulse backtest`: the worker's rule code run offline over recorded market data.

Input is a JSON Lines file (one `{"kind": "market"|"book"|"tick"|"trade", "record": {...}}` per
line, records shaped as their Avro schemas: what `write_recording` writes) or the warehouse's
markets/books/trades tables. Records are replayed in event-time order (markets first at equal
times: the worker holds market data until its metadata is complete) through the same
`worker.Evaluator` and `grouping.GroupEvaluator` as the live worker, over in-memory tables.
Like the worker, tick rules read each book's top of book; tick records are skipped.

Output: the hits (CSV, or Parquet when pyarrow is installed and asked for) and a summary per
rule: hits, mean and total edge, executable notional, and where every leg's market is resolved
in the input, the realised P&L (what the legs paid at resolution, before fees) and edge.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from marketpulse.errors import ConfigError
from marketpulse.rules import RuleDef

KINDS = ("market", "book", "tick", "trade")
_ORDER = {k: i for i, k in enumerate(KINDS)}
HIT_COLUMNS = (
    "signal_id",
    "rule_id",
    "rule_version",
    "level",
    "subject",
    "ts_ms",
    "edge_bps",
    "edge_score",
    "size",
    "notional",
    "realised_pnl",
    "realised_edge_bps",
    "legs_json",
    "summary",
)

Item = tuple[str, dict[str, Any]]


def parse_time(text: str | None) -> int | None:
    """Milliseconds since the epoch from an integer or an ISO 8601 time (UTC if naive)."""
    if text is None or text == "":
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"cannot read time {text!r}: use epoch ms or ISO 8601") from exc
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def _time_of(kind: str, record: Mapping[str, Any]) -> int:
    return int(record["updated_ms"] if kind == "market" else record["ts_ms"])


def _sort_key(item: Item) -> tuple[int, int, int]:
    kind, record = item
    return _time_of(kind, record), _ORDER[kind], int(record.get("seq", 0))


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def read_recording(path: Path) -> list[Item]:
    """Items of a JSON Lines recording; ConfigError names the line of a bad one."""
    items = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read recording {path}: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            kind, record = obj["kind"], obj["record"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{n}: expected {{kind, record}} JSON ({exc})") from exc
        if kind not in _ORDER:
            raise ConfigError(f"{path}:{n}: unknown kind {kind!r} (expected one of {KINDS})")
        items.append((kind, record))
    return items


def write_recording(path: Path, items: Iterable[Item]) -> int:
    n = 0
    with path.open("w") as out:
        for kind, record in items:
            out.write(json.dumps({"kind": kind, "record": record}, sort_keys=True) + "\n")
            n += 1
    return n


def read_warehouse(settings: Any, start_ms: int | None, end_ms: int | None) -> list[Item]:
    """Markets (latest version of each) and market data in [start, end) from the warehouse."""
    from marketpulse.warehouse import connect

    wh = connect(settings)
    db = settings.warehouse_database
    lo, hi = start_ms or 0, end_ms or 2**62
    span = (
        "ts >= fromUnixTimestamp64Milli({lo:Int64}) AND ts < fromUnixTimestamp64Milli({hi:Int64})"
    )
    try:
        markets = wh.query(f"SELECT * FROM {db}.markets FINAL")
        data: list[Item] = [("market", _market_of(r)) for r in markets]
        for kind, table in (("book", "books"), ("trade", "trades")):
            rows = wh.query(f"SELECT * FROM {db}.{table} FINAL WHERE {span}", {"lo": lo, "hi": hi})
            data += [(kind, _ROW[kind](r)) for r in rows]
    finally:
        wh.close()
    return data


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return round(value.timestamp() * 1000)
    return int(value)


def _market_of(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **{k: r.get(k) for k in ("market_id", "event_id", "venue", "question", "status")},
        "outcomes": [
            {"name": n, "token_id": t}
            for n, t in zip(r["outcome_names"], r["token_ids"], strict=True)
        ],
        "end_ms": _ms(r.get("end_time")),
        "neg_risk_augmented": bool(r.get("neg_risk_augmented")),
        "exclusive": bool(r.get("exclusive", True)),
        "event_market_count": int(r.get("event_market_count", 1)),
        "tick_size": r.get("tick_size", 0.01),
        "min_size": r.get("min_size", 1.0),
        "fee": {"model": r["fee_model"], "rate": r["fee_rate"], "exponent": r["fee_exponent"]},
        **{k: r.get(k) for k in ("strike_type", "floor_strike", "cap_strike", "winning_token_id")},
        "rules_text": r.get("rules_text"),  # Kalshi deadline claims read it (kalshi_claims)
        "updated_ms": _ms(r.get("updated")) or 0,
    }


def _data_ids(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **{k: r[k] for k in ("event_key", "market_id", "token_id", "venue")},
        "ts_ms": _ms(r["ts"]),
        "recv_ms": _ms(r["recv"]),
    }


def _book_of(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **_data_ids(r),
        "seq": int(r["seq"]),
        "bids": [
            {"price": p, "size": s} for p, s in zip(r["bid_prices"], r["bid_sizes"], strict=True)
        ],
        "asks": [
            {"price": p, "size": s} for p, s in zip(r["ask_prices"], r["ask_sizes"], strict=True)
        ],
    }


def _trade_of(r: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("trade_id", "price", "size", "side", "wallet", "tx_hash")
    return {**_data_ids(r), **{k: r.get(k) for k in keys}}


_ROW = {"book": _book_of, "trade": _trade_of}


# --------------------------------------------------------------------------------------------
# Running the rules
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    hits: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: int = 0


def run(
    rules: Sequence[RuleDef],
    items: Sequence[Item],
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    progress: bool = False,
) -> Result:
    """Signals of `rules` over `items` in event-time order (market data outside [start, end)
    is skipped; every market record is applied, since rules need metadata)."""
    from marketpulse.grouping import GroupEvaluator, registry, routes
    from marketpulse.worker import Evaluator

    ev = Evaluator(rules, {}, {}, {})
    groups = registry(rules)
    by_group, ge = routes(groups), GroupEvaluator(rules, groups, {}, {}, {})
    ordered = sorted(items, key=_sort_key)
    final_markets: dict[str, dict[str, Any]] = {}
    result = Result()
    handlers = {
        "market": ev.on_market,
        "book": ev.on_book,
        "tick": ev.on_tick,
        "trade": ev.on_trade,
    }
    for kind, record in _progress(ordered, progress):
        if kind == "tick":
            continue  # the worker reads the top of each book instead (see the module doc)
        if kind == "market":
            final_markets[record["market_id"]] = record
        elif not _within(record["ts_ms"], start_ms, end_ms):
            continue
        result.inputs += 1
        step = handlers[kind](record)
        result.hits += step.signals
        step.apply()
        if kind in ("market", "book"):
            prop = ev.proposition_route(kind, record)
            for gid in [*by_group.get(record["market_id"], ()), *([prop] if prop else [])]:
                signals, writes = ge.on_record(gid, kind, record)
                result.hits += signals
                for table, key, value in writes:
                    table[key] = value
    for hit in result.hits:
        hit.update(realised(hit, final_markets))
    result.summary = summarise(result.hits)
    return result


def _within(ts: int, start_ms: int | None, end_ms: int | None) -> bool:
    return (start_ms is None or ts >= start_ms) and (end_ms is None or ts < end_ms)


def _progress(items: Sequence[Item], show: bool) -> Iterator[Item]:
    if not show:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc="backtest", unit="rec", unit_scale=True, mininterval=0.5)


def realised(hit: Mapping[str, Any], markets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What the legs paid at resolution, before fees: BUY (payout - price) x size, SELL
    (price - payout) x size. None unless every leg's market has a winning token."""
    pnl = 0.0
    for leg in hit["legs"]:
        winner = (markets.get(leg["market_id"]) or {}).get("winning_token_id")
        if not winner:
            return {"realised_pnl": None, "realised_edge_bps": None}
        payout = 1.0 if leg["token_id"] == winner else 0.0
        sign = 1.0 if leg["side"] == "BUY" else -1.0
        pnl += sign * (payout - float(leg["price"])) * float(leg["size"])
    notional = float(hit.get("notional") or 0.0)
    edge = pnl / notional * 10_000 if notional > 0 else None
    return {"realised_pnl": round(pnl, 6), "realised_edge_bps": edge}


def summarise(hits: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for hit in hits:
        s = out.setdefault(
            hit["rule_id"],
            {
                "hits": 0,
                "edge_bps_sum": 0.0,
                "total_edge": 0.0,
                "notional": 0.0,
                "resolved": 0,
                "realised_pnl": 0.0,
                "resolved_notional": 0.0,
            },
        )
        s["hits"] += 1
        s["edge_bps_sum"] += hit["edge_bps"]
        s["total_edge"] += hit["edge_score"]
        s["notional"] += hit["notional"]
        if hit.get("realised_pnl") is not None:
            s["resolved"] += 1
            s["realised_pnl"] += hit["realised_pnl"]
            s["resolved_notional"] += max(hit["notional"], 0.0)
    for s in out.values():
        s["mean_edge_bps"] = round(s.pop("edge_bps_sum") / s["hits"], 4)
        s["total_edge"] = round(s["total_edge"], 6)
        s["notional"] = round(s["notional"], 6)
        # This rule's own resolved notional: realised edge is per rule, like the warehouse's.
        resolved_notional = s.pop("resolved_notional")
        s["realised_pnl"] = round(s["realised_pnl"], 6) if s["resolved"] else None
        s["realised_edge_bps"] = (
            round(s["realised_pnl"] / resolved_notional * 10_000, 4)
            if s["resolved"] and resolved_notional > 0
            else None
        )
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _row(hit: Mapping[str, Any]) -> dict[str, Any]:
    row = {k: hit.get(k) for k in HIT_COLUMNS if k != "legs_json"}
    row["legs_json"] = json.dumps(hit["legs"], sort_keys=True)
    return row


def write_hits(hits: Sequence[Mapping[str, Any]], out_dir: Path, fmt: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [_row(h) for h in hits]
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ConfigError("--format parquet needs pyarrow (pip install pyarrow)") from exc
        path = out_dir / "hits.parquet"
        columns = {c: [r[c] for r in rows] for c in HIT_COLUMNS}
        pq.write_table(pa.table(columns), path)
        return path
    path = out_dir / "hits.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HIT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_summary(result: Result, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    path.write_text(json.dumps({"inputs": result.inputs, "rules": result.summary}, indent=2))
    return path

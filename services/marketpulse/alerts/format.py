"""What an alert says, per channel type: Slack Block Kit, Telegram HTML, a generic JSON body.

Every message carries the rule, level, market(s) with links to the venue and to the Grafana
drilldown, the edge and executable size, the legs and the key evidence, so that whoever reads it
can decide without opening anything else; Slack also gets a short `text` (notifications, and
clients that cannot render blocks)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

GRAFANA_DASHBOARD_UID = "mpx-market"
LEVEL_ICONS = {"P1": ":rotating_light:", "P2": ":warning:", "P3": ":information_source:"}
# Market page by venue prefix. Mock markets (mk:) have no page.
VENUE_PAGES = {
    "pm": ("Polymarket", "https://polymarket.com/market/{id}"),
    "ks": ("Kalshi", "https://kalshi.com/markets/{id}"),
}
# Evidence a reader needs first; the rest of the map stays in the warehouse and the API.
KEY_EVIDENCE = ("direction", "set", "sum_best_asks", "sum_best_bids", "fees", "profit", "outlay")
MAX_LEGS = 10  # Slack: at most 50 blocks and 3000 characters per text
MAX_TEXT = 2900


def venue_link(market_id: str) -> tuple[str, str] | None:
    """(venue name, market page URL), or None when the venue has no public page."""
    prefix, _, raw = market_id.partition(":")
    page = VENUE_PAGES.get(prefix)
    if page is None or not raw:
        return None
    return page[0], page[1].format(id=quote(raw, safe=""))


def grafana_link(grafana_url: str, market_id: str) -> str:
    query = urlencode({"var-market": market_id})
    return f"{grafana_url.rstrip('/')}/d/{GRAFANA_DASHBOARD_UID}?{query}"


def fallback_text(signal: Mapping[str, Any]) -> str:
    return (
        f"[{signal['level']}] {signal['rule_id']} {signal['subject']}: "
        f"edge {signal['edge_bps']:.1f} bps, size {_num(signal['size'])}, "
        f"notional ${signal['notional']:,.2f}"
    )


def _num(x: float) -> str:
    return f"{x:,.2f}".rstrip("0").rstrip(".")


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _market_lines_mrkdwn(signal: Mapping[str, Any], grafana_url: str) -> list[str]:
    lines = []
    for market_id in signal["market_ids"]:
        parts = [f"`{market_id}`"]
        venue = venue_link(market_id)
        if venue is not None:
            parts.append(f"<{venue[1]}|{venue[0]}>")
        parts.append(f"<{grafana_link(grafana_url, market_id)}|Grafana>")
        lines.append(" · ".join(parts))
    return lines


def _leg_lines(legs: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        f"{leg['side']} {_num(leg['size'])} x `{leg['token_id']}` @ {leg['price']:g}"
        f" ({leg['market_id']})"
        for leg in legs[:MAX_LEGS]
    ]
    if len(legs) > MAX_LEGS:
        lines.append(f"… and {len(legs) - MAX_LEGS} more legs")
    return lines


def key_evidence(signal: Mapping[str, Any]) -> list[tuple[str, str]]:
    evidence = signal.get("evidence") or {}
    return [(k, evidence[k]) for k in KEY_EVIDENCE if k in evidence]


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text[:MAX_TEXT]}


def slack_message(signal: Mapping[str, Any], grafana_url: str) -> dict[str, Any]:
    """Block Kit message of one signal."""
    icon = LEVEL_ICONS.get(signal["level"], "")
    header = f"{signal['level']} {signal['rule_id']} · {signal['subject']}"
    fields = [
        _mrkdwn(f"*Edge*\n{signal['edge_bps']:.1f} bps"),
        _mrkdwn(f"*Executable size*\n{_num(signal['size'])} per leg"),
        _mrkdwn(f"*Notional*\n${signal['notional']:,.2f}"),
        _mrkdwn(f"*Expected profit*\n${signal.get('edge_score', 0.0):,.2f}"),
    ]
    evidence = " · ".join(f"{k}: {v}" for k, v in key_evidence(signal)) or "none"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header[:150], "emoji": True}},
        {"type": "section", "text": _mrkdwn(f"{icon} {signal.get('summary') or header}")},
        {"type": "section", "fields": fields},
        {
            "type": "section",
            "text": _mrkdwn("*Markets*\n" + "\n".join(_market_lines_mrkdwn(signal, grafana_url))),
        },
        {"type": "section", "text": _mrkdwn("*Legs*\n" + "\n".join(_leg_lines(signal["legs"])))},
        {"type": "context", "elements": [_mrkdwn(f"*Evidence* {evidence}")]},
        {
            "type": "context",
            "elements": [
                _mrkdwn(
                    f"signal `{signal['signal_id']}` · rule v{signal['rule_version']} · "
                    f"event time {_when(signal['ts_ms'])}"
                )
            ],
        },
    ]
    return {"text": fallback_text(signal), "blocks": blocks}


def slack_digest(signals: Sequence[Mapping[str, Any]], grafana_url: str) -> dict[str, Any]:
    """One message for a burst of signals of one rule: a line each, best edge first."""
    ranked = sorted(signals, key=lambda s: -s["edge_bps"])
    rule = ranked[0]["rule_id"]
    text = f"{len(signals)} {rule} signals, best edge {ranked[0]['edge_bps']:.1f} bps"
    lines = [
        f"*{s['level']}* `{s['subject']}` {s['edge_bps']:.1f} bps, size {_num(s['size'])}"
        f" · <{grafana_link(grafana_url, s['market_ids'][0])}|Grafana>"
        for s in ranked[:40]
        if s["market_ids"]
    ]
    return {
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": text[:150]}},
            {"type": "section", "text": _mrkdwn("\n".join(lines))},
        ],
    }


def telegram_text(signal: Mapping[str, Any], grafana_url: str) -> str:
    """Telegram message text (parse_mode HTML)."""
    esc = html.escape
    lines = [
        f"<b>{esc(signal['level'])} {esc(signal['rule_id'])}</b> {esc(signal['subject'])}",
        esc(signal.get("summary") or ""),
        f"edge {signal['edge_bps']:.1f} bps · size {_num(signal['size'])} · "
        f"notional ${signal['notional']:,.2f}",
    ]
    for market_id in signal["market_ids"]:
        links = [f'<a href="{esc(grafana_link(grafana_url, market_id))}">Grafana</a>']
        venue = venue_link(market_id)
        if venue is not None:
            links.insert(0, f'<a href="{esc(venue[1])}">{venue[0]}</a>')
        lines.append(f"{esc(market_id)}: " + " · ".join(links))
    lines += [esc(line.replace("`", "")) for line in _leg_lines(signal["legs"])]
    lines.append(esc(", ".join(f"{k}: {v}" for k, v in key_evidence(signal))))
    return "\n".join(line for line in lines if line)[:4000]  # Telegram's limit is 4096


def webhook_body(signal: Mapping[str, Any], grafana_url: str) -> dict[str, Any]:
    """Generic JSON: the signal record as is, with the links and the fallback text."""
    links = {
        m: {"grafana": grafana_link(grafana_url, m), "venue": (venue_link(m) or (None, None))[1]}
        for m in signal["market_ids"]
    }
    return {"type": "signal", "text": fallback_text(signal), "signal": dict(signal), "links": links}

"""Channels: where an alert is posted, and how each HTTP answer is classified.

One attempt at a time (`post`): the retry policy lives in `delivery`. Answers mean:
2xx delivered; 429 retry after `Retry-After` (or Telegram's `parameters.retry_after`); 5xx,
timeouts and connection errors retry with backoff; any other 4xx never succeeds (a revoked
webhook, a malformed payload) and is given up at once. URLs are secrets: no log line, error or
repr here ever contains one."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from marketpulse.alerts import format as fmt
from marketpulse.alerts.config import ChannelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """The outcome of one POST."""

    ok: bool
    retriable: bool = False
    reason: str = ""  # short, machine-readable: http_500, http_429, timeout, connect…
    retry_after_s: float | None = None  # what the server asked for, if anything


OK = Attempt(ok=True)


class Channel(Protocol):
    name: str
    kind: str

    def render(self, signal: Mapping[str, Any]) -> dict[str, Any]: ...

    def render_digest(self, signals: Sequence[Mapping[str, Any]]) -> dict[str, Any]: ...

    async def post(self, payload: Mapping[str, Any]) -> Attempt: ...


class HttpChannel:
    """A JSON POST to a webhook URL. Subclasses say what the body looks like."""

    kind = "webhook"

    def __init__(
        self, config: ChannelConfig, client: httpx.AsyncClient | None, grafana_url: str
    ) -> None:
        self.name = config.name
        self._config = config
        self._client = client
        self.grafana_url = grafana_url

    @property
    def dry_run(self) -> bool:
        return self._config.url is None or self._client is None

    def render(self, signal: Mapping[str, Any]) -> dict[str, Any]:
        return fmt.webhook_body(signal, self.grafana_url)

    def render_digest(self, signals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {"type": "digest", "signals": [self.render(s) for s in signals]}

    async def post(self, payload: Mapping[str, Any]) -> Attempt:
        if self.dry_run:
            log.info("dry run: channel %s would send %s", self.name, json.dumps(payload)[:4000])
            return OK
        assert self._config.url is not None and self._client is not None
        try:
            response = await self._client.post(self._config.url.get_secret_value(), json=payload)
        except httpx.TimeoutException:
            return Attempt(ok=False, retriable=True, reason="timeout")
        except httpx.TransportError as exc:  # refused, reset, DNS: the endpoint may come back
            return Attempt(ok=False, retriable=True, reason=f"transport_{type(exc).__name__}")
        return classify(response)


def classify(response: httpx.Response) -> Attempt:
    status = response.status_code
    if 200 <= status < 300:
        return OK
    reason = f"http_{status}"
    if status == 429:
        return Attempt(False, True, reason, retry_after(response))
    if status >= 500 or status == 408:
        return Attempt(False, True, reason, retry_after(response))
    return Attempt(False, False, reason)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait: the Retry-After header (seconds form; Slack and
    Telegram use it), else Telegram's JSON `parameters.retry_after`."""
    header = response.headers.get("retry-after")
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            return None  # the HTTP-date form: fall back to our own backoff
    try:
        return float(response.json()["parameters"]["retry_after"])
    except Exception:
        return None


class SlackChannel(HttpChannel):
    """Slack incoming webhook: Block Kit blocks and a fallback `text`."""

    kind = "slack"

    def render(self, signal: Mapping[str, Any]) -> dict[str, Any]:
        return fmt.slack_message(signal, self.grafana_url)

    def render_digest(self, signals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return fmt.slack_digest(signals, self.grafana_url)


class TelegramChannel(HttpChannel):
    """Telegram Bot API `sendMessage` (the URL holds the bot token: https://api.telegram.org/
    bot<token>/sendMessage)."""

    kind = "telegram"

    def render(self, signal: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "chat_id": self._config.chat_id,
            "text": fmt.telegram_text(signal, self.grafana_url),
            "parse_mode": "HTML",
            "disable_web_page_preview": True,
        }

    def render_digest(self, signals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        text = "\n\n".join(fmt.telegram_text(s, self.grafana_url) for s in signals[:10])
        return {**self.render(signals[0]), "text": text[:4000]}


_KINDS: dict[str, type[HttpChannel]] = {
    "slack": SlackChannel,
    "telegram": TelegramChannel,
    "webhook": HttpChannel,
}


def build(config: ChannelConfig, client: httpx.AsyncClient | None, grafana_url: str) -> Channel:
    return _KINDS[config.type](config, client, grafana_url)

"""Channels and routes, from YAML (`alerts_routes_file`, default: the packaged routes.yaml).

The YAML names channels and says which signals go where; webhook URLs are secrets and live in
settings (`MPX_ALERTS_WEBHOOKS`), never in the file. A channel without a URL is a dry run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import SecretStr

from marketpulse.errors import ConfigError
from marketpulse.settings import Settings

ChannelType = Literal["slack", "telegram", "webhook"]
CHANNEL_TYPES: tuple[str, ...] = ("slack", "telegram", "webhook")
DEFAULT_ROUTES = Path(__file__).with_name("routes.yaml")


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    type: ChannelType
    url: SecretStr | None  # None: dry run
    chat_id: str | None = None  # Telegram only

    @property
    def dry_run(self) -> bool:
        return self.url is None


@dataclass(frozen=True)
class Digest:
    """`min_signals` or more signals of one rule in one poll become a single message."""

    min_signals: int


@dataclass(frozen=True)
class Route:
    channels: tuple[str, ...]
    rules: frozenset[str] | None = None  # None: every rule
    levels: frozenset[str] | None = None  # None: every level
    cooldown_s: float = 0.0  # per rule and subject, in event time
    digest: Digest | None = None

    def matches(self, rule_id: str, level: str) -> bool:
        return (self.rules is None or rule_id in self.rules) and (
            self.levels is None or level in self.levels
        )


@dataclass(frozen=True)
class AlertsConfig:
    channels: Mapping[str, ChannelConfig]
    routes: Sequence[Route]

    def route_for(self, rule_id: str, level: str) -> Route | None:
        """The first route that matches (the file's order is its priority)."""
        return next((r for r in self.routes if r.matches(rule_id, level)), None)


def load_config(settings: Settings, path: Path | None = None) -> AlertsConfig:
    path = path or settings.alerts_routes_file or DEFAULT_ROUTES
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"alerts routes {path}: {exc}") from exc
    return parse_config(raw, settings.alerts_webhooks, where=str(path))


def parse_config(
    raw: Mapping[str, Any], webhooks: Mapping[str, SecretStr], where: str = "routes"
) -> AlertsConfig:
    channels = {}
    for name, spec in (raw.get("channels") or {}).items():
        kind = (spec or {}).get("type")
        if kind not in CHANNEL_TYPES:
            raise ConfigError(f"{where}: channel {name!r} type must be one of {CHANNEL_TYPES}")
        chat_id = spec.get("chat_id")
        if kind == "telegram" and not chat_id:
            raise ConfigError(f"{where}: telegram channel {name!r} needs a chat_id")
        channels[name] = ChannelConfig(name, kind, webhooks.get(name), chat_id and str(chat_id))
    unknown = sorted(set(webhooks) - set(channels))
    if unknown:
        raise ConfigError(f"{where}: MPX_ALERTS_WEBHOOKS names unknown channel(s) {unknown}")
    routes = [_route(r, channels, where) for r in raw.get("routes") or []]
    if not routes:
        raise ConfigError(f"{where}: no routes: no signal would ever be alerted")
    return AlertsConfig(channels, routes)


def _route(raw: Mapping[str, Any], channels: Mapping[str, ChannelConfig], where: str) -> Route:
    names = tuple(raw.get("channels") or ())
    missing = [n for n in names if n not in channels]
    if not names or missing:
        raise ConfigError(f"{where}: route {dict(raw)} names no channel or unknown {missing}")
    digest = raw.get("digest")
    if digest is not None and int(digest.get("min_signals", 0)) < 2:
        raise ConfigError(f"{where}: a digest needs min_signals >= 2")
    return Route(
        channels=names,
        rules=frozenset(raw["rules"]) if raw.get("rules") else None,
        levels=frozenset(raw["levels"]) if raw.get("levels") else None,
        cooldown_s=float(raw.get("cooldown_s", 0.0)),
        digest=Digest(int(digest["min_signals"])) if digest else None,
    )

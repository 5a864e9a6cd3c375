"""The execution stage's configuration: a YAML file (`MPX_EXECUTION_FILE`, default: the packaged
defaults.yaml) validated with pydantic, so a bad value names its field; the approval mode and
the signal levels can also be overridden by settings without a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from marketpulse.errors import ConfigError
from marketpulse.settings import Settings

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")

Approval = Literal["semi_auto", "auto"]
SizingMethod = Literal["fixed", "kelly", "volatility"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sizing(_Strict):
    method: SizingMethod = "fixed"
    fixed_notional: float = Field(100.0, gt=0)
    bankroll: float = Field(10_000.0, gt=0)
    kelly_fraction: float = Field(0.25, gt=0, le=1)
    kelly_loss: float = Field(0.1, gt=0, le=1)
    confidence: dict[str, float] = Field(default_factory=lambda: {"P1": 0.95, "P2": 0.85})
    target_risk: float = Field(25.0, gt=0)
    lot_size: dict[str, float] = Field(default_factory=lambda: {"pm": 0.01, "ks": 1.0})
    cap_at_signal_size: bool = True

    def lot_for(self, venue: str) -> float:
        return float(self.lot_size.get(venue, 0.01))


class Limits(_Strict):
    max_order_notional: float = Field(500.0, ge=0)
    max_daily_notional: float = Field(5_000.0, ge=0)
    max_open_intents: int = Field(20, ge=0)
    max_open_positions: int = Field(50, ge=0)
    max_total_exposure: float = Field(10_000.0, ge=0)
    max_market_exposure: float = Field(1_000.0, ge=0)
    max_drawdown: float = Field(500.0, ge=0)
    max_slippage_bps: float = Field(200.0, ge=0)


class Breaker(_Strict):
    max_events: int = Field(5, ge=1)
    window_ms: int = Field(600_000, gt=0)
    cooldown_ms: int = Field(900_000, ge=0)


class Orders(_Strict):
    expiry_ms: int = Field(60_000, gt=0)
    approval_timeout_ms: int = Field(300_000, gt=0)
    book_wait_ms: int = Field(500, ge=0)
    mark_interval_ms: int = Field(5_000, ge=0)
    forget_closed_ms: int = Field(7 * 86_400_000, gt=0)


class Books(_Strict):
    ring: int = Field(64, ge=1)
    max_events: int = Field(5_000, ge=1)
    history: int = Field(16, ge=1)
    warm_messages: int = Field(5_000, ge=0)


class ExecutionConfig(_Strict):
    approval: Approval = "semi_auto"
    levels: list[str] = Field(default_factory=lambda: ["P1", "P2"])
    exclude_rules: list[str] = Field(default_factory=list)
    sizing: Sizing = Field(default_factory=Sizing)  # type: ignore[arg-type]
    limits: Limits = Field(default_factory=Limits)  # type: ignore[arg-type]
    breaker: Breaker = Field(default_factory=Breaker)  # type: ignore[arg-type]
    orders: Orders = Field(default_factory=Orders)  # type: ignore[arg-type]
    books: Books = Field(default_factory=Books)  # type: ignore[arg-type]

    def wants(self, signal: dict[str, Any]) -> bool:
        """Whether a signal becomes an intent: its level is configured and it has legs."""
        return (
            signal["level"] in self.levels
            and signal["rule_id"] not in self.exclude_rules
            and bool(signal.get("legs"))
        )


def parse_config(data: Any, where: str = "execution config") -> ExecutionConfig:
    """Validate a mapping; ConfigError names the field (`limits.max_drawdown: ...`)."""
    try:
        return ExecutionConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from exc


def load_config(settings: Settings) -> ExecutionConfig:
    """The YAML file of the settings (or the packaged defaults), with the settings' overrides."""
    file = settings.execution_file or DEFAULTS_FILE
    try:
        raw = yaml.safe_load(Path(file).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read execution config {file}: {exc}") from exc
    config = parse_config(raw, where=f"execution config {file}")
    overrides: dict[str, Any] = {}
    if settings.execution_approval is not None:
        overrides["approval"] = settings.execution_approval
    if settings.execution_levels is not None:
        overrides["levels"] = list(settings.execution_levels)
    return config.model_copy(update=overrides) if overrides else config

"""Typed parameters of every rule type but `complete_set` (whose model lives with `RuleDef`).

Each model forbids unknown fields, so a typo in a rule definition is an error naming the field
rather than a silently ignored threshold. Prices are probabilities in (0, 1); times are event-time
milliseconds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)


class SpikeParams(BaseModel):
    """Price velocity: |price now - oldest price in the window| at or above `min_move`."""

    model_config = _STRICT

    window_ms: int = Field(60_000, gt=0, description="Event-time look-back window.")
    min_move: float = Field(0.05, gt=0, lt=1, description="Absolute move in probability.")
    min_depth: float = Field(100.0, ge=0, description="Shares at the best bid and best ask.")
    max_spread: float = Field(0.05, gt=0, le=1, description="Wider books are not liquid.")
    min_samples: int = Field(2, ge=2, description="Prices in the window before judging.")


class TrendParams(BaseModel):
    """Deviation of the latest price from its rolling mean: follow it (breakout) or fade it."""

    model_config = _STRICT

    mode: Literal["breakout", "fade"] = "breakout"
    window_ms: int = Field(600_000, gt=0, description="Rolling-mean window (event time).")
    threshold: float = Field(0.08, gt=0, lt=1, description="|price - mean| that fires.")
    min_samples: int = Field(10, ge=2, description="Prices in the window before judging.")
    min_depth: float = Field(50.0, ge=0, description="Shares at the side that would be taken.")
    max_spread: float = Field(0.05, gt=0, le=1)
    min_edge_bps: float = Field(0.0, ge=0, description="fade: net expected reversion floor.")


class EndgameParams(BaseModel):
    """Near resolution: price beyond `min_price` with a volume z-score spike; also fires on a
    tick-size change to `tick_size_trigger` and on a market's resolution."""

    model_config = _STRICT

    horizon_ms: int = Field(86_400_000, gt=0, description="How close to end time counts.")
    min_price: float = Field(0.95, gt=0.5, lt=1, description="Sweep price of the token traded.")
    bucket_ms: int = Field(300_000, gt=0, description="Volume bucket width.")
    history_buckets: int = Field(12, ge=2, le=1000, description="Buckets behind the current.")
    min_history: int = Field(3, ge=2, description="Past buckets needed for a z-score.")
    z_threshold: float = Field(3.0, gt=0)
    on_tick_size: bool = True
    tick_size_trigger: float = Field(0.001, gt=0, lt=0.1)
    on_resolution: bool = True

    @model_validator(mode="after")
    def _history(self) -> EndgameParams:
        if self.min_history > self.history_buckets:
            raise ValueError(
                f"min_history ({self.min_history}) must be <= history_buckets "
                f"({self.history_buckets})"
            )
        return self


class WhaleParams(BaseModel):
    """Large trades, trades by recently first-seen wallets, and trades large for their market."""

    model_config = _STRICT

    min_notional: float = Field(10_000.0, gt=0, description="Whale: price x size at or above.")
    new_wallet_window_ms: int = Field(
        7 * 86_400_000, ge=0, description="A wallet first seen this recently is new."
    )
    new_wallet_min_notional: float = Field(1_000.0, gt=0)
    volume_window_ms: int = Field(3_600_000, gt=0, description="Market's recent volume window.")
    min_volume_share: float = Field(
        0.5, gt=0, le=1, description="Trade size / (recent volume incl. it) that is 'large'."
    )
    volume_share_min_notional: float = Field(1_000.0, gt=0)


class LongshotParams(BaseModel):
    """The seeds' favourite-longshot strategies (signals only, no arbitrage claim).

    - near_certain: a token asked between `min_price` and `max_price` close to expiry; edge is
      what it pays if it resolves as priced, net of the taker fee.
    - overpriced_longshot: a token bid at or below `max_price` close to expiry; `bias` is the
      share of its price assumed to be overpricing, the edge of selling it (buying the other side).
    """

    model_config = _STRICT

    strategy: Literal["near_certain", "overpriced_longshot"] = "near_certain"
    min_price: float = Field(0.90, gt=0, lt=1)
    max_price: float = Field(0.98, gt=0, lt=1)
    horizon_ms: int = Field(3 * 86_400_000, gt=0)
    bias: float = Field(0.5, ge=0, le=1)
    min_edge_bps: float = Field(100.0, ge=0)
    min_depth: float = Field(10.0, ge=0)

    @model_validator(mode="after")
    def _range(self) -> LongshotParams:
        if self.min_price >= self.max_price:
            raise ValueError(f"min_price ({self.min_price}) must be < max_price ({self.max_price})")
        return self


class PairParams(BaseModel):
    """Depth-walked two-or-more-leg arbitrage (cross-market groups, logical constraints)."""

    model_config = _STRICT

    min_edge_bps: float = Field(10.0, ge=0)
    max_levels: int = Field(10, ge=1, le=100)
    update_on_change: bool = True


class CrossMarketParams(PairParams):
    groups_file: str | None = Field(
        None, description="Registry YAML; the packaged rules/groups.yaml when unset."
    )
    groups: tuple[dict[str, Any], ...] = Field(
        (),
        description="Groups approved after review (`marketpulse groups approve`), published "
        "with the rule to the rules topic; merged over the file's, by group id.",
    )

    @field_validator("groups")
    @classmethod
    def _valid_groups(cls, groups: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        # Imported here: cross_market imports the rules package, which imports this module.
        from marketpulse.rules.cross_market import Group

        return tuple(Group.model_validate(g).model_dump(mode="json") for g in groups)


class LogicalParams(PairParams):
    ladders: bool = Field(True, description="Strike ladders within an event.")
    term_structure: bool = Field(True, description="'by an earlier date' implies 'by a later'.")
    min_confidence: float = Field(0.9, ge=0, le=1, description="Parsed propositions below: review.")

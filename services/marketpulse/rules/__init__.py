"""Rule definitions: what a rule is (`RuleDef`), the parameters of each rule type, and the
loader of the YAML file that holds them (`defaults.yaml` next to this module by default).

The same fields travel on the compacted rules topic (rule.avsc), so `RuleDef` converts to and
from that record; the rule logic itself lives in one module per rule type: `complete_set`,
`spike`, `trend` (breakout, fade), `endgame`, `whale`, `longshot`, `cross_market` and `logical`
(both through `hedge`), with `flow` holding the tick/trade rules' state, `propositions` the
question parser, `common` the signal builder and cooldown; parameters of the types but
complete_set are in `params`.
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from marketpulse.errors import ConfigError
from marketpulse.rules.params import (
    CrossMarketParams,
    EndgameParams,
    LogicalParams,
    LongshotParams,
    SpikeParams,
    TrendParams,
    WhaleParams,
)

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")

P = TypeVar("P", bound=BaseModel)


class Levels(BaseModel):
    """Edge thresholds in basis points: P1 at or above `P1`, P2 at or above `P2`, else P3."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    P1: float = Field(300.0, ge=0)
    P2: float = Field(100.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Levels:
        if self.P1 < self.P2:
            raise ValueError(f"P1 ({self.P1}) must be >= P2 ({self.P2})")
        return self

    def level_for(self, edge_bps: float) -> str:
        if edge_bps >= self.P1:
            return "P1"
        if edge_bps >= self.P2:
            return "P2"
        return "P3"


class CompleteSetParams(BaseModel):
    """Parameters of rule type `complete_set` (see `marketpulse.rules.complete_set`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_edge_bps: float = Field(10.0, ge=0, description="Net edge below this is not a signal.")
    max_levels: int = Field(10, ge=1, le=100, description="Book levels walked per leg.")
    directions: tuple[Literal["buy", "sell"], ...] = Field(
        ("buy", "sell"),
        min_length=1,
        description="buy: Σ asks + fees < 1; sell: mint at 1, Σ bids - fees > 1.",
    )
    update_on_change: bool = Field(
        True, description="Signal again when an open opportunity's size or prices change."
    )


# One entry per rule type: the model its `params` must satisfy.
PARAMS_BY_TYPE: dict[str, type[BaseModel]] = {
    "complete_set": CompleteSetParams,
    "spike": SpikeParams,
    "trend": TrendParams,
    "endgame": EndgameParams,
    "whale": WhaleParams,
    "longshot": LongshotParams,
    "cross_market": CrossMarketParams,
    "logical": LogicalParams,
}


class RuleDef(BaseModel):
    """One rule as configured: identity, version, on/off, cooldown and typed parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    version: int = Field(ge=1)
    type: str
    enabled: bool = True
    cooldown_ms: int = Field(0, ge=0, description="Event-time quiet period per subject.")
    levels: Levels = Field(default_factory=lambda: Levels.model_validate({}))
    params: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    _typed: dict[builtins.type[BaseModel], BaseModel] = PrivateAttr(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PARAMS_BY_TYPE:
            raise ValueError(f"unknown rule type {value!r}; known: {sorted(PARAMS_BY_TYPE)}")
        return value

    @field_validator("params")
    @classmethod
    def _params_match_type(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        model = PARAMS_BY_TYPE.get(info.data.get("type", ""))
        if model is None:
            return params  # the bad type is reported on its own field
        try:
            # Keep the plain dict with defaults filled in, so that a definition round-trips
            # through JSON (the rules topic) unchanged.
            return model.model_validate(params).model_dump(mode="json")
        except ValidationError as exc:
            # Re-raised as a ValueError whose text names `params.<field>`: pydantic would
            # otherwise report the nested fields without their `params.` prefix.
            raise ValueError(_describe(exc, prefix="params.")) from None

    def params_as(self, model: builtins.type[P]) -> P:
        """`params` as their typed model, validated once per definition (rules call this on
        every evaluation)."""
        # Through __pydantic_private__ directly: a private attribute's normal access goes
        # through pydantic's __getattr__, which costs more than the rest of a cheap rule.
        typed = self.__pydantic_private__["_typed"]  # type: ignore[index]
        cached = typed.get(model)
        if cached is None:
            cached = typed[model] = model.model_validate(self.params)
        return cast(P, cached)

    def to_record(self) -> dict[str, Any]:
        """The rule.avsc record of this definition (for the rules topic)."""
        return {
            "rule_id": self.rule_id,
            "version": self.version,
            "type": self.type,
            "enabled": self.enabled,
            "cooldown_ms": self.cooldown_ms,
            "params_json": json.dumps(self.params, sort_keys=True),
            "levels_json": json.dumps(self.levels.model_dump(), sort_keys=True),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RuleDef:
        return _validated(
            {
                "rule_id": record["rule_id"],
                "version": record["version"],
                "type": record["type"],
                "enabled": record.get("enabled", True),
                "cooldown_ms": record.get("cooldown_ms", 0),
                "params": json.loads(record.get("params_json") or "{}"),
                "levels": json.loads(record.get("levels_json") or "{}"),
            },
            where=f"rule record {record.get('rule_id')!r}",
        )


def load_rules(path: Path | str | None = None) -> dict[str, RuleDef]:
    """Rules of a YAML file (`{rules: [ {rule_id, version, type, ...}, ... ]}`) by rule id.

    Raises ConfigError naming the file, the rule and the offending field.
    """
    file = Path(path) if path is not None else DEFAULTS_FILE
    try:
        raw = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read rules file {file}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("rules"), list):
        raise ConfigError(f"rules file {file}: expected a top-level 'rules:' list")
    rules: dict[str, RuleDef] = {}
    for i, item in enumerate(raw["rules"]):
        name = item.get("rule_id", f"#{i}") if isinstance(item, dict) else f"#{i}"
        rule = _validated(item, where=f"rules file {file}: rule {name!r}")
        if rule.rule_id in rules:
            raise ConfigError(f"rules file {file}: rule_id {rule.rule_id!r} appears twice")
        rules[rule.rule_id] = rule
    return rules


def _validated(data: Any, *, where: str) -> RuleDef:
    try:
        return RuleDef.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc)}") from exc


def _describe(exc: ValidationError, prefix: str = "") -> str:
    """`field a.b: message; field c: message`, the field path spelled out for humans."""
    problems = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if msg.startswith("field "):  # already described by a nested model (params)
            problems.append(msg)
            continue
        loc = ".".join(str(part) for part in err["loc"])
        problems.append(f"field {prefix}{loc or '(rule)'}: {msg}")
    return "; ".join(problems)

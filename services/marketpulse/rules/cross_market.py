"""Cross-market mispricing inside reviewed equivalence groups (same venue or Polymarket↔Kalshi).

A group (registry YAML, `groups.yaml` by default) says that its member markets ask the same
question. `relation: identity` means every member's proposition is the same; `complement` (two
members) that the second's is the negation of the first's. `orientation` says which outcome of a
member pays when its proposition holds: `yes` (the first outcome) or `no` (the second, for a
contract worded the other way round, common between venues). Only `approved: true` groups fire:
automatic matching may suggest a group, a person decides.

For every pair of members, "proposition holds on A" + "proposition fails on B" is a complete set:
buying both below 1 net of fees is an arbitrage (`hedge.evaluate`, depth-walked). Kalshi books
carry bids only; a missing ask side is priced from the other outcome's bids (YES/NO inversion).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from marketpulse.errors import ConfigError
from marketpulse.rules.hedge import Hedge

GROUPS_FILE = Path(__file__).with_name("groups.yaml")


class Member(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    market_id: str = Field(min_length=3, pattern=r"^(pm|ks|mk):")
    orientation: Literal["yes", "no"] = "yes"

    @field_validator("orientation", mode="before")
    @classmethod
    def _yaml_bool(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare yes/no as a boolean.
        if isinstance(value, bool):
            return "yes" if value else "no"
        return value


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    relation: Literal["identity", "complement"]
    resolution_source: str = Field(min_length=1)
    approved: bool = False
    note: str = ""
    members: tuple[Member, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _shape(self) -> Group:
        if self.relation == "complement" and len(self.members) != 2:
            raise ValueError("a complement group has exactly 2 members")
        ids = [m.market_id for m in self.members]
        if len(set(ids)) != len(ids):
            raise ValueError("a market appears twice in the group")
        return self


def load_groups(path: Path | str | None = None) -> dict[str, Group]:
    """Groups of a registry file by id; ConfigError names the file, the group and the field."""
    file = Path(path) if path is not None else GROUPS_FILE
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read groups file {file}: {exc}") from exc
    items = raw.get("groups") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"groups file {file}: expected a top-level 'groups:' list")
    groups: dict[str, Group] = {}
    for i, item in enumerate(items):
        name = item.get("group_id", f"#{i}") if isinstance(item, dict) else f"#{i}"
        try:
            group = Group.model_validate(item)
        except ValidationError as exc:
            problems = "; ".join(
                f"field {'.'.join(str(x) for x in e['loc']) or '(group)'}: "
                + e["msg"].removeprefix("Value error, ")
                for e in exc.errors()
            )
            raise ConfigError(f"groups file {file}: group {name!r}: {problems}") from exc
        if group.group_id in groups:
            raise ConfigError(f"groups file {file}: group_id {group.group_id!r} appears twice")
        groups[group.group_id] = group
    return groups


def group_of_markets(groups: Mapping[str, Group]) -> dict[str, list[str]]:
    """market id -> ids of the approved groups holding it (the repartition key)."""
    out: dict[str, list[str]] = {}
    for group in groups.values():
        if group.approved:
            for m in group.members:
                out.setdefault(m.market_id, []).append(group.group_id)
    return out


def _sides(member: Member, market: Mapping[str, Any], flip: bool) -> tuple[str, str] | None:
    """(token paying when the group's proposition holds, token paying when it fails)."""
    outcomes = market.get("outcomes") or []
    if len(outcomes) != 2:
        return None
    yes, no = outcomes[0]["token_id"], outcomes[1]["token_id"]
    holds_on_yes = (member.orientation == "yes") != flip
    return (yes, no) if holds_on_yes else (no, yes)


def hedges(group: Group, markets: Mapping[str, Mapping[str, Any]]) -> list[Hedge]:
    """Complete sets across the members whose metadata is known (none for unapproved groups)."""
    if not group.approved:
        return []
    sides = {}
    for i, member in enumerate(group.members):
        market = markets.get(member.market_id)
        flip = group.relation == "complement" and i == 1
        s = _sides(member, market, flip) if market is not None else None
        if s is not None:
            sides[i] = (member, s)
    out = []
    ev = (("group", group.group_id), ("resolution_source", group.resolution_source))
    for i in sorted(sides):
        for j in sorted(sides):
            if i == j:
                continue
            (a, (a_true, _)), (b, (_, b_false)) = sides[i], sides[j]
            out.append(
                Hedge(
                    key=f"{group.group_id}|{a.market_id}+|{b.market_id}-",
                    subject=group.group_id,
                    event_key=f"group:{group.group_id}",
                    tokens=((a.market_id, a_true), (b.market_id, b_false)),
                    relation=group.relation,
                    evidence=(
                        *ev,
                        ("holds_on", f"{a.market_id}:{a.orientation}"),
                        ("fails_on", f"{b.market_id}:{b.orientation}"),
                    ),
                )
            )
    return out

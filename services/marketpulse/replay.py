"""Replay: rewind a consumer group's offsets, and backfill a time range into a what-if copy.

Replay = stop the group, move its offsets, restart it. `plan` shows per partition where the
group is, where it would go, and how many messages it would then read; `execute` refuses while
the group has members (a running consumer would overwrite the move with its next commit) and
then commits the targets on the group's behalf.

Stateful groups. A Faust worker (its group id is its `worker_id`) keeps tables in changelog
topics named `<group>-<table>-changelog`. Rewinding only its input would replay books into tables
that already saw them: the worker skips every book its table already holds and its episode
trackers say every opportunity was signalled, so a rewind alone re-emits *nothing*. A correct
replay of such a group therefore:
  - goes back to the very beginning (`earliest`: table state at an arbitrary past offset cannot
    be rebuilt from a compacted changelog, so any other target is refused);
  - resets the tables: a tombstone for every key of every changelog (deleting records is not
    allowed on compacted topics, and deleting the topics races with Faust recreating them);
  - moves the group's internal repartition topics to their *end*: the repartition agent
    re-forwards the markets it re-reads, so the old copies must not be read a second time.
Then the worker recomputes everything from the input alone and, since its rules run on event
time with deterministic ids, re-emits the same signal ids (tests/integration/test_replay_e2e.py).
A what-if run that must not touch the live worker uses `backfill` and a fresh worker id instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition

from marketpulse.catalog import CATALOG
from marketpulse.errors import ConfigError
from marketpulse.kafka import admin, create_topics, producer
from marketpulse.settings import Settings

TargetKind = Literal["earliest", "latest", "time", "offset"]
_EPOCH_MS = re.compile(r"^\d{12,15}$")


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    ms: int | None = None  # kind time
    tp: TopicPartition | None = None  # kind offset
    offset: int | None = None

    def __str__(self) -> str:
        if self.kind == "time":
            assert self.ms is not None
            return datetime.fromtimestamp(self.ms / 1000, UTC).isoformat()
        if self.kind == "offset":
            assert self.tp is not None
            return f"{self.tp.topic}:{self.tp.partition}:{self.offset}"
        return self.kind


def parse_target(text: str) -> Target:
    """earliest | latest | ISO 8601 time (naive = UTC) | epoch ms | topic:partition:offset.

    A time selects, per partition, the first message whose Kafka timestamp (when it was
    produced) is at or after it; that is not the event time inside the message."""
    text = text.strip()
    if text in ("earliest", "latest"):
        return Target(text)  # type: ignore[arg-type]
    if _EPOCH_MS.match(text):
        return Target("time", ms=int(text))
    parts = text.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit() and "T" not in parts[0]:
        return Target("offset", tp=TopicPartition(parts[0], int(parts[1])), offset=int(parts[2]))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--to {text!r}: expected earliest, latest, an ISO time (2026-01-31T12:00:00Z), "
            "epoch milliseconds, or topic:partition:offset"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return Target("time", ms=int(parsed.timestamp() * 1000))


def resolve_topic(settings: Settings, name: str) -> str:
    """A catalog id (`books`) or a Kafka topic name, as the Kafka name."""
    return settings.topic(name) if name in CATALOG.topics else name


@dataclass
class PartitionMove:
    topic: str
    partition: int
    current: int | None  # committed offset; None: never committed
    target: int
    end: int  # high watermark when planned
    to_reprocess: int  # messages the group will read after the move (end - target)


@dataclass
class ReplayPlan:
    group: str
    to: str
    moves: list[PartitionMove]
    reset_changelogs: list[str] = field(default_factory=list)
    executed: bool = False
    tombstones: int = 0

    @property
    def to_reprocess(self) -> int:
        return sum(m.to_reprocess for m in self.moves)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "to_reprocess": self.to_reprocess}

    def table(self) -> str:
        """Human-readable: one line per partition."""
        lines = [f"{'topic':<48}{'part':>5}{'current':>10}{'target':>10}{'end':>10}{'replay':>9}"]
        for m in self.moves:
            cur = "-" if m.current is None else str(m.current)
            lines.append(
                f"{m.topic:<48}{m.partition:>5}{cur:>10}{m.target:>10}{m.end:>10}"
                f"{m.to_reprocess:>9}"
            )
        lines.append(
            f"group {self.group} -> {self.to}: {self.to_reprocess} message(s) to reprocess"
        )
        if self.reset_changelogs:
            lines.append("tables reset (tombstones): " + ", ".join(self.reset_changelogs))
        lines.append("executed" if self.executed else "dry run: add --execute to move the offsets")
        return "\n".join(lines)


async def partitions_of(settings: Settings, topics: Sequence[str]) -> dict[str, list[int]]:
    """Partition numbers of each topic that exists (a missing topic maps to [])."""
    client = admin(settings)
    await client.start()
    try:
        described = await client.describe_topics(list(topics))
    finally:
        await client.close()
    found = {d["topic"]: sorted(p["partition"] for p in d["partitions"]) for d in described}
    return {t: found.get(t, []) for t in topics}


# ---- planning ------------------------------------------------------------------------------


async def plan(
    settings: Settings,
    group: str,
    to: str,
    topics: Sequence[str] | None = None,
    reset_state: bool = False,
) -> ReplayPlan:
    """Where each partition of the group would move. Reads only: nothing changes."""
    target = parse_target(to)
    client = admin(settings)
    await client.start()
    try:
        committed = await client.list_consumer_group_offsets(group)
        existing = set(await client.list_topics())
    finally:
        await client.close()
    changelogs = sorted(
        t for t in existing if t.startswith(f"{group}-") and t.endswith("-changelog")
    )
    internal = {t for t in existing if t.startswith(f"{group}-") and t.endswith("-repartition")}
    names = _topics_of(settings, committed, topics, target, existing)
    _check_stateful(group, target, changelogs, reset_state)
    if changelogs:
        # Every internal topic goes to its end, committed or not: one the group has not
        # committed yet would otherwise be read from its start, old copies included.
        names += sorted(internal - set(names))
    offsets = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
    moves = await _moves(settings, names, offsets, target, internal if changelogs else set())
    return ReplayPlan(group, str(target), moves, changelogs if changelogs else [])


def _topics_of(
    settings: Settings,
    committed: dict[TopicPartition, Any],
    topics: Sequence[str] | None,
    target: Target,
    existing: set[str],
) -> list[str]:
    if target.kind == "offset":
        assert target.tp is not None
        names = [target.tp.topic]
    elif topics:
        names = [resolve_topic(settings, t) for t in topics]
    else:
        names = sorted({tp.topic for tp in committed})
    if not names:
        raise ConfigError("the group has no committed offsets: name its topics with --topics")
    missing = [n for n in names if n not in existing]
    if missing:
        raise ConfigError(f"no such topic(s) on {settings.kafka_bootstrap}: {missing}")
    return names


def _check_stateful(group: str, target: Target, changelogs: list[str], reset_state: bool) -> None:
    if not changelogs:
        return
    if target.kind != "earliest":
        raise ConfigError(
            f"group {group} keeps tables ({', '.join(changelogs)}): their state at {target} "
            "cannot be rebuilt, so it can only be replayed from earliest (with --reset-state); "
            "for a partial what-if, backfill into a new prefix and run a fresh worker id"
        )
    if not reset_state:
        raise ConfigError(
            f"group {group} keeps tables ({', '.join(changelogs)}) that already hold this "
            "input: rewinding alone would re-emit nothing. Add --reset-state to empty them too"
        )


async def _moves(
    settings: Settings,
    names: list[str],
    committed: dict[TopicPartition, int],
    target: Target,
    to_end: set[str],
) -> list[PartitionMove]:
    parts = await partitions_of(settings, names)
    tps = [TopicPartition(n, p) for n in names for p in parts[n]]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        if target.kind == "offset":
            if target.tp not in tps:
                raise ConfigError(f"{target}: no such partition")
            tps = [target.tp]
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        at_time = (
            await consumer.offsets_for_times({tp: target.ms for tp in tps})
            if target.kind == "time"
            else {}
        )
    finally:
        await consumer.stop()
    moves = []
    for tp in tps:
        if tp.topic in to_end:
            offset = end[tp]
        elif target.kind == "earliest":
            offset = begin[tp]
        elif target.kind == "latest":
            offset = end[tp]
        elif target.kind == "time":
            found = at_time.get(tp)
            offset = found.offset if found is not None else end[tp]  # nothing at or after it
        else:
            offset = min(max(int(target.offset or 0), begin[tp]), end[tp])
        moves.append(
            PartitionMove(
                tp.topic, tp.partition, committed.get(tp), offset, end[tp], end[tp] - offset
            )
        )
    return moves


# ---- execution -----------------------------------------------------------------------------


async def active_members(settings: Settings, group: str) -> list[str]:
    """Client ids of the group's current members (empty when nobody consumes)."""
    client = admin(settings)
    await client.start()
    try:
        responses = await client.describe_consumer_groups([group])
    finally:
        await client.close()
    members = []
    for response in responses:
        for described in response.groups:
            # (error_code, group_id, state, protocol_type, protocol, members, ...)
            for member in described[5]:
                members.append(f"{member[2]}@{member[3]}")  # client id @ host
    return members


async def execute(settings: Settings, replay: ReplayPlan) -> ReplayPlan:
    """Move the offsets of a planned replay (and reset the tables it names)."""
    members = await active_members(settings, replay.group)
    if members:
        raise ConfigError(
            f"group {replay.group} has {len(members)} active member(s) ({', '.join(members)}): "
            "stop them first, or their next commit would undo the move"
        )
    for topic in replay.reset_changelogs:
        replay.tombstones += await tombstone_all(settings, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=replay.group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        offsets = {TopicPartition(m.topic, m.partition): m.target for m in replay.moves}
        consumer.assign(list(offsets))
        # Committed without joining the group (generation -1): the broker accepts it only
        # while the group is empty, which closes the race with a member starting meanwhile.
        await consumer.commit(offsets)
    finally:
        await consumer.stop()
    replay.executed = True
    return replay


async def replay(
    settings: Settings,
    group: str,
    to: str,
    topics: Sequence[str] | None = None,
    *,
    execute_it: bool = False,
    reset_state: bool = False,
) -> ReplayPlan:
    """Plan, and with `execute_it` also move. The CLI's and the API's entry point."""
    planned = await plan(settings, group, to, topics, reset_state)
    return await execute(settings, planned) if execute_it else planned


async def tombstone_all(settings: Settings, topic: str) -> int:
    """A tombstone for every live key of a compacted topic, in the key's own partition."""
    keys = await _keys(settings, topic)
    prod = producer(settings, client_id="mpx-replay")
    await prod.start()
    try:
        for partition, key in keys:
            await prod.send(topic, None, key=key, partition=partition)
        await prod.flush()
    finally:
        await prod.stop()
    return len(keys)


async def _keys(settings: Settings, topic: str) -> list[tuple[int, bytes]]:
    """Keys whose latest record is not already a tombstone, with their partition."""
    latest: dict[tuple[int, bytes], bool] = {}
    async for msg in _read(settings, topic, None, None):
        if msg.key is not None:
            latest[(msg.partition, msg.key)] = msg.value is not None
    return [k for k, live in latest.items() if live]


# ---- backfill ------------------------------------------------------------------------------


async def _read(settings: Settings, topic: str, since_ms: int | None, until_ms: int | None) -> Any:
    """Every message of `topic` from `since_ms` until `until_ms` (exclusive) or, without it,
    until the end offsets seen at the start."""
    tps = [TopicPartition(topic, p) for p in (await partitions_of(settings, [topic]))[topic]]
    if not tps:
        raise ConfigError(f"no such topic {topic!r}")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        # Explicit: the default ("latest") would race with the seeks below after assign().
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        stop_at = await consumer.end_offsets(tps)
        if until_ms is not None:
            found = await consumer.offsets_for_times({tp: until_ms for tp in tps})
            stop_at = {tp: found[tp].offset if found.get(tp) else stop_at[tp] for tp in tps}
        starts = (
            await consumer.offsets_for_times({tp: since_ms for tp in tps})
            if since_ms is not None
            else {}
        )
        for tp in tps:
            found = starts.get(tp)
            if since_ms is None:
                consumer.seek(tp, begin[tp])
            else:
                consumer.seek(tp, found.offset if found is not None else stop_at[tp])
        live = {tp for tp in tps if await consumer.position(tp) < stop_at[tp]}
        while live:
            batch = await consumer.getmany(*live, timeout_ms=500)
            for tp, messages in batch.items():
                for msg in messages:
                    if msg.offset < stop_at[tp]:
                        yield msg
            live = {tp for tp in live if await consumer.position(tp) < stop_at[tp]}
    finally:
        await consumer.stop()


async def backfill(
    settings: Settings,
    topics: Sequence[str],
    to_prefix: str,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> dict[str, Any]:
    """Copy `topics` (catalog ids or names) from `since_ms` until `until_ms` into `to_prefix` +
    their name, same partition, key, value, headers and timestamp (event time and broker time
    stay what they were), after creating the whole catalog under the new prefix. A worker
    run with `MPX_TOPIC_PREFIX=<to_prefix><prefix>` and a fresh `MPX_WORKER_ID` then replays
    the range in isolation; no live group is touched."""
    if not to_prefix:
        raise ConfigError("backfill needs a --to-prefix: copying a topic onto itself loops")
    target = settings.model_copy(update={"topic_prefix": to_prefix + settings.topic_prefix})
    await create_topics(target)
    copied: dict[str, int] = {}
    prod = producer(settings, client_id="mpx-backfill")
    await prod.start()
    try:
        for name in topics:
            source = resolve_topic(settings, name)
            dest = to_prefix + source
            await _same_partitions(prod, source, dest)
            n = 0
            async for msg in _read(settings, source, since_ms, until_ms):
                await prod.send(
                    dest,
                    msg.value,
                    key=msg.key,
                    partition=msg.partition,
                    timestamp_ms=msg.timestamp,
                    headers=list(msg.headers or ()),
                )
                n += 1
            await prod.flush()
            copied[dest] = n
    finally:
        await prod.stop()
    return {"copied": copied, "topic_prefix": target.topic_prefix}


async def _same_partitions(prod: Any, source: str, dest: str) -> None:
    """Keys must keep their partitions (rules run partition-locally): counts must match."""
    src = await prod.partitions_for(source)
    dst = await prod.partitions_for(dest)
    if len(src) != len(dst):
        raise ConfigError(
            f"{dest} has {len(dst)} partitions but {source} has {len(src)}: they must match"
        )

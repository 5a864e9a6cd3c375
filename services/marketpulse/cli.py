"""`marketpulse`: one command, one subcommand per process. Every subcommand reads its settings
from MPX_* environment variables (see `marketpulse settings`), and flags override them."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from marketpulse.settings import Settings, get_settings


def _settings(**overrides: object) -> Settings:
    base = get_settings()
    clean = {k: v for k, v in overrides.items() if v is not None}
    return base.model_copy(update=clean) if clean else base


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if logging.getLogger().level > logging.DEBUG:
        # httpx logs every request at INFO: a line per metrics scrape or venue poll drowns ours.
        logging.getLogger("httpx").setLevel(logging.WARNING)


def serve_metrics(s: Settings, ready: Callable[[], dict[str, Any]] | None = None) -> None:
    """/metrics, /healthz and /readyz of a process with no HTTP server of its own, on
    MPX_METRICS_PORT (off when 0)."""
    if s.metrics_port:
        from marketpulse import health

        health.serve(s.metrics_port, ready or (lambda: {"ok": True}))


class _Group(click.Group):
    """Project errors (bad config, unreachable dependencies) print as one clear line, not a
    traceback; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from marketpulse.errors import MarketPulseError

        try:
            return super().invoke(ctx)
        except MarketPulseError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option("--bootstrap", envvar="MPX_KAFKA_BOOTSTRAP", help="Kafka bootstrap servers.")
@click.pass_context
def main(ctx: click.Context, bootstrap: str | None) -> None:
    """MarketPulse: surveillance of prediction markets on Apache Kafka.

    \b
    Processes:   collect -> Kafka -> worker -> signals -> sink -> ClickHouse -> api
    Quick start: make demo        (local broker + every process, embedded ClickHouse)
    Settings:    MPX_* environment variables or .env  (marketpulse settings)
    """
    ctx.obj = _settings(kafka_bootstrap=bootstrap)
    _logging(ctx.obj.log_level)


@main.command()
@click.pass_obj
def settings(s: Settings) -> None:
    """Print the effective settings (secrets masked)."""
    click.echo(json.dumps(json.loads(s.model_dump_json()), indent=2, default=str))


@main.group()
def topics() -> None:
    """Create or describe the topics of the catalog (schemas/topics.yaml)."""


@topics.command("create")
@click.option("--partitions", type=int, help="Override every topic's partition count.")
@click.pass_obj
def topics_create(s: Settings, partitions: int | None) -> None:
    """Create every catalog topic that does not exist yet (idempotent)."""
    from marketpulse.kafka import create_topics

    created = asyncio.run(create_topics(s, partitions))
    click.echo(f"created {len(created)} topic(s)" + (": " + ", ".join(created) if created else ""))


@topics.command("describe")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def topics_describe(s: Settings, as_json: bool) -> None:
    """Show each catalog topic and what the broker holds for it."""
    from marketpulse.kafka import describe_topics

    rows = asyncio.run(describe_topics(s))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'topic':<22}{'key':<16}{'schema':<13}{'cleanup':<9}{'parts':>6}  state")
    for r in rows:
        state = "ok" if r["exists"] else "missing (marketpulse topics create)"
        parts = r["partitions"] if r["exists"] else r["partitions_wanted"]
        click.echo(
            f"{r['name']:<22}{r['key']:<16}{r['schema']:<13}{r['cleanup']:<9}{parts:>6}  {state}"
        )


@main.command()
@click.option(
    "--source",
    default="mock",
    show_default=True,
    help="Where market data comes from: mock (seeded simulator), polymarket, kalshi (live "
    "venues), or replay:FILE (a recording made with --record, or a Kalshi capture).",
)
@click.option(
    "--speed",
    default="max",
    show_default=True,
    help="Replay: X times the recorded pace (1 = real time), or max (as fast as possible).",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Real venues: append every raw frame to this JSONL file (replay it with replay:FILE).",
)
@click.option(
    "--raw-topic", is_flag=True, help="Real venues: also publish every raw frame to the raw topic."
)
@click.option("--seed", type=int, help="Mock venue seed (same seed, same stream).")
@click.option(
    "--events",
    "n_events",
    type=int,
    default=12,
    show_default=True,
    help="Mock: multi-outcome events.",
)
@click.option("--binaries", type=int, default=8, show_default=True, help="Mock: binary markets.")
@click.option(
    "--rate",
    type=float,
    default=200.0,
    show_default=True,
    help="Book updates per second (0 = as fast as possible).",
)
@click.option("--max-updates", type=int, help="Stop after this many book updates.")
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.pass_obj
def collect(
    s: Settings,
    source: str,
    seed: int | None,
    n_events: int,
    binaries: int,
    rate: float,
    max_updates: int | None,
    duration: float | None,
    speed: str,
    record: Path | None,
    raw_topic: bool,
) -> None:
    """Read a venue and publish normalized markets, books, ticks and trades to Kafka.

    \b
    Examples:
      marketpulse collect                                   # the mock venue
      marketpulse collect --source polymarket --record pm.jsonl
      marketpulse collect --source replay:pm.jsonl --speed 10
    Bad venue payloads go to the dead-letter topic with their reason; nothing stops the stream.
    """
    from marketpulse.collect import run, run_frames
    from marketpulse.frames import collector_health

    # /readyz answers 503 naming the shard when a venue connection has gone quiet.
    serve_metrics(s, lambda: collector_health(s.collector_quiet_s))

    if source != "mock":
        if speed != "max" and not _positive_float(speed):
            raise click.BadParameter("a number > 0, or max", param_hint="--speed")
        replay_speed = None if speed == "max" else float(speed)
        stats = asyncio.run(
            run_frames(
                s,
                source,
                speed=replay_speed,
                record=record,
                raw_topic=raw_topic,
                duration=duration,
            )
        )
        click.echo(json.dumps(stats))
        return
    stats = asyncio.run(
        run(
            s,
            source=source,
            seed=seed if seed is not None else s.mock_seed,
            n_events=n_events,
            n_binaries=binaries,
            rate=rate or None,
            max_updates=max_updates,
            duration=duration,
        )
    )
    click.echo(json.dumps(stats))


def _positive_float(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


@main.command()
@click.pass_obj
def worker(s: Settings) -> None:
    """Run the Faust stream worker: rules over books, emitting signals."""
    from marketpulse.worker.app import run

    run(s)


@main.command()
@click.pass_obj
def sink(s: Settings) -> None:
    """Write every topic to ClickHouse in batches, committing offsets after each insert."""
    from marketpulse.warehouse.sink import run

    serve_metrics(s)

    asyncio.run(run(s))


@main.command()
@click.option(
    "--with-sink/--no-sink",
    default=None,
    help="Run the sink in this process (default: on with embedded chDB, which only "
    "one process may open).",
)
@click.pass_obj
def api(s: Settings, with_sink: bool | None) -> None:
    """Serve the HTTP API (FastAPI): /healthz /readyz /metrics /api/markets /api/signals."""
    from marketpulse.api import run

    run(s, with_sink=with_sink)


@main.command()
@click.option(
    "--test", "test_only", is_flag=True, help="Send one test message to every channel and exit."
)
@click.pass_obj
def alerts(s: Settings, test_only: bool) -> None:
    """Deliver signals to Slack (and Telegram, JSON webhooks), de-duplicated.

    \b
    Channels and routes: MPX_ALERTS_ROUTES_FILE (YAML; default marketpulse/alerts/routes.yaml)
    Webhook URLs:        MPX_ALERTS_WEBHOOKS='{"slack": "https://hooks.slack.com/..."}'
                         (a channel without a URL is a dry run that logs what it would send)
    Group:               MPX_ALERTS_GROUP (a new group starts at MPX_ALERTS_OFFSET_RESET)
    A signal id is alerted at most once per channel, even across restarts and replays (the
    memory is the compacted topic mpx.alerts_state.v1); failed deliveries are retried with
    backoff for MPX_ALERTS_GIVE_UP_S, then dead-lettered with the reason.
    """
    if test_only:
        from marketpulse.alerts.service import send_test

        click.echo(json.dumps(asyncio.run(send_test(s)), indent=2))
        return
    from marketpulse.alerts.service import run

    serve_metrics(s)

    asyncio.run(run(s))


@main.command()
@click.option("--group", required=True, help="Consumer group to rewind (stop its members first).")
@click.option(
    "--to",
    "to",
    required=True,
    help="earliest | latest | ISO time (2026-01-31T12:00:00Z) | epoch ms | topic:partition:offset."
    " A time means the messages produced at or after it (Kafka timestamps, not event time).",
)
@click.option(
    "--topics",
    help="Comma-separated catalog ids or topic names (default: the topics the group committed).",
)
@click.option("--execute", is_flag=True, help="Move the offsets (default: only show the plan).")
@click.option(
    "--reset-state",
    is_flag=True,
    help="Also empty the tables of a Faust worker group (required to replay a worker).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def replay(
    s: Settings,
    group: str,
    to: str,
    topics: str | None,
    execute: bool,
    reset_state: bool,
    as_json: bool,
) -> None:
    """Rewind a consumer group's offsets to reprocess history (dry run by default).

    \b
    Shows per partition the committed offset, the target, and how many messages the group will
    read again; refuses while the group has active members. Consumers are idempotent (signal
    ids are deterministic, the sink de-duplicates, alerts remember what they sent), so a replay
    changes no count and sends no alert twice. Examples:
      marketpulse replay --group mpx-sink --to earliest --execute
      marketpulse replay --group mpx-alerts --to 2026-01-31T12:00:00Z
      marketpulse replay --group mpx-worker --to earliest --reset-state --execute
    A worker group keeps tables: it can only replay from earliest, with --reset-state.
    """
    from marketpulse.replay import replay as run_replay

    names = [t.strip() for t in topics.split(",") if t.strip()] if topics else None
    plan = asyncio.run(run_replay(s, group, to, names, execute_it=execute, reset_state=reset_state))
    click.echo(json.dumps(plan.as_dict(), indent=2) if as_json else plan.table())


@main.command()
@click.option(
    "--topics",
    required=True,
    help="Comma-separated catalog ids or topic names to copy, e.g. markets,books.",
)
@click.option(
    "--to-prefix",
    required=True,
    help="Prefix of the copies, e.g. whatif1. (the whole catalog is created under it).",
)
@click.option("--since", help="ISO time or epoch ms, inclusive (default: the beginning).")
@click.option("--until", help="ISO time or epoch ms, exclusive (default: now).")
@click.pass_obj
def backfill(
    s: Settings, topics: str, to_prefix: str, since: str | None, until: str | None
) -> None:
    """Copy a time range of topics into new topics for an isolated what-if run.

    \b
    Partitions, keys, values and timestamps are kept. No live group is touched. Then e.g.:
      MPX_TOPIC_PREFIX=whatif1. MPX_WORKER_ID=whatif1-worker MPX_RULES_FILE=new.yaml \\
        marketpulse worker
    Copy the markets topic without --since: rules need every market's metadata.
    """
    from marketpulse.replay import backfill as run_backfill
    from marketpulse.replay import parse_target

    def ms(value: str | None) -> int | None:
        return parse_target(value).ms if value else None

    names = [t.strip() for t in topics.split(",") if t.strip()]
    click.echo(json.dumps(asyncio.run(run_backfill(s, names, to_prefix, ms(since), ms(until)))))


@main.group()
def rules() -> None:
    """Rules as runtime configuration: the compacted rules topic.

    \b
    Workers start from MPX_RULES_FILE (default: the packaged defaults), overlay the rules
    topic, and apply every later change without a restart; each signal names its rule version.
    Edit a copy of the defaults, bump `version` of what you change, then publish:
      marketpulse rules publish --file my-rules.yaml
      marketpulse rules list
    """


@rules.command("publish")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Rules YAML to publish (default: MPX_RULES_FILE, else the packaged defaults).",
)
@click.option("--dry-run", is_flag=True, help="Validate and show what would be published.")
@click.pass_obj
def rules_publish(s: Settings, path: Path | None, dry_run: bool) -> None:
    """Validate a rules file and publish every definition to the rules topic.

    An invalid file is refused as a whole, naming the rule and the field; nothing is sent.
    """
    from marketpulse.rulebook import publish
    from marketpulse.rules import load_rules

    defs = load_rules(path or s.rules_file)
    if dry_run:
        for r in defs.values():
            click.echo(f"{r.rule_id} v{r.version} ({r.type}, {'on' if r.enabled else 'off'})")
        return
    sent = asyncio.run(publish(s, defs))
    click.echo(f"published {len(sent)} rule(s) to {s.topic('rules')}: ")
    click.echo(", ".join(f"{rid} v{v}" for rid, v in sent))


@rules.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def rules_list(s: Settings, as_json: bool) -> None:
    """Show the rules in force: the file's definitions overlaid with the rules topic."""
    from marketpulse.rulebook import current, describe
    from marketpulse.rules import load_rules

    book, _ = asyncio.run(current(s, load_rules(s.rules_file)))
    rows = [describe(r) for r in book.rules.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'rule':<24}{'version':>8}  {'type':<14}{'on':<5}{'cooldown_ms':>12}  params")
    for r in rows:
        params = json.dumps(r["params"], sort_keys=True)
        on = "yes" if r["enabled"] else "no"
        click.echo(
            f"{r['rule_id']:<24}{r['version']:>8}  {r['type']:<14}{on:<5}"
            f"{r['cooldown_ms']:>12}  {params}"
        )


@main.command()
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Rules YAML (default: MPX_RULES_FILE, else the packaged defaults).",
)
@click.option(
    "--from",
    "source",
    required=True,
    help="A JSON Lines recording ({kind, record} per line) or 'clickhouse' (the warehouse "
    "of MPX_WAREHOUSE_URL: markets, books, trades; tick rules read each book's top).",
)
@click.option("--start", help="Event time from (epoch ms or ISO 8601, UTC if naive).")
@click.option("--end", help="Event time to, exclusive.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("backtest-out"),
    show_default=True,
    help="Directory for hits.csv|hits.parquet and summary.json.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True
)
@click.option("--all-rules", is_flag=True, help="Enable every rule of the file, even if off.")
@click.pass_obj
def backtest(
    s: Settings,
    rules_path: Path | None,
    source: str,
    start: str | None,
    end: str | None,
    out_dir: Path,
    fmt: str,
    all_rules: bool,
) -> None:
    """Run the worker's rules offline over recorded market data; write hits and a summary.

    \b
    The same rule code as the live worker, in event-time order, over in-memory state:
      marketpulse backtest --from capture.jsonl --out out/
      marketpulse backtest --from clickhouse --start 2026-01-01 --end 2026-01-02 --all-rules
    The summary (also printed as JSON, last line) has per rule: hits, mean and total edge,
    executable notional, and realised P&L/edge where every leg's market resolved.
    """
    from marketpulse import backtest as bt
    from marketpulse.rules import load_rules

    defs = list(load_rules(rules_path or s.rules_file).values())
    if all_rules:
        defs = [r.model_copy(update={"enabled": True}) for r in defs]
    lo, hi = bt.parse_time(start), bt.parse_time(end)
    if source == "clickhouse":
        items = bt.read_warehouse(s, lo, hi)
    else:
        items = bt.read_recording(Path(source))
    result = bt.run(defs, items, start_ms=lo, end_ms=hi, progress=True)
    hits = bt.write_hits(result.hits, out_dir, fmt)
    summary = bt.write_summary(result, out_dir)
    click.echo(
        f"{len(result.hits)} hit(s) from {result.inputs} input(s): {hits}, {summary}", err=True
    )
    click.echo(json.dumps({"inputs": result.inputs, "rules": result.summary}))


@main.command()
@click.argument("gamma_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--min-confidence",
    type=float,
    default=0.9,
    show_default=True,
    help="Claims read below this go to review (the logical rule's min_confidence).",
)
@click.option("--review-only", is_flag=True, help="List only what needs a person's review.")
def propositions(gamma_file: Path, min_confidence: float, review_only: bool) -> None:
    """Read Polymarket questions (a Gamma API JSON dump) as ladder/deadline propositions.

    \b
    Shows what the logical rule would compare (kind, underlying, threshold, date) and what
    it sends to the review queue instead (the worker publishes those to the review topic,
    listed by the API at /api/review). Example:
      marketpulse propositions gamma_markets.json --review-only
    """
    import time

    from marketpulse.rules import propositions as props

    markets = props.gamma_markets(json.loads(gamma_file.read_text()))
    parsed = [p for p in map(props.parse, markets) if p is not None]
    review = [p for p in parsed if p.needs_review(min_confidence)]
    for p in parsed:
        why = p.review_reason(min_confidence)
        if review_only and not why:
            continue
        if p.claim is not None:
            c = p.claim
            what = f"{c.kind} {c.underlying!r} {c.threshold if c.threshold is not None else ''}"
            when = time.strftime("%Y-%m-%d", time.gmtime(c.date_ms / 1000)) if c.date_ms else ""
        else:
            what, when = "-", ""
        state = f"REVIEW ({why})" if why else f"ok {p.confidence:g}"
        click.echo(f"{state:<55} {what} {when} | {p.question.strip()}")
    click.echo(
        f"{len(markets)} market(s), {len(parsed)} with a ladder or deadline cue, "
        f"{len(parsed) - len(review)} read, {len(review)} to review",
        err=True,
    )


@main.command()
@click.option(
    "--approval",
    type=click.Choice(["semi_auto", "auto"]),
    help="Override the approval mode (MPX_EXECUTION_APPROVAL; default from the limits file).",
)
@click.option(
    "--levels",
    help="Comma-separated signal levels that become intents, e.g. P1,P2 (MPX_EXECUTION_LEVELS).",
)
@click.option(
    "--limits",
    "limits_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML sizing, limits and modes (MPX_EXECUTION_FILE; default: the packaged defaults).",
)
@click.option("--check", is_flag=True, help="Validate the configuration, print it and exit.")
@click.pass_obj
def execute(
    s: Settings, approval: str | None, levels: str | None, limits_file: Path | None, check: bool
) -> None:
    """Turn signals into sized, risk-checked order intents, filled on PAPER (no live orders).

    \b
    Modes:
      semi_auto  every intent waits for a person: POST /api/intents/{id}/approve or /reject
                 (an approval re-runs the checks at its own time, then fills)
      auto       an intent whose checks all pass is approved and filled at once
    Life of an intent (topic mpx.intents.v1, key intent id, one event per transition):
      suggested -> approved | rejected -> filled | partially_filled | expired | cancelled
    Limits file (YAML; see marketpulse/execution/defaults.yaml for every field):
      sizing     fixed notional | fractional Kelly (edge, confidence) | volatility-scaled;
                 equal shares on every leg, rounded to the tick, lot and minimum size
      limits     per order, per UTC day, open intents, open positions, total and per-market
                 exposure, drawdown stop, slippage against the current book (bps)
      breaker    a rule or market trips after N rejections or losses in a window, cools down
      orders     expiry of unfilled parts and of intents awaiting approval (event time)
    Kill switch: POST /api/risk/kill stops every approval until POST /api/risk/resume.
    Fills walk the real order book (partial when depth is short) with the venue's taker fee;
    positions and PnL go to mpx.positions.v1. State is rebuilt from those topics at start.
    Examples:
      marketpulse execute --approval auto --levels P1
      marketpulse execute --limits my-limits.yaml --check
    """
    from marketpulse.execution.config import load_config

    overrides: dict[str, object] = {}
    if approval:
        overrides["execution_approval"] = approval
    if levels:
        overrides["execution_levels"] = [lv.strip() for lv in levels.split(",") if lv.strip()]
    if limits_file:
        overrides["execution_file"] = limits_file
    s = s.model_copy(update=overrides) if overrides else s
    config = load_config(s)
    if check:
        click.echo(json.dumps(config.model_dump(), indent=2))
        return
    from marketpulse.execution.service import Execution, run

    async def _run() -> None:
        execution = Execution(s, config)  # its Kafka clients need the running loop
        serve_metrics(s, execution.readiness)
        await run(s, execution=execution)

    asyncio.run(_run())


@main.group()
def groups() -> None:
    """Equivalence groups of the cross_market rule: suggest, review, approve.

    \b
    Automatic matching only suggests: a candidate pair goes to the review topic (it shows in
    GET /api/review) and fires nothing. A person approves it, and the group joins the registry
    of every worker through the rules topic (the cross_market rule, one version up).
      marketpulse groups suggest --file gamma.json --file kalshi-events.json
      marketpulse groups suggest --from-topic --publish
      marketpulse groups approve cand-1a2b3c4d5e6f --by alice --source "AP race call"
      marketpulse groups list
    """


@groups.command("suggest")
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Gamma or Kalshi REST JSON (markets, events with nested markets, pages); repeatable.",
)
@click.option("--from-topic", is_flag=True, help="Read every market of the markets topic.")
@click.option(
    "--min-score", type=float, default=0.85, show_default=True, help="Weakest score proposed."
)
@click.option(
    "--max-days",
    type=float,
    default=3.0,
    show_default=True,
    help="Close times further apart rule a pair out (unless both name the same year).",
)
@click.option("--publish", is_flag=True, help="Write new candidates to the review topic.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def groups_suggest(
    s: Settings,
    files: tuple[Path, ...],
    from_topic: bool,
    min_score: float,
    max_days: float,
    publish: bool,
    as_json: bool,
) -> None:
    """Propose pairs of markets that ask the same question (or its negation).

    \b
    A pair must pass every check: active binaries of different events; the same numbers
    (strikes, thresholds) and years; close times within --max-days; the named entities of one
    question all in the other ("Cleveland" ~ "Cleveland Cavaliers"); then a wording score
    (rapidfuzz) of at least --min-score. Each line shows the relation (identity, or complement
    when one side is negated or asks the other side of the threshold), the score and why.
    """
    from marketpulse import group_review
    from marketpulse.candidates import Options, suggest

    if not files and not from_topic:
        raise click.UsageError("give --file (one or more) or --from-topic")
    markets, unreadable = [], 0
    for path in files:
        found, bad = group_review.load_markets(path)
        markets += found
        unreadable += bad
    if from_topic:
        markets += asyncio.run(group_review.read_markets(s))
    found_pairs, stats = suggest(markets, Options(min_score=min_score, max_days=max_days))
    stats["unreadable"] = unreadable
    if publish:
        stats["published"], stats["already_in_review"] = asyncio.run(
            group_review.publish_candidates(s, found_pairs)
        )
    if as_json:
        rows = [
            {"candidate_id": c.candidate_id, "spec": c.spec(), "score": c.score,
             "relation": c.relation, "questions": [c.first.question, c.second.question],
             "reasons": list(c.reasons)}
            for c in found_pairs
        ]  # fmt: skip
        click.echo(json.dumps({"stats": stats, "candidates": rows}, indent=2))
        return
    for c in found_pairs:
        click.echo(f"{c.candidate_id}  {c.spec()}\n    {c.describe()}")
    click.echo(json.dumps(stats))


@groups.command("approve")
@click.argument("candidate_id")
@click.option("--by", "decided_by", required=True, help="Who approves (recorded on the item).")
@click.option(
    "--source",
    "resolution_source",
    required=True,
    help="What settles every member, checked in each market's rules (e.g. 'AP race call').",
)
@click.option("--note", default="", help="Why, for the record.")
@click.pass_obj
def groups_approve(
    s: Settings, candidate_id: str, decided_by: str, resolution_source: str, note: str
) -> None:
    """Approve a candidate (its id, or its review id group:<id>) into the registry.

    Publishes the cross_market rule in force one version up with the group in params.groups
    (workers read it at start and follow the rules topic), then the decision to the review
    topic. Check first that both markets settle on the same source, date and wording.
    """
    from marketpulse import group_review

    group, rule = asyncio.run(
        group_review.approve(
            s, candidate_id, by=decided_by, resolution_source=resolution_source, note=note
        )
    )
    members = ", ".join(f"{m.market_id} ({m.orientation})" for m in group.members)
    click.echo(f"approved {group.group_id} ({group.relation}): {members}")
    click.echo(f"published {rule.rule_id} v{rule.version} to {s.topic('rules')}")


@groups.command("reject")
@click.argument("candidate_id")
@click.option("--by", "decided_by", required=True, help="Who rejects (recorded on the item).")
@click.option("--note", default="", help="Why (e.g. 'different resolution sources').")
@click.pass_obj
def groups_reject(s: Settings, candidate_id: str, decided_by: str, note: str) -> None:
    """Reject a candidate: the review item is closed and nothing joins the registry."""
    from marketpulse import group_review

    asyncio.run(group_review.reject(s, candidate_id, by=decided_by, note=note))
    click.echo(f"rejected {candidate_id}")


@groups.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def groups_list(s: Settings, as_json: bool) -> None:
    """Show the registry in force: the groups file overlaid with groups approved on the topic."""
    from marketpulse.grouping import registry
    from marketpulse.rulebook import current
    from marketpulse.rules import load_rules

    book, _ = asyncio.run(current(s, load_rules(s.rules_file)))
    found = registry(list(book.rules.values()))
    if as_json:
        click.echo(json.dumps([g.model_dump(mode="json") for g in found.values()], indent=2))
        return
    for g in found.values():
        members = ", ".join(f"{m.market_id} ({m.orientation})" for m in g.members)
        state = "approved" if g.approved else "not approved"
        click.echo(f"{g.group_id}  {g.relation}, {state}: {members}  [{g.resolution_source}]")
    click.echo(f"{len(found)} group(s)")


@main.command()
@click.option(
    "--duration",
    type=float,
    envvar="DURATION",
    help="Stop after this many seconds and print a JSON summary as the last line.",
)
@click.option(
    "--rate",
    type=float,
    default=100.0,
    show_default=True,
    help="Mock venue book updates per second.",
)
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=Path("var/demo"),
    show_default=True,
    help="Where the broker, warehouse and logs live.",
)
@click.option(
    "--keep/--fresh", default=False, help="Keep the previous run's data (default: fresh)."
)
@click.option("--api-port", type=int, default=8000, show_default=True)
@click.pass_obj
def dev(
    s: Settings, duration: float | None, rate: float, home: Path, keep: bool, api_port: int
) -> None:
    """Run the whole pipeline locally (what `make demo` does).

    \b
    Starts a local Apache Kafka broker (fetched from Maven Central the first time), creates the
    topics, then runs the worker, the API with the sink on embedded ClickHouse (chDB), and the
    collector on the seeded mock venue. Signals are printed as they arrive.
    """
    from marketpulse.dev import DemoOptions, demo

    opts = DemoOptions(home=home, duration=duration, rate=rate, fresh=not keep, api_port=api_port)
    try:
        summary = asyncio.run(demo(s, opts))
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
        return
    click.echo(json.dumps(summary))


@main.command()
@click.option("--quick", is_flag=True, help="Smaller sizes: the whole run in a few minutes.")
@click.option(
    "--only",
    default="pipeline,worker,collector,sink,api,alerts,replay,execution",
    show_default=True,
    help="Comma-separated sections to run.",
)
@click.option("--updates", type=int, help="Mock book updates to push through the pipeline.")
@click.option(
    "--rate",
    type=float,
    default=1000.0,
    show_default=True,
    help="Paced rate (updates/s) for the tick-to-signal latency phase.",
)
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=Path("var/bench"),
    show_default=True,
    help="Scratch space (wiped at start).",
)
@click.option("--api-port", type=int, default=8011, show_default=True)
@click.pass_context
def bench(
    ctx: click.Context,
    quick: bool,
    only: str,
    updates: int | None,
    rate: float,
    home: Path,
    api_port: int,
) -> None:
    """Benchmark the real system; prints one JSON document as the last line.

    \b
    Sections (all on one fresh local broker unless --bootstrap is given):
      pipeline   bare aiokafka produce->consume ceiling of the same messages; sustained
                 ticks/s collector -> Kafka -> worker and -> ClickHouse; tick-to-signal
                 p50/p99 at a paced rate, with the sink running and without it; peak
                 RSS of every process
      worker     one worker process alone on a backlog over 2,000 markets (books/s, CPU,
                 RSS), and Faust's floor: an agent doing nothing over the same books; full
                 size also the RSS of a worker holding 10,000 markets' state
      collector  recorded Polymarket frames: parse -> normalize -> produce, vs a bare producer
      sink       rows/s per topic into chDB, vs a bare clickhouse-connect insert
      api        query latency p50/p99 over generated ticks and signals
      alerts     signal -> Slack stand-in delivery latency at 50 signals/s, dedup on
      replay     messages/s reprocessed by the worker and the sink after a rewind
      execution  signal -> intent p50/p99 on the broker (paper, auto); intents/s through
                 the risk stage in process and end to end
    """
    from marketpulse.bench import SECTIONS, BenchOptions
    from marketpulse.bench import bench as run_bench

    sections = tuple(s.strip() for s in only.split(",") if s.strip())
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise click.BadParameter(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    opts = BenchOptions(
        home=home,
        updates=updates or (20_000 if quick else 100_000),
        paced_rate=rate,
        paced_seconds=15 if quick else 45,
        api_port=api_port,
        quick=quick,
        sections=sections,
    )
    bootstrap = ctx.parent.params.get("bootstrap") if ctx.parent else None
    click.echo(json.dumps(asyncio.run(run_bench(ctx.obj, opts, bootstrap))))


if __name__ == "__main__":
    main()

"""`marketpulse`: one command, one subcommand per process. Every subcommand reads its settings
from MPX_* environment variables (see `marketpulse settings`), and flags override them."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

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
    help="Where market data comes from: mock (seeded simulator).",
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
) -> None:
    """Read a venue and publish normalized markets, books and ticks to Kafka."""
    from marketpulse.collect import run

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


@main.command()
@click.pass_obj
def worker(s: Settings) -> None:
    """Run the Faust stream worker: rules over books, emitting signals."""
    from marketpulse.worker import run

    run(s)


@main.command()
@click.pass_obj
def sink(s: Settings) -> None:
    """Write every topic to ClickHouse in batches, committing offsets after each insert."""
    from marketpulse.sink import run

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
@click.option("--quick", is_flag=True, help="A run under two minutes (fewer updates).")
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
    ctx: click.Context, quick: bool, updates: int | None, rate: float, home: Path, api_port: int
) -> None:
    """Benchmark the real pipeline; prints JSON as the last line.

    \b
    Measures, in one run: a bare aiokafka produce->consume ceiling of the same messages,
    sustained ticks/s through collector -> Kafka -> worker and -> ClickHouse, tick-to-signal
    latency p50/p99 at a paced rate, and the peak RSS of every process. Uses a fresh local
    broker unless --bootstrap is given.
    """
    from marketpulse.bench import BenchOptions
    from marketpulse.bench import bench as run_bench

    opts = BenchOptions(
        home=home,
        updates=updates or (20_000 if quick else 100_000),
        paced_rate=rate,
        paced_seconds=15 if quick else 45,
        api_port=api_port,
    )
    bootstrap = ctx.parent.params.get("bootstrap") if ctx.parent else None
    click.echo(json.dumps(asyncio.run(run_bench(ctx.obj, opts, bootstrap))))


if __name__ == "__main__":
    main()

"""The ClickHouse warehouse behind one small facade: embedded chDB (`chdb://path`) or a server
(`http(s)://user:pass@host:port`), both through clickhouse-connect, plus versioned migrations.

Only one process may open a chDB data path, and only one path per process at a time: whoever
owns a `Warehouse` on chDB must serve every reader and writer of it (see DESIGN.md, Storage)."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError

from marketpulse.errors import ConfigError, MarketPulseError
from marketpulse.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


class MigrationError(MarketPulseError):
    """The warehouse schema and the migration files disagree: fix the files, never the data."""

    kind = "migration"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """Statements separated by `;`. Whole-line `--` comments are dropped first, so a `;`
        may appear in them; a `;` inside a string literal is not supported."""
        body = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [s.strip() for s in body.split(";") if s.strip()]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every `NNNN_name.sql` in `directory`, in version order; a gap or duplicate is an error."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _MIGRATION_FILE.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text()))
    for expected, mig in enumerate(found, start=1):
        if mig.version != expected:
            raise MigrationError(
                f"migration {mig.version:04d}_{mig.name}: expected version {expected:04d} "
                "(versions start at 0001 and have no gaps or duplicates)"
            )
    return found


@dataclass(frozen=True)
class Target:
    """Where the warehouse lives, parsed from `warehouse_url`."""

    embedded: bool
    path: Path | None = None  # chDB data directory (absolute)
    dsn: str | None = None  # server URL

    def redacted(self) -> str:
        """Printable form: the password of a server URL never reaches a log line."""
        if self.embedded:
            return f"chdb://{self.path}"
        parts = urlsplit(self.dsn or "")
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" if parts.username else host
        # Not parts.port: it raises on a non-numeric port, and this must print any URL.
        port = parts.netloc.rpartition("@")[2].partition(":")[2]
        if port:
            netloc += f":{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def parse_url(url: str, base: Path | None = None) -> Target:
    """`chdb://var/x` is relative (to `base`, default the working directory), `chdb:///abs`
    absolute; `http(s)://…` selects a server.

    We do not hand chdb URLs to clickhouse-connect as a DSN: it reads `chdb://var/x` as
    location "var" and database "x"."""
    if url.startswith("chdb://"):
        raw = url.removeprefix("chdb://")
        if not raw:
            raise ConfigError("warehouse_url chdb:// needs a data path, e.g. chdb://var/warehouse")
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        return Target(embedded=True, path=path.resolve())
    if url.startswith(("http://", "https://")):
        return Target(embedded=False, dsn=url)
    raise ConfigError(
        f"warehouse_url must start with chdb:// or http(s)://, got {url.split('://')[0]}://…"
    )


class Warehouse:
    """A clickhouse-connect client behind a lock. chDB's client must not be used by two threads
    at once, and the API (threadpool) and the sink (insert threads) share one object."""

    def __init__(self, client: Client, target: Target, database: str) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.target = target
        self.database = database
        self.closed = False

    @property
    def embedded(self) -> bool:
        return self.target.embedded

    @property
    def client(self) -> Client:
        """The clickhouse-connect client itself, for tools that measure it bare (benchmarks).
        It bypasses the lock: never use it while other threads use this Warehouse."""
        return self._client

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts. Values are bound server-side: write `{name:Type}` in `sql`."""
        with self._lock:
            result = self._client.query(sql, parameters=dict(params or {}))
        return list(result.named_results())

    def command(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        with self._lock:
            return self._client.command(sql, parameters=dict(params or {}))

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        token: str | None = None,
    ) -> None:
        """Insert row-oriented data. With a `token`, ClickHouse drops a repeat of the same
        token+data (tables set non_replicated_deduplication_window), so a retried or
        redelivered batch adds nothing."""
        with self._lock:
            self._client.insert(
                table, rows, column_names=list(columns), settings=_dedup_settings(token)
            )

    def insert_avro(self, table: str, container: bytes, token: str | None = None) -> None:
        """Insert an Avro object container file (`FORMAT Avro`: ClickHouse decodes it, fields
        matched to columns by name), deduplicated by `token` as `insert` is. The same
        clickhouse-connect call serves chDB (from a temporary file) and a server (HTTP body)."""
        with self._lock:
            self._client.raw_insert(
                table, insert_block=container, fmt="Avro", settings=_dedup_settings(token)
            )

    def missing_columns(self, expected: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """Per table, the columns of `expected` the warehouse lacks (a table that does not exist
        lacks all of them). Empty when the schema can take every row the code will write."""
        rows = self.query(
            "SELECT table, name FROM system.columns WHERE database = {db:String}",
            {"db": self.database},
        )
        have: dict[str, set[str]] = {}
        for r in rows:
            have.setdefault(r["table"], set()).add(r["name"])
        missing = {
            table: [c for c in columns if c not in have.get(table, set())]
            for table, columns in expected.items()
        }
        return {table: cols for table, cols in missing.items() if cols}

    def require_columns(self, expected: Mapping[str, Sequence[str]]) -> None:
        """Refuse to start writing when a newer record mapping meets an older table: a column
        added to the code without its migration must fail loudly here, not drop data later."""
        missing = self.missing_columns(expected)
        if missing:
            detail = "; ".join(f"{t}: {', '.join(c)}" for t, c in sorted(missing.items()))
            raise MigrationError(
                f"the warehouse {self.database} lacks columns the sink writes ({detail}); "
                "add a migration that creates them"
            )

    def ping(self) -> bool:
        try:
            return self.query("SELECT 1 AS ok")[0]["ok"] == 1
        except Exception:
            log.debug("warehouse ping failed", exc_info=True)
            return False

    def close(self) -> None:
        """Release the engine; for chDB this frees the data path for another process."""
        if self.closed:
            return
        with self._lock:
            self._client.close()
            self.closed = True

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- migrations -------------------------------------------------------------------------

    def applied_migrations(self) -> dict[int, dict[str, Any]]:
        self.command(_SCHEMA_MIGRATIONS_DDL)
        rows = self.query("SELECT version, name, checksum FROM schema_migrations FINAL")
        return {int(r["version"]): r for r in rows}

    def migrate(self, migrations: Iterable[Migration] | None = None) -> list[Migration]:
        """Apply pending migrations in order; returns those applied now (empty = up to date).

        An applied migration whose file changed raises MigrationError: the schema must never
        silently diverge from the files. ClickHouse DDL is not transactional, so statements are
        written to be re-runnable (IF NOT EXISTS) and a migration is recorded only after all of
        its statements succeeded."""
        todo = list(migrations) if migrations is not None else load_migrations()
        applied = self.applied_migrations()
        done: list[Migration] = []
        for mig in todo:
            seen = applied.get(mig.version)
            if seen is not None:
                if seen["checksum"] != mig.checksum:
                    raise MigrationError(
                        f"migration {mig.version:04d}_{mig.name} was applied with checksum "
                        f"{seen['checksum'][:12]} but the file now has {mig.checksum[:12]}; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            for statement in mig.statements():
                self.command(statement)
            self.insert(
                "schema_migrations",
                [(mig.version, mig.name, mig.checksum)],
                ("version", "name", "checksum"),
            )
            log.info("applied migration %04d_%s to %s", mig.version, mig.name, self.database)
            done.append(mig)
        return done


def _dedup_settings(token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    # The views' inserts of a dropped block are dropped too (they would count it twice
    # otherwise; the landing tables' views are the only writers of their tables).
    return {
        "insert_deduplication_token": token,
        "deduplicate_blocks_in_dependent_materialized_views": 1,
    }


SERVER_DEFAULT_PORTS = {"http": 8123, "https": 8443}


def server_options(target: Target) -> dict[str, Any]:
    """clickhouse-connect keyword arguments for a server URL
    `http(s)://[user[:password]@]host[:port]`, checked here so that a typo is a clear
    ConfigError at start, not a connection error later. The user and password may be
    percent-encoded; a path or query in the URL is refused (the database is its own setting)."""
    parts = urlsplit(target.dsn or "")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"warehouse_url {target.redacted()}: the port is not a number") from None
    if not parts.hostname:
        raise ConfigError(f"warehouse_url {target.redacted()}: no host")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(
            f"warehouse_url {target.redacted()}: no path or query expected; the database is "
            "MPX_WAREHOUSE_DATABASE"
        )
    return {
        "host": parts.hostname,
        "port": port or SERVER_DEFAULT_PORTS[parts.scheme],
        "username": unquote(parts.username) if parts.username else "default",
        "password": unquote(parts.password) if parts.password else "",
        "secure": parts.scheme == "https",
        # Sessions serialize a client's queries on the server; the API's threads and the
        # sink share one client, so run without one.
        "autogenerate_session_id": False,
        "connect_timeout": 10,
        "send_receive_timeout": 300,
        "compress": True,
    }


def _open_chdb(path: Path) -> Client:
    path.mkdir(parents=True, exist_ok=True)
    try:
        return clickhouse_connect.get_client(interface="chdb", path=str(path))
    except ProgrammingError as exc:
        # chDB's own message for a path held by another process is just "Error initializing
        # EmbeddedServer", so say what is almost always the cause.
        raise ConfigError(
            f"cannot open the chDB data path {path} ({exc}). Only one process may open a chDB "
            "path, and a process only one path at a time: run the sink inside the API "
            "(`marketpulse api --with-sink`) or point MPX_WAREHOUSE_URL at a ClickHouse server"
        ) from exc


def connect(settings: Settings) -> Warehouse:
    """Open the warehouse of `settings` and make sure its database exists.

    On chDB this claims the data path for this process until `close()`."""
    database = settings.warehouse_database
    if not _IDENTIFIER.match(database):
        raise ConfigError(f"warehouse_database {database!r} is not a plain identifier")
    target = parse_url(settings.warehouse_url)
    if target.embedded:
        assert target.path is not None
        client = _open_chdb(target.path)
    else:
        client = clickhouse_connect.get_client(**server_options(target))
    # The database may not exist yet, so the client starts on the default one and switches.
    client.command("CREATE DATABASE IF NOT EXISTS {db:Identifier}", parameters={"db": database})
    client.database = database
    log.info("warehouse %s database %s", target.redacted(), database)
    return Warehouse(client, target, database)

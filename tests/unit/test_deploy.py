"""docker-compose.yml and what it mounts (the image, Prometheus, Grafana provisioning and the
dashboards), read and cross-checked without Docker: the stack cannot run on machines without an
engine, so its wiring is kept correct here. Only `docker compose config` needs an engine."""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from marketpulse import metrics
from marketpulse.broker import docker_engine_available
from marketpulse.cli import main
from marketpulse.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DASHBOARDS = ROOT / "dashboards"
PACKAGE = ROOT / "services" / "marketpulse"

INFRA_SERVICES = {"kafka", "clickhouse", "prometheus", "grafana"}
ONE_SHOT_SERVICES = {"topics"}
LONG_RUNNING_SERVICES = {"collector", "worker", "execute", "sink", "api"}
PROJECT_SERVICES = ONE_SHOT_SERVICES | LONG_RUNNING_SERVICES
WAREHOUSE_USERS = {"sink", "api"}
HEALTHCHECKED = {"kafka", "clickhouse", "api", "prometheus", "grafana"}
DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

SETTINGS_VARS = {f"MPX_{name.upper()}" for name in Settings.model_fields}
# MPX_* variables read outside Settings (marketpulse.catalog.schemas_dir).
OTHER_MPX_VARS = {"MPX_SCHEMAS_DIR"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|(^|_)KEY$")
CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}
_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
_INTERPOLATION_BODY = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$"
)


# --------------------------------------------------------------------------------------------
# Reading the files
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation, for the forms this file allows."""

    def sub(m: re.Match[str]) -> str:
        body = _INTERPOLATION_BODY.match(m.group(1))
        assert body, f"unsupported interpolation ${{{m.group(1)}}}"
        name, op, arg = body.group("name", "op", "arg")
        if env.get(name) or (name in env and op in ("-", "?", "+")):
            return arg if op in (":+", "+") else env[name]
        if op in (":?", "?"):
            raise KeyError(f"{name} must be set: {arg}")
        return arg if op in (":-", "-") else ""

    return _INTERPOLATION.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def environment(service: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment with variables resolved (development defaults by default)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {k: interpolate(str(v), env or {}) for k, v in raw.items()}


def raw_environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {k: str(v) for k, v in raw.items()}


def mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each volume, short or long syntax."""
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            yield str(vol.get("source", "")), str(vol["target"])
        else:
            source, target = str(vol).split(":")[:2]
            yield source, target


def host_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repository path, for bind mounts of repository files."""
    return {
        target: (ROOT / source).resolve()
        for source, target in mounts(service)
        if source.startswith((".", "/"))
    }


def settings_of(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """The Settings a project container would build from its environment."""
    for name in [n for n in os.environ if n.startswith("MPX_")]:
        monkeypatch.delenv(name)
    for name, value in environment(service, env).items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def listeners(spec: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` -> {NAME: (host, port)}."""
    out = {}
    for item in spec.split(","):
        name, address = item.split("://")
        host, port = address.rsplit(":", 1)
        out[name] = (host, int(port))
    return out


def strings(node: Any) -> Iterator[str]:
    """Every string in a loaded YAML document, keys included (where compose interpolates)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((PROVISIONING / "datasources").glob("*.y*ml")):
        for ds in load_yaml(path).get("datasources", []):
            found[ds["uid"]] = ds
    return found


def dashboards() -> list[Path]:
    return sorted(DASHBOARDS.rglob("*.json"))


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def exposed_metric_names() -> set[str]:
    """Names Prometheus sees for the metrics declared in marketpulse.metrics."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for m in obj.describe():
                names |= {m.name + s for s in suffixes.get(m.type, ("",))}
    return names


# --------------------------------------------------------------------------------------------
# docker-compose.yml: services, commands, start order
# --------------------------------------------------------------------------------------------


def test_every_service_is_defined(services: dict[str, Any]) -> None:
    assert set(services) >= INFRA_SERVICES | PROJECT_SERVICES


@pytest.mark.parametrize("name", sorted(PROJECT_SERVICES))
def test_project_services_run_the_project_image(services: dict[str, Any], name: str) -> None:
    service = services[name]
    build = service["build"]
    assert (ROOT / build["context"]).resolve() == ROOT
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    images = {services[n]["image"] for n in PROJECT_SERVICES}
    assert images == {service["image"]}, "every process runs the one image"


@pytest.mark.parametrize("name", sorted(PROJECT_SERVICES))
def test_project_services_run_a_real_cli_command(services: dict[str, Any], name: str) -> None:
    args = services[name]["command"]
    assert isinstance(args, list), "exec form: the image's ENTRYPOINT is `marketpulse`"
    cmd: click.Command = main
    path = ["marketpulse"]
    rest = list(args)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        assert rest[0] in cmd.commands, f"{name}: `{' '.join(path)}` has no command {rest[0]!r}"
        path.append(rest.pop(0))
        cmd = cmd.commands[path[-1]]
    assert not isinstance(cmd, click.Group), f"{name}: `{' '.join(path)}` is a group"
    # Parses the options exactly as the CLI would (an unknown flag raises), runs nothing.
    with cmd.make_context(" ".join(path), rest):
        pass


def test_depends_on_targets_exist_with_valid_conditions(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            assert condition in DEPENDS_CONDITIONS, f"{name} -> {target}: {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is not one-shot"


def _waits_for(services: dict[str, Any], name: str) -> dict[str, str]:
    """Every service `name` waits for, directly or not, with the condition; fails on a cycle."""
    seen: dict[str, str] = {}

    def visit(current: str, trail: tuple[str, ...]) -> None:
        for target, spec in (services[current].get("depends_on") or {}).items():
            assert target not in trail, f"depends_on cycle: {' -> '.join((*trail, target))}"
            seen.setdefault(target, spec["condition"])
            visit(target, (*trail, target))

    visit(name, (name,))
    return seen


def test_start_order(services: dict[str, Any]) -> None:
    assert _waits_for(services, "topics") == {"kafka": "service_healthy"}
    for name in LONG_RUNNING_SERVICES:
        waits = _waits_for(services, name)
        assert waits.get("topics") == "service_completed_successfully", name
        assert waits.get("kafka") == "service_healthy", name
    for name in WAREHOUSE_USERS:
        assert _waits_for(services, name).get("clickhouse") == "service_healthy", name


def test_execute_runs_once_on_kafka_alone_waiting_for_people(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One execute process per deployment (global limits; state rebuilt from its topics at
    start, not from the warehouse), and out of the box a person approves every intent."""
    from marketpulse.execution.config import load_config

    execute = services["execute"]
    assert (execute.get("deploy") or {}).get("replicas", 1) == 1
    assert "scale" not in execute
    assert "clickhouse" not in _waits_for(services, "execute")
    settings = settings_of(execute, monkeypatch)
    assert settings.metrics_port
    assert load_config(settings).approval == "semi_auto"


@pytest.mark.parametrize("name", sorted(HEALTHCHECKED))
def test_healthchecks(services: dict[str, Any], name: str) -> None:
    test = services[name]["healthcheck"]["test"]
    assert isinstance(test, list)
    assert test[0] in ("CMD", "CMD-SHELL")
    assert len(test) > 1


def test_api_healthcheck_probes_healthz_on_the_api_port(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = services["api"]
    port = settings_of(api, monkeypatch).api_port
    probe = " ".join(api["healthcheck"]["test"][1:])
    assert f"127.0.0.1:{port}/healthz" in probe
    assert f"{port}:{port}" in " ".join(api["ports"])


def test_mounted_host_paths_exist_and_named_volumes_are_declared(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for source, _ in mounts(service):
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
    for name in ("kafka", "clickhouse", "grafana"):
        named = [s for s, _ in mounts(services[name]) if s in declared]
        assert named, f"{name} keeps its data in a named volume"


def test_published_ports_bind_to_loopback(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"


# --------------------------------------------------------------------------------------------
# Settings, variables and secrets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROJECT_SERVICES))
def test_mpx_variables_are_settings_fields(services: dict[str, Any], name: str) -> None:
    unknown = {
        var
        for var in raw_environment(services[name])
        if var.startswith("MPX_") and var not in SETTINGS_VARS | OTHER_MPX_VARS
    }
    assert not unknown, f"{name}: not fields of marketpulse.settings.Settings: {unknown}"


@pytest.mark.parametrize("name", sorted(PROJECT_SERVICES))
def test_project_services_reach_kafka_inside_the_network(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    kafka = environment(services["kafka"])
    advertised = listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    inter_broker = kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]
    host, port = advertised[inter_broker]
    assert settings_of(services[name], monkeypatch).kafka_bootstrap == f"{host}:{port}"
    assert host in services


@pytest.mark.parametrize("name", sorted(WAREHOUSE_USERS))
def test_warehouse_url_points_at_the_clickhouse_service(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    settings = settings_of(services[name], monkeypatch)
    url = urlsplit(settings.warehouse_url)
    clickhouse = environment(services["clickhouse"])
    assert (url.scheme, url.hostname, url.port) == ("http", "clickhouse", 8123)
    assert url.username == clickhouse["CLICKHOUSE_USER"]
    assert url.password == clickhouse["CLICKHOUSE_PASSWORD"]
    assert settings.warehouse_database == clickhouse["CLICKHOUSE_DB"]


def test_production_refuses_the_placeholder_api_key(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="MPX_API_KEY"):
        settings_of(services["api"], monkeypatch, MPX_ENV="production")
    key = "a-real-key-from-a-secret-store"
    settings = settings_of(services["api"], monkeypatch, MPX_ENV="production", MPX_API_KEY=key)
    assert settings.api_key.get_secret_value() == key


def test_variables_have_one_default_each_and_are_documented() -> None:
    """`docker compose up` works with no .env, and .env.example lists every variable."""
    values = [v.replace("$$", "") for v in strings(yaml.safe_load(COMPOSE.read_text()))]
    assert not [v for v in values if re.search(r"\$(?!\{)", v)], "use ${VAR:-default}, not $VAR"
    defaults: dict[str, set[str]] = {}
    for body in (b for v in values for b in _INTERPOLATION.findall(v)):
        m = _INTERPOLATION_BODY.match(body)
        assert m and m.group("op") in (":-", "-"), f"${{{body}}} needs a default"
        defaults.setdefault(m.group("name"), set()).add(m.group("arg"))
    assert {k: v for k, v in defaults.items() if len(v) > 1} == {}
    assert env_example() == {k: v.pop() for k, v in defaults.items()}


def test_no_hardcoded_secrets(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for var, value in raw_environment(service).items():
            if SECRET_NAME.search(var):
                assert _INTERPOLATION.fullmatch(value), f"{name}: {var} is hardcoded"
            if "://" in value and "@" in value:
                userinfo = value.split("://", 1)[1].rsplit("@", 1)[0]
                password = _INTERPOLATION.sub("", userinfo).partition(":")[2]
                assert not password, f"{name}: {var} embeds a literal password"
    for ds in provisioned_datasources().values():
        for key, value in (ds.get("secureJsonData") or {}).items():
            assert re.fullmatch(r"\$\{?[A-Z_]+\}?", str(value)), f"{ds['uid']}: {key} hardcoded"


# --------------------------------------------------------------------------------------------
# Kafka and ClickHouse containers
# --------------------------------------------------------------------------------------------


def test_kafka_is_a_single_kraft_node_with_catalog_topics_only(services: dict[str, Any]) -> None:
    env = environment(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    declared = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(declared) <= set(protocols)
    assert set(advertised) <= set(declared) - {controller}
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    voter_id, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert voter_id == str(env["KAFKA_NODE_ID"])
    assert int(voter.rsplit(":", 1)[1]) == declared[controller][1]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for var in [v for v in env if v.endswith(("REPLICATION_FACTOR", "MIN_ISR"))]:
        assert env[var] == "1", var
    # A cluster id is a UUID in URL-safe base64 without padding.
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    assert env["KAFKA_LOG_DIRS"] in {t for _, t in mounts(services["kafka"])}


def test_kafka_external_listener_is_published_for_host_tools(services: dict[str, Any]) -> None:
    env = environment(services["kafka"])
    host, port = listeners(env["KAFKA_ADVERTISED_LISTENERS"])["EXTERNAL"]
    assert host == "localhost"
    container_port = listeners(env["KAFKA_LISTENERS"])["EXTERNAL"][1]
    assert f"127.0.0.1:{port}:{container_port}" in services["kafka"]["ports"]
    assert "kafka-broker-api-versions.sh" in " ".join(services["kafka"]["healthcheck"]["test"])


# --------------------------------------------------------------------------------------------
# The image
# --------------------------------------------------------------------------------------------


def test_dockerfile_installs_the_project_and_its_schemas() -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    workdir, copied, env = "/", {}, {}
    for word, args in steps:
        if word == "WORKDIR":
            workdir = os.path.join(workdir, args)
        elif word == "COPY":
            *sources, dest = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                copied[source.rstrip("/")] = os.path.normpath(os.path.join(workdir, dest))
        elif word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
        elif word == "RUN" and "pip install" in args:
            assert {"pyproject.toml", "services"} <= set(copied), "install after the sources"
    assert env["MPX_SCHEMAS_DIR"] == copied["schemas"]
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["marketpulse"]


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    patterns = [
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".venv", "var", ".git"):
        assert needed in patterns
    for copied in ("pyproject.toml", "README.md", "services", "schemas"):
        assert not any(fnmatch.fnmatch(copied, p) for p in patterns), f"{copied} is ignored"


def test_package_data_reaches_the_image() -> None:
    """The image runs `pip install .`, which ships only .py files and declared package data:
    a data file (migrations/*.sql, ...) missing from package-data is missing in Docker."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = pyproject["tool"]["setuptools"].get("package-data", {}).get("marketpulse", [])
    data_files = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    missing = [f for f in data_files if not any(fnmatch.fnmatch(f, pat) for pat in declared)]
    assert not missing, (
        f"add to [tool.setuptools.package-data] marketpulse in pyproject.toml: {missing}"
    )


# --------------------------------------------------------------------------------------------
# Prometheus
# --------------------------------------------------------------------------------------------


def test_prometheus_scrapes_every_process_on_its_metrics_port(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert host_mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"] == PROMETHEUS
    scraped = set()
    for job in load_yaml(PROMETHEUS)["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, port = target.rsplit(":", 1)
                if host == "localhost":
                    assert job["job_name"] == "prometheus"
                    continue
                assert host in services, f"{job['job_name']}: {host} is not a compose service"
                settings = settings_of(services[host], monkeypatch)
                expected = settings.api_port if host == "api" else settings.metrics_port
                assert expected and int(port) == expected, f"{target}: serves on {expected}"
                scraped.add(host)
    assert scraped == LONG_RUNNING_SERVICES


# --------------------------------------------------------------------------------------------
# Grafana: provisioning and dashboards
# --------------------------------------------------------------------------------------------


def test_grafana_mounts_its_provisioning_and_the_dashboards(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    mounted = host_mounts(grafana)
    assert mounted["/etc/grafana/provisioning"] == PROVISIONING
    providers = [
        p
        for path in sorted((PROVISIONING / "dashboards").glob("*.y*ml"))
        for p in load_yaml(path)["providers"]
    ]
    assert providers
    for provider in providers:
        assert mounted[provider["options"]["path"]] == DASHBOARDS
    env = environment(grafana)
    assert CLICKHOUSE_TYPE in env["GF_INSTALL_PLUGINS"].split(",")
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        folder, _, file = home.rpartition("/")
        assert (mounted[folder] / file).is_file()


def test_datasources_point_at_the_compose_services(services: dict[str, Any]) -> None:
    sources = provisioned_datasources()
    assert set(sources) == {"mpx-clickhouse", "mpx-prometheus"}
    ch = sources["mpx-clickhouse"]
    assert ch["type"] == CLICKHOUSE_TYPE
    data = ch["jsonData"]
    assert (data["host"], data["port"], data["protocol"]) == ("clickhouse", 8123, "http")
    clickhouse = environment(services["clickhouse"])
    assert data["defaultDatabase"] == clickhouse["CLICKHOUSE_DB"]
    # Grafana expands $VAR in provisioning files from its own environment.
    grafana_env = environment(services["grafana"])
    for value in (data["username"], ch["secureJsonData"]["password"]):
        var = value.strip("${}")
        assert grafana_env[var] == clickhouse[var]
    prom = urlsplit(sources["mpx-prometheus"]["url"])
    assert prom.hostname in services
    assert prom.port == 9090
    assert [d["uid"] for d in sources.values() if d.get("isDefault")] == ["mpx-clickhouse"]


EXPECTED_DASHBOARDS = {
    "overview.json": "mpx-overview",
    "market.json": "mpx-market",
    "rules.json": "mpx-rules",
    "pipeline.json": "mpx-pipeline",
    "execution.json": "mpx-execution",
}
PANEL_TYPES = {"timeseries", "table", "stat", "candlestick", "barchart", "row"}


def test_dashboards_exist() -> None:
    assert {p.name for p in dashboards()} == set(EXPECTED_DASHBOARDS)
    for name, uid in EXPECTED_DASHBOARDS.items():
        assert json.loads((DASHBOARDS / name).read_text())["uid"] == uid


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_dashboard_panels_have_known_types_and_unique_ids(path: Path) -> None:
    dash = json.loads(path.read_text())
    found = list(panels(dash["panels"]))
    assert {p["type"] for p in found} <= PANEL_TYPES
    ids = [p["id"] for p in found]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in found:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]


def test_market_drilldown_has_its_variables_and_signal_annotations(
    services: dict[str, Any],
) -> None:
    dash = json.loads((DASHBOARDS / "market.json").read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert {"venue", "market"} <= set(variables)
    database = environment(services["clickhouse"])["CLICKHOUSE_DB"]
    for var in variables.values():
        assert var["type"] == "query" and var["datasource"]["uid"] == "mpx-clickhouse"
        _check_clickhouse_target(
            {"title": var["name"], "type": "table"}, _as_target(var["query"]), database
        )
    # market depends on venue: choosing a venue narrows the markets.
    assert "${venue}" in variables["market"]["query"]
    sql = " ".join(t["rawSql"] for p in panels(dash["panels"]) for t in p["targets"])
    assert "${market}" in sql
    [signals] = [a for a in dash["annotations"]["list"] if not a.get("builtIn")]
    assert signals["datasource"]["uid"] == "mpx-clickhouse"
    target = signals["target"]
    assert "marketpulse.signals" in target["rawSql"] and "${market}" in target["rawSql"]
    assert {"time", "text"} <= set(re.findall(r"\bAS (\w+)", target["rawSql"]))


def _as_target(sql: str) -> dict[str, Any]:
    return {"editorType": "sql", "rawSql": sql, "format": 1, "queryType": "table"}


def test_overview_links_markets_to_the_drilldown() -> None:
    dash = json.loads((DASHBOARDS / "overview.json").read_text())
    links = [
        link["url"]
        for p in panels(dash["panels"])
        for o in p.get("fieldConfig", {}).get("overrides", [])
        for prop in o["properties"]
        if prop["id"] == "links"
        for link in prop["value"]
    ]
    assert links and all(url.startswith("/d/mpx-market/") for url in links)
    assert all("var-market=" in url for url in links)


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_dashboard_panels_use_provisioned_datasources(path: Path, services: dict[str, Any]) -> None:
    dash = json.loads(path.read_text())
    assert dash.get("uid") and dash.get("title")
    assert dash.get("id") in (None, 0), "provisioned dashboards carry no database id"
    sources = provisioned_datasources()
    database = environment(services["clickhouse"])["CLICKHOUSE_DB"]
    known_metrics = exposed_metric_names()
    for panel in panels(dash["panels"]):
        if panel["type"] == "row":
            continue
        ds = panel["datasource"]
        assert ds["uid"] in sources, f"{panel['title']}: unknown datasource {ds['uid']}"
        assert ds["type"] == sources[ds["uid"]]["type"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", ds) == ds, panel["title"]
            if ds["type"] == CLICKHOUSE_TYPE:
                _check_clickhouse_target(panel, target, database)
            else:
                used = set(re.findall(r"\bmpx_[a-z0-9_]+\b", target["expr"]))
                assert used <= known_metrics, f"{panel['title']}: {used - known_metrics}"


def _check_clickhouse_target(panel: dict[str, Any], target: dict[str, Any], db: str) -> None:
    title = panel["title"]
    assert target["editorType"] == "sql", title
    assert target["rawSql"].strip(), title
    # Plugin formats: 0 = time series, 1 = table.
    timeseries = panel["type"] == "timeseries"
    assert target["format"] == (0 if timeseries else 1), title
    assert target["queryType"] == ("timeseries" if timeseries else "table"), title
    # Qualified names: the datasource's default database is a user setting, the warehouse's is not.
    for table in re.findall(r"\b(?:FROM|JOIN)\s+([\w.]+)", target["rawSql"], re.IGNORECASE):
        assert table.split(".")[0] == db and "." in table, f"{title}: {table} is not {db}.<table>"


# --------------------------------------------------------------------------------------------
# Against real engines, where there are some (every dashboard query runs against a warehouse
# filled by a real pipeline run in tests/integration/test_dashboards.py)
# --------------------------------------------------------------------------------------------


def test_docker_compose_accepts_the_file() -> None:
    if not docker_engine_available():
        pytest.skip("no Docker engine answers on this machine; docker-compose.yml is checked above")
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    if version.returncode != 0:
        pytest.skip("a Docker engine answers but the docker CLI has no compose plugin")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

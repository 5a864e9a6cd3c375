"""Schema compatibility: a change must let new readers read old data (backward) and old readers
read new data (forward), because other teams' consumers and replays of old offsets both exist.
Every released version of a schema is frozen in `schemas/released/<name>/vN.avsc`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
from fastavro.utils import generate_many

from marketpulse.catalog import CATALOG, schemas_dir


def _resolves(writer: dict[str, Any], reader: dict[str, Any], samples: int) -> str | None:
    """None when data written with `writer` reads with `reader`, else the reason it does not."""
    w = fastavro.parse_schema(writer)
    r = fastavro.parse_schema(reader)
    for record in generate_many(w, samples):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, w, record)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, w, r)
        except Exception as exc:  # the resolution error types vary by fastavro version
            return f"{type(exc).__name__}: {exc}"
    return None


def check(old: dict[str, Any], new: dict[str, Any], samples: int = 50) -> list[str]:
    """Problems that make `new` incompatible with `old`, in either direction."""
    problems = []
    if reason := _resolves(old, new, samples):
        problems.append(f"backward: the new schema cannot read old data ({reason})")
    if reason := _resolves(new, old, samples):
        problems.append(f"forward: old readers cannot read new data ({reason})")
    return problems


def released_versions(name: str) -> list[Path]:
    folder = schemas_dir() / "released" / name
    return sorted(folder.glob("v*.avsc"), key=lambda p: int(p.stem[1:]))


def check_catalog() -> dict[str, list[str]]:
    """Every current schema against every released version of it."""
    report: dict[str, list[str]] = {}
    for name, spec in CATALOG.schemas.items():
        versions = released_versions(name)
        if not versions:
            report[name] = [f"no released version in schemas/released/{name}/"]
            continue
        for path in versions:
            for problem in check(json.loads(path.read_text()), spec.definition):
                report.setdefault(name, []).append(f"{path.name}: {problem}")
    return report

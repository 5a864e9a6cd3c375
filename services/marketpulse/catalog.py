"""The topic and schema catalog (`schemas/topics.yaml`): the single source of topic names,
keys, partitioning, retention and the Avro schema of each topic."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml


def schemas_dir() -> Path:
    """`schemas/` at the repository root (overridable for installed copies)."""
    env = os.environ.get("MPX_SCHEMAS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "schemas"


@dataclass(frozen=True)
class TopicSpec:
    id: str
    name: str
    key: str
    schema: str
    partitions: int
    replication_factor: int
    cleanup: str
    retention_ms: int | None
    description: str

    def config(self) -> dict[str, str]:
        """Broker-side topic configuration."""
        cfg = {"cleanup.policy": self.cleanup}
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


@dataclass(frozen=True)
class SchemaSpec:
    name: str
    id: int
    path: Path

    @cached_property
    def definition(self) -> dict[str, Any]:
        return json.loads(self.path.read_text())


class Catalog:
    def __init__(self, path: Path) -> None:
        raw = yaml.safe_load(path.read_text())
        defaults = raw.get("defaults", {})
        self.topics: dict[str, TopicSpec] = {
            tid: TopicSpec(
                id=tid,
                name=t["name"],
                key=t["key"],
                schema=t["schema"],
                partitions=int(t.get("partitions", defaults.get("partitions", 1))),
                replication_factor=int(
                    t.get("replication_factor", defaults.get("replication_factor", 1))
                ),
                cleanup=t.get("cleanup", "delete"),
                retention_ms=t.get("retention_ms"),
                description=t.get("description", ""),
            )
            for tid, t in raw["topics"].items()
        }
        self.schemas: dict[str, SchemaSpec] = {
            name: SchemaSpec(name=name, id=int(s["id"]), path=path.parent / s["file"])
            for name, s in raw["schemas"].items()
        }
        for t in self.topics.values():
            if t.schema not in self.schemas:
                raise ValueError(f"topic {t.id!r} names unknown schema {t.schema!r} in {path}")

    def topic(self, topic_id: str) -> TopicSpec:
        try:
            return self.topics[topic_id]
        except KeyError:
            raise KeyError(
                f"unknown topic id {topic_id!r}; the catalog has {sorted(self.topics)}"
            ) from None

    def schema_of(self, topic_id: str) -> SchemaSpec:
        return self.schemas[self.topic(topic_id).schema]


CATALOG = Catalog(schemas_dir() / "topics.yaml")

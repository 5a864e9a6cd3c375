"""Shared pytest fixtures. Each area keeps its fixtures in its own delimited section."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

from marketpulse.broker import LocalBroker, docker_engine_available, ensure_jars

# ============================================================================================
# Kafka broker (owner: marketpulse.broker) — always a real broker, never a fake.
# ============================================================================================

# A user's own broker/cluster, e.g. MPX_TEST_KAFKA_BOOTSTRAP=127.0.0.1:9092.
KAFKA_BOOTSTRAP_ENV = "MPX_TEST_KAFKA_BOOTSTRAP"
# Confluent Platform 7.9.x ships Apache Kafka 3.9, the version LocalBroker pins.
KAFKA_IMAGE = os.environ.get("MPX_TEST_KAFKA_IMAGE", "confluentinc/cp-kafka:7.9.0")


@pytest.fixture(scope="session")
def kafka_bootstrap(pytestconfig: pytest.Config) -> Iterator[str]:
    """``host:port`` of a real Kafka broker shared by the whole test session.

    In order: $MPX_TEST_KAFKA_BOOTSTRAP; a testcontainers Kafka if a Docker engine answers;
    else a LocalBroker from the Maven Central jars (stopped at the end of the session).
    """
    user_bootstrap = os.environ.get(KAFKA_BOOTSTRAP_ENV)
    if user_bootstrap:
        yield user_bootstrap
    elif docker_engine_available():
        yield from _kafka_container()
    else:
        # The one-time jar download takes a while: let its progress line through capture.
        capture = pytestconfig.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            ensure_jars()
        with LocalBroker() as broker:
            yield broker.start()


def _kafka_container() -> Iterator[str]:
    # Imported lazily: only needed (and only importable) where Docker is in use.
    from testcontainers.community.kafka import KafkaContainer

    # Auto-create off, as on LocalBroker and in production: tests create their topics.
    container = (
        KafkaContainer(KAFKA_IMAGE)
        .with_kraft()
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    with container:
        yield container.get_bootstrap_server()


@pytest.fixture
def unique_name() -> str:
    """Short random suffix for topic and group names, so tests never collide or see leftovers."""
    return uuid.uuid4().hex[:12]


# ============================================================================================
# (end of Kafka broker section)
# ============================================================================================

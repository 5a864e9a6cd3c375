"""The signals consumer's offsets are committed beside the loop, and only past acked sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import TopicPartition

from marketpulse.execution.service import Execution, _commit_after
from marketpulse.settings import Settings

TP = TopicPartition("mpx.signals.v1", 0)


@pytest.fixture
async def execution() -> AsyncIterator[Execution]:
    """An execution stage that never connects (its producer is closed, never started)."""
    stage = Execution(Settings(kafka_bootstrap="127.0.0.1:9", topic_prefix="t."))
    yield stage
    await stage._producer.stop()


class Recorder:
    """Stands in for the consumer: records what it was asked to commit."""

    def __init__(self) -> None:
        self.committed: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.append(dict(offsets))


async def test_commits_only_once_every_earlier_send_is_acked() -> None:
    loop = asyncio.get_running_loop()
    acks: list[asyncio.Future[Any]] = [loop.create_future(), loop.create_future()]
    consumer = Recorder()
    task = asyncio.create_task(_commit_after(acks, consumer, {TP: 42}))  # type: ignore[arg-type]
    acks[0].set_result(None)
    await asyncio.sleep(0.01)
    assert consumer.committed == []  # one send still unacked: nothing committed yet
    acks[1].set_result(None)
    await task
    assert consumer.committed == [{TP: 42}]


async def test_a_failed_send_raises_and_commits_nothing() -> None:
    loop = asyncio.get_running_loop()
    acks: list[asyncio.Future[Any]] = [loop.create_future(), loop.create_future()]
    acks[0].set_exception(RuntimeError("broker said no"))
    acks[1].set_result(None)
    consumer = Recorder()
    with pytest.raises(RuntimeError, match="broker said no"):
        await _commit_after(acks, consumer, {TP: 7})  # type: ignore[arg-type]
    assert consumer.committed == []


async def test_cancelled_at_stop_it_leaves_the_sends_alone() -> None:
    loop = asyncio.get_running_loop()
    ack: asyncio.Future[Any] = loop.create_future()
    consumer = Recorder()
    task = asyncio.create_task(_commit_after([ack], consumer, {TP: 1}))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not ack.cancelled()  # the producer still completes it
    assert consumer.committed == []


async def test_a_flush_elsewhere_does_not_hide_sends_from_the_commit(
    execution: Execution,
) -> None:
    """The commands loop flushing a signal's sends must not let the signals' commit skip
    them: that commit would pass a signal whose intent may still fail to be written."""
    loop = asyncio.get_running_loop()
    send: asyncio.Future[Any] = loop.create_future()
    execution._unacked.append(send)
    flushing = asyncio.create_task(execution._flush())  # another loop waits for it too
    await asyncio.sleep(0)
    consumer = Recorder()
    acks = execution._pending()
    committing = asyncio.create_task(_commit_after(acks, consumer, {TP: 5}))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert consumer.committed == []
    send.set_result(None)
    await asyncio.gather(flushing, committing)
    assert consumer.committed == [{TP: 5}]
    assert execution._pending() == []  # acked: dropped from the list


async def test_a_failed_send_stays_for_every_later_flush_to_raise(execution: Execution) -> None:
    failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    failed.set_exception(RuntimeError("not acked"))
    execution._unacked.append(failed)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="not acked"):
            await execution._flush()

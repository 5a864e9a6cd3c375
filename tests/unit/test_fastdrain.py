"""The worker's consumer loop (fastdrain): a delivery that never suspends runs in place; one that
does is finished by a task exactly as if it had been a task from the start."""

from __future__ import annotations

import asyncio
import hashlib
import inspect

import pytest
from faust.transport.consumer import Consumer

from marketpulse import fastdrain


def test_the_copied_loop_is_the_installed_faust_version() -> None:
    # FastDrainConsumer._drain_messages is Faust's loop with one change; a Faust upgrade that
    # touches the original must be merged by hand (then update UPSTREAM_SHA256).
    source = inspect.getsource(Consumer._drain_messages)
    assert hashlib.sha256(source.encode()).hexdigest() == fastdrain.UPSTREAM_SHA256


async def test_a_delivery_that_never_suspends_completes_in_place() -> None:
    done: list[int] = []
    lock = asyncio.Lock()

    async def deliver(n: int) -> None:
        async with lock:  # uncontended: no suspension
            done.append(n)

    assert fastdrain.step(deliver(1)) is None
    assert done == [1]


async def test_a_suspended_delivery_is_finished_by_a_task_in_order() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(0)  # full: the next put suspends
    log: list[str] = []

    async def deliver(n: int) -> str:
        log.append(f"start {n}")
        await queue.put(n)
        await asyncio.sleep(0)  # a bare yield after the future: both kinds of suspension
        log.append(f"end {n}")
        return "delivered"

    rest = fastdrain.step(deliver(1))
    assert rest is not None and log == ["start 1"]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    assert not task.done()
    assert queue.get_nowait() == 0  # room: the put completes
    assert await task == "delivered"
    assert log == ["start 1", "end 1"] and queue.get_nowait() == 1


async def test_cancelling_the_task_cancels_the_suspended_delivery() -> None:
    event = asyncio.Event()
    seen: list[str] = []

    async def deliver() -> None:
        try:
            await event.wait()
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise

    rest = fastdrain.step(deliver())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled inside"]


async def test_an_error_after_suspending_reaches_whoever_awaits_the_rest() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def deliver() -> int:
        value = await fut
        raise ValueError(f"bad {value}")

    rest = fastdrain.step(deliver())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    fut.set_result(7)
    with pytest.raises(ValueError, match="bad 7"):
        await task


async def test_a_failing_future_is_raised_inside_the_delivery() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def deliver() -> str:
        try:
            await fut
        except KeyError:
            return "handled"
        return "not raised"

    rest = fastdrain.step(deliver())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    fut.set_exception(KeyError("x"))
    assert await task == "handled"


def test_install_replaces_the_consumer_class() -> None:
    import faust

    app = faust.App("fastdrain-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    fastdrain.install(app)
    assert type(app.consumer) is fastdrain.FastDrainConsumer

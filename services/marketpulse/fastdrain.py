"""Faust's consumer loop without four asyncio tasks per message.

Faust (faust-streaming 0.15) hands every fetched message to the topic conductor through
`wait_first(callback(message), suspend_flow.wait())`: four tasks (the callback, the flow event,
the service's stopped and crashed events), an `asyncio.wait`, and three cancellations, for a
callback that nearly always finishes without ever suspending (it puts the event in a stream
buffer with room). Profiled on a backlog that was 13% of the worker's time, and most of Faust's
per-message floor.

`FastDrainConsumer` runs the callback eagerly instead: the coroutine is stepped once in place,
and only if it suspends (a full stream buffer, a contended lock) is the rest of it handed to
`wait_first` exactly as Faust does, so stopping, crashing and suspended flow still interrupt a
blocked delivery. The loop is otherwise Faust's own, line for line; `UPSTREAM_SHA256` pins the
version it was copied from and a test fails when an upgrade changes it.

`install(app)` makes an app's consumer one of these; call it before the app starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from mode import Service

# sha256 of the source of faust.transport.consumer.Consumer._drain_messages we copied.
UPSTREAM_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


def step(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any] | None:
    """Run `coro` until it first suspends. None when it finished (its result is dropped, as
    Faust drops the callback's); otherwise a coroutine that finishes it."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return _finish(coro, waiting)


async def _finish(coro: Coroutine[Any, Any, Any], waiting: Any) -> Any:
    """Go on driving `coro` (suspended on `waiting`, as a task would) from inside a task."""
    while True:
        try:
            await _Yield(waiting)
        except BaseException as exc:  # cancelled while suspended: the coroutine gets it
            try:
                waiting = coro.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            return done.value


class _Yield:
    """Awaiting this suspends the calling task on what `coro` yielded, just as if `coro`
    itself were the task's coroutine: a future (the task waits for it and resumes us) or
    None (a bare yield: resume on the next loop iteration)."""

    __slots__ = ("waiting",)

    def __init__(self, waiting: Any) -> None:
        self.waiting = waiting

    def __await__(self) -> Generator[Any, None, None]:
        yield self.waiting


class FastDrainConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer with the eager per-message callback (see the module doc)."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - Faust's loop
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        suspended = self.suspend_flow.is_set

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator, getmany(timeout=1.0))

                # Sleeping because sometimes getmany is called in a loop
                # never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            # The one change: Faust awaits wait_first(callback(message),
                            # suspend_flow.wait()) for every message.
                            delivery = cast(Coroutine[Any, Any, Any], callback(message))
                            rest = delivery if suspended() else step(delivery)
                            if rest is not None:
                                await self.wait_first(rest, self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


def install(app: faust.App) -> None:
    """Make `app`'s consumer a FastDrainConsumer (before anything has created it)."""
    cast(Any, app.transport).Consumer = FastDrainConsumer

"""The streams worker: a Faust app that evaluates the rule catalog and emits signals.

Data flow (every name from the catalog via `settings.topic`, so a prefix isolates a run)::

    markets (key market id) --repartition-markets--> <worker id>-markets-by-event-repartition
                                                                  (key event key)
    books, trades (key event key) ────────┐                              │
                                          └──── event rules (one agent) ◄┘
                                                │   complete_set, logical ladders (books);
                                                │   spike, trend, longshot (each book's top
                                                │   of book); endgame, whale (trades, metadata)
                                                ├──► signals (key subject), dlq, review
                                                └──► <worker id>-market-data-by-group-repartition
                                                     (key group id: members of approved groups)
                                                          └── cross-market (one agent) ──► signals

Tables (changelog-backed): cs-markets and cs-trackers by event key, cs-books by event|token,
flow-state (price windows, volume buckets, cooldown marks), flow-wallets (first seen by wallet),
xm-markets/xm-books/xm-trackers by group. Rule definitions come from the YAML file overlaid with
the compacted rules topic (read to its end before any market data), and later rules-topic
records are applied at runtime (`rulebook`).

One agent consumes books, trades and the repartitioned metadata: all are keyed by event key
with the same partition count, so Faust assigns them (and the tables' changelogs) together,
and a single agent with concurrency 1 never interleaves two updates of one event. Evaluation runs
on every input and on every metadata update (data may arrive first). The ticks topic is not
read: it repeats each book's top of book, and reading it too would double the worker's input
messages per update. Reads of Faust tables cost more than most rules: state a rule needs only
when a threshold is passed (cooldown marks) is read lazily (`rules.flow`).
The repartition is an explicit agent rather than `stream.group_by`, so that an undecodable
market is a dead letter instead of an exception inside a key function. Cross-market rules need
every member of a group in one place: the first agent forwards members' metadata and books to
the by-group topic.

Batches: the agents take up to `BATCH_MAX` messages at a time. Tables are `state.WriteBehind`
views: reads are cached, writes are visible at once to the next message but reach the table and
its changelog once per key at the end of the batch (`settle`), straight through the producer.
Faust's own per-assignment send path cost more than the rules (profiled); Faust itself still
costs ~95 µs per message doing nothing on this machine, which bounds one worker process.

Delivery: at least once. A batch's signals are delivered (awaited) *before* its table writes
are flushed, and Faust acks the batch only after both, so a table state saying "signalled" is
never ahead of the signal itself; a redelivered message re-emits the same deterministic ids,
which every consumer de-duplicates. Faust's
exactly-once is not used (KAFKA_LOCAL.md). Nothing here reads the wall clock except latency
metrics. Signal ids depend on the inputs evaluated, so every book, tick and trade must be
evaluated with its event's complete metadata, whatever the arrival order: a worker that starts
on a backlog reads market data directly but the metadata one hop later (through the repartition
topic), so the inputs of an event whose metadata is not complete yet are *held* in arrival order
and evaluated one by one as soon as it is (bounded: past `HOLD_PER_EVENT` inputs an event is
evaluated with what is known). Held inputs live in memory only: a crash while inputs are held
loses their evaluation (not the data, which stays in Kafka and the warehouse); the window is the
repartition hop, milliseconds in steady state.

Modules:
    evaluator   `Evaluator`: the rules over an event's metadata and books, tables as mappings
    pipeline    `Pipeline`: decode, evaluate, deliver, dead-letter one consumed message
    app         `create_app` (the Faust agents, tables and settle) and `run` (the process)

`Evaluator` and `Pipeline` hold all the logic and run without Faust (plain dicts as tables),
which is how the unit tests and the backtest drive them; `app` only wires them to topics and
tables. Importing this package does not import Faust.
"""

from marketpulse.worker.evaluator import (
    Evaluator,
    Step,
    book_key,
    metadata_complete,
    top_of_book,
)
from marketpulse.worker.pipeline import Pipeline

__all__ = ["Evaluator", "Pipeline", "Step", "book_key", "metadata_complete", "top_of_book"]

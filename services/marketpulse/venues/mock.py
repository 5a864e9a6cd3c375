"""The mock venue: a seeded simulator of prediction-market events with realistic order books and
injected complete-set opportunities whose ground truth is known exactly.

Everything is a pure function of ``(seed, n_events, n_binaries, start_ms, step_ms,
opportunities, recurring)``: the same arguments give the same markets and the same update stream,
byte for byte. Randomness comes from ``random.Random`` instances seeded from ``seed``; the wall
clock is read only for the default ``start_ms``.

Layout (ids are venue-prefixed with ``mk:``; every market has tokens ``<market>-yes``/``-no``)
  * ``mk:ev-NNN``: ``n_events`` multi-outcome events of 3-6 mutually exclusive markets
    ``mk:ev-NNN-mK`` (exclusive, neg_risk, event_market_count = N).
  * ``mk:bin-NNN``: ``n_binaries`` binary events of one market ``mk:bin-NNN-m0``.
  * ``mk:aug-000``: a neg-risk *augmented* event of 4 named markets whose YES prices sum to about
    0.80 (the rest belongs to an implicit "Other"): Σ best YES asks < 1 at all times, and that is
    *not* an arbitrage.
  * ``mk:ladder-000``: a non-exclusive ladder "BTC above 90k / 100k / 110k" (exclusive=False):
    Σ best YES asks < 1 at all times, also *not* an arbitrage; YES prices fall strictly with the
    strike, so no ladder (implication) violation either.

Prices live on the 0.01 tick grid. Each token has a mid (in ticks) chasing its event's fair value,
which random-walks (softmax of logits for exclusive events, normalised to sum to 1; NO fair =
1 - YES fair). A token's book has up to 5 levels a side, best first, each 1-2 ticks apart, sizes
50-2000 shares; the top ask is at least mid + 2 ticks and the top bid at most mid - 2 ticks, and
mids are kept (a) within [0.04, 0.96], (b) with YES mid + NO mid within 1 ± 0.01 for every
market, and (c) with Σ YES mids within 1 ± 0.01 for every exclusive, non-augmented event. Hence,
outside the injected windows, at every point of the stream:
  * every exclusive set (the YES tokens of a multi-outcome event; the YES+NO pair of any market)
    has Σ best asks ≥ 1 + 0.01·N (≥ 1.03 for a pair), and Σ best bids ≤ 1 - 0.01·N;
  * the NO tokens of a neg-risk event have Σ best asks > N - 1 and Σ best bids < N - 1;
so no complete-set rule (buy or sell side, with or without fees) may fire there.

Stream
  ``updates()`` yields ``(book, tick)`` pairs forever. Update ``i`` has ``seq = i`` and event
  time ``ts_ms = start_ms + int(i * step_ms)`` (a step may be a fraction of a millisecond);
  exactly one token's book is published per update. ``recv_ms`` is set to ``ts_ms`` here and
  overwritten by the collector at send time. Updates ``0 .. n_tokens-1`` are a snapshot of every
  token (in market order); then one random token per update moves, except during the injection
  sequences below.

Injected opportunities (the ground truth; ``opportunities()`` returns them)
  Windows begin at update ``first + k * 500`` with ``first = max(300, n_tokens + 100)``, and
  cycle through three kinds (k = 0, 1, 2; with ``recurring`` the cycle repeats forever):
    0. the YES+NO pair of one binary market: Σ asks = 0.95, depth 150, Polymarket fees;
    1. the YES set of a 3-outcome event:      Σ asks = 0.94, depth 200, Polymarket fees;
    2. the YES set of a 4-outcome event:      Σ asks = 0.97, depth 80,  no fees.
  The host events are picked by the seed (their fee schedules forced as above).
  ``opportunities(n)`` lists the windows visible within the first ``n`` updates (default: the
  first cycle, all of which is over after ``n_updates_until_all_done()`` updates).
  Leg prices split the total in proportion to the legs' mids when the window begins (each leg
  ≥ 0.03). From update ``b`` (the window's begin) the host event's tokens stop moving, and one
  book per update is published:
    A. b ..           every leg (and, for multi-outcome events, every NO token of the event) gets
                      a *widened* book: top ask ≥ leg price + gap where
                      gap = 1 - Σ leg prices + 0.03, NO asks ≥ 1.02 - that market's leg price,
                      YES top bid ≤ leg price - 0.04. Still no opportunity anywhere.
    B. then           each leg in turn gets the same book with an extra top ask level
                      ``(leg price, depth)``. The opportunity exists from the *last* of these
                      updates: ``start_index``, whose ``ts_ms`` is ``start_ms``.
    ...               random updates of other events until ``end_index = b + 200``.
    C. end_index ..   each leg in turn loses that level again (back to its widened book); the
                      first of these updates (``end_ms`` = its ts_ms) ends the opportunity.
    D. then           every token of phase A gets a normal book again; the event moves again.
  So an opportunity is visible exactly in the book state after update ``start_index`` up to the
  state after update ``end_index - 1``: event times ``start_ms <= ts_ms < end_ms``. While any
  strict subset of the legs shows its cheap level, Σ asks ≥ 1.03 (the gap), and a market's
  YES+NO stays ≥ 1.02. Behind the cheap level, the next ask levels keep every leg's marginal
  price ≥ leg price + gap, so the executable size is exactly ``depth`` and the net edge per share
  is ``1 - Σ p - Σ fee(p)`` with ``fee(p) = rate · (p·(1-p))^exponent`` (0 for model "none").
  Those windows are the *only* times an exclusive, non-augmented set's asks sum below 1.
  No book of the host event is published between ``start_index`` and ``end_index``, so a rule
  evaluated on every book sees each opportunity appear once, at ``start_index``. The legs'
  bids stay 4 ticks below the cheap ask: a cheap resting ask is an arbitrage, not a price move,
  and the tick rules (spike, trend: books at most 3 ticks wide) must not read it as one.

News moves (from the fourth window on; ``news()`` returns them)
  ``NEWS_OFFSET`` updates after such a window's begin (after its phase D, before the next
  window), one binary market other than the binary host reprices: 6 times in turn its NO
  then its YES book is published, the YES mid moving 2 ticks toward 0.50 each time (12 in
  all, within 0.6 s of event time), on a YES book exactly 3 ticks wide (bid mid - 1, ask
  mid + 2) with 500 shares at both tops; its fair value follows. YES + NO stays within the
  pair band, so its asks still sum to ≥ 1.03 and its bids to ≤ 0.98: no complete set. These
  are the only books of the stream at most 3 ticks wide outside the injected legs, hence the
  only place the tick rules fire (once per move for spike). The first cycle (what
  ``n_updates_until_all_done`` covers) has none.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

VENUE = "mock"
PREFIX = "mk:"
STEP_MS = 50  # event time per update by default: 20 updates per second of event time

TICKS = 100  # prices are integers on a grid of 1/100 internally: 1 tick = 0.01
TICK_SIZE = 1 / TICKS
MIN_SIZE = 5.0
MIN_MID, MAX_MID = 4, 96  # keeps top levels (mid ± 2..3 ticks) inside [0.01, 0.99]
HALF_SPREAD = (2, 3)  # ticks from mid to the top level, each side
LEVELS = 5
SIZE_MIN, SIZE_MAX = 50.0, 2000.0
# Log-uniform sizes (many small resting orders, a few large ones, as on real books), tabulated
# because drawing them is on the collector's hot path.
_SIZES = tuple(
    float(round(SIZE_MIN * (SIZE_MAX / SIZE_MIN) ** ((k + 0.5) / 256))) for k in range(256)
)
EXCLUSIVE_BAND = 1  # Σ mids of an exclusive set stays within 1 ± this many ticks
AUGMENTED_BAND = (70, 85)  # Σ YES mids of the augmented event (rest = implicit "Other")
LADDER_MAX_SUM = 80  # Σ YES mids of the ladder, so its YES asks always sum below 1
LADDER_GAP = 3  # ticks between consecutive ladder strikes' mids

# News moves: from the second injection cycle on, NEWS_OFFSET updates after each window's
# begin, one binary (never the binary host) reprices by NEWS_STEPS x NEWS_STEP ticks.
NEWS_FROM_WINDOW = 3
NEWS_OFFSET = 300
NEWS_STEPS = 6
NEWS_STEP = 2
NEWS_SIZE = 500.0  # shares at each side's top level during the move (a liquid book)

FIRST_WINDOW = 300
WINDOW_UPDATES = 200
WINDOW_PERIOD = 500
GAP_SAFETY = 3  # ticks above 1 that any partial set of injected legs keeps
NO_SAFETY = 2  # ticks above 1 of a market's YES + NO asks while its YES leg is cheap
# A leg's top bid stays this many ticks below its cheap ask: an injected opportunity is a cheap
# resting ask, not a price move, so its book is wider than what the tick rules (spike, trend)
# call liquid (3 ticks) and they stay silent on it; the complete-set signals stay the only ones.
LEG_BID_GAP = 4
MIN_LEG = LEG_BID_GAP + 1  # ticks; leaves room for a bid below the cheap ask

POLYMARKET_FEE: dict[str, Any] = {"model": "polymarket", "rate": 0.02, "exponent": 1.0}
NO_FEE: dict[str, Any] = {"model": "none", "rate": 0.0, "exponent": 1.0}

Record = dict[str, Any]
Levels = list[tuple[int, float]]  # (price in ticks, size), best first


def fee_per_share(fee: dict[str, Any], price: float) -> float:
    """Taker fee per share: Polymarket's ``feeRate x (p·(1-p))^exponent``; 0 without a model.

    Written out here on purpose, apart from ``marketpulse.fees``: it is the test oracle for the
    rules that use that module, and the mock only quotes these two models."""
    if fee["model"] == "none":
        return 0.0
    if fee["model"] != "polymarket":
        raise ValueError(f"the mock venue's fee oracle knows 'none' and 'polymarket', not {fee}")
    return float(fee["rate"] * (price * (1.0 - price)) ** fee["exponent"])


@dataclass(frozen=True)
class Opportunity:
    """Ground truth of one injected buy-side complete-set opportunity (see the module doc).

    ``token_ids``, ``market_ids`` and ``leg_prices`` are parallel, one entry per leg (the binary
    kind has both legs in one market). Visible for event times ``start_ms <= ts < end_ms``, i.e.
    after update ``start_index`` up to update ``end_index - 1``.
    """

    event_key: str
    market_ids: tuple[str, ...]
    token_ids: tuple[str, ...]
    side: str
    start_ms: int
    end_ms: int
    leg_prices: tuple[float, ...]
    depth: float
    fee: dict[str, Any] = field(hash=False)
    start_index: int
    end_index: int

    def fees_per_share(self) -> float:
        return sum(fee_per_share(self.fee, p) for p in self.leg_prices)

    def expected_edge_per_share(self) -> float:
        """1 - Σ leg prices - Σ taker fees: what one complete set earns at resolution."""
        return 1.0 - sum(self.leg_prices) - self.fees_per_share()

    def expected_profit(self) -> float:
        return self.expected_edge_per_share() * self.depth


@dataclass(frozen=True)
class _Kind:
    """One kind of injected opportunity: which host, Σ leg prices (ticks), depth, fee."""

    host: str  # "binary" | "multi3" | "multi4"
    total: int
    depth: float


KINDS = (_Kind("binary", 95, 150.0), _Kind("multi3", 94, 200.0), _Kind("multi4", 97, 80.0))


@dataclass(frozen=True)
class _Window:
    kind: int
    begin: int
    start_index: int
    end_index: int
    done_index: int  # first update after phase D
    news_index: int | None = None  # a news move starts here (after phase D), if any


@dataclass(frozen=True)
class News:
    """Ground truth of one news move (see the module doc): a binary market's YES repriced by
    ``move`` ticks within ``end_index - start_index`` updates, on a book at most 3 ticks wide."""

    market_id: str
    token_id: str
    start_index: int
    end_index: int  # first update after the move
    from_price: float  # YES mid before, and after the move (probability)
    to_price: float


# ----------------------------------------------------------------------------------------------
# Layout: events, markets, tokens and the constraints on their mids
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Band:
    """Σ of the members' mids must stay within [lo, hi] (ticks)."""

    tokens: list[_Token]
    lo: int
    hi: int


@dataclass(eq=False)
class _Token:
    token_id: str
    market_id: str
    event: _Event
    index: int  # market position within the event
    yes: bool
    mid: int = 50
    bands: list[_Band] = field(default_factory=list)
    higher: _Token | None = None  # ladder: a token whose mid must stay LADDER_GAP above
    lower: _Token | None = None
    last_price: float | None = None
    levels: tuple[Levels, Levels] = ([], [])  # last published (bids, asks)


@dataclass(eq=False)
class _Market:
    market_id: str
    question: str
    yes: _Token
    no: _Token
    floor_strike: float | None = None


@dataclass(eq=False)
class _Event:
    key: str
    kind: str  # "multi" | "binary" | "augmented" | "ladder"
    title: str
    fee: dict[str, Any]
    logits: list[float]
    markets: list[_Market] = field(default_factory=list)
    frozen: bool = False

    @property
    def tokens(self) -> list[_Token]:
        return [t for m in self.markets for t in (m.yes, m.no)]


LOGIT_BOUND = {"multi": 2.5, "augmented": 2.0, "binary": 3.0, "ladder": 3.0}
LOGIT_STEP = 0.15


def _softmax_with_floor(logits: list[float], mass: float, floor: float) -> list[float]:
    # The floor keeps every outcome tradable (mid ≥ 4 ticks); the mass is < 1 for the augmented
    # event, whose missing share belongs to the implicit "Other".
    exps = [math.exp(x) for x in logits]
    total = sum(exps)
    free = 1.0 - floor * len(logits)
    return [mass * (floor + free * e / total) for e in exps]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def fair_yes(event: _Event) -> list[float]:
    """Fair YES probability of each market of the event."""
    if event.kind == "multi":
        return _softmax_with_floor(event.logits, 1.0, 0.04)
    if event.kind == "augmented":
        return _softmax_with_floor(event.logits, 0.80, 0.06)
    if event.kind == "binary":
        return [_sigmoid(event.logits[0])]
    top = 0.2 + 0.2 * _sigmoid(event.logits[0])  # ladder: P(above the lowest strike)
    return [top, 0.5 * top, 0.2 * top]


def _target(tok: _Token) -> int:
    yes = round(fair_yes(tok.event)[tok.index] * TICKS)
    mid = yes if tok.yes else TICKS - yes
    return min(MAX_MID, max(MIN_MID, mid))


EVENT_TITLES = (
    "Winner of the Mock Cup 2026",
    "Next chair of the Mock Reserve",
    "Best Picture at the 2027 Mock Awards",
    "Mocksville mayoral election",
    "Song of the summer 2026",
    "Largest company by market cap on Dec 31",
    "Ballon d'Mock 2026",
    "Host city of the 2034 Mock Games",
)
CANDIDATES = (
    "Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan", "Kendall",
    "Logan", "Morgan", "Parker", "Quinn", "Riley", "Sawyer", "Taylor",
)  # fmt: skip
BINARY_QUESTIONS = (
    "Will the Mock Index close above 5,000 this week?",
    "Will it snow in Mocksville before Friday?",
    "Will the Mock Reserve cut rates at its next meeting?",
    "Will Mock Rocket launch on schedule?",
    "Will the Mock Bill pass the Senate this month?",
    "Will ETH trade above $4,000 at week's end?",
)
AUGMENTED_TITLE = "Mock Party nominee for 2028"
LADDER_STRIKES = (90_000.0, 100_000.0, 110_000.0)


class _Layout:
    """The events of one venue instance, built deterministically from the seed."""

    def __init__(self, seed: int, n_events: int, n_binaries: int, opportunities: bool) -> None:
        if opportunities and (n_events < 2 or n_binaries < 1):
            raise ValueError(
                "the mock venue's injected opportunities need n_events >= 2 and n_binaries >= 1 "
                "(or opportunities=False)"
            )
        rng = random.Random(f"{seed}:layout")
        self.hosts: dict[str, _Event] = {}
        sizes = [rng.randint(3, 6) for _ in range(n_events)]
        host3 = host4 = host_bin = -1
        if opportunities:
            host3, host4 = rng.sample(range(n_events), 2)
            sizes[host3], sizes[host4] = 3, 4
            host_bin = rng.randrange(n_binaries)
        self.events: list[_Event] = []
        for i, size in enumerate(sizes):
            fee = NO_FEE if rng.random() < 0.25 else POLYMARKET_FEE
            fee = {host3: POLYMARKET_FEE, host4: NO_FEE}.get(i, fee)
            self.events.append(self._multi(rng, i, size, fee))
        for i in range(n_binaries):
            fee = NO_FEE if rng.random() < 0.25 else POLYMARKET_FEE
            self.events.append(self._binary(rng, i, POLYMARKET_FEE if i == host_bin else fee))
        self.events.append(self._augmented(rng))
        self.events.append(self._ladder(rng))
        if opportunities:
            self.hosts = {
                "multi3": self.events[host3],
                "multi4": self.events[host4],
                "binary": self.events[n_events + host_bin],
            }
        # Binaries that carry news moves: every binary but the injection host.
        self.news = [
            e for e in self.events[n_events : n_events + n_binaries] if e not in self.hosts.values()
        ]
        for event in self.events:
            _init_mids(event)
        self.tokens = [t for e in self.events for t in e.tokens]

    @staticmethod
    def _add_market(event: _Event, index: int, question: str) -> _Market:
        market_id = f"{event.key}-m{index}"
        yes = _Token(f"{market_id}-yes", market_id, event, index, True)
        no = _Token(f"{market_id}-no", market_id, event, index, False)
        pair = _Band([yes, no], TICKS - EXCLUSIVE_BAND, TICKS + EXCLUSIVE_BAND)
        yes.bands.append(pair)
        no.bands.append(pair)
        market = _Market(market_id, question, yes, no)
        event.markets.append(market)
        return market

    @staticmethod
    def _yes_band(event: _Event, lo: int, hi: int) -> None:
        band = _Band([m.yes for m in event.markets], lo, hi)
        for m in event.markets:
            m.yes.bands.append(band)

    def _multi(self, rng: random.Random, i: int, size: int, fee: dict[str, Any]) -> _Event:
        title = f"{EVENT_TITLES[i % len(EVENT_TITLES)]} #{i}"
        logits = [rng.uniform(-1.5, 1.5) for _ in range(size)]
        event = _Event(f"{PREFIX}ev-{i:03d}", "multi", title, fee, logits)
        for k, name in enumerate(rng.sample(CANDIDATES, size)):
            self._add_market(event, k, f"{title}: will {name} win?")
        self._yes_band(event, TICKS - EXCLUSIVE_BAND, TICKS + EXCLUSIVE_BAND)
        return event

    def _binary(self, rng: random.Random, i: int, fee: dict[str, Any]) -> _Event:
        question = f"{BINARY_QUESTIONS[i % len(BINARY_QUESTIONS)]} (#{i})"
        event = _Event(f"{PREFIX}bin-{i:03d}", "binary", question, fee, [rng.uniform(-2, 2)])
        self._add_market(event, 0, question)
        return event

    def _augmented(self, rng: random.Random) -> _Event:
        logits = [rng.uniform(-1, 1) for _ in range(4)]
        event = _Event(f"{PREFIX}aug-000", "augmented", AUGMENTED_TITLE, POLYMARKET_FEE, logits)
        for k, name in enumerate(rng.sample(CANDIDATES, 4)):
            self._add_market(event, k, f"{AUGMENTED_TITLE}: will {name} be the nominee?")
        self._yes_band(event, *AUGMENTED_BAND)
        return event

    def _ladder(self, rng: random.Random) -> _Event:
        title = "BTC price on Friday"
        event = _Event(f"{PREFIX}ladder-000", "ladder", title, POLYMARKET_FEE, [rng.uniform(-1, 1)])
        for k, strike in enumerate(LADDER_STRIKES):
            market = self._add_market(event, k, f"Will BTC be above ${strike:,.0f} on Friday?")
            market.floor_strike = strike
        self._yes_band(event, 0, LADDER_MAX_SUM)
        yes = [m.yes for m in event.markets]
        for higher, lower in itertools.pairwise(yes):
            higher.lower, lower.higher = lower, higher
        return event


def _init_mids(event: _Event) -> None:
    fair = fair_yes(event)
    if event.kind == "multi":
        yes = _split(TICKS, fair, MIN_MID, MAX_MID)  # exactly 1: inside the exclusive band
    else:
        yes = [min(MAX_MID, max(MIN_MID, round(p * TICKS))) for p in fair]
    for market, mid in zip(event.markets, yes, strict=True):
        market.yes.mid, market.no.mid = mid, TICKS - mid


def _split(total: int, weights: list[float], lo: int, hi: int) -> list[int]:
    """Integers within [lo, hi] summing to ``total``, proportional to ``weights`` (largest
    remainder first, so the split is as fair as the grid allows)."""
    if not len(weights) * lo <= total <= len(weights) * hi:
        raise ValueError(f"cannot split {total} into {len(weights)} parts within [{lo}, {hi}]")
    weight_sum = sum(weights)
    exact = [total * w / weight_sum for w in weights]
    out = [min(hi, max(lo, math.floor(x))) for x in exact]
    while (diff := total - sum(out)) != 0:
        step = 1 if diff > 0 else -1
        movable = [k for k in range(len(out)) if lo <= out[k] + step <= hi]
        k = max(movable, key=lambda k: step * (exact[k] - out[k]))
        out[k] += step
    return out


# ----------------------------------------------------------------------------------------------
# Simulation: one fresh state per stream
# ----------------------------------------------------------------------------------------------


def _levels_hash(bids: Levels, asks: Levels) -> str:
    # -1 separates the sides, so moving a level from one side to the other changes the hash.
    flat = [x for level in bids for x in level]
    flat.append(-1.0)
    flat.extend(x for level in asks for x in level)
    return hashlib.blake2b(array("d", flat).tobytes(), digest_size=8).hexdigest()


class _Sim:
    """The mutable state behind one ``updates()`` stream."""

    def __init__(self, venue: MockVenue) -> None:
        self.venue = venue
        self.layout = _Layout(venue.seed, venue.n_events, venue.n_binaries, venue.inject)
        self.rng = random.Random(f"{venue.seed}:walk")
        self.opened: list[Opportunity] = []
        self.news: list[News] = []

    # -- books -------------------------------------------------------------------------------

    def _ladder_side(self, top: int, direction: int) -> Levels:
        # One draw per level: 8 bits pick the size, 2 bits whether the next level is 2 ticks away.
        out: Levels = []
        price = top
        while len(out) < LEVELS and 1 <= price <= TICKS - 1:
            bits = self.rng.getrandbits(10)
            out.append((price, _SIZES[bits & 0xFF]))
            price += direction * (2 if bits >> 8 == 0 else 1)
        return out

    def _book_levels(self, tok: _Token, ask_floor: int = 0, bid_cap: int = TICKS) -> None:
        top_ask = max(tok.mid + self.rng.randint(*HALF_SPREAD), ask_floor)
        top_bid = min(tok.mid - self.rng.randint(*HALF_SPREAD), bid_cap)
        tok.levels = (self._ladder_side(top_bid, -1), self._ladder_side(top_ask, +1))

    def _emit(self, tok: _Token, i: int, asks: Levels | None = None) -> tuple[Record, Record]:
        """The (book, tick) pair of update ``i``; ``asks`` overrides the token's own asks."""
        bids, own_asks = tok.levels
        asks = own_asks if asks is None else asks
        ts = self.venue.start_ms + int(i * self.venue.step_ms)
        ids = {
            "event_key": tok.event.key,
            "market_id": tok.market_id,
            "token_id": tok.token_id,
            "venue": VENUE,
            "ts_ms": ts,
            "recv_ms": ts,
            "seq": i,
        }
        book = {
            **ids,
            "bids": [{"price": p / TICKS, "size": s} for p, s in bids],
            "asks": [{"price": p / TICKS, "size": s} for p, s in asks],
            "hash": _levels_hash(bids, asks),
        }
        tick = {
            **ids,
            "best_bid": bids[0][0] / TICKS if bids else None,
            "best_ask": asks[0][0] / TICKS if asks else None,
            "bid_size": bids[0][1] if bids else None,
            "ask_size": asks[0][1] if asks else None,
            "last_price": tok.last_price,
        }
        return book, tick

    # -- random walk -------------------------------------------------------------------------

    def _allowed(self, tok: _Token) -> tuple[int, int]:
        """The range the token's mid may move to without breaking any band or ladder order."""
        lo, hi = MIN_MID, MAX_MID
        for band in tok.bands:
            rest = sum(t.mid for t in band.tokens) - tok.mid
            lo, hi = max(lo, band.lo - rest), min(hi, band.hi - rest)
        if tok.higher is not None:
            hi = min(hi, tok.higher.mid - LADDER_GAP)
        if tok.lower is not None:
            lo = max(lo, tok.lower.mid + LADDER_GAP)
        return lo, hi

    def _move(self, tok: _Token) -> None:
        event = tok.event
        k = tok.index if event.kind in ("multi", "augmented") else 0
        bound = LOGIT_BOUND[event.kind]
        event.logits[k] = max(-bound, min(bound, event.logits[k] + self.rng.gauss(0, LOGIT_STEP)))
        # Quotes chase the fair value a few ticks at a time, with some noise of their own.
        step = max(-2, min(2, _target(tok) - tok.mid)) + self.rng.choice((-1, 0, 0, 1))
        lo, hi = self._allowed(tok)
        if lo <= hi:  # always true from a valid state; guards the invariant anyway
            tok.mid = max(lo, min(hi, tok.mid + step))

    def _random_step(self, i: int) -> tuple[Record, Record]:
        tokens = self.layout.tokens
        tok = tokens[self.rng.randrange(len(tokens))]
        while tok.event.frozen:
            tok = tokens[self.rng.randrange(len(tokens))]
        self._move(tok)
        self._book_levels(tok)
        if self.rng.random() < 0.3:  # a trade at the touch since the last update
            bids, asks = tok.levels
            side = asks if self.rng.random() < 0.5 else bids
            if side:
                tok.last_price = side[0][0] / TICKS
        return self._emit(tok, i)

    # -- news moves --------------------------------------------------------------------------

    def _news(self, window: _Window) -> Iterator[tuple[Record, Record]]:
        """One binary's YES repriced NEWS_STEPS x NEWS_STEP ticks toward the middle, one book
        per update (its NO, then its YES, in turn, so the pair band holds); the YES book is 3
        ticks wide with NEWS_SIZE at both tops. The fair value follows the move, so the walk
        does not undo it."""
        assert window.news_index is not None
        pool = self.layout.news
        market = pool[(window.begin // WINDOW_PERIOD) % len(pool)].markets[0]
        yes, no = market.yes, market.no
        up = 1 if yes.mid < TICKS // 2 else -1
        before, i = yes.mid, window.news_index
        for _ in range(NEWS_STEPS):
            for tok in (no, yes):
                lo, hi = self._allowed(tok)
                step = NEWS_STEP * (up if tok is yes else -up)
                tok.mid = max(lo, min(hi, tok.mid + step))
            self._book_levels(no)
            yield self._emit(no, i)
            bids = self._ladder_side(yes.mid - 1, -1)
            asks = self._ladder_side(yes.mid + 2, +1)
            yes.levels = (
                [(bids[0][0], NEWS_SIZE), *bids[1:]],
                [(asks[0][0], NEWS_SIZE), *asks[1:]],
            )
            yield self._emit(yes, i + 1)
            i += 2
        p = yes.mid / TICKS
        bound = LOGIT_BOUND["binary"]
        yes.event.logits[0] = max(-bound, min(bound, math.log(p / (1.0 - p))))
        self.news.append(
            News(market.market_id, yes.token_id, window.news_index, i, before / TICKS, p)
        )

    # -- injected windows --------------------------------------------------------------------

    def _legs(self, kind: _Kind) -> list[_Token]:
        event = self.layout.hosts[kind.host]
        if kind.host == "binary":
            return [event.markets[0].yes, event.markets[0].no]
        return [m.yes for m in event.markets]

    def _open(self, window: _Window) -> tuple[list[_Token], list[_Token], list[int]]:
        """Freeze the host event, price the legs, widen the books; returns (phase-A tokens,
        legs, leg prices in ticks)."""
        kind = KINDS[window.kind]
        legs = self._legs(kind)
        event = legs[0].event
        event.frozen = True
        gap = TICKS - kind.total + GAP_SAFETY
        prices = _split(kind.total, [t.mid for t in legs], MIN_LEG, TICKS - 1 - gap)
        price_of = dict(zip((t.token_id for t in legs), prices, strict=True))
        for tok in event.tokens:
            if tok.token_id in price_of:
                leg = price_of[tok.token_id]
                self._book_levels(tok, ask_floor=leg + gap, bid_cap=leg - LEG_BID_GAP)
            else:  # NO token of a YES leg's market: its YES+NO must stay above 1
                leg = price_of[tok.token_id.removesuffix("-no") + "-yes"]
                self._book_levels(tok, ask_floor=TICKS + NO_SAFETY - leg)
        self.opened.append(self._opportunity(window, kind, legs, prices))
        return event.tokens, legs, prices

    def _opportunity(
        self, window: _Window, kind: _Kind, legs: list[_Token], prices: list[int]
    ) -> Opportunity:
        start, step = self.venue.start_ms, self.venue.step_ms
        return Opportunity(
            event_key=legs[0].event.key,
            market_ids=tuple(t.market_id for t in legs),
            token_ids=tuple(t.token_id for t in legs),
            side="buy",
            start_ms=start + int(window.start_index * step),
            end_ms=start + int(window.end_index * step),
            leg_prices=tuple(p / TICKS for p in prices),
            depth=kind.depth,
            fee=dict(legs[0].event.fee),
            start_index=window.start_index,
            end_index=window.end_index,
        )

    def stream(self) -> Iterator[tuple[Record, Record]]:
        i = 0
        for tok in self.layout.tokens:  # snapshot: every token's book once
            self._book_levels(tok)
            yield self._emit(tok, i)
            i += 1
        for window in self.venue.windows():
            while i < window.begin:
                yield self._random_step(i)
                i += 1
            widened, legs, prices = self._open(window)
            depth = KINDS[window.kind].depth
            for tok in widened:
                yield self._emit(tok, i)
                i += 1
            for tok, price in zip(legs, prices, strict=True):
                yield self._emit(tok, i, asks=[(price, depth), *tok.levels[1]])
                i += 1
            while i < window.end_index:
                yield self._random_step(i)
                i += 1
            for tok in legs:  # back to the widened book: the first one ends the opportunity
                yield self._emit(tok, i)
                i += 1
            for tok in widened:
                self._book_levels(tok)
                yield self._emit(tok, i)
                i += 1
            legs[0].event.frozen = False
            if window.news_index is not None:
                while i < window.news_index:
                    yield self._random_step(i)
                    i += 1
                for out in self._news(window):
                    yield out
                    i += 1
        while True:
            yield self._random_step(i)
            i += 1


# ----------------------------------------------------------------------------------------------
# Public venue
# ----------------------------------------------------------------------------------------------


class MockVenue:
    """A deterministic simulated venue (see the module docstring for the exact semantics)."""

    venue = VENUE

    def __init__(
        self,
        seed: int = 7,
        n_events: int = 12,
        n_binaries: int = 8,
        start_ms: int | None = None,
        step_ms: float = STEP_MS,
        opportunities: bool = True,
        recurring: bool = True,
    ) -> None:
        self.seed = seed
        self.n_events = n_events
        self.n_binaries = n_binaries
        self.start_ms = int(time.time()) * 1000 if start_ms is None else start_ms
        self.step_ms = step_ms
        self.inject = opportunities
        self.recurring = recurring
        self._layout = _Layout(seed, n_events, n_binaries, opportunities)
        self._opportunities: dict[int, list[Opportunity]] = {}

    @property
    def n_tokens(self) -> int:
        return len(self._layout.tokens)

    def markets(self) -> list[Record]:
        """Market records (Avro ``Market``), in a stable order."""
        return [
            self._market_record(event, market)
            for event in self._layout.events
            for market in event.markets
        ]

    def _market_record(self, event: _Event, market: _Market) -> Record:
        hours = 72 + int(event.key[-3:]) % 48  # "a few days" after start, varied per event
        return {
            "market_id": market.market_id,
            "event_id": event.key,
            "venue": VENUE,
            "question": market.question,
            "event_title": event.title,
            "slug": market.market_id.removeprefix(PREFIX),
            "outcomes": [
                {"name": "Yes", "token_id": market.yes.token_id},
                {"name": "No", "token_id": market.no.token_id},
            ],
            "status": "active",
            "end_ms": self.start_ms + hours * 3_600_000,
            "neg_risk": event.kind in ("multi", "augmented"),
            "neg_risk_augmented": event.kind == "augmented",
            "exclusive": event.kind != "ladder",
            "event_market_count": len(event.markets),
            "tick_size": TICK_SIZE,
            "min_size": MIN_SIZE,
            "fee": dict(event.fee),
            "rules_text": f"Resolves to Yes if: {market.question} (mock venue, seed {self.seed})",
            "strike_type": "greater" if market.floor_strike is not None else None,
            "floor_strike": market.floor_strike,
            "cap_strike": None,
            "winning_token_id": None,
            "updated_ms": self.start_ms,
        }

    def updates(self) -> Iterator[tuple[Record, Record]]:
        """The infinite (book, tick) stream, from update 0 each time it is called."""
        return _Sim(self).stream()

    def windows(self) -> Iterator[_Window]:
        """The injection schedule (indexes only; needs no simulation)."""
        if not self.inject:
            return
        first = max(FIRST_WINDOW, self.n_tokens + 100)
        hosts = self._layout.hosts
        for k in itertools.count() if self.recurring else range(len(KINDS)):
            kind = k % len(KINDS)
            event = hosts[KINDS[kind].host]
            n_legs = 2 if KINDS[kind].host == "binary" else len(event.markets)
            n_widened = len(event.markets) * 2
            begin = first + k * WINDOW_PERIOD
            end = begin + WINDOW_UPDATES
            start = begin + n_widened + n_legs - 1
            news = begin + NEWS_OFFSET if k >= NEWS_FROM_WINDOW and self._layout.news else None
            yield _Window(kind, begin, start, end, end + n_legs + n_widened, news)

    def n_updates_until_all_done(self) -> int:
        """Updates that cover the first three windows completely (books back to normal)."""
        if not self.inject:
            return self.n_tokens
        return list(itertools.islice(self.windows(), len(KINDS)))[-1].done_index

    def count_opportunities(self, n_updates: int) -> int:
        """How many injected opportunities became visible within the first ``n_updates``."""
        visible = itertools.takewhile(lambda w: w.start_index < n_updates, self.windows())
        return sum(1 for _ in visible)

    def news(self, n_updates: int) -> list[News]:
        """Ground truth: the news moves begun within the first ``n_updates`` updates."""
        sim = _Sim(self)
        for _ in itertools.islice(sim.stream(), n_updates):
            pass  # the moved market and its prices depend on the walk so far: replay it
        return [n for n in sim.news if n.start_index < n_updates]

    def opportunities(self, n_updates: int | None = None) -> list[Opportunity]:
        """Ground truth: the opportunities visible within the first ``n_updates`` updates
        (default: the first cycle of three, see ``n_updates_until_all_done``)."""
        n = self.n_updates_until_all_done() if n_updates is None else n_updates
        if n not in self._opportunities:
            sim = _Sim(self)
            for _ in itertools.islice(sim.stream(), n):
                pass  # leg prices depend on the walk so far: replay it
            self._opportunities[n] = [o for o in sim.opened if o.start_index < n]
        return list(self._opportunities[n])

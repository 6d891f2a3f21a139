"""The work queue of the reconciles: keyed, de-duplicated, rate-limited, with per-key backoff.

client-go's ``workqueue`` in asyncio, so that a few workers serve thousands of MLServes:

- **keys, de-duplicated**: a key added while it waits is one item; a key added while a
  worker processes it is processed once more after :meth:`WorkQueue.done` (never by two
  workers at once);
- **delayed adds**: :meth:`WorkQueue.add_after` (the earlier of two delays wins; a plain
  :meth:`~WorkQueue.add` makes the key ready at once), used for the drift timer, a
  schedule's next run and retries;
- **per-key backoff with jitter**: :meth:`WorkQueue.retry` re-adds a failed key after its
  doubling delay (``backoff(failures)``) times a random factor in [1 - jitter, 1];
  :meth:`WorkQueue.forget` resets it after a success;
- **a global rate limit**: a token bucket (``rate`` per second, ``burst`` at once) that every
  key taken by a worker spends, so a start-up with thousands of keys, or a storm of events,
  reaches the API server and the database at a bounded pace;
- **two priorities** (as controller-runtime's priority queue): a key added ``urgent`` (someone
  asked for a change: a new MLServe, a new spec, a deploy) is taken before the keys that only
  look again (a child's status, the drift timer, a retry, the start-up), so a deploy never
  waits behind a thousand status updates. Within one priority, first in first out. While
  :meth:`WorkQueue.hold` is held (a database sync pass runs), only urgent keys are taken:
  the pass, which decides the deploys, does not share the process with a burst of look-agains.

The decisions are synchronous and take the time from an injected ``clock``
(:meth:`WorkQueue.poll`: the next key, or how long to wait), so they are tested without
sleeping; :meth:`WorkQueue.get` is the thin asyncio wait around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["TokenBucket", "WorkQueue"]

K = TypeVar("K", bound=Hashable)


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved; ``rate`` None: no limit."""

    rate: float | None
    burst: float
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.burst = max(1.0, self.burst)
        self._tokens = self.burst
        self._stamp = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        if self.rate is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self) -> float:
        """Seconds until a token is there (0: now)."""
        if self.rate is None:
            return 0.0
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    def take(self) -> bool:
        """Spend a token if there is one."""
        if self.rate is None:
            return True
        self._refill()
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class WorkQueue(Generic[K]):
    """Keys to reconcile; see the module's docstring."""

    def __init__(
        self,
        *,
        backoff: Callable[[int], float],
        rate: float | None = None,
        burst: float = 1.0,
        jitter: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._backoff = backoff
        self._jitter = jitter
        self._clock = clock
        self._rand = rand
        self._bucket = TokenBucket(rate, burst, clock)
        self._ready: deque[K] = deque()
        self._urgent: deque[K] = deque()
        """Ready keys added ``urgent``: taken before those of ``_ready``."""
        self._queued: dict[K, bool] = {}
        """Keys in ``_ready`` or ``_urgent`` (each once), and whether urgent."""
        self._processing: set[K] = set()
        self._dirty: dict[K, bool] = {}
        """Keys added while processed (and whether urgent): queued again by :meth:`done`."""
        self._timers: dict[K, float] = {}
        """Key -> when its delayed add is due (the earliest one)."""
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._failures: dict[K, int] = {}
        self._changed = asyncio.Event()
        self._closed = False
        self._since: dict[K, float] = {}
        """Key -> when it became ready."""
        self._holds = 0
        """While above 0, only urgent keys are taken (:meth:`hold`)."""
        self.last_wait = 0.0
        """How long the key :meth:`poll` returned last had been ready (the queue's wait)."""

    # --- adding ---------------------------------------------------------------------------

    def add(self, key: K, *, urgent: bool = False) -> None:
        """Make ``key`` ready now (once, however often it is added); ``urgent``: before the
        keys that are not (a key waiting already moves ahead when added urgent)."""
        if self._closed:
            return
        self._timers.pop(key, None)  # the heap entry goes stale: skipped when it comes up
        if key in self._processing:
            self._dirty[key] = self._dirty.get(key, False) or urgent
            return
        queued = self._queued.get(key)
        if queued is None:
            self._queued[key] = urgent
            (self._urgent if urgent else self._ready).append(key)
            self._since[key] = self._clock()
            self._changed.set()
        elif urgent and not queued:
            self._ready.remove(key)
            self._queued[key] = True
            self._urgent.append(key)

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` in ``delay`` seconds (an earlier pending add of it wins)."""
        if self._closed:
            return
        if delay <= 0:
            self.add(key)
            return
        due = self._clock() + delay
        current = self._timers.get(key)
        if current is not None and current <= due:
            return
        self._timers[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        self._changed.set()

    def retry(self, key: K, at_most: float | None = None) -> float:
        """After a failure: add ``key`` after its backoff (capped by ``at_most``), with
        jitter; returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = self._backoff(failures)
        if at_most is not None:
            delay = min(delay, at_most)
        delay *= 1.0 - self._jitter * self._rand()
        self.add_after(key, delay)
        return delay

    def failures(self, key: K) -> int:
        """How many times in a row ``key`` failed (retries since the last :meth:`forget`)."""
        return self._failures.get(key, 0)

    def forget(self, key: K) -> None:
        """After a success: the next failure starts the backoff again."""
        self._failures.pop(key, None)

    def jittered(self, delay: float) -> float:
        """``delay`` spread by the jitter (so thousands of timers set together fire apart)."""
        return delay * (1.0 - self._jitter * self._rand())

    def remove(self, key: K) -> None:
        """Drop every pending add and the backoff of ``key`` (its object is gone). A worker
        processing it finishes; it is not processed again."""
        self._timers.pop(key, None)
        self._failures.pop(key, None)
        self._dirty.pop(key, None)
        if key in self._queued:
            (self._urgent if self._queued.pop(key) else self._ready).remove(key)
            self._since.pop(key, None)

    # --- taking ---------------------------------------------------------------------------

    def _promote_due(self) -> float | None:
        """Move the delayed adds that are due to the ready keys; seconds to the next one."""
        now = self._clock()
        while self._heap:
            due, _, key = self._heap[0]
            if self._timers.get(key) != due:
                heapq.heappop(self._heap)  # replaced or cancelled
                continue
            if due > now:
                return due - now
            heapq.heappop(self._heap)
            del self._timers[key]
            self.add(key)
        return None

    def poll(self) -> tuple[K | None, float | None]:
        """The next key to process (marked as processing), or None and the seconds to wait
        before asking again (None: until something is added)."""
        next_timer = self._promote_due()
        if not self._urgent and (not self._ready or self._holds):
            return None, next_timer
        wait = self._bucket.wait_time()
        if wait > 0 or not self._bucket.take():
            return None, max(wait, 1e-3)
        key = (self._urgent or self._ready).popleft()
        del self._queued[key]
        self._processing.add(key)
        self.last_wait = self._clock() - self._since.pop(key, self._clock())
        return key, None

    def done(self, key: K) -> None:
        """The worker finished ``key``; added meanwhile, it is ready again."""
        self._processing.discard(key)
        if key in self._dirty:
            self.add(key, urgent=self._dirty.pop(key))

    async def get(self) -> K:
        """Wait for the next key (see :meth:`poll`); CancelledError ends a worker."""
        while True:
            if self._closed:
                raise asyncio.CancelledError
            key, wait = self.poll()
            if key is not None:
                return key
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Within the block, only urgent keys are taken; the others wait until it ends (the
        keys being processed finish)."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            self._changed.set()

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    # --- introspection --------------------------------------------------------------------

    def __len__(self) -> int:
        """Keys ready to be processed now."""
        return len(self._ready) + len(self._urgent)

    @property
    def waiting(self) -> int:
        """Keys with a delayed add pending."""
        return len(self._timers)

    @property
    def processing(self) -> int:
        return len(self._processing)

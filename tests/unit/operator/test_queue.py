"""The work queue (reconcile/queue.py): de-duplication, delays, backoff, the rate limit.

Driven by a fake clock: no test sleeps."""

from __future__ import annotations

import asyncio

import pytest

from mlserve.operator.reconcile.queue import TokenBucket, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _queue(clock: Clock, *, rate: float | None = None, burst: float = 1.0, rand: float = 0.0) -> WorkQueue[str]:
    return WorkQueue(
        backoff=lambda n: min(8.0, 1.0 * 2**n), rate=rate, burst=burst, jitter=0.2, clock=clock, rand=lambda: rand
    )


def _drain(queue: WorkQueue[str]) -> list[str]:
    taken = []
    while True:
        key, _ = queue.poll()
        if key is None:
            return taken
        taken.append(key)
        queue.done(key)


def test_a_key_added_while_queued_is_one_item() -> None:
    queue = _queue(Clock())
    for key in ("a", "b", "a", "a", "c", "b"):
        queue.add(key)
    assert len(queue) == 3
    assert _drain(queue) == ["a", "b", "c"]


def test_a_key_added_while_processed_runs_once_more_after_and_never_twice_at_once() -> None:
    queue = _queue(Clock())
    queue.add("a")
    key, _ = queue.poll()
    assert key == "a"
    queue.add("a")
    queue.add("a")
    assert queue.poll() == (None, None)  # not handed to a second worker while processed
    queue.done("a")
    assert _drain(queue) == ["a"]
    assert _drain(queue) == []


def test_an_urgent_key_is_taken_before_the_keys_that_only_look_again() -> None:
    """A deploy's reconcile never waits behind a thousand status updates."""
    queue = _queue(Clock())
    for key in ("status-1", "status-2", "status-3"):
        queue.add(key)
    queue.add("deploy-1", urgent=True)
    queue.add("status-2", urgent=True)  # waiting already: moves ahead, still once
    queue.add("deploy-2", urgent=True)
    queue.add("deploy-1")  # a plain add of an urgent key keeps it urgent
    assert len(queue) == 5
    assert _drain(queue) == ["deploy-1", "status-2", "deploy-2", "status-1", "status-3"]


def test_an_urgent_add_while_processed_stays_urgent() -> None:
    queue = _queue(Clock())
    queue.add("a")
    assert queue.poll() == ("a", None)
    queue.add("a", urgent=True)
    queue.add("a")
    queue.add("b")
    queue.done("a")
    assert _drain(queue) == ["a", "b"]
    queue.add("c", urgent=True)
    queue.remove("c")
    assert len(queue) == 0 and _drain(queue) == []


def test_delayed_adds_come_due_on_the_clock_and_the_earliest_wins() -> None:
    clock = Clock()
    queue = _queue(clock)
    queue.add_after("a", 10)
    queue.add_after("a", 30)  # later: ignored
    queue.add_after("b", 5)
    key, wait = queue.poll()
    assert key is None and wait == pytest.approx(5)
    clock.advance(5)
    assert _drain(queue) == ["b"]
    clock.advance(4.9)
    assert _drain(queue) == []
    clock.advance(0.1)
    assert _drain(queue) == ["a"]
    clock.advance(100)
    assert _drain(queue) == []  # the later add was not kept


def test_an_add_replaces_a_pending_delayed_add() -> None:
    clock = Clock()
    queue = _queue(clock)
    queue.add_after("a", 60)  # the drift check
    queue.add("a")  # an event
    assert _drain(queue) == ["a"]
    clock.advance(61)
    assert _drain(queue) == []  # the drift check does not fire on top
    assert queue.waiting == 0


def test_backoff_doubles_per_failure_with_jitter_and_resets_on_forget() -> None:
    clock = Clock()
    queue = _queue(clock, rand=0.5)  # jitter takes 10 % off
    delays = []
    for _ in range(5):
        delays.append(queue.retry("a"))
        clock.advance(delays[-1])
        assert _drain(queue) == ["a"]
    assert delays == pytest.approx([0.9, 1.8, 3.6, 7.2, 7.2])
    assert queue.failures("a") == 5
    queue.forget("a")
    assert queue.retry("a") == pytest.approx(0.9)
    assert queue.retry("b", at_most=0.5) == pytest.approx(0.45)


def test_jitter_spreads_timers_set_together() -> None:
    values = iter([0.0, 0.5, 1.0])
    queue: WorkQueue[str] = WorkQueue(backoff=lambda n: 1.0, jitter=0.2, clock=Clock(), rand=lambda: next(values))
    assert [queue.jittered(60) for _ in range(3)] == pytest.approx([60, 54, 48])


def test_the_rate_limit_paces_the_keys_taken() -> None:
    clock = Clock()
    queue = _queue(clock, rate=2.0, burst=2.0)
    for key in "abcdef":
        queue.add(key)
    assert _drain(queue) == ["a", "b"]  # the burst
    key, wait = queue.poll()
    assert key is None and wait == pytest.approx(0.5)
    clock.advance(0.5)
    assert _drain(queue) == ["c"]
    clock.advance(10)  # tokens saved up to the burst only
    assert _drain(queue) == ["d", "e"]
    clock.advance(0.5)
    assert _drain(queue) == ["f"]


def test_token_bucket_without_rate_never_waits() -> None:
    bucket = TokenBucket(None, 1, Clock())
    assert all(bucket.take() for _ in range(1000))
    assert bucket.wait_time() == 0


def test_remove_drops_every_pending_add() -> None:
    clock = Clock()
    queue = _queue(clock)
    queue.add("a")
    queue.add_after("b", 1)
    queue.retry("c")
    for key in "abc":
        queue.remove(key)
    clock.advance(100)
    assert _drain(queue) == []
    assert queue.failures("c") == 0


async def test_get_waits_for_an_add_and_workers_share_the_keys() -> None:
    queue: WorkQueue[str] = WorkQueue(backoff=lambda n: 1.0)
    taken: list[str] = []
    took = asyncio.Event()
    release = asyncio.Event()

    async def worker() -> None:
        while True:
            key = await queue.get()
            taken.append(key)
            took.set()
            await release.wait()
            queue.done(key)

    async def until_taken(count: int) -> None:
        async with asyncio.timeout(5):
            while len(taken) < count:
                took.clear()
                await took.wait()

    workers = [asyncio.create_task(worker()) for _ in range(2)]
    try:
        queue.add("a")
        await until_taken(1)
        queue.add("a")  # while processed: once more after, by whichever worker
        queue.add("b")
        await until_taken(2)
        assert sorted(taken) == ["a", "b"]
        release.set()
        await until_taken(3)
        assert taken.count("a") == 2
    finally:
        queue.close()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


def test_while_held_only_urgent_keys_are_taken() -> None:
    """A database sync pass holds the queue: a deploy's reconcile may start, a look-again
    waits until the pass has decided."""
    queue = _queue(Clock())
    queue.add("status")
    with queue.hold():
        queue.add("deploy", urgent=True)
        assert queue.poll()[0] == "deploy"
        queue.done("deploy")
        assert queue.poll() == (None, None)
    assert _drain(queue) == ["status"]

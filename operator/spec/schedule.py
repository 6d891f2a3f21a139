"""Cron schedules of workflow serves: validation, the scheduler's settings and the pure planner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

__all__ = ["ScheduleSettings"]


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    """The operator's settings that shape scheduling (read by ``mlserve.operator.settings``)."""

    history_limit: int = 3
    """Finished RayJobs kept per MLServe; older finished ones are deleted."""
    starting_deadline: timedelta | None = timedelta(minutes=10)
    """A scheduled time not started within this long is skipped; None waits forever."""
    busy_recheck: timedelta = timedelta(seconds=30)
    """While a due run waits for a running RayJob, look again after at most this long."""

    def __post_init__(self) -> None:
        if self.history_limit < 0:
            raise ValueError("history_limit must be 0 or more")
        if self.starting_deadline is not None and self.starting_deadline <= timedelta(0):
            raise ValueError("starting_deadline must be positive (or None for no deadline)")
        if self.busy_recheck <= timedelta(0):
            raise ValueError("busy_recheck must be positive")

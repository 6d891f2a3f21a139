"""Cron schedules of workflow serves: validation, settings and the pure planner.

One home for the rules of a schedule, used by the MLServe spec's validation, ``mlserve
render``, the CRD checks and the reconcile (``mlserve.operator.reconcile.schedule``, which
does the I/O the plan asks for):

* :func:`parse_schedule` is the one cron validator. It lives here, in ``spec``, because every
  user of a schedule is in the operator; the models keep the database's schedule as text and
  never validate it (they must not import the operator).
* :func:`plan` is pure: given the cron expression, the clock, the last scheduled time
  recorded in the MLServe's status and the RayJobs that exist, it decides what to do now.
  No I/O, no clock of its own, so it is tested exhaustively.

The rules, modelled on the Kubernetes CronJob controller with ``concurrencyPolicy:
Forbid``:

* Times are those of the cron expression in UTC, strictly after the last scheduled time
  (or after the schedule took effect, for a new MLServe) and at or before now.
* Only the latest due time is started: after downtime the runs missed in between are
  counted and reported, not started in a burst.
* With a starting deadline, a time older than ``now - deadline`` is never started.
* Forbid: while a RayJob of the MLServe is still running, no new one starts. The due
  time waits (it is not recorded as scheduled) and starts as soon as the running job
  finishes, if it is still within the starting deadline; later times replace it.
* History: the newest ``history_limit`` finished RayJobs are kept, older finished ones
  are deleted; a running RayJob is never deleted.
* A RayJob that exists for a time proves that time was scheduled even when the status
  write that should have recorded it was lost, so a retry never starts a time twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from .api import ANNOTATION_SCHEDULED_TIME, KUBERAY_CRONJOB_TIME_ANNOTATION, RAYCRONJOB
from .times import as_utc, format_rfc3339, parse_rfc3339

__all__ = [
    "MISSED_COUNT_CAP",
    "DuplicateRun",
    "InvalidSchedule",
    "JobView",
    "Plan",
    "PlanReason",
    "Schedule",
    "ScheduleSettings",
    "cron_job_status",
    "duplicate_cron_runs",
    "job_view",
    "next_time",
    "parse_schedule",
    "plan",
]

# Counting missed times walks the cron sequence; past this many the count is reported
# as "at least" this number (the Kubernetes CronJob controller stops at 100 as well).
MISSED_COUNT_CAP = 100

_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
_ONE_MICROSECOND = timedelta(microseconds=1)

# KubeRay's terminal states: status.jobDeploymentStatus, and Ray's own status.jobStatus.
_FINISHED_DEPLOYMENT_STATUSES = frozenset({"Complete", "Failed"})
_FINISHED_JOB_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class InvalidSchedule(ValueError):
    """A cron expression the planner cannot use; the message says what to write instead."""


def parse_schedule(expression: str) -> str:
    """Validate a five-field cron expression (or a macro such as ``@daily``).

    Returns the normalised expression (single spaces). Seconds fields and other
    extensions of the cron library are refused, so a schedule means the same thing here
    as in a Kubernetes CronJob or a KubeRay RayCronJob.
    """
    text = " ".join(expression.split())
    if not text:
        raise InvalidSchedule("the schedule is empty: write five cron fields, e.g. '0 3 * * *'")
    if text.startswith("@"):
        if text not in _MACROS:
            known = ", ".join(sorted(_MACROS))
            raise InvalidSchedule(f"unknown cron macro {text!r}: use one of {known}")
        return text
    fields = text.split(" ")
    if len(fields) != 5:
        raise InvalidSchedule(
            f"cron schedule {text!r} has {len(fields)} fields: write exactly five fields "
            "(minute hour day-of-month month day-of-week), e.g. '*/15 * * * *', or a macro such as @daily"
        )
    if not croniter.is_valid(text):
        raise InvalidSchedule(
            f"cron schedule {text!r} is not valid: check each field's range "
            "(minute 0-59, hour 0-23, day 1-31, month 1-12, weekday 0-6)"
        )
    _check_fires(text)
    return text


_REFERENCE = datetime(2000, 1, 1, tzinfo=UTC)
"""A fixed start for :func:`_check_fires` (a leap year: February 29th is found)."""


def _check_fires(text: str) -> None:
    """A schedule that no date matches (``0 0 31 2 *``) passes the field ranges, then makes
    every computation of its next time fail: compute one time before and one after a fixed
    moment, and refuse it with the reason."""
    try:
        croniter(text, _REFERENCE).get_next(datetime)
        croniter(text, _REFERENCE).get_prev(datetime)
    except (ValueError, ArithmeticError, KeyError) as exc:
        raise InvalidSchedule(
            f"cron schedule {text!r} never fires: no date matches its day-of-month and month fields "
            f"together ({type(exc).__name__}; e.g. February 30th or April 31st): fix those fields"
        ) from None


def _aware(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is refused: the planner's callers pass the clock
    and the status times, which are always aware, so a naive one is a bug to surface."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: the planner works with aware UTC times")
    return as_utc(moment)


def _latest_at_or_before(expression: str, moment: datetime) -> datetime:
    # croniter's get_prev is strictly before its start; one microsecond later makes it
    # "at or before" (cron times are whole minutes, so nothing is skipped).
    return _aware(croniter(expression, moment + _ONE_MICROSECOND).get_prev(datetime))


def next_time(expression: str, after: datetime, time_zone: str | None = None) -> datetime:
    """The first time of the schedule strictly after ``after``, as UTC; the expression is read
    in ``time_zone`` (an IANA name, e.g. a RayCronJob's ``timeZone``) or else in UTC."""
    start = _aware(after)
    if time_zone:
        start = start.astimezone(ZoneInfo(time_zone))
    return _aware(croniter(expression, start).get_next(datetime))


def cron_job_status(
    expression: str, cron_job: Mapping[str, Any] | None, now: datetime, time_zone: str | None
) -> dict[str, Any]:
    """The schedule fields of the status of an MLServe run by a KubeRay RayCronJob."""
    values: dict[str, Any] = {"schedule": expression}
    with contextlib.suppress(ValueError, KeyError):  # a bad expression or zone: the apply reports it
        values["nextScheduledTime"] = format_rfc3339(next_time(expression, now, time_zone))
    last = ((cron_job or {}).get("status") or {}).get("lastScheduleTime")
    if last:
        values["lastScheduledTime"] = last
    return values


def _count_between(expression: str, after: datetime, until: datetime, cap: int) -> int:
    """How many schedule times t satisfy after < t <= until, counting at most ``cap``."""
    count = 0
    iterator = croniter(expression, after)
    while count < cap:
        moment = _aware(iterator.get_next(datetime))
        if moment > until:
            break
        count += 1
    return count


@dataclass(frozen=True, slots=True)
class Schedule:
    """A workflow serve's schedule as the planner sees it."""

    expression: str
    """A five-field cron expression or macro, validated by :func:`parse_schedule`."""
    start: datetime
    """When the schedule took effect (the MLServe's creation); earlier times never run."""


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


@dataclass(frozen=True, slots=True)
class JobView:
    """What the planner needs to know of one scheduled RayJob of the MLServe."""

    name: str
    scheduled_time: datetime
    finished: bool
    """KubeRay reports a terminal state (Complete or Failed), or the job is being deleted."""


class PlanReason(StrEnum):
    """Why the plan is what it is, for logs, Events and tests."""

    NOT_DUE = "NotDue"
    """No schedule time has come since the last run."""
    START = "Start"
    """A time is due and nothing blocks it."""
    CATCH_UP = "CatchUp"
    """Several times passed unstarted (downtime); only the latest starts."""
    BUSY = "Busy"
    """A time is due but a RayJob is still running (Forbid): it waits."""
    DEADLINE_MISSED = "DeadlineMissed"
    """Times passed and all are older than the starting deadline: none starts."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's decision. Apply it, record ``last_scheduled``, come back by ``next_check``."""

    reason: PlanReason
    start: datetime | None = None
    """Create the RayJob of this scheduled time."""
    delete: tuple[str, ...] = ()
    """Names of finished RayJobs past the history limit, oldest first."""
    last_scheduled: datetime | None = None
    """The value of ``status.lastScheduledTime`` after this plan is applied."""
    next_time: datetime | None = None
    """The next schedule time after the ones dealt with (``status.nextScheduledTime``)."""
    next_check: datetime | None = None
    """Call :func:`plan` again no later than this."""
    missed: int = 0
    """Schedule times that passed and will never start (capped at MISSED_COUNT_CAP)."""
    running: tuple[str, ...] = field(default=())
    """RayJobs still running (what a BUSY plan waits for)."""


def _history(jobs: Sequence[JobView], limit: int) -> tuple[str, ...]:
    finished = sorted(
        (job for job in jobs if job.finished),
        key=lambda job: (job.scheduled_time, job.name),
    )
    excess = len(finished) - limit
    if excess <= 0:
        return ()
    return tuple(job.name for job in finished[:excess])


def plan(
    schedule: Schedule,
    now: datetime,
    last_scheduled: datetime | None,
    existing_jobs: Sequence[JobView],
    settings: ScheduleSettings,
) -> Plan:
    """Decide what the scheduler does at ``now``. Pure: same inputs, same plan."""
    expression = parse_schedule(schedule.expression)
    now = _aware(now)
    jobs = [JobView(j.name, _aware(j.scheduled_time), j.finished) for j in existing_jobs]

    # Everything at or before `earliest` has been dealt with: the recorded time, any
    # RayJob that proves a later one (lost status write), or the schedule's start.
    recorded = [_aware(last_scheduled)] if last_scheduled is not None else []
    earliest = max([_aware(schedule.start), *recorded, *(j.scheduled_time for j in jobs)])
    last = max([*recorded, *(j.scheduled_time for j in jobs)], default=None)

    running = tuple(sorted(j.name for j in jobs if not j.finished))
    deletions = _history(jobs, settings.history_limit)
    due = _latest_at_or_before(expression, now)
    upcoming = next_time(expression, max(now, earliest))

    if due <= earliest:
        # Nothing new since the last run (or the clock went back: wait for it).
        return Plan(
            reason=PlanReason.NOT_DUE,
            delete=deletions,
            last_scheduled=last,
            next_time=upcoming,
            next_check=upcoming,
        )

    window_start = earliest
    if settings.starting_deadline is not None:
        window_start = max(earliest, now - settings.starting_deadline)

    if due <= window_start:
        # Every time since the last run is older than the starting deadline. They are
        # dropped for good: recorded as scheduled so they are not counted again.
        missed = _count_between(expression, earliest, due, MISSED_COUNT_CAP)
        return Plan(
            reason=PlanReason.DEADLINE_MISSED,
            delete=deletions,
            last_scheduled=due,
            next_time=upcoming,
            next_check=upcoming,
            missed=missed,
        )

    if running:
        # Forbid: the due time waits for the running job, within its deadline.
        recheck = min(upcoming, now + settings.busy_recheck)
        if settings.starting_deadline is not None:
            recheck = min(recheck, max(now, due + settings.starting_deadline))
        return Plan(
            reason=PlanReason.BUSY,
            delete=deletions,
            last_scheduled=last,
            next_time=due,
            next_check=recheck,
            running=running,
        )

    # Only the latest due time starts; the ones before it since the last run are missed.
    skipped = _count_between(expression, earliest, due, MISSED_COUNT_CAP) - 1
    after_due = next_time(expression, due)
    return Plan(
        reason=PlanReason.CATCH_UP if skipped > 0 else PlanReason.START,
        start=due,
        delete=deletions,
        last_scheduled=due,
        next_time=after_due,
        next_check=after_due,
        missed=max(skipped, 0),
    )


def job_view(obj: Mapping[str, Any]) -> JobView | None:
    """The planner's view of a live RayJob; None when it is not a scheduled run."""
    metadata = obj.get("metadata") or {}
    scheduled = parse_rfc3339((metadata.get("annotations") or {}).get(ANNOTATION_SCHEDULED_TIME))
    if scheduled is None:
        return None
    status = obj.get("status") or {}
    finished = (
        bool(metadata.get("deletionTimestamp"))
        or status.get("jobDeploymentStatus") in _FINISHED_DEPLOYMENT_STATUSES
        or str(status.get("jobStatus") or "").upper() in _FINISHED_JOB_STATUSES
    )
    return JobView(str(metadata.get("name")), scheduled, finished)


@dataclass(frozen=True, slots=True)
class DuplicateRun:
    """A RayJob a RayCronJob made for a cron time it had already made one for."""

    name: str
    kept: str
    """The first RayJob of that time, which stays."""
    scheduled_time: str
    """The time, as KubeRay wrote it (``ray.io/cronjob-scheduled-timestamp``)."""


def duplicate_cron_runs(jobs: Sequence[Mapping[str, Any]], cron_job_uid: str) -> tuple[DuplicateRun, ...]:
    """The RayJobs of the RayCronJob ``cron_job_uid`` that repeat a cron time: all but the first
    made (oldest ``creationTimestamp``, then name) of each time.

    KubeRay 1.6's RayCronJob controller names each RayJob ``<cronjob>-<5 random chars>`` and may
    reconcile one cron time twice before its cache holds the ``lastScheduleTime`` it wrote, so
    one time can get two RayJobs (docs/kuberay.md). Only RayJobs the RayCronJob controls and
    that carry KubeRay's time annotation count; one already being deleted is going anyway."""
    by_time: dict[datetime, list[tuple[str, str, str]]] = {}
    for job in jobs:
        meta = job.get("metadata") or {}
        if meta.get("deletionTimestamp") or not _controlled_by(meta, cron_job_uid):
            continue
        stamp = str((meta.get("annotations") or {}).get(KUBERAY_CRONJOB_TIME_ANNOTATION) or "")
        moment = parse_rfc3339(stamp) if stamp else None
        if moment is None:
            continue
        created = parse_rfc3339(meta.get("creationTimestamp"))
        order = format_rfc3339(created) if created is not None else ""
        by_time.setdefault(moment, []).append((order, str(meta.get("name")), stamp))
    found: list[DuplicateRun] = []
    for moment in sorted(by_time):
        first, *others = sorted(by_time[moment])
        found.extend(DuplicateRun(name, first[1], stamp) for _, name, stamp in others)
    return tuple(found)


def _controlled_by(meta: Mapping[str, Any], uid: str) -> bool:
    return any(
        ref.get("kind") == RAYCRONJOB.kind and ref.get("uid") == uid and ref.get("controller")
        for ref in meta.get("ownerReferences") or []
    )

"""Cron schedules of workflow serves, the I/O half: one RayJob per scheduled time.

The rules and the pure planner are in :mod:`mlserve.operator.spec.schedule`.
:func:`reconcile_schedule` does what the plan says: creates the RayJob of the due time
(server-side apply through :func:`.kube.apply_object`, owned by the MLServe, deterministic
name so a retry is harmless), deletes RayJobs past the history limit
(:func:`.kube.delete_object`) and returns the status fields to record
(``lastScheduledTime``, ``nextScheduledTime``, ``activeRayJob``, ...). A cluster that does
not serve RayJobs gets the ``KindNotInstalled`` reason, as every other child does.

A schedule run by a KubeRay RayCronJob instead: :func:`remove_duplicate_cron_runs` deletes the
second RayJob KubeRay 1.6 may make for one cron time (docs/kuberay.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lightkube import AsyncClient

from mlserve.operator.spec import api
from mlserve.operator.spec.api import Reason
from mlserve.operator.spec.schedule import (
    InvalidSchedule,
    JobView,
    Plan,
    PlanReason,
    Schedule,
    ScheduleSettings,
    duplicate_cron_runs,
    job_view,
    parse_schedule,
    plan,
)
from mlserve.operator.spec.times import as_utc, format_rfc3339, parse_rfc3339

from . import kube
from .apply import Owner, live_children, stamp
from .cache import ChildCache
from .errors import InvalidInput
from .events import EventSink
from .kube import RayJob

__all__ = [
    "DUPLICATE_CHECK_AFTER",
    "DUPLICATE_CHECK_WINDOW",
    "ScheduleOutcome",
    "ScheduleRequest",
    "reconcile_schedule",
    "remove_duplicate_cron_runs",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduleRequest:
    """One scheduled workflow MLServe, as the scheduler acts on it."""

    body: Mapping[str, Any]
    """The MLServe as read (its creationTimestamp and status.lastScheduledTime); Events go to it."""
    expression: str
    """The cron schedule in force (the spec's, else the database's)."""
    render_run: Callable[[datetime], Sequence[Mapping[str, Any]]]
    """The manifests of the run at a time (the RayJob renderer with that scheduled time)."""
    owner: Owner
    """The MLServe, whose ownerReference every RayJob gets (deleting it deletes its runs)."""
    selector: Mapping[str, str]
    """The labels that find the MLServe's RayJobs."""
    settings: ScheduleSettings
    field_manager: str
    cache: ChildCache | None = None
    """The children's cache the RayJobs are read from (None: listed)."""


@dataclass
class ScheduleOutcome:
    """What :func:`reconcile_schedule` did, and what the MLServe's status should say."""

    plan: Plan
    created: str | None = None
    deleted: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    """status.schedule, lastScheduledTime, nextScheduledTime, activeRayJob, lastRunStatus."""
    newest_job: Mapping[str, Any] | None = None
    """The newest scheduled RayJob as the server holds it (None before the first run)."""
    requeue_after: float | None = None
    """Seconds until the scheduler must look again."""


async def reconcile_schedule(
    client: AsyncClient,
    request: ScheduleRequest,
    now: datetime,
    events: EventSink | None = None,
) -> ScheduleOutcome:
    """Create the due RayJob, trim the history, and say what to record.

    Raises :class:`~.errors.InvalidInput` for a schedule that cannot be parsed and
    :class:`~.errors.TemporaryFailure` when a write fails (``ScheduledRunFailed``,
    ``HistoryCleanupFailed``, or ``KindNotInstalled`` when the cluster does not serve RayJobs).
    """
    try:
        expression = parse_schedule(request.expression)
    except InvalidSchedule as exc:
        raise InvalidInput(Reason.INVALID_SCHEDULE, str(exc)) from None
    owner, settings = request.owner, request.settings
    metadata = request.body.get("metadata") or {}
    status = request.body.get("status") or {}
    start = parse_rfc3339(metadata.get("creationTimestamp")) or as_utc(now)
    last = parse_rfc3339(status.get("lastScheduledTime"))

    live = await live_children(client, request.cache, (RayJob,), owner.namespace, request.selector)
    jobs: dict[str, Mapping[str, Any]] = {}
    views: list[JobView] = []
    for obj in live.values():
        view = job_view(obj)
        if view is not None and owner.owns(obj):
            views.append(view)
            jobs[view.name] = obj

    decision = plan(Schedule(expression, start), now, last, views, settings)
    outcome = ScheduleOutcome(plan=decision)
    if decision.start is not None:
        await _start_run(client, request, decision.start, outcome, jobs, views)
    if events is not None:
        _announce(events, request, decision, outcome.created)

    for name in decision.delete:
        await kube.delete_object(
            client,
            RayJob,
            name,
            namespace=owner.namespace,
            what=f"finished RayJob {name}",
            failure_reason=Reason.HISTORY_CLEANUP_FAILED,
        )
        if request.cache is not None:
            request.cache.remove(owner.namespace, api.RAYJOB.kind, name, notify=False)
        outcome.deleted.append(name)
        jobs.pop(name, None)

    outcome.status = _status(expression, decision, views, jobs, outcome)
    if decision.next_check is not None:
        outcome.requeue_after = max(1.0, (decision.next_check - as_utc(now)).total_seconds())
    return outcome


async def _start_run(
    client: AsyncClient,
    request: ScheduleRequest,
    at: datetime,
    outcome: ScheduleOutcome,
    jobs: dict[str, Mapping[str, Any]],
    views: list[JobView],
) -> None:
    """Apply the manifests of the run due at ``at``, and count them among the live jobs."""
    for manifest in request.render_run(at):
        stamped = stamp(manifest, request.owner)
        name = str(stamped["metadata"]["name"])
        created = await kube.apply_object(
            client,
            RayJob,
            stamped,
            namespace=request.owner.namespace,
            field_manager=request.field_manager,
            what=f"the RayJob of the run due at {format_rfc3339(at)}",
            failure_reason=Reason.SCHEDULED_RUN_FAILED,
        )
        if request.cache is not None:
            read = (jobs.get(name) or {}).get("metadata") or {}
            request.cache.put_written(created, read.get("resourceVersion"))
        outcome.created = name
        jobs[name] = created
        views.append(JobView(name, at, finished=False))


def _announce(events: EventSink, request: ScheduleRequest, decision: Plan, created: str | None) -> None:
    """The Event of a started run, or of runs dropped past their starting deadline."""
    if decision.start is not None:
        message = f"started RayJob {created} for the run due at {format_rfc3339(decision.start)}"
        if decision.missed:
            message += f"; {decision.missed} earlier missed run(s) were not started (one run at a time)"
        events.post(request.body, "Normal", Reason.SCHEDULED_RUN, message)
    elif decision.reason is PlanReason.DEADLINE_MISSED:
        events.post(
            request.body,
            "Warning",
            Reason.MISSED_SCHEDULE,
            f"{decision.missed} run(s) up to {_time(decision.last_scheduled)} were not started "
            f"within the starting deadline ({request.settings.starting_deadline}): the next run is at "
            f"{_time(decision.next_time)}; raise MLSERVE_SCHEDULE_STARTING_DEADLINE to catch up later",
        )


def _status(
    expression: str,
    decision: Plan,
    views: Sequence[JobView],
    jobs: Mapping[str, Mapping[str, Any]],
    outcome: ScheduleOutcome,
) -> dict[str, Any]:
    """The schedule's status fields; the newest remaining RayJob is the active one."""
    remaining = [v for v in views if v.name in jobs]
    newest = max(remaining, key=lambda v: (v.scheduled_time, v.name), default=None)
    values: dict[str, Any] = {
        "schedule": expression,
        "lastScheduledTime": _time(decision.last_scheduled),
        "nextScheduledTime": _time(decision.next_time),
    }
    if newest is not None:
        outcome.newest_job = jobs[newest.name]
        values["activeRayJob"] = newest.name
        job_status = (jobs[newest.name].get("status") or {}).get("jobStatus")
        if job_status:
            values["lastRunStatus"] = str(job_status)
    return {k: v for k, v in values.items() if v is not None}


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_rfc3339(moment)


DUPLICATE_CHECK_AFTER = timedelta(seconds=5)
"""How long after a RayCronJob's ``lastScheduleTime`` the reconcile looks for a second RayJob of
that time: KubeRay makes it within a second of the first (its next reconcile, triggered by the
first RayJob's creation, before its cache holds the new ``lastScheduleTime``)."""
DUPLICATE_CHECK_WINDOW = timedelta(minutes=5)
"""Reconciles up to this long after ``lastScheduleTime`` look (one LIST each); later ones do not,
so a converged MLServe of a rare schedule lists nothing."""


async def remove_duplicate_cron_runs(
    client: AsyncClient,
    body: Mapping[str, Any],
    cron_job: Mapping[str, Any] | None,
    now: datetime,
    events: EventSink | None = None,
) -> float | None:
    """Delete the RayJobs that repeat a cron time of the MLServe's RayCronJob ``cron_job`` (see
    :func:`~mlserve.operator.spec.schedule.duplicate_cron_runs`), each with a Warning Event;
    returns the seconds until the reconcile should look again (None: no need).

    Looks only within :data:`DUPLICATE_CHECK_WINDOW` of the RayCronJob's ``lastScheduleTime``,
    and asks to come back :data:`DUPLICATE_CHECK_AFTER` after it: the reconcile that KubeRay's
    status write triggers may run before the duplicate exists. The RayJobs are listed by
    KubeRay's ``ray.io/cronjob-name`` label (they carry none of ours, so the children's cache
    does not hold them). Deleting one lets KubeRay's finalizer stop its Ray job and its
    RayCluster go with it; a failed delete is a :class:`~.errors.TemporaryFailure`
    (``PruneFailed``)."""
    if cron_job is None:
        return None
    meta = cron_job.get("metadata") or {}
    last = parse_rfc3339((cron_job.get("status") or {}).get("lastScheduleTime"))
    now = as_utc(now)
    if last is None or not meta.get("uid") or now - last > DUPLICATE_CHECK_WINDOW:
        return None
    name, namespace = str(meta.get("name")), str(meta.get("namespace"))
    labels: dict[str, Any] = {api.KUBERAY_CRONJOB_NAME_LABEL: name}
    jobs = [kube.as_dict(job, api.RAYJOB.kind) async for job in client.list(RayJob, namespace=namespace, labels=labels)]
    for duplicate in duplicate_cron_runs(jobs, str(meta["uid"])):
        deleted = await kube.delete_object(
            client,
            RayJob,
            duplicate.name,
            namespace=namespace,
            what=f"RayJob {duplicate.name}, a second run of {duplicate.scheduled_time}",
        )
        if not deleted:
            continue
        log.info(
            "RayCronJob %s/%s made two RayJobs for %s: deleted %s, kept %s",
            namespace,
            name,
            duplicate.scheduled_time,
            duplicate.name,
            duplicate.kept,
        )
        if events is not None:
            events.post(
                body,
                "Warning",
                Reason.DUPLICATE_RUN_DELETED,
                f"KubeRay's RayCronJob {name} made two RayJobs for the cron time {duplicate.scheduled_time}: "
                f"deleted {duplicate.name}, kept {duplicate.kept} (a known race of KubeRay 1.6's RayCronJob "
                "controller; MLSERVE_RAY_CRON_JOB=false has the operator create the runs instead)",
            )
    due = last + DUPLICATE_CHECK_AFTER
    if now >= due:
        return None
    return max(1.0, min(DUPLICATE_CHECK_AFTER, due - now).total_seconds())

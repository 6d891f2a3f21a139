"""The children step of the reconcile: render → apply/prune (or schedule) → observe.

Renders what the database's active deployment says with the MLServe's overrides, applies
the children and prunes the ones no longer rendered (only lists them while the MLServe is
paused), reads the serving child's state into the :class:`~.status.Observation`, and runs a
workflow's schedule as one RayJob per cron time when no RayCronJob does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlserve.models import InvalidConfig, ServeType
from mlserve.operator.render import names, render_children
from mlserve.operator.spec import MLServeSpec, ServeContext, api
from mlserve.operator.spec.api import Reason
from mlserve.operator.spec.schedule import cron_job_status

from . import schedule
from .apply import ApplyResult, Owner, apply_children, live_children
from .errors import InvalidInput
from .kube import API_KINDS, RayCronJob, RayJob
from .observe import Observation, Workload, workload_of
from .runtime import Runtime

__all__ = ["Rendered", "apply_step", "render_step", "schedule_step"]


@dataclass(frozen=True)
class Rendered:
    """The children the database's active deployment asks for, with the MLServe's overrides."""

    spec: MLServeSpec
    """The MLServe's spec with the active deployment's artifact version."""
    context: ServeContext
    manifests: list[dict[str, Any]]
    scheduled_per_run: bool
    """A schedule run as one RayJob per cron time, by the scheduler, not as a RayCronJob."""
    owner: Owner
    selector: dict[str, str]
    run_done: bool = False
    """An unscheduled workflow whose RayJob already finished (:func:`.observe.finished_run`):
    RayJobs are neither applied nor pruned."""


def render_step(
    rt: Runtime, body: Mapping[str, Any], spec: MLServeSpec, context: ServeContext, obs: Observation
) -> Rendered:
    """Render the children (an infra config the renderers refuse is InvalidInput)."""
    settings = rt.settings
    render_spec = spec.model_copy(update={"artifact_version": context.artifact_version})
    try:
        manifests = render_children(context, render_spec, settings.render)
    except InvalidConfig as exc:
        raise InvalidInput(Reason.INVALID_INFRA_CONFIG, f"{exc}") from None
    scheduled_per_run = (
        spec.type is ServeType.WORKFLOW and bool(spec.schedule or context.schedule) and not settings.render.ray_cron_job
    )
    if spec.type is ServeType.API:
        obs.hosts = names.hosts(
            spec.serve,
            spec.environment,
            context.environment.config.domain_suffix,
            context.environment.is_protected,
            tuple(spec.hosts) if spec.hosts is not None else context.additional_hosts,
        )
    meta = body.get("metadata") or {}
    owner = Owner(api.API_VERSION, api.KIND, str(meta.get("name")), str(meta.get("namespace")), str(meta.get("uid")))
    selector = {
        **names.selector(spec.serve, spec.environment),
        api.LABEL_MANAGED_BY: api.MANAGED_BY,
    }
    return Rendered(render_spec, context, manifests, scheduled_per_run, owner, selector)


async def apply_step(
    rt: Runtime, body: Mapping[str, Any], spec: MLServeSpec, rendered: Rendered, obs: Observation
) -> ApplyResult:
    """Apply the children and prune the rest (only list them while paused), report hand
    edits put back, and observe the serving child."""
    kinds = _kinds_for(spec, rendered.scheduled_per_run or rendered.run_done)
    namespace = str((body.get("metadata") or {}).get("namespace"))
    if spec.paused:
        live = await live_children(rt.client, rt.children, kinds, namespace, rendered.selector)
        result = ApplyResult(live=live)
    else:
        result = await apply_children(
            rt.client,
            rendered.manifests,
            rendered.owner,
            rendered.selector,
            kinds,
            rt.settings.field_manager,
            cache=rt.children,
        )
        obs.applied = True
    for child, paths in result.drift.items():
        rt.events.post(
            body,
            "Normal",
            Reason.DRIFT_REPAIRED,
            f"{child} was changed by hand ({', '.join(paths[:5])}): put back as rendered",
        )
    obs.children = [
        {"apiVersion": str(m["apiVersion"]), "kind": str(m["kind"]), "name": str(m["metadata"]["name"])}
        for m in rendered.manifests
    ]
    obs.workload = workload_of(spec, result.live)
    if obs.workload is not None and obs.workload.kind == api.RAYCRONJOB.kind:
        obs.schedule_status = cron_job_status(
            str(spec.schedule or rendered.context.schedule),
            result.live.get((api.RAYCRONJOB.kind, obs.workload.name)),
            rt.clock(),
            rt.settings.render.schedule_time_zone,
        )
    return result


async def schedule_step(rt: Runtime, body: Mapping[str, Any], rendered: Rendered, obs: Observation) -> float | None:
    """One RayJob per cron time, created and trimmed by the scheduler (schedule.py); returns
    the seconds until the reconcile must run again for the next one."""
    settings = rt.settings
    context = rendered.context
    request = schedule.ScheduleRequest(
        body=body,
        expression=str(rendered.spec.schedule or context.schedule),
        render_run=lambda at: render_children(context, rendered.spec, settings.render, scheduled_time=at),
        owner=rendered.owner,
        selector=rendered.selector,
        settings=settings.schedule,
        field_manager=settings.field_manager,
        cache=rt.children,
    )
    run = await schedule.reconcile_schedule(rt.client, request, rt.clock(), rt.events)
    obs.schedule_status = run.status
    if run.newest_job is not None:
        newest = run.newest_job
        obs.workload = Workload(
            api.RAYJOB.kind,
            str(newest["metadata"]["name"]),
            job_status=(newest.get("status") or {}).get("jobStatus"),
        )
    return run.requeue_after


def _kinds_for(spec: MLServeSpec, scheduled_per_run: bool) -> tuple[Any, ...]:
    if spec.type is ServeType.API:
        return API_KINDS
    # RayJobs of a schedule run one per time, created and cleaned up by the scheduler:
    # the children apply here must neither list them as drift nor prune them.
    return (RayCronJob,) if scheduled_per_run else (RayJob, RayCronJob)

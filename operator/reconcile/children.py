"""The children step of the reconcile: render → apply/prune (or schedule) → observe.

Renders what the database's active deployment says with the MLServe's overrides, applies
the children and prunes the ones no longer rendered (only lists them while the MLServe is
paused), reads the serving child's state into the :class:`~.status.Observation`, and runs a
workflow's schedule as one RayJob per cron time when no RayCronJob does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightkube.resources.core_v1 import Pod
from lightkube.resources.networking_v1 import Ingress

from mlserve.models import InvalidConfig, ServeType
from mlserve.operator.render import names, render_children
from mlserve.operator.spec import MLServeSpec, ServeContext, api
from mlserve.operator.spec.api import Reason
from mlserve.operator.spec.schedule import cron_job_status

from . import schedule
from .apply import ApplyResult, Owner, apply_children, live_children
from .cache import IngressHosts
from .errors import InvalidInput
from .kube import API_KINDS, RayCronJob, RayJob, as_dict
from .observe import Observation, Workload, image_pull_failure, not_ready_since, workload_of
from .runtime import Runtime

__all__ = ["HOST_RECHECK_SECONDS", "POD_CHECK_AFTER_SECONDS", "Rendered", "apply_step", "render_step", "schedule_step"]


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
        manifests = await _unless_host_claimed(rt, body, rendered, obs)
        result = await apply_children(
            rt.client,
            manifests,
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
    await _image_pulls(rt, body, rendered, obs)
    if obs.workload is not None and obs.workload.kind == api.RAYCRONJOB.kind:
        cron_job = result.live.get((api.RAYCRONJOB.kind, obs.workload.name))
        obs.schedule_status = cron_job_status(
            str(spec.schedule or rendered.context.schedule),
            cron_job,
            rt.clock(),
            rt.settings.render.schedule_time_zone,
        )
        if not spec.paused:
            obs.cron_recheck_after = await schedule.remove_duplicate_cron_runs(
                rt.client, body, cron_job, rt.clock(), rt.events
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


POD_CHECK_AFTER_SECONDS = 10.0
"""A rollout not Ready for this long has its pods looked at (can they pull their image?), and is
looked at again this often until it is Ready or Failed."""


async def _image_pulls(rt: Runtime, body: Mapping[str, Any], rendered: Rendered, obs: Observation) -> None:
    """Pods that cannot pull their image make the rollout Failed (``ImagePullError``), with the
    kubelet's reason: the Deployment controller only says so at its progress deadline.

    Pods are not cached (a watch of every serve's pods costs memory and events at thousands
    of serves); they are listed, by the serve's selector in its namespace, only for a rollout
    that has not been Ready for :data:`POD_CHECK_AFTER_SECONDS` (its previous status says
    since when), so a healthy rollout and a converged serve list nothing. Such a rollout is
    looked at again that often (``obs.pods_recheck``) while it stays neither Ready nor Failed."""
    workload = obs.workload
    if workload is None or workload.kind != api.DEPLOYMENT.kind or not workload.exists:
        return
    if workload.failure is not None or (workload.rolled_out and workload.ready >= max(workload.desired, 1)):
        return
    since = not_ready_since(body.get("status") or {})
    if since is None or (rt.clock() - since).total_seconds() < POD_CHECK_AFTER_SECONDS:
        obs.pods_recheck = True
        return
    selector: dict[str, Any] = dict(names.selector(rendered.spec.serve, rendered.spec.environment))
    pods = [
        as_dict(pod, "Pod") async for pod in rt.client.list(Pod, namespace=rendered.owner.namespace, labels=selector)
    ]
    failure = image_pull_failure(pods)
    if failure is None:
        obs.pods_recheck = True
        return
    obs.workload = dataclasses.replace(workload, failure=failure)


HOST_RECHECK_SECONDS = 2.0
"""While the MLServe's Ingress is held back, the reconcile looks again this often."""


async def _unless_host_claimed(
    rt: Runtime, body: Mapping[str, Any], rendered: Rendered, obs: Observation
) -> list[dict[str, Any]]:
    """The manifests, without the Ingress while another Ingress of the namespace claims one of
    its hosts (``obs.ingress_held`` says which), so two Ingresses never claim one host: e.g.
    the Ingress of Darwin's Helm release until ``mlserve takeover`` removes it. Checked only
    while the MLServe's own Ingress does not exist yet, against the hosts the watch of every
    Ingress holds (``rt.ingress_hosts``; without it, one LIST of the namespace's Ingresses);
    an Ingress appearing later for a host the MLServe already has is the newcomer's problem,
    not a reason to drop the MLServe's."""
    ingresses = [m for m in rendered.manifests if m.get("kind") == api.INGRESS.kind]
    hosts = set(obs.hosts or ())
    if not ingresses or not hosts:
        return rendered.manifests
    namespace = rendered.owner.namespace
    live = await live_children(rt.client, rt.children, (Ingress,), namespace, rendered.selector)
    if any(kind == api.INGRESS.kind for kind, _ in live):
        return rendered.manifests
    ours = {str(m["metadata"]["name"]) for m in ingresses}
    index = rt.ingress_hosts
    if index is None:
        index = IngressHosts()
        async for other in rt.client.list(Ingress, namespace=namespace):
            index.put(as_dict(other, api.INGRESS.kind))
    claims = [
        f"Ingress {namespace}/{name} claims {', '.join(taken)}"
        for name, taken in index.claims(namespace, hosts, ours).items()
    ]
    if not claims:
        return rendered.manifests
    obs.ingress_held = (
        f"the Ingress is held back while {'; '.join(claims)} (e.g. Darwin's release before "
        "`mlserve takeover` removes it): delete that Ingress and the MLServe's is created"
    )
    previous = (body.get("status") or {}).get("conditions") or []
    if not any(c.get("type") == "Synced" and c.get("reason") == Reason.HOST_CLAIMED for c in previous):
        rt.events.post(body, "Warning", Reason.HOST_CLAIMED, obs.ingress_held)
    return [m for m in rendered.manifests if m.get("kind") != api.INGRESS.kind]


def _kinds_for(spec: MLServeSpec, scheduled_per_run: bool) -> tuple[Any, ...]:
    if spec.type is ServeType.API:
        return API_KINDS
    # RayJobs of a schedule run one per time, created and cleaned up by the scheduler:
    # the children apply here must neither list them as drift nor prune them.
    return (RayCronJob,) if scheduled_per_run else (RayJob, RayCronJob)

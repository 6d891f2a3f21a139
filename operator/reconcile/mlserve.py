"""The one reconcile of an MLServe: resolve → record → render → apply/prune → status.

Called for every reason an MLServe may need work (created, changed, operator restarted,
a child changed or vanished, the periodic drift check); it looks at the whole state each
time, never at what triggered it. Every step is idempotent, and a run that finds nothing
to change writes nothing: not to the database, not to the children, not to the status.

Errors never escape as crashes: :func:`reconcile` turns them into conditions (and an Event
when they first appear) and reports in :class:`Report` whether and when to retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType

from mlserve.models import InvalidConfig, ServeType
from mlserve.operator.render import names, render_children
from mlserve.operator.settings import OperatorSettings
from mlserve.operator.spec import MLServeSpec, api
from mlserve.operator.spec.api import ConditionType, Reason
from mlserve.operator.spec.schedule import cron_job_status

from . import deploy, schedule
from .apply import ApplyResult, Owner, apply_children, list_children
from .context import load_context
from .errors import ClaimConflict, InvalidInput, ReconcileError, TemporaryFailure
from .events import EventSink
from .identity import Claim, claim_of, holder, reflected_id, rivals
from .kube import (
    API_KINDS,
    MLServe,
    RayCronJob,
    RayJob,
    RequestCounter,
    as_dict,
    current_counter,
)
from .pending import PendingUndeploys
from .rollback import answer_rollback, pending_rollback, previous_artifact, rollback_patch
from .status import Observation, Workload, compute_status, write_status
from .sync import set_to_deployment

__all__ = ["Report", "Runtime", "reconcile"]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a reconcile needs from its surroundings."""

    settings: OperatorSettings
    client: AsyncClient
    events: EventSink
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    pending: PendingUndeploys = field(default_factory=PendingUndeploys)
    """Undeploys deletions had to skip (the finalizer adds, the sync loop retries)."""


@dataclass
class Report:
    """What one reconcile did and what should happen next."""

    status_written: bool = False
    recorded_deployment: int | None = None
    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    error: ReconcileError | None = None
    retry_after: float | None = None
    """Seconds until the next attempt (temporary failures); None: wait for a change."""
    body: Mapping[str, Any] | None = None
    """The MLServe as last seen (after any patch this reconcile made)."""
    new_status: dict[str, Any] | None = None
    """The status as this reconcile left it (written or already equal)."""
    requests: RequestCounter = field(default_factory=RequestCounter)
    """The API requests this reconcile sent."""
    requeue_after: float | None = None
    """Seconds until the reconcile must run again although nothing changed (a scheduled run)."""


def _workload(spec: MLServeSpec, live: Mapping[tuple[str, str], Mapping[str, Any]]) -> Workload | None:
    if spec.type is ServeType.API:
        name = names.child_name(spec.serve, spec.environment)
        obj = live.get((api.DEPLOYMENT.kind, name))
        if obj is None:
            return Workload(api.DEPLOYMENT.kind, name, exists=False)
        st = obj.get("status") or {}
        meta = obj.get("metadata") or {}
        desired = (obj.get("spec") or {}).get("replicas")
        desired = int(desired if desired is not None else st.get("replicas") or 0)
        hpa = live.get((api.HORIZONTAL_POD_AUTOSCALER.kind, name))
        if hpa is not None:
            # The API server defaults a new Deployment to one replica before the HPA has
            # scaled it: the serve is not ready until the HPA's minimum is.
            desired = max(desired, int((hpa.get("spec") or {}).get("minReplicas") or 1))
        updated = int(st.get("updatedReplicas") or 0)
        rolled_out = (
            int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
            and updated >= desired
            and int(st.get("replicas") or 0) <= desired
        )
        return Workload(
            api.DEPLOYMENT.kind,
            name,
            desired=desired,
            ready=int(st.get("readyReplicas") or 0),
            updated=updated,
            rolled_out=rolled_out,
        )
    jobs = [obj for (kind, _), obj in live.items() if kind in (api.RAYJOB.kind, api.RAYCRONJOB.kind)]
    if not jobs:
        return None
    newest = max(jobs, key=lambda o: (o.get("metadata") or {}).get("creationTimestamp") or "")
    return Workload(
        str(newest.get("kind")),
        newest["metadata"]["name"],
        job_status=(newest.get("status") or {}).get("jobStatus"),
    )


def _previous_reason(status: Mapping[str, Any], type_: ConditionType) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == type_:
            if condition.get("status") == "True" and type_ is not ConditionType.CONFLICT:
                return None
            reason = condition.get("reason")
            return None if reason is None else str(reason)
    return None


async def _ensure_metadata(
    rt: Runtime, body: Mapping[str, Any], spec: MLServeSpec, reflected: int | None
) -> Mapping[str, Any]:
    """Label the MLServe with its (serve, environment), the sync loop's way to find it, and
    mark the deployment its spec reflects (``reflected``), so the sync loop has nothing to
    write for a deploy this reconcile recorded or found. One patch, only when something differs."""
    meta = body["metadata"]
    labels = {
        api.LABEL_SERVE: names.label_value(spec.serve),
        api.LABEL_ENVIRONMENT: names.label_value(spec.environment),
    }
    annotations = {api.ANNOTATION_DEPLOYMENT_ID: str(reflected)} if reflected is not None else {}
    current_labels = meta.get("labels") or {}
    current_annotations = meta.get("annotations") or {}
    patch: dict[str, Any] = {}
    if any(current_labels.get(k) != v for k, v in labels.items()):
        patch["labels"] = labels
    if any(current_annotations.get(k) != v for k, v in annotations.items()):
        patch["annotations"] = annotations
    if not patch:
        return body
    patched = await rt.client.patch(
        MLServe,
        meta["name"],
        {"metadata": patch},
        namespace=meta["namespace"],
        patch_type=PatchType.MERGE,
        field_manager=rt.settings.field_manager,
    )
    return as_dict(patched)


async def _take_rollback_request(
    rt: Runtime, body: Mapping[str, Any], resolved: deploy.Resolved, token: str
) -> tuple[dict[str, Any], str | None]:
    """Turn a rollback annotation into a request: one patch setting spec.artifactVersion to the
    previous deployment's artifact and marking the token handled (or only marking it, with a
    Warning Event, when there is nothing to roll back to). Returns the patched MLServe and
    the deployment rolled back from."""
    meta = body["metadata"]
    rolled_back_from: str | None = None
    try:
        active, artifact, _ = await previous_artifact(resolved.serve, resolved.environment)
    except InvalidInput as exc:
        rt.events.post(body, "Warning", exc.reason, exc.message)
        version = None
    else:
        version = artifact.version
        rolled_back_from = f"deployment {active.pk}"
    patched = await rt.client.patch(
        MLServe,
        str(meta["name"]),
        rollback_patch(token, version),
        namespace=str(meta["namespace"]),
        patch_type=PatchType.MERGE,
        field_manager=rt.settings.field_manager,
    )
    return as_dict(patched), rolled_back_from


def _kinds_for(spec: MLServeSpec, scheduled_per_run: bool) -> tuple[Any, ...]:
    if spec.type is ServeType.API:
        return API_KINDS
    # RayJobs of a schedule run one per time, created and cleaned up by the scheduler:
    # the children apply here must neither list them as drift nor prune them.
    return (RayCronJob,) if scheduled_per_run else (RayJob, RayCronJob)


async def reconcile(body: Mapping[str, Any], rt: Runtime, claims: Sequence[Claim] = ()) -> Report:
    """Bring one MLServe, its children, its status and the database in step.

    The API requests it sends are counted in ``Report.requests`` and logged: at INFO when
    the reconcile wrote anything, at DEBUG otherwise.
    """
    counter = RequestCounter()
    token = current_counter.set(counter)
    try:
        report = await _reconcile(body, rt, claims)
    finally:
        current_counter.reset(token)
    report.requests = counter
    meta = body.get("metadata") or {}
    level = logging.INFO if counter.writes or report.recorded_deployment else logging.DEBUG
    log.log(
        level,
        "reconciled %s/%s: %d API requests (%d writes: %s), deployment recorded: %s",
        meta.get("namespace"),
        meta.get("name"),
        counter.total,
        counter.writes,
        dict(counter.by_method),
        report.recorded_deployment,
    )
    return report


async def _reconcile(body: Mapping[str, Any], rt: Runtime, claims: Sequence[Claim]) -> Report:
    settings = rt.settings
    meta = body.get("metadata") or {}
    name, namespace, uid = meta.get("name"), meta.get("namespace"), meta.get("uid")
    generation = int(meta.get("generation") or 0)
    previous_status: Mapping[str, Any] = body.get("status") or {}
    obs = Observation(generation=generation)
    report = Report(body=body)
    spec: MLServeSpec | None = None
    outcome: deploy.DeployOutcome | None = None
    rollback_from: str | None = None

    try:
        try:
            spec = MLServeSpec.from_resource(body)
        except InvalidConfig as exc:
            raise InvalidInput(Reason.INVALID_SPEC, f"{exc}") from None
        obs.serve = spec.serve
        obs.paused = spec.paused

        mine = claim_of(body)
        assert mine is not None

        # Database: resolve, handle a rollback request, record the deploy when asked.
        def resolve_request(request: MLServeSpec) -> Awaitable[deploy.Resolved]:
            return deploy.resolve(
                serve_name=request.serve,
                serve_type=str(request.type),
                environment_name=request.environment,
                artifact_version=request.artifact_version,
                namespace=str(namespace),
                cluster_name=settings.cluster_name,
            )

        try:
            async with asyncio.timeout(settings.db_timeout):
                # Identity: only an MLServe in its environment's namespace and cluster can hold
                # the pair; among those of that namespace, the oldest holds it.
                try:
                    await deploy.check_binding(spec.environment, str(namespace), settings.cluster_name)
                    first = holder([*rivals(claims, mine[1]), mine[1]])
                    if first is not None and first.uid != uid:
                        raise ClaimConflict(
                            f"MLServe {first.ref} already holds serve {spec.serve!r} in environment "
                            f"{spec.environment!r}: delete one of the two; this one changes nothing",
                            first.ref,
                        )
                except ReconcileError as exc:
                    report.body = body = await answer_rollback(
                        rt.client, rt.events, body, exc.message, settings.field_manager
                    )
                    raise
                resolved = await resolve_request(spec)
                token = pending_rollback(body)
                if token is not None:
                    body, rollback_from = await _take_rollback_request(rt, body, resolved, token)
                    report.body = body
                    spec = MLServeSpec.from_resource(body)
                    generation = int(body["metadata"].get("generation") or generation)
                    obs.generation = generation
                    resolved = await resolve_request(spec)
                outcome = await deploy.sync_deployment(
                    resolved, reflects=reflected_id(body), paused=spec.paused, deploy_user=settings.deploy_user
                )
                obs.db_state, obs.db_message = outcome.state, outcome.message
                kept = deploy.kept_superseded(previous_status, outcome)
                if kept is not None:
                    obs.db_state, obs.db_message = "superseded", kept
                context = None
                if outcome.active is not None and outcome.active_artifact is not None:
                    context = await load_context(
                        resolved.serve,
                        resolved.environment,
                        outcome.active_artifact,
                        outcome.active,
                        outcome.previous_id,
                    )
        except (ReconcileError, ApiError):
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) or deploy.is_database_error(exc):
                raise deploy.as_unavailable(exc) from None
            raise

        if outcome.moved and outcome.active is not None and outcome.active_artifact is not None:
            # The database moved first and wins: the MLServe follows its deployment.
            body = await set_to_deployment(
                rt.client, body, outcome.active_artifact.version, outcome.active.pk, settings.field_manager
            )
            obs.generation = int(body["metadata"].get("generation") or obs.generation)
            if outcome.state == "superseded":
                rt.events.post(body, "Warning", Reason.SUPERSEDED, outcome.message)
        reflected = outcome.active.pk if outcome.state in ("in_sync", "recorded") and outcome.active else None
        body = await _ensure_metadata(rt, body, spec, reflected)
        report.body = body

        if outcome.recorded and outcome.active is not None:
            report.recorded_deployment = outcome.active.pk
            if rollback_from is not None:
                rt.events.post(
                    body,
                    "Normal",
                    Reason.ROLLED_BACK,
                    f"rolled back from {rollback_from}: {outcome.message}",
                )
            else:
                rt.events.post(body, "Normal", Reason.DEPLOYED, outcome.message)

        if context is None:
            # Undeployed in the database: the sync loop removes this MLServe; leave the
            # children until it does.
            obs.artifact_version = spec.artifact_version
            obs.image = resolved.artifact.image_url
            return await _finish(rt, body, previous_status, obs, report)

        obs.deployment_id = context.deployment_id
        obs.previous_deployment_id = context.previous_deployment_id
        obs.artifact_version = context.artifact_version
        obs.image = context.image
        obs.last_deployed_at = outcome.active.created_at if outcome.active else None

        # Render what the database's active deployment says, with the MLServe's overrides.
        render_spec = spec.model_copy(update={"artifact_version": context.artifact_version})
        try:
            manifests = render_children(context, render_spec, settings.render)
        except InvalidConfig as exc:
            raise InvalidInput(Reason.INVALID_INFRA_CONFIG, f"{exc}") from None
        scheduled_per_run = (
            spec.type is ServeType.WORKFLOW
            and bool(spec.schedule or context.schedule)
            and not settings.render.ray_cron_job
        )
        if spec.type is ServeType.API:
            obs.hosts = names.hosts(
                spec.serve,
                spec.environment,
                context.environment.config.domain_suffix,
                context.environment.is_protected,
                tuple(spec.hosts) if spec.hosts is not None else context.additional_hosts,
            )

        owner = Owner(api.API_VERSION, api.KIND, str(name), str(namespace), str(uid))
        selector = {
            **names.selector(spec.serve, spec.environment),
            api.LABEL_MANAGED_BY: api.MANAGED_BY,
        }
        kinds = _kinds_for(spec, scheduled_per_run)
        if spec.paused:
            live = await list_children(rt.client, kinds, str(namespace), selector)
            result = ApplyResult(live=live)
        else:
            result = await apply_children(rt.client, manifests, owner, selector, kinds, settings.field_manager)
            obs.applied = True
        report.applied, report.pruned = result.applied, result.pruned
        for child, paths in result.drift.items():
            rt.events.post(
                body,
                "Normal",
                Reason.DRIFT_REPAIRED,
                f"{child} was changed by hand ({', '.join(paths[:5])}): put back as rendered",
            )
        obs.children = [
            {"apiVersion": str(m["apiVersion"]), "kind": str(m["kind"]), "name": str(m["metadata"]["name"])}
            for m in manifests
        ]
        obs.workload = _workload(spec, result.live)
        if obs.workload is not None and obs.workload.kind == api.RAYCRONJOB.kind:
            obs.schedule_status = cron_job_status(
                str(spec.schedule or context.schedule),
                result.live.get((api.RAYCRONJOB.kind, obs.workload.name)),
                rt.clock(),
                settings.render.schedule_time_zone,
            )
        if scheduled_per_run and not spec.paused:
            # One RayJob per cron time, created and trimmed by the scheduler (schedule.py).
            request = schedule.ScheduleRequest(
                body=body,
                expression=str(spec.schedule or context.schedule),
                render_run=lambda at: render_children(context, render_spec, settings.render, scheduled_time=at),
                owner=owner,
                selector=selector,
                settings=settings.schedule,
                field_manager=settings.field_manager,
            )
            run = await schedule.reconcile_schedule(rt.client, request, rt.clock(), rt.events)
            obs.schedule_status = run.status
            report.requeue_after = run.requeue_after
            if run.newest_job is not None:
                newest = run.newest_job
                obs.workload = Workload(
                    api.RAYJOB.kind,
                    str(newest["metadata"]["name"]),
                    job_status=(newest.get("status") or {}).get("jobStatus"),
                )
    except ApiError as exc:
        obs.error = TemporaryFailure(Reason.API_ERROR, f"the API server refused a request: {exc.status.message}")
    except ReconcileError as exc:
        obs.error = exc
    return await _finish(rt, body, previous_status, obs, report)


async def _finish(
    rt: Runtime,
    body: Mapping[str, Any],
    previous_status: Mapping[str, Any],
    obs: Observation,
    report: Report,
) -> Report:
    meta = body.get("metadata") or {}
    error = obs.error
    report.error = error
    if error is not None:
        condition = ConditionType.CONFLICT if isinstance(error, ClaimConflict) else error.condition
        if _previous_reason(previous_status, condition) != error.reason:
            rt.events.post(body, "Warning", error.reason, error.message)
            log.warning("%s/%s: %s: %s", meta.get("namespace"), meta.get("name"), error.reason, error.message)
        if isinstance(error, TemporaryFailure):
            report.retry_after = rt.settings.retry_delay
    new_status = compute_status(previous_status, obs, rt.clock())
    report.new_status = new_status
    try:
        report.status_written = await write_status(
            rt.client, str(meta.get("name")), str(meta.get("namespace")), previous_status, new_status
        )
    except ApiError as exc:
        log.warning("status of %s/%s not written: %s", meta.get("namespace"), meta.get("name"), exc.status.message)
        report.retry_after = rt.settings.retry_delay
    return report

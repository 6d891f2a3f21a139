"""The one reconcile of an MLServe: resolve → record → render → apply/prune → status.

Called for every reason an MLServe may need work (created, changed, operator restarted,
a child changed or vanished, the periodic drift check); it looks at the whole state each
time, never at what triggered it. Every step is idempotent, and a run that finds nothing
to change writes nothing: not to the database, not to the children, not to the status.

Errors never escape as crashes: :func:`reconcile` turns them into conditions (and an Event
when they first appear) and reports in :class:`Report` whether and when to retry.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType

from mlserve.models import InvalidConfig
from mlserve.operator import logfields, metrics
from mlserve.operator.render import names
from mlserve.operator.spec import MLServeSpec, ServeContext, api
from mlserve.operator.spec.api import ConditionType, Phase, Reason

from . import deploy
from .children import HOST_RECHECK_SECONDS, POD_CHECK_AFTER_SECONDS, Rendered, apply_step, render_step, schedule_step
from .context import context_from_rows, load_context
from .errors import ClaimConflict, InvalidInput, ReconcileError, TemporaryFailure
from .identity import Claim, claim_of, holder, reflected_id, rivals
from .kube import MLServe, RequestCounter, as_dict, current_counter
from .observe import Observation, Workload, finished_run, previous_reason
from .rollback import answer_rollback, pending_rollback, take_rollback_request
from .rows import ClusterRows
from .runtime import Report, Runtime
from .status import compute_status, write_status
from .sync_writes import set_to_deployment

__all__ = ["Report", "Runtime", "reconcile"]

log = logging.getLogger(__name__)


async def _ensure_metadata(
    rt: Runtime, body: Mapping[str, Any], spec: MLServeSpec, reflected: int | None
) -> Mapping[str, Any]:
    """Label the MLServe with its (serve, environment), the sync loop's way to find it, and
    mark the deployment its spec reflects (``reflected``), so the sync loop has nothing to
    write for a deploy this reconcile recorded or found; once it reflects one, hold it with
    the finalizer (its deletion ends that deployment, ``finalize.py``). One patch, only when
    something differs."""
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
    finalizers = list(meta.get("finalizers") or [])
    reflects = reflected is not None or reflected_id(body) is not None
    if reflects and api.FINALIZER not in finalizers and not meta.get("deletionTimestamp"):
        patch["finalizers"] = [*finalizers, api.FINALIZER]  # a merge patch sets the whole list
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


async def reconcile(body: Mapping[str, Any], rt: Runtime, claims: Sequence[Claim] = ()) -> Report:
    """Bring one MLServe, its children, its status and the database in step.

    The API requests it sends are counted in ``Report.requests`` and logged: at INFO when
    the reconcile wrote anything, at DEBUG otherwise.
    """
    counter = RequestCounter()
    token = current_counter.set(counter)
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    with logfields.bound(
        namespace=meta.get("namespace"),
        mlserve=meta.get("name"),
        serve=spec.get("serve") or meta.get("name"),
        environment=spec.get("environment"),
    ):
        started = time.perf_counter()
        try:
            report = await _reconcile(body, rt, claims)
        finally:
            current_counter.reset(token)
        _measure(report, meta, time.perf_counter() - started)
        report.requests = counter
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


def _measure(report: Report, meta: Mapping[str, Any], seconds: float) -> None:
    error = report.error
    if error is None:
        result = "retry" if report.retry_after is not None else "ok"
    else:
        result = "retry" if isinstance(error, TemporaryFailure) else "invalid"
    metrics.RECONCILES.labels(result, str(error.reason) if error is not None else "").inc()
    metrics.RECONCILE_DURATION.observe(seconds)
    if report.new_status is not None and meta.get("uid"):
        metrics.record_phase(str(meta["uid"]), report.new_status.get("phase"))


async def _reconcile(body: Mapping[str, Any], rt: Runtime, claims: Sequence[Claim]) -> Report:
    previous_status: Mapping[str, Any] = body.get("status") or {}
    obs = Observation(generation=int((body.get("metadata") or {}).get("generation") or 0))
    report = Report(body=body)
    try:
        spec = _parse(body, obs)
        db = await _database(rt, body, spec, claims, previous_status, obs, report)
        await _record_metadata(rt, db, obs, report)
        if db.context is None:
            # Undeployed in the database: the sync loop removes this MLServe; leave the
            # children until it does.
            obs.artifact_version = db.spec.artifact_version
            obs.image = db.resolved.artifact.image_url
        else:
            _observe_deployment(obs, db.context, db.outcome)
            body = _current(report)
            rendered = _without_finished_run(render_step(rt, body, db.spec, db.context, obs), previous_status)
            applied = await apply_step(rt, body, db.spec, rendered, obs)
            if rendered.run_done:
                obs.workload = Workload(
                    api.RAYJOB.kind,
                    str(previous_status.get("activeRayJob")),
                    job_status=previous_status.get("lastRunStatus"),
                )
            report.applied, report.pruned = applied.applied, applied.pruned
            if obs.ingress_held:
                report.requeue_after = HOST_RECHECK_SECONDS  # create the Ingress once the host is free
            elif obs.pods_recheck:
                report.requeue_after = POD_CHECK_AFTER_SECONDS  # can the rollout's pods pull their image?
            elif obs.cron_recheck_after is not None:
                report.requeue_after = obs.cron_recheck_after  # a second RayJob of the cron time KubeRay just ran?
            if rendered.scheduled_per_run and not db.spec.paused:
                report.requeue_after = await schedule_step(rt, body, rendered, obs)
    except ApiError as exc:
        obs.error = TemporaryFailure(Reason.API_ERROR, f"the API server refused a request: {exc.status.message}")
    except ReconcileError as exc:
        obs.error = exc
    return await _finish(rt, _current(report), previous_status, obs, report)


def _without_finished_run(rendered: Rendered, previous_status: Mapping[str, Any]) -> Rendered:
    """The children without the RayJob of a run that already finished: done, not drift."""
    done = finished_run(previous_status, rendered.manifests)
    if done is None:
        return rendered
    manifests = [
        m for m in rendered.manifests if not (m.get("kind") == api.RAYJOB.kind and m["metadata"]["name"] == done)
    ]
    return dataclasses.replace(rendered, manifests=manifests, run_done=True)


def _current(report: Report) -> Mapping[str, Any]:
    """The MLServe as last seen: every patch this reconcile makes updates ``report.body``."""
    assert report.body is not None
    return report.body


def _parse(body: Mapping[str, Any], obs: Observation) -> MLServeSpec:
    try:
        spec = MLServeSpec.from_resource(body)
    except InvalidConfig as exc:
        raise InvalidInput(Reason.INVALID_SPEC, f"{exc}") from None
    obs.serve = spec.serve
    obs.paused = spec.paused
    return spec


async def _check_identity(
    rt: Runtime, body: Mapping[str, Any], spec: MLServeSpec, claims: Sequence[Claim], report: Report
) -> None:
    """Only an MLServe in its environment's namespace and cluster can hold the pair (InvalidInput
    otherwise); among those of that namespace the oldest holds it, any other raises
    ClaimConflict. Before either is raised, a rollback token is answered, not kept."""
    meta = body.get("metadata") or {}
    uid = meta.get("uid")
    mine = claim_of(body)
    assert mine is not None
    try:
        await deploy.check_binding(spec.environment, str(meta.get("namespace")), rt.settings.cluster_name, _rows(rt))
        refused = rt.settings.namespace_refusal(str(meta.get("namespace")))
        if refused is not None:
            raise InvalidInput(Reason.NAMESPACE_REFUSED, f"{refused}; nothing was changed")
        first = holder([*rivals(claims, mine[1]), mine[1]])
        if first is not None and first.uid != uid:
            raise ClaimConflict(
                f"MLServe {first.ref} already holds serve {spec.serve!r} in environment "
                f"{spec.environment!r}: delete one of the two; this one changes nothing",
                first.ref,
            )
    except ReconcileError as exc:
        report.body = await answer_rollback(rt.client, rt.events, body, exc.message, rt.settings.field_manager)
        raise


@dataclass(frozen=True)
class DatabaseStep:
    """What the database step found and did."""

    spec: MLServeSpec
    """The request as it stands after any rollback request was taken."""
    resolved: deploy.Resolved
    outcome: deploy.DeployOutcome
    context: ServeContext | None
    """What to render: None when the pair is undeployed in the database."""
    rollback_from: str | None = None
    """The deployment a rollback request rolled back from."""


async def _database(
    rt: Runtime,
    body: Mapping[str, Any],
    spec: MLServeSpec,
    claims: Sequence[Claim],
    previous_status: Mapping[str, Any],
    obs: Observation,
    report: Report,
) -> DatabaseStep:
    """Check the identity, resolve the request, take a rollback request, record the deploy when
    asked; a database failure becomes DatabaseUnavailable. Each database call is under
    ``MLSERVE_DB_TIMEOUT`` from the moment it has a connection (``mlserve.models.backend``), so
    waiting for a pooled connection under load is never taken for a database that did not answer."""
    try:
        await _check_identity(rt, body, spec, claims, report)
        return await _resolve_and_record(rt, body, spec, previous_status, obs, report)
    except (ReconcileError, ApiError):
        raise
    except InvalidConfig as exc:
        # A row read with a value the operator does not know (serves.type, deployments.status):
        # the data is wrong, not the database down; retrying cannot help until it is fixed.
        raise InvalidInput(
            Reason.INVALID_DATABASE_ROW,
            f"a database row this MLServe names cannot be used: {exc}; nothing was changed",
        ) from None
    except Exception as exc:
        if isinstance(exc, TimeoutError) or deploy.is_database_error(exc):
            raise deploy.as_unavailable(exc) from None
        raise


def _resolve(rt: Runtime, request: MLServeSpec, namespace: str) -> Awaitable[deploy.Resolved]:
    return deploy.resolve(
        serve_name=request.serve,
        serve_type=str(request.type),
        environment_name=request.environment,
        artifact_version=request.artifact_version,
        namespace=namespace,
        cluster_name=rt.settings.cluster_name,
    )


def _rows(rt: Runtime) -> ClusterRows | None:
    return rt.rows.current() if rt.rows is not None else None


def _from_rows(
    rt: Runtime, body: Mapping[str, Any], spec: MLServeSpec, previous_status: Mapping[str, Any], obs: Observation
) -> DatabaseStep | None:
    """The database step from the cluster's snapshot (no query), when it can answer: the
    MLServe asks for the artifact that runs and no rollback is asked for. None: read the
    database (:mod:`.rows`)."""
    rows = _rows(rt)
    if rows is None or pending_rollback(body) is not None:
        return None
    found = deploy.from_rows(
        rows,
        serve_name=spec.serve,
        serve_type=str(spec.type),
        environment_name=spec.environment,
        artifact_version=spec.artifact_version,
        namespace=str((body.get("metadata") or {}).get("namespace")),
        cluster_name=rt.settings.cluster_name,
    )
    if found is None:
        return None
    resolved, outcome = found
    context = context_from_rows(rows.pairs[(spec.serve, spec.environment)], rows.environments[spec.environment])
    if context is None:
        return None
    obs.db_state, obs.db_message = outcome.state, outcome.message
    kept = deploy.kept_verdict(previous_status, outcome)
    if kept is not None:
        obs.db_state, obs.db_message = kept
    return DatabaseStep(spec, resolved, outcome, context)


async def _resolve_and_record(
    rt: Runtime,
    body: Mapping[str, Any],
    spec: MLServeSpec,
    previous_status: Mapping[str, Any],
    obs: Observation,
    report: Report,
) -> DatabaseStep:
    cached = _from_rows(rt, body, spec, previous_status, obs)
    if cached is not None:
        return cached
    namespace = str((body.get("metadata") or {}).get("namespace"))
    resolved = await _resolve(rt, spec, namespace)
    rollback_from: str | None = None
    token = pending_rollback(body)
    if token is not None:
        body, rollback_from = await take_rollback_request(
            rt.client, rt.events, rt.settings.field_manager, body, resolved, token
        )
        report.body = body
        spec = MLServeSpec.from_resource(body)
        obs.generation = int(body["metadata"].get("generation") or obs.generation)
        resolved = await _resolve(rt, spec, namespace)
    outcome = await deploy.sync_deployment(
        resolved, reflects=reflected_id(body), paused=spec.paused, deploy_user=rt.settings.deploy_user
    )
    obs.db_state, obs.db_message = outcome.state, outcome.message
    kept = deploy.kept_verdict(previous_status, outcome)
    if kept is not None:
        obs.db_state, obs.db_message = kept
    context = None
    if outcome.active is not None and outcome.active_artifact is not None:
        context = await load_context(
            resolved.serve, resolved.environment, outcome.active_artifact, outcome.active, outcome.previous_id
        )
    return DatabaseStep(spec, resolved, outcome, context, rollback_from)


async def _record_metadata(rt: Runtime, db: DatabaseStep, obs: Observation, report: Report) -> None:
    """Mark the MLServe with what the database step found (set it to the database's deployment
    when the database moved first), and announce a recorded deploy or a superseded request."""
    outcome = db.outcome
    if outcome.moved and outcome.active is not None and outcome.active_artifact is not None:
        report.body = await set_to_deployment(
            rt.client, _current(report), outcome.active_artifact.version, outcome.active.pk, rt.settings.field_manager
        )
        obs.generation = int(report.body["metadata"].get("generation") or obs.generation)
        if outcome.state == "superseded":
            rt.events.post(report.body, "Warning", Reason.SUPERSEDED, outcome.message)
    reflected = outcome.active.pk if outcome.state in ("in_sync", "recorded") and outcome.active else None
    body = report.body = await _ensure_metadata(rt, _current(report), db.spec, reflected)
    if outcome.recorded and outcome.active is not None:
        report.recorded_deployment = outcome.active.pk
        if db.rollback_from is not None:
            message = f"rolled back from {db.rollback_from}: {outcome.message}"
            rt.events.post(body, "Normal", Reason.ROLLED_BACK, message)
        else:
            rt.events.post(body, "Normal", Reason.DEPLOYED, outcome.message)


def _observe_deployment(obs: Observation, context: ServeContext, outcome: deploy.DeployOutcome) -> None:
    logfields.note(deployment_id=context.deployment_id)
    obs.deployment_id = context.deployment_id
    obs.previous_deployment_id = context.previous_deployment_id
    obs.artifact_version = context.artifact_version
    obs.image = context.image
    obs.last_deployed_at = outcome.active.created_at if outcome.active else None


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
        if previous_reason(previous_status, condition) != error.reason:
            rt.events.post(body, error.event_type, error.reason, error.message)
            log.warning(
                "%s/%s: %s: %s",
                meta.get("namespace"),
                meta.get("name"),
                error.reason,
                error.message,
                extra={"reason": str(error.reason)},
            )
        if isinstance(error, TemporaryFailure):
            report.retry_after = rt.settings.retry_delay
    new_status = compute_status(previous_status, obs, rt.clock())
    report.new_status = new_status
    _announce_failure(rt, body, previous_status, new_status)
    try:
        report.status_written = await write_status(
            rt.client, str(meta.get("name")), str(meta.get("namespace")), previous_status, new_status
        )
    except ApiError as exc:
        log.warning("status of %s/%s not written: %s", meta.get("namespace"), meta.get("name"), exc.status.message)
        report.retry_after = rt.settings.retry_delay
    return report


def _announce_failure(
    rt: Runtime, body: Mapping[str, Any], previous_status: Mapping[str, Any], new_status: Mapping[str, Any]
) -> None:
    """A Warning Event when the serving child fails (a rollout the Deployment controller gave
    up on, a failed RayJob): once per failure, not on every reconcile that still sees it."""
    if new_status.get("phase") != Phase.FAILED:
        return
    ready = _condition(new_status, ConditionType.READY)
    before = _condition(previous_status, ConditionType.READY)
    if previous_status.get("phase") == Phase.FAILED and before.get("reason") == ready.get("reason"):
        return
    rt.events.post(body, "Warning", str(ready.get("reason") or Reason.RECONCILE_ERROR), str(ready.get("message") or ""))


def _condition(status: Mapping[str, Any], type_: ConditionType) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})

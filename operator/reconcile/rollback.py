"""Rollback: run the previous deployment's artifact again, as a new deployment.

History is never rewritten: a rollback is a deploy like any other, of the artifact that
``active_deployments.previous_deployment`` ran, so it gets a new ``deployments`` row and the
rolled-back-from deployment becomes the new previous one.

Two ways in, one writer per fact:

- ``mlserve rollback SERVE --env ENV`` writes the database (:func:`rollback_in_database`),
  as a deploy through Darwin would; the database → cluster sync then updates the MLServe.
  Until it does, the MLServe's children already run the database's deployment.
- The annotation ``mlserve.darwin.io/rollback: <any new token>`` on an MLServe that holds
  its pair changes the request: the operator sets ``spec.artifactVersion`` to the previous
  artifact's version and records the token as handled (``mlserve.darwin.io/rollback-handled``)
  in one patch; the reconcile that follows records the deploy by compare-and-swap against the
  deployment the MLServe reflects. A crash between the two steps is harmless: the patch is
  atomic and recording a deploy is idempotent. On an MLServe that does not hold its pair the
  token is answered (:func:`answer_rollback`), never kept for later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient
from lightkube.types import PatchType

from mlserve.models import ActiveDeployment, Artifact, Deployment, Environment, Serve, User, activate
from mlserve.operator.spec import api
from mlserve.operator.spec.api import Reason

from .deploy import Resolved
from .errors import InvalidInput
from .events import EventSink
from .kube import MLServe, as_dict

__all__ = [
    "RollbackPlan",
    "answer_rollback",
    "pending_rollback",
    "plan_rollback",
    "previous_artifact",
    "rollback_in_database",
    "rollback_patch",
    "take_rollback_request",
]


def pending_rollback(body: Mapping[str, Any]) -> str | None:
    """The rollback token the MLServe asks for and the operator has not handled yet."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    token = annotations.get(api.ANNOTATION_ROLLBACK)
    if not token or token == annotations.get(api.ANNOTATION_ROLLBACK_HANDLED):
        return None
    return str(token)


async def previous_artifact(serve: Serve, environment: Environment) -> tuple[Deployment, Artifact, Deployment]:
    """(active deployment, the previous deployment's artifact, previous deployment)."""
    pointer = await ActiveDeployment.filter(serve_id=serve.pk, environment_id=environment.pk).order_by("-id").first()
    if pointer is None:
        raise InvalidInput(
            Reason.NOTHING_TO_ROLL_BACK,
            f"serve {serve.name!r} has no active deployment in {environment.name!r}: nothing to roll back",
        )
    if pointer.previous_deployment_id is None:
        raise InvalidInput(
            Reason.NOTHING_TO_ROLL_BACK,
            f"deployment {pointer.deployment_id} of serve {serve.name!r} in {environment.name!r} has "
            "no previous deployment (active_deployments.previous_deployment is empty): nothing to roll back to",
        )
    active = await Deployment.get(id=pointer.deployment_id)
    previous = await Deployment.get(id=pointer.previous_deployment_id)
    artifact = await Artifact.get(id=previous.artifact_id)
    return active, artifact, previous


def rollback_patch(token: str, version: str | None) -> dict[str, Any]:
    """The merge patch that turns a rollback annotation into a request (or just marks it handled)."""
    patch: dict[str, Any] = {"metadata": {"annotations": {api.ANNOTATION_ROLLBACK_HANDLED: token}}}
    if version is not None:
        patch["spec"] = {"artifactVersion": version}
    return patch


async def _mark_rollback(
    client: AsyncClient, body: Mapping[str, Any], token: str, version: str | None, field_manager: str
) -> dict[str, Any]:
    """One merge patch: the token marked handled and, with ``version``, the request for it."""
    meta = body["metadata"]
    patched = await client.patch(
        MLServe,
        str(meta["name"]),
        rollback_patch(token, version),
        namespace=str(meta["namespace"]),
        patch_type=PatchType.MERGE,
        field_manager=field_manager,
    )
    return as_dict(patched)


async def answer_rollback(
    client: AsyncClient, events: EventSink, body: Mapping[str, Any], why: str, field_manager: str
) -> Mapping[str, Any]:
    """A rollback token on an MLServe that does not hold its pair: marked handled with a
    Warning Event (``why`` says what is wrong), never kept for later, where it would roll
    back whatever runs then. Returns the MLServe as patched (as given without a token)."""
    token = pending_rollback(body)
    if token is None:
        return body
    patched = await _mark_rollback(client, body, token, None, field_manager)
    events.post(body, "Warning", Reason.ROLLBACK_NOT_HELD, f"rollback {token!r} not done: {why}")
    return patched


async def take_rollback_request(
    client: AsyncClient,
    events: EventSink,
    field_manager: str,
    body: Mapping[str, Any],
    resolved: Resolved,
    token: str,
) -> tuple[dict[str, Any], str | None]:
    """Turn a rollback annotation into a request: one patch setting spec.artifactVersion to the
    previous deployment's artifact and marking the token handled (or only marking it, with a
    Warning Event, when there is nothing to roll back to). Returns the patched MLServe and
    the deployment rolled back from."""
    rolled_back_from: str | None = None
    try:
        active, artifact, _ = await previous_artifact(resolved.serve, resolved.environment)
    except InvalidInput as exc:
        events.post(body, "Warning", exc.reason, exc.message)
        version = None
    else:
        version = artifact.version
        rolled_back_from = f"deployment {active.pk}"
    return await _mark_rollback(client, body, token, version, field_manager), rolled_back_from


@dataclass(frozen=True)
class RollbackPlan:
    """What a rollback of a pair would write: a new deployment of ``artifact`` by ``user``,
    replacing ``active`` (``previous`` ran ``artifact``)."""

    serve: Serve
    environment: Environment
    user: User
    active: Deployment
    artifact: Artifact
    previous: Deployment


async def plan_rollback(serve_name: str, environment_name: str, username: str) -> RollbackPlan:
    """Look up what a rollback would deploy, writing nothing (InvalidInput when it can't)."""
    serve = await Serve.get_or_none(name=serve_name)
    if serve is None:
        raise InvalidInput(Reason.UNKNOWN_SERVE, f"serve {serve_name!r} is not in the database")
    environment = await Environment.get_or_none(name=environment_name)
    if environment is None:
        raise InvalidInput(Reason.UNKNOWN_ENVIRONMENT, f"environment {environment_name!r} is not in the database")
    user = await User.get_or_none(username=username)
    if user is None:
        raise InvalidInput(Reason.UNKNOWN_USER, f"user {username!r} is not in the users table: pass --user")
    active, artifact, previous = await previous_artifact(serve, environment)
    return RollbackPlan(serve, environment, user, active, artifact, previous)


async def rollback_in_database(
    serve_name: str, environment_name: str, username: str
) -> tuple[Deployment, Deployment, Artifact]:
    """Deploy the previous artifact as a new deployment; returns (new, rolled back from, artifact)."""
    plan = await plan_rollback(serve_name, environment_name, username)
    new = await activate(plan.serve, plan.environment, plan.artifact, plan.user)
    return new, plan.active, plan.artifact

"""Read-only views of the deployment history, for people (``mlserve status``, ``mlserve history``).

Each function reads a handful of rows with their relations joined, and returns plain frozen
records: nothing here writes, locks or needs the operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .deployments import ActiveDeployment, Deployment
from .serves import Environment, Serve

__all__ = ["ActivePair", "DeploymentRecord", "active_pairs", "deployment_history"]


@dataclass(frozen=True)
class DeploymentRecord:
    """One ``deployments`` row with its artifact and author."""

    id: int
    serve: str
    environment: str
    artifact_version: str
    image: str
    status: str
    created_at: datetime
    ended_at: datetime | None
    created_by: str


@dataclass(frozen=True)
class ActivePair:
    """One ``active_deployments`` row: what a (serve, environment) runs according to the database."""

    serve: str
    environment: str
    namespace: str | None
    cluster: str | None
    deployment: DeploymentRecord
    previous_deployment_id: int | None


def _record(row: Deployment) -> DeploymentRecord:
    return DeploymentRecord(
        id=row.pk,
        serve=row.serve.name,
        environment=row.environment.name,
        artifact_version=row.artifact.version,
        image=row.artifact.image_url,
        status=str(row.status),
        created_at=row.created_at,
        ended_at=row.ended_at,
        created_by=row.created_by.username,
    )


async def deployment_history(serve: Serve, environment: Environment, limit: int = 50) -> list[DeploymentRecord]:
    """The pair's deployments, newest first."""
    rows = (
        await Deployment.filter(serve_id=serve.pk, environment_id=environment.pk)
        .select_related("serve", "environment", "artifact", "created_by")
        .order_by("-id")
        .limit(limit)
    )
    return [_record(row) for row in rows]


async def active_pairs(serve: Serve | None = None, environment: Environment | None = None) -> list[ActivePair]:
    """The active deployments, of one serve and/or environment when given, by serve then environment."""
    query = ActiveDeployment.all()
    if serve is not None:
        query = query.filter(serve_id=serve.pk)
    if environment is not None:
        query = query.filter(environment_id=environment.pk)
    rows = await query.select_related(
        "serve",
        "environment",
        "deployment__serve",
        "deployment__environment",
        "deployment__artifact",
        "deployment__created_by",
    )
    pairs = []
    for row in rows:
        config = row.environment.env_configs if isinstance(row.environment.env_configs, dict) else {}
        pairs.append(
            ActivePair(
                serve=row.serve.name,
                environment=row.environment.name,
                namespace=_text(config.get("namespace")),
                cluster=_text(config.get("cluster_name")),
                deployment=_record(row.deployment),
                previous_deployment_id=row.previous_deployment_id,
            )
        )
    return sorted(pairs, key=lambda p: (p.serve, p.environment))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None

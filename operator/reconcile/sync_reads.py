"""The database reads of the database → cluster sync (``docs/sync.md``).

:func:`read_watermark` is the one query of an idle tick; a full pass reads the bound
environments (:func:`bound_environments`), their active deployments (:func:`active_rows`)
and whether the deployments the MLServes of undeployed pairs reflect have ended
(:func:`ended_deployments`). Nothing here writes, and nothing here talks to the API server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlserve.models import (
    ActiveDeployment,
    Deployment,
    DeploymentStatus,
    Environment,
    InvalidConfig,
)
from mlserve.operator.spec.namespaces import watches_namespace

from .identity import Pair
from .sync_plan import ActiveRow

__all__ = [
    "BoundEnvironment",
    "Watermark",
    "active_rows",
    "bound_environments",
    "ended_deployments",
    "read_watermark",
]

log = logging.getLogger(__name__)

# --- the watermark: one query per tick ---------------------------------------------------------

_WATERMARK_SQL = (
    "SELECT"
    " (SELECT COUNT(*) FROM active_deployments) AS active_count,"
    " (SELECT MAX(id) FROM active_deployments) AS active_max_id,"
    " (SELECT COALESCE(SUM(deployment_id), 0) FROM active_deployments) AS active_sum,"
    " (SELECT MAX(updated_at) FROM active_deployments) AS active_updated,"
    " (SELECT COUNT(*) FROM deployments WHERE status = 'ACTIVE') AS deployments_active,"
    " (SELECT MAX(ended_at) FROM deployments) AS deployments_ended,"
    " (SELECT COUNT(*) FROM environments) AS environments_count,"
    " (SELECT MAX(updated_at) FROM environments) AS environments_updated,"
    " (SELECT MAX(updated_at) FROM serves) AS serves_updated,"
    " (SELECT COUNT(*) FROM api_serve_configs) AS api_configs_count,"
    " (SELECT MAX(id) FROM api_serve_configs) AS api_configs_max_id,"
    " (SELECT MAX(updated_at) FROM api_serve_configs) AS api_configs_updated,"
    " (SELECT COUNT(*) FROM workflow_serve_configs) AS workflow_configs_count,"
    " (SELECT MAX(id) FROM workflow_serve_configs) AS workflow_configs_max_id,"
    " (SELECT MAX(updated_at) FROM workflow_serve_configs) AS workflow_configs_updated,"
    " (SELECT COUNT(*) FROM artifact_builder_job WHERE status = 'PENDING') AS builds_pending,"
    " (SELECT COALESCE(SUM(id), 0) FROM artifact_builder_job WHERE status = 'PENDING') AS builds_pending_sum,"
    " (SELECT COUNT(*) FROM artifacts WHERE image_url IS NOT NULL AND image_url <> '') AS artifacts_built"
)


@dataclass(frozen=True)
class Watermark:
    """Aggregates that move whenever a deploy, an undeploy, an environment, a serve or an infra
    config (``api_serve_configs``, ``workflow_serve_configs``) changes.

    No clock is needed to see a deploy or an undeploy: a pointer created or deleted changes
    the count, a pointer moved (to a newer deployment, or back to an older one) changes the sum
    of the deployments it points at, and a deployment ended without its pointer changes the
    count of ACTIVE rows; a row written with an older timestamp (another writer's skewed clock,
    a replayed script) is seen as soon as it commits. The times are kept for what has no such
    count: an edit of an environment's or a serve's row, of an infra config (a config added or
    deleted moves its table's count or largest id too), and a full pass runs every
    MLSERVE_FULL_RESYNC_INTERVAL whatever the watermark says.

    Artifact builds move it too, so MLServes waiting for a version wake when its build ends: a
    job that leaves PENDING (SUCCESSFUL or FAILED) or a new PENDING job changes the count or the
    sum of the ids of the PENDING jobs (a new job has a higher id than any before it), and an
    artifact that gets its image changes the count of artifacts with one. Darwin's poller
    rewriting ``last_picked_at`` every few seconds moves none of them.
    """

    active_count: int
    active_max_id: int | None
    active_sum: int
    active_updated: str | None
    deployments_active: int
    deployments_ended: str | None
    environments_updated: str | None
    builds_pending: int = 0
    builds_pending_sum: int = 0
    artifacts_built: int = 0
    environments_count: int = 0
    serves_updated: str | None = None
    api_configs: tuple[int, int | None, str | None] = (0, None, None)
    """Count, largest id and latest ``updated_at`` of ``api_serve_configs``."""
    workflow_configs: tuple[int, int | None, str | None] = (0, None, None)
    """The same of ``workflow_serve_configs``."""


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _text(value: Any) -> str | None:
    # Drivers return datetimes (MySQL) or strings (SQLite): compare their text.
    return None if value is None else str(value)


async def read_watermark() -> Watermark:
    """The watermark, in one SELECT on the models' connection."""
    connection = ActiveDeployment._meta.db
    rows = await connection.execute_query_dict(_WATERMARK_SQL)
    row = rows[0]
    return Watermark(
        active_count=int(row["active_count"] or 0),
        active_max_id=_int(row["active_max_id"]),
        active_sum=int(row["active_sum"] or 0),
        active_updated=_text(row["active_updated"]),
        deployments_active=int(row["deployments_active"] or 0),
        deployments_ended=_text(row["deployments_ended"]),
        environments_updated=_text(row["environments_updated"]),
        environments_count=int(row["environments_count"] or 0),
        serves_updated=_text(row["serves_updated"]),
        api_configs=(
            int(row["api_configs_count"] or 0),
            _int(row["api_configs_max_id"]),
            _text(row["api_configs_updated"]),
        ),
        workflow_configs=(
            int(row["workflow_configs_count"] or 0),
            _int(row["workflow_configs_max_id"]),
            _text(row["workflow_configs_updated"]),
        ),
        builds_pending=int(row["builds_pending"] or 0),
        builds_pending_sum=int(row["builds_pending_sum"] or 0),
        artifacts_built=int(row["artifacts_built"] or 0),
    )


# --- what the database asks for ----------------------------------------------------------------


@dataclass(frozen=True)
class BoundEnvironment:
    name: str
    namespace: str


async def bound_environments(
    cluster_name: str, namespaces: Sequence[str] = (), unwatched: set[str] | None = None
) -> dict[int, BoundEnvironment]:
    """The environments of this cluster whose namespace this operator watches.

    An environment in a namespace outside ``namespaces`` (``MLSERVE_NAMESPACES``) is skipped:
    no worker of this operator would reconcile an MLServe there. It is logged once per
    environment (``unwatched`` remembers which, across ticks).
    """
    bound: dict[int, BoundEnvironment] = {}
    for environment in await Environment.all():
        try:
            config = environment.config
        except InvalidConfig as exc:
            log.warning("environment %s skipped by the database sync: %s", environment.name, exc)
            continue
        if config.cluster_name != cluster_name:
            continue
        if not watches_namespace(namespaces, config.namespace):
            if unwatched is not None and environment.name not in unwatched:
                unwatched.add(environment.name)
                log.info(
                    "environment %s skipped by the database sync: its namespace %s is not among "
                    "the namespaces this operator watches (MLSERVE_NAMESPACES=%s)",
                    environment.name,
                    config.namespace,
                    ",".join(namespaces),
                )
            continue
        bound[environment.pk] = BoundEnvironment(environment.name, config.namespace)
    return bound


async def active_rows(bound: Mapping[int, BoundEnvironment]) -> tuple[list[ActiveRow], set[Pair]]:
    """The active deployments of the bound environments, and the pairs with more than one."""
    if not bound:
        return [], set()
    pointers = await ActiveDeployment.filter(environment_id__in=list(bound)).select_related(
        "serve", "deployment", "deployment__artifact"
    )
    by_pair: dict[Pair, list[ActiveRow]] = {}
    for pointer in pointers:
        deployment = pointer.deployment
        if deployment.status != DeploymentStatus.ACTIVE:
            continue  # ended without its pointer removed: the pair is undeployed
        environment = bound[pointer.environment_id]
        row = ActiveRow(
            serve=pointer.serve.name,
            serve_type=str(pointer.serve.type),
            environment=environment.name,
            namespace=environment.namespace,
            deployment_id=deployment.pk,
            artifact_version=deployment.artifact.version,
        )
        by_pair.setdefault(row.pair, []).append(row)
    duplicates = {pair for pair, rows in by_pair.items() if len({r.deployment_id for r in rows}) > 1}
    for pair in sorted(duplicates):
        ids = sorted({r.deployment_id for r in by_pair[pair]})
        log.warning(
            "serve %s has %d active deployments in %s (ids %s): the sync leaves the pair alone "
            "until all but one are ended",
            pair[0],
            len(ids),
            pair[1],
            ids,
        )
    rows = [rows[0] for pair, rows in by_pair.items() if pair not in duplicates]
    return rows, duplicates


async def ended_deployments(deployment_ids: Iterable[int]) -> set[int]:
    """The ids among ``deployment_ids`` that are not ACTIVE any more (ENDED, or the row is gone)."""
    ids = sorted(set(deployment_ids))
    if not ids:
        return set()
    active = await Deployment.filter(id__in=ids, status=DeploymentStatus.ACTIVE).values("id")
    return set(ids) - {int(row["id"]) for row in active}

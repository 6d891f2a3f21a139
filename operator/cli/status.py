"""``mlserve status [SERVE] [--env ENV]``: the database and the cluster side by side.

For each (serve, environment): the database's active deployment (id, artifact version, when
and by whom), and the MLServe that runs it (its phase, ready pods, the deployment it
reflects), with ``IN STEP`` true when the MLServe is Ready on the database's deployment.
An MLServe whose pair has no active deployment is listed too, with the database side empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from .common import ClusterDown, database_settings, emit, output_option, run_with_database

__all__ = ["status"]

COLUMNS = {
    "serve": "SERVE",
    "environment": "ENV",
    "deploymentId": "DEPLOYMENT",
    "artifactVersion": "VERSION",
    "deployedAt": "DEPLOYED",
    "mlserve": "MLSERVE",
    "phase": "PHASE",
    "ready": "READY",
    "inStep": "IN STEP",
}


async def _database_rows(serve_name: str | None, environment_name: str | None) -> list[dict[str, Any]]:
    from mlserve.models import Environment, Serve
    from mlserve.models.reports import active_pairs

    serve = environment = None
    if serve_name is not None:
        serve = await Serve.get_or_none(name=serve_name)
        if serve is None:
            raise click.ClickException(f"serve {serve_name!r} is not in the database")
    if environment_name is not None:
        environment = await Environment.get_or_none(name=environment_name)
        if environment is None:
            raise click.ClickException(f"environment {environment_name!r} is not in the database")
    return [
        {
            "serve": pair.serve,
            "environment": pair.environment,
            "namespace": pair.namespace,
            "cluster": pair.cluster,
            "deploymentId": pair.deployment.id,
            "artifactVersion": pair.deployment.artifact_version,
            "image": pair.deployment.image,
            "deployedAt": pair.deployment.created_at,
            "deployedBy": pair.deployment.created_by,
            "previousDeploymentId": pair.previous_deployment_id,
        }
        for pair in await active_pairs(serve, environment)
    ]


def _mlserves() -> list[Mapping[str, Any]]:
    """Every MLServe the kubeconfig (or the pod's service account) can list."""
    from lightkube import ALL_NS, Client
    from lightkube.core.exceptions import ApiError, ConfigError

    from mlserve.operator.reconcile.kube import MLServe, as_dict

    try:
        client = Client()
        return [as_dict(obj, "MLServe") for obj in client.list(MLServe, namespace=ALL_NS)]
    except ConfigError as exc:
        raise ClusterDown(f"no cluster to ask: {exc}; set KUBECONFIG, or pass --database-only") from None
    except ApiError as exc:
        raise ClusterDown(f"the cluster refused to list MLServes: {exc.status.message}") from None
    except Exception as exc:  # noqa: BLE001 - connection errors of every transport
        raise ClusterDown(
            f"the cluster did not answer ({type(exc).__name__}): check KUBECONFIG and that the API server runs"
        ) from None


def _cluster_side(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        "mlserve": f"{meta.get('namespace')}/{meta.get('name')}",
        "specVersion": (body.get("spec") or {}).get("artifactVersion"),
        "phase": status.get("phase"),
        "ready": status.get("ready"),
        "reflectsDeploymentId": status.get("deploymentId"),
    }


def join(
    rows: list[dict[str, Any]], mlserves: list[Mapping[str, Any]], serve: str | None, environment: str | None
) -> list[dict[str, Any]]:
    """The database rows with their MLServes beside them; MLServes of pairs the database
    has no active deployment for follow, with the database side empty."""
    by_pair: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for body in mlserves:
        spec = body.get("spec") or {}
        pair = (str(spec.get("serve")), str(spec.get("environment")))
        if (serve is None or pair[0] == serve) and (environment is None or pair[1] == environment):
            by_pair.setdefault(pair, []).append(body)
    joined = []
    for row in rows:
        found = by_pair.pop((row["serve"], row["environment"]), [])
        if not found:
            joined.append({**row, "mlserve": None, "inStep": False})
        for body in found:
            side = _cluster_side(body)
            in_step = side["phase"] == "Ready" and str(side["reflectsDeploymentId"]) == str(row["deploymentId"])
            joined.append({**row, **side, "inStep": in_step})
    for (serve_name, environment_name), bodies in sorted(by_pair.items()):
        for body in bodies:
            joined.append(
                {"serve": serve_name, "environment": environment_name, **_cluster_side(body), "inStep": False}
            )
    return joined


@click.command("status")
@click.argument("serve", required=False)
@click.option("--env", "environment", help="Only this environment (environments.name).")
@click.option("--database-only", is_flag=True, help="Do not ask the cluster.")
@output_option
def status(serve: str | None, environment: str | None, database_only: bool, output: str) -> None:
    """What the database says runs, and what the cluster runs, side by side (database
    settings from MLSERVE_DB_URL or MYSQL_*; the cluster from KUBECONFIG)."""
    settings = database_settings()
    rows = run_with_database(lambda: _database_rows(serve, environment), settings)
    if database_only:
        emit(rows, {k: v for k, v in COLUMNS.items() if k not in ("mlserve", "phase", "ready", "inStep")}, output)
        return
    try:
        mlserves = _mlserves()
    except ClusterDown:
        emit(rows, COLUMNS, output)
        raise
    emit(join(rows, mlserves, serve, environment), COLUMNS, output)

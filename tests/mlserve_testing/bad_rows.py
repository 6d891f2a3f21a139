"""Database rows the operator must refuse by name, each written the way a person or another
program could write it (plain SQL, after the row was seeded as Darwin writes it).

Every case names where it is caught and the reason:

* ``sync``: the database sync cannot make an MLServe of the pair (or of the environment):
  it leaves it alone with a log line and a Warning Event of that reason;
* ``mlserve``: the sync makes the MLServe, whose reconcile refuses the rows with a condition
  and a Warning Event of that reason.

``tests/cluster/test_bad_input.py`` runs them all against MariaDB and the local control plane.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mlserve_testing import darwin

OPERATOR_NAMESPACE = "mlserve-system"


@dataclass
class BadPair:
    """The rows of the pair a case spoils: serve ``bad`` (or the case's) in its environment."""

    seed: darwin.Seed
    deployment: int
    namespace: str


Mutation = Callable[[BadPair], Awaitable[None]]


@dataclass(frozen=True)
class BadRow:
    id: str
    reason: str
    where: str
    """``sync`` or ``mlserve``."""
    mutate: Mutation | None = None
    """SQL run after the bad pair's deploy (None: the seed itself is bad)."""
    serve: str = "bad"
    environment: str = "bad-env"
    env_config: dict[str, Any] | str | None = None
    """``env_configs`` of the bad pair's environment (None: a good one, in the test's namespace)."""
    workflow: bool = False
    schedule: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


async def sql(text: str, *values: Any) -> None:
    await darwin.query(text, *values)


def _update(table: str, column: str, value: Any, key: str = "serve") -> Mutation:
    """``UPDATE table SET column = value`` for the bad pair's row (by serve, or by deployment)."""

    async def mutate(pair: BadPair) -> None:
        stored = json.dumps(value) if isinstance(value, dict | list) else value
        if table == "serves":
            await sql(f"UPDATE serves SET {column} = ? WHERE id = ?", stored, pair.seed.serve)
        elif table == "deployments":
            await sql(f"UPDATE deployments SET {column} = ? WHERE id = ?", stored, pair.deployment)
        elif table == "artifacts":
            await sql(f"UPDATE artifacts SET {column} = ? WHERE serve_id = ?", stored, pair.seed.serve)
        elif table == "environments":
            await sql(f"UPDATE environments SET {column} = ? WHERE id = ?", stored, pair.seed.environment)
        else:
            await sql(
                f"UPDATE {table} SET {column} = ? WHERE serve_id = ? AND environment_id = ?",
                stored,
                pair.seed.serve,
                pair.seed.environment,
            )

    return mutate


def _fast_api(**changes: Any) -> Mutation:
    config: dict[str, Any] = {"min_replicas": 1, "max_replicas": 2, "cores": 1, "memory": 2, **changes}
    return _update("api_serve_configs", "fast_api_config", config)


def _worker(**changes: Any) -> Mutation:
    group: dict[str, Any] = {"cores_per_pods": 1, "memory_per_pods": 2, "min_pods": 1, "max_pods": 2, **changes}
    return _update("workflow_serve_configs", "worker_node_config", [group])


def _env(namespace: str | None = "{ns}", **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = darwin.env_configs(namespace or "")
    if namespace is None:
        del config["namespace"]
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)  # the key left out
        else:
            config[key] = value
    return config


async def _missing_artifact(pair: BadPair) -> None:
    # Darwin's tables may lack the foreign key; the operator must not trust it either.
    await darwin.query("SET FOREIGN_KEY_CHECKS = 0")
    try:
        await sql("UPDATE deployments SET artifact_id = ? WHERE id = ?", 999999, pair.deployment)
    finally:
        await darwin.query("SET FOREIGN_KEY_CHECKS = 1")


async def _second_active(pair: BadPair) -> None:
    # As on a database Darwin created: no unique index on active_deployments (serve, environment).
    indexes = await darwin.query(
        "SELECT DISTINCT index_name AS name FROM information_schema.statistics WHERE table_schema = DATABASE() "
        "AND table_name = 'active_deployments' AND non_unique = 0 AND index_name <> 'PRIMARY' "
        "AND column_name = 'serve_id'"
    )
    for index in indexes:
        # the foreign key on environment_id keeps an index of its own
        await darwin.query(
            f"ALTER TABLE active_deployments ADD INDEX darwin_env (environment_id), DROP INDEX `{index['name']}`"
        )
    now = darwin._now()
    await darwin.insert(
        "deployments",
        serve_id=pair.seed.serve,
        artifact_id=pair.seed.artifacts["v1"],
        environment_id=pair.seed.environment,
        created_by_id=pair.seed.user,
        created_at=now,
        status="ACTIVE",
    )
    other = await darwin.query("SELECT MAX(id) AS id FROM deployments")
    await darwin.insert(
        "active_deployments",
        deployment_id=int(other[0]["id"]),
        environment_id=pair.seed.environment,
        serve_id=pair.seed.serve,
        created_at=now,
        updated_at=now,
    )


async def _raw_env_configs(text: str, pair: BadPair) -> None:
    await sql("UPDATE environments SET env_configs = ? WHERE id = ?", text, pair.seed.environment)


def _env_text(text: str) -> Mutation:
    async def mutate(pair: BadPair) -> None:
        await _raw_env_configs(text, pair)

    return mutate


def _raw(table: str, column: str, text: str) -> Mutation:
    async def mutate(pair: BadPair) -> None:
        await sql(
            f"UPDATE {table} SET {column} = ? WHERE serve_id = ? AND environment_id = ?",
            text,
            pair.seed.serve,
            pair.seed.environment,
        )

    return mutate


async def _env_vars_a_list(pair: BadPair) -> None:
    await darwin.insert("app_layer_deployments", deployment_id=pair.deployment, environment_variables='["LOG_LEVEL"]')


BAD_ROWS: tuple[BadRow, ...] = (
    # --- enums the operator does not know ---------------------------------------------------
    BadRow("serve-type-unknown", "InvalidDatabaseRow", "sync", _update("serves", "type", "batch")),
    BadRow("serve-type-empty", "InvalidDatabaseRow", "sync", _update("serves", "type", "")),
    BadRow("serve-type-upper-case", "InvalidDatabaseRow", "sync", _update("serves", "type", "API")),
    BadRow("deployment-status-unknown", "InvalidDatabaseRow", "sync", _update("deployments", "status", "PAUSED")),
    BadRow("deployment-status-lower-case", "InvalidDatabaseRow", "sync", _update("deployments", "status", "active")),
    BadRow(
        "backend-type-unknown", "InvalidInfraConfig", "mlserve", _update("api_serve_configs", "backend_type", "grpc")
    ),
    # --- names the MLServe CRD refuses --------------------------------------------------------
    BadRow("serve-name-upper-case", "InvalidDatabaseRow", "sync", serve="Fraud"),
    BadRow("serve-name-underscore", "InvalidDatabaseRow", "sync", serve="fraud_score"),
    BadRow("serve-name-dot", "InvalidDatabaseRow", "sync", serve="fraud.score"),
    BadRow("serve-name-leading-dash", "InvalidDatabaseRow", "sync", serve="-fraud"),
    BadRow("serve-name-space", "InvalidDatabaseRow", "sync", serve="fraud score"),
    BadRow("environment-name-upper-case", "InvalidDatabaseRow", "sync", environment="Staging"),
    BadRow("environment-name-underscore", "InvalidDatabaseRow", "sync", environment="prod_eu"),
    BadRow("environment-name-too-long", "InvalidDatabaseRow", "sync", environment="e" * 64),
    BadRow("artifact-version-empty", "InvalidDatabaseRow", "sync", _update("artifacts", "version", "")),
    BadRow("deployment-artifact-missing", "InvalidDatabaseRow", "sync", _missing_artifact),
    BadRow("two-active-deployments", "DuplicateActiveDeployments", "sync", _second_active),
    # --- images -------------------------------------------------------------------------------
    BadRow(
        "image-upper-case-path", "InvalidImage", "mlserve", _update("artifacts", "image_url", "registry.io/Fraud:v1")
    ),
    BadRow(
        "image-with-a-command", "InvalidImage", "mlserve", _update("artifacts", "image_url", "r.io/x:v1 ; rm -rf /")
    ),
    BadRow("image-as-a-url", "InvalidImage", "mlserve", _update("artifacts", "image_url", "https://r.io/x:v1")),
    BadRow("image-null", "ArtifactNotBuilt", "mlserve", _update("artifacts", "image_url", None)),
    BadRow("image-empty", "ArtifactNotBuilt", "mlserve", _update("artifacts", "image_url", "")),
    # --- env_configs ----------------------------------------------------------------------------
    BadRow("env-configs-a-json-string", "InvalidEnvConfig", "sync", _env_text('"cluster local, namespace x"')),
    BadRow("env-configs-null-json", "InvalidEnvConfig", "sync", _env_text("null")),
    BadRow("env-configs-a-list", "InvalidEnvConfig", "sync", _env_text("[]")),
    BadRow("env-configs-without-namespace", "InvalidEnvConfig", "sync", env_config=_env(None)),
    BadRow("env-configs-namespace-invalid", "InvalidEnvConfig", "sync", env_config=_env("Bad_NS")),
    BadRow("env-configs-namespace-too-long", "InvalidEnvConfig", "sync", env_config=_env("n" * 64)),
    BadRow("env-configs-without-cluster", "InvalidEnvConfig", "sync", env_config=_env(cluster_name=None)),
    BadRow("env-configs-cluster-a-number", "InvalidEnvConfig", "sync", env_config=_env(cluster_name=5)),
    BadRow("env-configs-without-security-group", "InvalidEnvConfig", "sync", env_config=_env(security_group=None)),
    BadRow("namespace-kube-system", "NamespaceRefused", "sync", env_config=_env("kube-system")),
    BadRow("namespace-kube-public", "NamespaceRefused", "sync", env_config=_env("kube-public")),
    BadRow("namespace-of-the-operator", "NamespaceRefused", "sync", env_config=_env(OPERATOR_NAMESPACE)),
    # --- infrastructure configs -----------------------------------------------------------------
    BadRow(
        "fast-api-config-a-json-string",
        "InvalidInfraConfig",
        "mlserve",
        _raw("api_serve_configs", "fast_api_config", '"2 cores"'),
    ),
    BadRow(
        "fast-api-config-a-list", "InvalidInfraConfig", "mlserve", _raw("api_serve_configs", "fast_api_config", "[]")
    ),
    BadRow("cores-1e308", "InvalidInfraConfig", "mlserve", _fast_api(cores=1e308)),
    BadRow("cores-a-string", "InvalidInfraConfig", "mlserve", _fast_api(cores="2")),
    BadRow(
        "cores-null",
        "InvalidInfraConfig",
        "mlserve",
        _fast_api(cores=None),
    ),
    BadRow("memory-zero", "InvalidInfraConfig", "mlserve", _fast_api(memory=0)),
    BadRow("memory-over-the-crd-bound", "InvalidInfraConfig", "mlserve", _fast_api(memory=4096)),
    BadRow("replicas-10-to-the-8", "InvalidInfraConfig", "mlserve", _fast_api(min_replicas=10**8, max_replicas=10**8)),
    BadRow("replicas-min-above-max", "InvalidInfraConfig", "mlserve", _fast_api(min_replicas=5, max_replicas=2)),
    BadRow("capacity-type-unknown", "InvalidInfraConfig", "mlserve", _fast_api(node_capacity_type="cheap")),
    BadRow("env-vars-a-list", "InvalidInfraConfig", "mlserve", _env_vars_a_list),
    # --- workflows -------------------------------------------------------------------------------
    BadRow("cron-no-date-matches", "InvalidInfraConfig", "mlserve", workflow=True, schedule="0 0 31 2 *"),
    BadRow("cron-april-31st", "InvalidInfraConfig", "mlserve", workflow=True, schedule="0 0 31 4 *"),
    BadRow("cron-not-cron", "InvalidInfraConfig", "mlserve", workflow=True, schedule="every night"),
    BadRow("cron-six-fields", "InvalidInfraConfig", "mlserve", workflow=True, schedule="0 0 3 * * *"),
    BadRow(
        "workers-an-object",
        "InvalidInfraConfig",
        "mlserve",
        _raw("workflow_serve_configs", "worker_node_config", '{"cores_per_pods": 1}'),
        workflow=True,
    ),
    BadRow(
        "workers-empty",
        "InvalidInfraConfig",
        "mlserve",
        _update("workflow_serve_configs", "worker_node_config", []),
        workflow=True,
    ),
    BadRow("workers-a-million-pods", "InvalidInfraConfig", "mlserve", _worker(max_pods=10**6), workflow=True),
    BadRow(
        "head-cores-1e308",
        "InvalidInfraConfig",
        "mlserve",
        _update("workflow_serve_configs", "head_node_config", {"cores": 1e308, "memory": 2}),
        workflow=True,
    ),
)


TEXT_ROWS: tuple[BadRow, ...] = (
    BadRow("env-configs-not-json", "InvalidEnvConfig", "sync", _env_text('{"cluster_name": "local",')),
    BadRow("env-configs-python-dict", "InvalidEnvConfig", "sync", _env_text("{'cluster_name': 'local'}")),
    BadRow(
        "fast-api-config-not-json", "InvalidInfraConfig", "mlserve", _raw("api_serve_configs", "fast_api_config", "{")
    ),
    BadRow(
        "cores-nan",
        "InvalidInfraConfig",
        "mlserve",
        _raw(
            "api_serve_configs", "fast_api_config", '{"min_replicas": 1, "max_replicas": 2, "cores": NaN, "memory": 2}'
        ),
    ),
    BadRow(
        "workers-not-json",
        "InvalidInfraConfig",
        "mlserve",
        _raw("workflow_serve_configs", "worker_node_config", "[{"),
        workflow=True,
    ),
)
"""JSON columns holding text that is not JSON: possible on SQLite (and in a TEXT column), refused
by MySQL's JSON type, so run on SQLite."""

"""Write a Darwin ML Serve database the way Darwin writes it: plain SQL statements.

The operator must work on rows it did not write, so the tests and the benchmarks never use
its models to seed or deploy; they insert columns by name, on SQLite and MariaDB alike,
through Tortoise's ``default`` connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise import Tortoise
from tortoise.backends.base.client import BaseDBAsyncClient


def _connection() -> BaseDBAsyncClient:
    return Tortoise.get_connection("default")


def db_now() -> str:
    """The current UTC time as the DATETIME(6) columns take it."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


async def insert(table: str, **columns: Any) -> int:
    """INSERT one row; returns its id."""
    conn = _connection()
    mysql = conn.capabilities.dialect == "mysql"
    mark = "%s" if mysql else "?"
    quote = "`" if mysql else '"'
    names = ", ".join(f"{quote}{name}{quote}" for name in columns)
    marks = ", ".join(mark for _ in columns)
    values = [json.dumps(v) if isinstance(v, dict | list) else v for v in columns.values()]
    return int(await conn.execute_insert(f"INSERT INTO {table} ({names}) VALUES ({marks})", values))


async def query(sql: str, *values: Any) -> list[dict[str, Any]]:
    conn = _connection()
    if conn.capabilities.dialect == "mysql":
        sql = sql.replace("?", "%s")
    _, rows = await conn.execute_query(sql, list(values))
    return [dict(row) for row in rows]


async def count(table: str) -> int:
    """Rows in ``table``, by SQL (independent of the models)."""
    _, rows = await _connection().execute_query(f"SELECT COUNT(*) AS n FROM {table}")
    return int(rows[0]["n"])


def env_configs(namespace: str, cluster: str = "local", **extra: str) -> dict[str, str]:
    return {
        "domain_suffix": ".models.example.com",
        "cluster_name": cluster,
        "security_group": "sg-1",
        "ft_redis_url": "redis://redis:6379",
        "workflow_url": "http://workflow",
        "namespace": namespace,
        **extra,
    }


@dataclass
class Seed:
    user: int
    serve: int
    environment: int
    artifacts: dict[str, int]


async def seed_api_serve(
    serve: str,
    environment: str,
    namespace: str,
    *,
    versions: tuple[str, ...] = ("v1", "v2"),
    cluster: str = "local",
    is_protected: bool = False,
    min_replicas: int = 1,
    max_replicas: int = 3,
    serve_type: str = "api",
    env_config: Any = None,
    additional_hosts: str | None = None,
) -> Seed:
    """A user (admin, once), a serve, an environment, artifacts and an api_serve_configs row."""
    now = db_now()
    users = await query("SELECT user_id FROM users WHERE username = ?", "admin")
    if users:
        user = int(users[0]["user_id"])
    else:
        user = await insert("users", username="admin", token="t", created_at=now, updated_at=now)
    existing = await query("SELECT id FROM serves WHERE name = ?", serve)
    if existing:
        serve_id = int(existing[0]["id"])
    else:
        serve_id = await insert(
            "serves", name=serve, type=serve_type, space="ml", created_by=user, created_at=now, updated_at=now
        )
    envs = await query("SELECT id FROM environments WHERE name = ?", environment)
    if envs:
        env_id = int(envs[0]["id"])
    else:
        env_id = await insert(
            "environments",
            name=environment,
            env_configs=env_config if env_config is not None else env_configs(namespace, cluster),
            is_protected=is_protected,
            created_at=now,
            updated_at=now,
        )
    artifacts: dict[str, int] = {}
    for version in versions:
        artifacts[version] = await insert(
            "artifacts",
            serve_id=serve_id,
            version=version,
            github_repo_url="https://git.example.com/ml/repo",
            image_url=f"registry.example.com/{serve}:{version}",
            created_at=now,
            created_by_id=user,
        )
    if serve_type == "api":
        await insert(
            "api_serve_configs",
            serve_id=serve_id,
            environment_id=env_id,
            backend_type="fastapi",
            additional_hosts=additional_hosts,
            fast_api_config={
                "min_replicas": min_replicas,
                "max_replicas": max_replicas,
                "cores": 1,
                "memory": 2,
                "node_capacity_type": "spot",
            },
            created_by_id=user,
            updated_by_id=user,
            created_at=now,
            updated_at=now,
        )
    return Seed(user, serve_id, env_id, artifacts)


async def seed_workflow_serve(serve: str, environment: str, namespace: str, *, schedule: str = "") -> Seed:
    """A workflow serve with one artifact and a workflow_serve_configs row (no schedule: one run)."""
    seed = await seed_api_serve(serve, environment, namespace, versions=("v1",), serve_type="workflow")
    now = db_now()
    await insert(
        "workflow_serve_configs",
        serve_id=seed.serve,
        environment_id=seed.environment,
        schedule=schedule,
        worker_node_config=[
            {"cores_per_pods": 1, "memory_per_pods": 2, "min_pods": 1, "max_pods": 2, "node_capacity_type": "spot"}
        ],
        head_node_config={"cores": 1, "memory": 2, "node_capacity_type": "on_demand"},
        created_by_id=seed.user,
        updated_by_id=seed.user,
        created_at=now,
        updated_at=now,
    )
    return seed


async def deploy(seed: Seed, version: str) -> int:
    """Darwin's deploy of ``version``, in plain SQL (not the operator's code): a new ACTIVE row,
    the old one ENDED and the pointer moved, or a first pointer."""
    now = db_now()
    pointers = await active_rows(seed.serve, seed.environment)
    new = await insert(
        "deployments",
        serve_id=seed.serve,
        artifact_id=seed.artifacts[version],
        environment_id=seed.environment,
        created_by_id=seed.user,
        created_at=now,
        status="ACTIVE",
    )
    if pointers:
        old = int(pointers[0]["deployment_id"])
        await query("UPDATE deployments SET status = 'ENDED', ended_at = ? WHERE id = ?", now, old)
        await query(
            "UPDATE active_deployments SET deployment_id = ?, previous_deployment_id = ?, updated_at = ? "
            "WHERE serve_id = ? AND environment_id = ?",
            new,
            old,
            now,
            seed.serve,
            seed.environment,
        )
    else:
        await insert(
            "active_deployments",
            deployment_id=new,
            environment_id=seed.environment,
            serve_id=seed.serve,
            created_at=now,
            updated_at=now,
        )
    return new


async def build_job(
    seed: Seed,
    version: str,
    *,
    status: str = "PENDING",
    repository: str = "https://git.example.com/ml/repo",
    task_id: str = "task-1",
) -> int:
    """Darwin's ``POST /artifact``: an artifact_builder_job row (PENDING, last_picked_at now)."""
    now = db_now()
    return await insert(
        "artifact_builder_job",
        serve_id=seed.serve,
        version=version,
        github_repo_url=repository,
        branch="main",
        task_id=task_id,
        status=status,
        created_at=now,
        last_picked_at=now,
        status_last_updated_at=now,
        created_by_id=seed.user,
    )


async def finish_build(seed: Seed, job: int, version: str, status: str = "SUCCESSFUL", image: str = "") -> None:
    """Darwin's poller: SUCCESSFUL with the artifacts row and its image_url, or FAILED."""
    now = db_now()
    if status == "SUCCESSFUL":
        seed.artifacts[version] = await insert(
            "artifacts",
            serve_id=seed.serve,
            version=version,
            github_repo_url="https://git.example.com/ml/repo",
            branch="main",
            image_url=image or f"registry.example.com/built:{version}",
            artifact_job_id=job,
            created_at=now,
            created_by_id=seed.user,
        )
    await query("UPDATE artifact_builder_job SET status = ?, status_last_updated_at = ? WHERE id = ?", status, now, job)


async def active_rows(serve_id: int, env_id: int) -> list[dict[str, Any]]:
    return await query(
        "SELECT deployment_id, previous_deployment_id FROM active_deployments "
        "WHERE serve_id = ? AND environment_id = ?",
        serve_id,
        env_id,
    )


async def deployments(serve_id: int, env_id: int) -> list[dict[str, Any]]:
    return await query(
        "SELECT id, artifact_id, status, ended_at FROM deployments "
        "WHERE serve_id = ? AND environment_id = ? ORDER BY id",
        serve_id,
        env_id,
    )

"""Set-up rows and demo data.

``ensure_admin()`` adds Darwin's default ``admin`` user when it is missing (``mlserve db
init`` runs it; Darwin's own set-up creates the same user): the operator records its
deploys as ``MLSERVE_DEPLOY_USER``, ``admin`` by default.

The demo data is a small, realistic Darwin ML Serve database to try the operator on.
``seed()`` is idempotent: rows are found by their natural keys (user name, environment
name, serve name, serve + version, serve + environment) and only missing ones are
created; existing rows are never changed, so a second run writes nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.models import Model
from tortoise.transactions import in_transaction

from .artifacts import Artifact
from .enums import BackendType, ServeType
from .serve_configs import APIServeInfraConfig, WorkflowServeInfraConfig
from .serves import Environment, Serve
from .users import User

__all__ = [
    "ADMIN_USER",
    "DEMO_API_SERVE",
    "DEMO_USER",
    "DEMO_WORKFLOW_SERVE",
    "SeedResult",
    "ensure_admin",
    "seed",
]

ADMIN_USER = "admin"
"""Darwin's default user, there after set-up; the operator's default ``MLSERVE_DEPLOY_USER``."""
DEMO_USER = "demo"
DEMO_API_SERVE = "iris-classifier"
DEMO_WORKFLOW_SERVE = "nightly-retrain"
DEMO_DOMAIN_SUFFIX = ".localhost"
DEMO_REGISTRY = "registry.localhost/mlserve-demo"


@dataclass
class SeedResult:
    """The demo rows, and how many of them this run created (0 on a second run)."""

    user: User
    environments: dict[str, Environment] = field(default_factory=dict)
    serves: dict[str, Serve] = field(default_factory=dict)
    artifacts: dict[str, list[Artifact]] = field(default_factory=dict)
    created: int = 0


def demo_environments(cluster_name: str) -> dict[str, tuple[bool, dict[str, str]]]:
    """name -> (is_protected, env_configs) of the two demo environments."""

    def env_configs(namespace: str) -> dict[str, str]:
        return {
            "domain_suffix": DEMO_DOMAIN_SUFFIX,
            "cluster_name": cluster_name,
            "security_group": "",
            "subnets": "",
            "ft_redis_url": "",
            "workflow_url": "",
            "namespace": namespace,
        }

    return {
        "dev": (False, env_configs("mlserve-dev")),
        "prod": (True, env_configs("mlserve-prod")),
    }


def _connection_name(using_db: BaseDBAsyncClient | None) -> str:
    # Always the primary ("default"): with a read replica configured Tortoise has two.
    return using_db.connection_name if using_db is not None else "default"


async def ensure_admin(*, using_db: BaseDBAsyncClient | None = None) -> bool:
    """Create the ``admin`` user when it is missing (random token); True when it was created."""
    async with in_transaction(_connection_name(using_db)) as conn:
        counter = _Counter(conn)
        await _admin(counter)
        return counter.created > 0


async def _admin(counter: _Counter) -> User:
    return await counter.get_or_create(User, {"username": ADMIN_USER}, {"token": secrets.token_hex(16)})


async def seed(*, cluster_name: str = "local", using_db: BaseDBAsyncClient | None = None) -> SeedResult:
    """Create the demo rows that are missing, in one transaction.

    Both environments are bound to ``cluster_name`` (``local`` by default, the name the
    demo's operator runs with): ``dev`` in namespace ``mlserve-dev`` and ``prod``
    (protected) in ``mlserve-prod``. The ``admin`` user is added too when missing, so the
    operator records deploys on these rows with its default ``MLSERVE_DEPLOY_USER``.
    """
    async with in_transaction(_connection_name(using_db)) as conn:
        counter = _Counter(conn)
        await _admin(counter)
        user = await counter.get_or_create(User, {"username": DEMO_USER}, {"token": "demo-token"})
        result = SeedResult(user=user)

        for name, (protected, configs) in demo_environments(cluster_name).items():
            result.environments[name] = await counter.get_or_create(
                Environment, {"name": name}, {"is_protected": protected, "env_configs": configs}
            )

        api = await counter.get_or_create(
            Serve,
            {"name": DEMO_API_SERVE},
            {
                "type": ServeType.API,
                "description": "Demo HTTP model: classifies iris flowers.",
                "space": "demo",
                "created_by": user,
            },
        )
        workflow = await counter.get_or_create(
            Serve,
            {"name": DEMO_WORKFLOW_SERVE},
            {
                "type": ServeType.WORKFLOW,
                "description": "Demo Ray job: retrains the iris model every night.",
                "space": "demo",
                "created_by": user,
            },
        )
        result.serves = {api.name: api, workflow.name: workflow}

        result.artifacts[api.name] = [
            await _artifact(counter, api, user, "1.0.0"),
            await _artifact(counter, api, user, "1.1.0"),
        ]
        result.artifacts[workflow.name] = [await _artifact(counter, workflow, user, "1.0.0")]

        for env_name, environment in result.environments.items():
            await counter.get_or_create(
                APIServeInfraConfig,
                {"serve": api, "environment": environment},
                {
                    "backend_type": BackendType.FASTAPI,
                    "additional_hosts": None,
                    "fast_api_config": {
                        "min_replicas": 2 if env_name == "prod" else 1,
                        "max_replicas": 4 if env_name == "prod" else 2,
                        "cores": 0.5,
                        "memory": 1,
                        "node_capacity_type": "on_demand" if env_name == "prod" else "spot",
                    },
                    "created_by": user,
                    "updated_by": user,
                },
            )
        await counter.get_or_create(
            WorkflowServeInfraConfig,
            {"serve": workflow, "environment": result.environments["dev"]},
            {
                "schedule": "0 2 * * *",
                "worker_node_config": [
                    {
                        "cores_per_pods": 1,
                        "memory_per_pods": 2,
                        "min_pods": 1,
                        "max_pods": 2,
                        "node_capacity_type": "spot",
                    }
                ],
                "head_node_config": {"cores": 1, "memory": 2, "node_capacity_type": "on_demand"},
                "created_by": user,
                "updated_by": user,
            },
        )
        result.created = counter.created
        return result


async def _artifact(counter: _Counter, serve: Serve, user: User, version: str) -> Artifact:
    return await counter.get_or_create(
        Artifact,
        {"serve": serve, "version": version},
        {
            "github_repo_url": f"https://github.com/example/{serve.name}",
            "branch": "main",
            "image_url": f"{DEMO_REGISTRY}/{serve.name}:{version}",
            "created_by": user,
        },
    )


_M = TypeVar("_M", bound=Model)


class _Counter:
    """get_or_create that counts what it created."""

    def __init__(self, conn: BaseDBAsyncClient) -> None:
        self.conn = conn
        self.created = 0

    async def get_or_create(self, model: type[_M], keys: dict[str, Any], defaults: dict[str, Any]) -> _M:
        lookup = {
            (f"{k}_id" if isinstance(v, Model) else k): (v.pk if isinstance(v, Model) else v) for k, v in keys.items()
        }
        found = await model.filter(**lookup).using_db(self.conn).first()
        if found is not None:
            return found
        self.created += 1
        return await model.create(**keys, **defaults, using_db=self.conn)

"""Small builders of valid rows, so each test states only what it is about."""

from __future__ import annotations

from typing import Any

from mlserve.models import (
    APIServeInfraConfig,
    Artifact,
    Environment,
    Serve,
    ServeType,
    User,
    WorkflowServeInfraConfig,
)


def env_configs(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "domain_suffix": ".example.com",
        "cluster_name": "local",
        "security_group": "sg-1,sg-2",
        "subnets": "subnet-a, subnet-b",
        "ft_redis_url": "",
        "workflow_url": "",
        "namespace": "mlserve-dev",
    }
    value.update(overrides)
    return {k: v for k, v in value.items() if v is not ...}


def fast_api(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "min_replicas": 1,
        "max_replicas": 3,
        "cores": 1,
        "memory": 2,
        "node_capacity_type": "spot",
    }
    value.update(overrides)
    return value


def worker(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "cores_per_pods": 2,
        "memory_per_pods": 4,
        "min_pods": 1,
        "max_pods": 3,
        "node_capacity_type": "on-demand",
    }
    value.update(overrides)
    return value


async def user(name: str = "alice") -> User:
    return await User.create(username=name, token=f"token-{name}")


async def environment(name: str = "dev", **config: Any) -> Environment:
    return await Environment.create(name=name, env_configs=env_configs(**config))


async def serve(owner: User, name: str = "iris", type: ServeType | str = ServeType.API) -> Serve:
    return await Serve.create(name=name, type=type, space="ml", created_by=owner)


async def artifact(owner: User, of: Serve, version: str = "1.0.0") -> Artifact:
    return await Artifact.create(
        serve=of,
        version=version,
        github_repo_url="https://github.com/example/iris",
        image_url=f"registry.example/iris:{version}",
        created_by=owner,
    )


async def api_config(owner: User, of: Serve, env: Environment, **fast: Any) -> APIServeInfraConfig:
    return await APIServeInfraConfig.create(
        serve=of,
        environment=env,
        backend_type="fastapi",
        fast_api_config=fast_api(**fast),
        created_by=owner,
        updated_by=owner,
    )


async def workflow_config(
    owner: User, of: Serve, env: Environment, workers: list[dict[str, Any]] | None = None
) -> WorkflowServeInfraConfig:
    return await WorkflowServeInfraConfig.create(
        serve=of,
        environment=env,
        schedule="0 2 * * *",
        worker_node_config=workers if workers is not None else [worker()],
        head_node_config={"cores": 1, "memory": 2, "node_capacity_type": "ondemand"},
        created_by=owner,
        updated_by=owner,
    )

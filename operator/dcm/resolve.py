"""The names in Darwin's DCM calls, resolved against the database; reads only.

Darwin names a release ``<env>-<serve>`` and its chart artifact ``<env>-<serve>-<version>``.
Environment, serve and version names may all hold ``-``, so a name is split at every ``-``
that leaves an environment and a serve (and an artifact) that exist; exactly one split must.
A release must also live where the operator runs it: its environment bound to this cluster
(``env_configs.cluster_name``), in the environment's namespace, which the operator watches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlserve.models import Artifact, Environment, InvalidConfig, Serve, ServeType
from mlserve.operator.spec.namespaces import watches_namespace

__all__ = ["Rejected", "Release", "resolve_artifact", "resolve_release"]


class Rejected(Exception):
    """A call the endpoint answers with ``status`` and a message naming ``field``."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field


@dataclass(frozen=True)
class Release:
    """A Darwin release as the operator runs it: one (serve, environment) pair."""

    serve: str
    environment: str
    namespace: str
    cluster: str

    @property
    def resource_id(self) -> str:
        return f"{self.environment}-{self.serve}"


async def _environments(name: str) -> list[Environment]:
    """Environments whose name followed by ``-`` starts ``name``."""
    candidates = {name[:i] for i, char in enumerate(name) if char == "-" and i > 0}
    if not candidates:
        return []
    return list(await Environment.filter(name__in=sorted(candidates)))


def _split_points(rest: str) -> set[str]:
    return {rest[:i] for i, char in enumerate(rest) if char == "-" and i > 0}


def _release(serve: Serve, environment: Environment, field: str) -> Release:
    try:
        config = environment.config
    except InvalidConfig as exc:
        raise Rejected(409, field, f"environment {environment.name!r} has invalid env_configs: {exc}") from None
    if serve.type != ServeType.API:
        raise Rejected(400, field, f"serve {serve.name!r} is a {serve.type} serve: DCM deploys API serves only")
    return Release(serve.name, environment.name, config.namespace, config.cluster_name)


def _one(found: Sequence[Release], field: str, value: str, shape: str) -> Release:
    if not found:
        raise Rejected(
            404, field, f"{value[:200]!r} names no {shape} in the database (expected {shape} with names that exist)"
        )
    if len(found) > 1:
        which = ", ".join(f"{r.environment}/{r.serve}" for r in found)
        raise Rejected(409, field, f"{value[:200]!r} is ambiguous: it reads as {which}")
    return found[0]


def _check_runs_here(release: Release, cluster: str, namespaces: Sequence[str], field: str) -> None:
    if release.cluster != cluster:
        raise Rejected(
            400,
            field,
            f"environment {release.environment!r} is bound to cluster {release.cluster!r} "
            f"(env_configs.cluster_name), not to this operator's {cluster!r} (MLSERVE_CLUSTER_NAME)",
        )
    if not watches_namespace(namespaces, release.namespace):
        raise Rejected(
            400,
            field,
            f"namespace {release.namespace!r} of environment {release.environment!r} is not watched by "
            "this operator (MLSERVE_NAMESPACES)",
        )


async def resolve_release(
    resource_id: str,
    kube_cluster: str,
    kube_namespace: str,
    *,
    cluster: str,
    namespaces: Sequence[str] = (),
) -> Release:
    """The pair a release ``<env>-<serve>`` stands for, checked to run where the call says."""
    found = []
    for environment in await _environments(resource_id):
        serve = await Serve.get_or_none(name=resource_id[len(environment.name) + 1 :])
        if serve is not None:
            found.append(_release(serve, environment, "resource_id"))
    release = _one(found, "resource_id", resource_id, "<environment>-<serve>")
    _check_runs_here(release, cluster, namespaces, "resource_id")
    if kube_cluster != release.cluster:
        raise Rejected(
            400, "kube_cluster", f"{kube_cluster[:100]!r} is not environment {release.environment!r}'s cluster"
        )
    if kube_namespace != release.namespace:
        raise Rejected(
            400,
            "kube_namespace",
            f"{kube_namespace[:100]!r} is not environment {release.environment!r}'s namespace {release.namespace!r}",
        )
    return release


async def resolve_artifact(
    artifact_id: str, *, cluster: str, namespaces: Sequence[str] = ()
) -> tuple[Release, Artifact]:
    """The pair and the built artifact ``<env>-<serve>-<version>`` stands for."""
    found: list[tuple[Release, Artifact]] = []
    for environment in await _environments(artifact_id):
        rest = artifact_id[len(environment.name) + 1 :]
        for serve in await Serve.filter(name__in=sorted(_split_points(rest))):
            artifact = await Artifact.get_or_none(serve_id=serve.pk, version=rest[len(serve.name) + 1 :])
            if artifact is not None:
                found.append((_release(serve, environment, "artifact_id"), artifact))
    release = _one([r for r, _ in found], "artifact_id", artifact_id, "<environment>-<serve>-<version>")
    artifact = found[0][1]
    _check_runs_here(release, cluster, namespaces, "artifact_id")
    if not artifact.image_url:
        raise Rejected(
            409,
            "artifact_id",
            f"version {artifact.version!r} of serve {release.serve!r} has no image yet (artifacts.image_url): "
            "deploy it once its build succeeded",
        )
    return release, artifact

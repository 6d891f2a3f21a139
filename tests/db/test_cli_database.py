"""``mlserve render`` against a database (SQLite, seeded with the demo rows)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from mlserve_testing.schemas import ROOT, validate_manifest

from mlserve.models import Artifact, Environment, Serve, User, activate
from mlserve.models.db import close_db, init_db
from mlserve.models.seed import DEMO_API_SERVE, DEMO_WORKFLOW_SERVE, seed
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.cli import main


async def _prepare(path: Path) -> dict[str, int]:
    await init_db(DatabaseSettings.sqlite(path))
    try:
        result = await seed(cluster_name="local")
        user = await User.get(username=result.user.username)
        deployed = {}
        for serve_name, version in ((DEMO_API_SERVE, "1.1.0"), (DEMO_WORKFLOW_SERVE, "1.0.0")):
            serve = await Serve.get(name=serve_name)
            artifact = await Artifact.get(serve_id=serve.pk, version=version)
            deployment = await activate(serve, await Environment.get(name="dev"), artifact, user)
            deployed[serve_name] = deployment.pk
        return deployed
    finally:
        await close_db()


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    path = tmp_path_factory.mktemp("db") / "mlserve.sqlite3"
    return path, asyncio.run(_prepare(path))


def _render(database: tuple[Path, dict[str, int]], *args: str) -> list[dict]:
    path, _ = database
    runner = CliRunner()
    result = runner.invoke(
        main, ["render", *args], env={"MLSERVE_DB_URL": "", "MLSERVE_DB_PATH": str(path), "MLSERVE_RAY_CRON_JOB": ""}
    )
    assert result.exit_code == 0, result.stderr or result.output
    return list(yaml.safe_load_all(result.stdout))


def test_active_deployment_of_an_api_serve(database: tuple[Path, dict[str, int]]) -> None:
    manifests = _render(database, "--serve", DEMO_API_SERVE, "--env", "dev")
    kinds = [m["kind"] for m in manifests]
    assert kinds[:3] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    deployment = manifests[0]
    assert deployment["metadata"]["namespace"] == "mlserve-dev"
    assert deployment["metadata"]["labels"]["mlserve.darwin.io/deployment-id"] == str(database[1][DEMO_API_SERVE])
    assert deployment["metadata"]["annotations"]["mlserve.darwin.io/artifact-version"] == "1.1.0"
    for manifest in manifests:
        validate_manifest(manifest)


def test_a_version_not_deployed_has_no_deployment_id(database: tuple[Path, dict[str, int]]) -> None:
    (deployment, *_) = _render(database, "--serve", DEMO_API_SERVE, "--env", "dev", "--version", "1.0.0")
    assert "mlserve.darwin.io/deployment-id" not in deployment["metadata"]["labels"]
    assert deployment["metadata"]["annotations"]["mlserve.darwin.io/artifact-version"] == "1.0.0"


def test_mlserve_file_resolved_from_the_database(database: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    body = {
        "apiVersion": "mlserve.darwin.io/v1alpha1",
        "kind": "MLServe",
        "metadata": {"name": DEMO_API_SERVE, "namespace": "mlserve-dev"},
        "spec": {"environment": "dev", "type": "api", "artifactVersion": "1.1.0", "replicas": {"min": 3, "max": 3}},
    }
    file = tmp_path / "mlserve.yaml"
    file.write_text(yaml.safe_dump(body))
    manifests = _render(database, "-f", str(file))
    assert manifests[0]["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in [m["kind"] for m in manifests]


def test_scheduled_workflow_at_a_time(database: tuple[Path, dict[str, int]]) -> None:
    (job,) = _render(database, "--serve", DEMO_WORKFLOW_SERVE, "--env", "dev", "--at", "2025-01-02T02:00:00Z")
    assert job["kind"] == "RayJob" and job["metadata"]["name"].endswith("-202501020200")
    validate_manifest(job)


def test_unknown_serve_is_reported(database: tuple[Path, dict[str, int]]) -> None:
    path, _ = database
    result = CliRunner().invoke(
        main, ["render", "--serve", "nope", "--env", "dev"], env={"MLSERVE_DB_URL": "", "MLSERVE_DB_PATH": str(path)}
    )
    assert result.exit_code == 1 and "serve 'nope' is not in the database" in result.stderr


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_render_against_the_demo_data(database: tuple[Path, dict[str, int]], example: Path) -> None:
    manifests = _render(database, "-f", str(example), "--at", "2025-01-02T02:30:00Z")
    assert manifests
    namespace = yaml.safe_load(example.read_text())["metadata"]["namespace"]
    for manifest in manifests:
        assert manifest["metadata"]["namespace"] == namespace
        validate_manifest(manifest)

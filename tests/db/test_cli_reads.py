"""``mlserve history``, ``mlserve status --database-only`` and ``mlserve rollback --dry-run``
against a database (SQLite, seeded with the demo rows), and the exit codes when the database
or the cluster does not answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from mlserve.models import Artifact, Deployment, Environment, Serve, User, activate
from mlserve.models.db import close_db, init_db
from mlserve.models.seed import DEMO_API_SERVE, seed
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.cli import main
from mlserve.operator.cli.common import EXIT_CLUSTER, EXIT_DATABASE


async def _prepare(path: Path) -> list[int]:
    await init_db(DatabaseSettings.sqlite(path))
    try:
        result = await seed(cluster_name="local")
        user = await User.get(username=result.user.username)
        serve = await Serve.get(name=DEMO_API_SERVE)
        environment = await Environment.get(name="dev")
        ids = []
        for version in ("1.0.0", "1.1.0"):
            artifact = await Artifact.get(serve_id=serve.pk, version=version)
            ids.append((await activate(serve, environment, artifact, user)).pk)
        return ids
    finally:
        await close_db()


async def _count(path: Path) -> int:
    await init_db(DatabaseSettings.sqlite(path), create_schema=False)
    try:
        return await Deployment.all().count()
    finally:
        await close_db()


@pytest.fixture
def database(tmp_path: Path) -> tuple[Path, list[int]]:
    path = tmp_path / "mlserve.sqlite3"
    return path, asyncio.run(_prepare(path))


def _mlserve(path: Path, *args: str, **env: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"MLSERVE_DB_URL": "", "MLSERVE_DB_PATH": str(path), **env})


def test_history_lists_the_deployments_newest_first_as_json_and_yaml(database: tuple[Path, list[int]]) -> None:
    path, (first, second) = database
    result = _mlserve(path, "history", DEMO_API_SERVE, "--env", "dev", "-o", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["id"], r["artifact_version"], r["status"]) for r in rows] == [
        (second, "1.1.0", "ACTIVE"),
        (first, "1.0.0", "ENDED"),
    ]
    assert rows[1]["ended_at"] is not None and rows[0]["created_by"]
    as_yaml = _mlserve(path, "history", DEMO_API_SERVE, "--env", "dev", "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout) == rows


def test_history_as_a_table_has_a_heading_and_one_line_per_deployment(database: tuple[Path, list[int]]) -> None:
    path, (first, second) = database
    lines = _mlserve(path, "history", DEMO_API_SERVE, "--env", "dev").stdout.splitlines()
    assert lines[0].split()[:3] == ["DEPLOYMENT", "VERSION", "STATUS"]
    assert [line.split()[:3] for line in lines[1:]] == [
        [str(second), "1.1.0", "ACTIVE"],
        [str(first), "1.0.0", "ENDED"],
    ]


def test_status_from_the_database_alone(database: tuple[Path, list[int]]) -> None:
    path, (_, second) = database
    result = _mlserve(path, "status", DEMO_API_SERVE, "--database-only", "-o", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["serve"], row["environment"], row["deploymentId"], row["artifactVersion"]) == (
        DEMO_API_SERVE,
        "dev",
        second,
        "1.1.0",
    )
    assert row["namespace"] == "mlserve-dev" and row["previousDeploymentId"] is not None


def test_an_unknown_serve_is_one_line_and_exit_code_1(database: tuple[Path, list[int]]) -> None:
    path, _ = database
    result = _mlserve(path, "history", "no-such-serve", "--env", "dev")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: serve 'no-such-serve' is not in the database"


def test_rollback_dry_run_says_what_it_would_do_and_writes_nothing(database: tuple[Path, list[int]]) -> None:
    path, (first, second) = database
    before = asyncio.run(_count(path))
    result = _mlserve(path, "rollback", DEMO_API_SERVE, "--env", "dev", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "artifact 1.0.0" in result.stdout and f"replacing deployment {second}" in result.stdout
    assert f"deployment {first}" in result.stdout and "nothing written" in result.stdout
    assert asyncio.run(_count(path)) == before


def test_a_database_that_does_not_answer_is_exit_code_3_without_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["history", DEMO_API_SERVE, "--env", "dev"],
        env={"MLSERVE_DB_URL": "mysql://reader:hunter2@127.0.0.1:9/mlserve"},
    )
    assert result.exit_code == EXIT_DATABASE, result.output
    assert "Traceback" not in result.output and "hunter2" not in result.output
    assert result.output.startswith("Error: cannot use the database") and len(result.output.splitlines()) == 1


def test_a_cluster_that_does_not_answer_is_exit_code_4_after_the_database_side(
    database: tuple[Path, list[int]], tmp_path: Path
) -> None:
    path, (_, second) = database
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "gone", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    result = _mlserve(path, "status", "-o", "json", KUBECONFIG=str(kubeconfig))
    assert result.exit_code == EXIT_CLUSTER, result.output
    assert json.loads(result.stdout)[0]["deploymentId"] == second
    assert "the cluster did not answer" in result.stderr and "Traceback" not in result.output

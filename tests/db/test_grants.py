"""The MySQL grants the README lists are enough, and no more than that: the operator's user
(no DDL) deploys, rolls back and undeploys, and is refused the migration a Darwin-created
schema needs; the migration's user runs it. The grants are read from the README itself."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mlserve_testing.mariadb import MariaDBServer
from tortoise import Tortoise

from mlserve.models import Artifact, Environment, Serve, User, activate, builds, end_active
from mlserve.models.db import close_db, init_db, inspect_schema, migrate, prepare_schema
from mlserve.models.seed import DEMO_API_SERVE, seed
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.reconcile.rollback import rollback_in_database

pytestmark = pytest.mark.mariadb

README = Path(__file__).resolve().parents[2] / "README.md"
GRANT = re.compile(
    r"^GRANT (?P<privileges>[A-Z, ]+) ON darwin_ml_serve\.(?P<target>\*|\w+) TO '(?P<user>\w+)'@'%';$", re.M
)


def _readme_grants() -> dict[str, list[tuple[str, str]]]:
    """user -> [(privileges, table or *)], from the README's SQL."""
    grants: dict[str, list[tuple[str, str]]] = {}
    for match in GRANT.finditer(README.read_text()):
        grants.setdefault(match["user"], []).append((match["privileges"], match["target"]))
    assert set(grants) == {"mlserve_operator", "mlserve_migrate"}, grants
    return grants


async def _user(server: MariaDBServer, database: str, role: str) -> DatabaseSettings:
    name, password = f"{role[8:16]}_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    await server.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
    for privileges, target in _readme_grants()[role]:
        table = "*" if target == "*" else f"`{target}`"
        await server.execute(f"GRANT {privileges} ON `{database}`.{table} TO '{name}'@'%'")
    url = f"mysql://{name}:{password}@{server.host}:{server.port}/{database}"
    return DatabaseSettings.from_url(url, source="test user")


@pytest.fixture
async def schema(mariadb_server: MariaDBServer) -> AsyncIterator[str]:
    name = await mariadb_server.create_database("grants")
    await init_db(mariadb_server.settings(name))
    await close_db()
    try:
        yield name
    finally:
        await close_db()
        await mariadb_server.drop_database(name)


async def test_the_operators_grants_run_every_database_write_it_makes(
    mariadb_server: MariaDBServer, schema: str
) -> None:
    await init_db(mariadb_server.settings(schema), create_schema=False)
    made = await seed(cluster_name="local")  # Darwin's rows, written by Darwin's own user
    await Tortoise.get_connection("default").execute_query(  # and a build job, as Darwin's POST /artifact
        "INSERT INTO artifact_builder_job (serve_id, version, github_repo_url, status, created_at, last_picked_at, "
        "created_by_id) SELECT id, '9.9.9', 'https://git.example.com/x', 'PENDING', NOW(), NOW() - INTERVAL 1 HOUR, %s "
        "FROM serves WHERE name = %s",
        [made.user.pk, DEMO_API_SERVE],
    )
    await close_db()
    await init_db(await _user(mariadb_server, schema, "mlserve_operator"), create_schema=False)
    assert (await prepare_schema(create=True, migrate_on_start=False)).action == "current"
    user = await User.get(username=made.user.username)
    serve, environment = await Serve.get(name=DEMO_API_SERVE), await Environment.get(name="dev")
    for version in ("1.0.0", "1.1.0"):
        await activate(serve, environment, await Artifact.get(serve_id=serve.pk, version=version), user)
    _, rolled_from, artifact = await rollback_in_database(DEMO_API_SERVE, "dev", user.username)
    assert artifact.version == "1.0.0" and rolled_from.pk
    assert await end_active(serve, environment, deployment_id=None) is not None
    # The artifact builder's writes: lease the job Darwin wrote, renew it, record the artifact.
    leased = await builds.pick(10)
    assert leased is not None
    leased = await builds.renew(leased, task_id="kubernetes job b/mlserve-build-1")
    assert leased is not None
    assert await builds.finish(leased, succeeded=True, image_url="registry.example.com/x:9.9.9")
    assert (await Artifact.get(serve_id=serve.pk, version="9.9.9")).image_url == "registry.example.com/x:9.9.9"


async def test_the_operators_grants_cannot_change_the_schema_and_the_migrations_can(
    mariadb_server: MariaDBServer, schema: str
) -> None:
    await init_db(mariadb_server.settings(schema), create_schema=False)
    conn = Tortoise.get_connection("default")
    await conn.execute_script("ALTER TABLE workflow_serve_configs DROP COLUMN head_node_config")
    await conn.execute_script("DROP TABLE tortoise_migrations")
    await close_db()

    await init_db(await _user(mariadb_server, schema, "mlserve_operator"), create_schema=False)
    assert (await inspect_schema()).action == "darwin"
    with pytest.raises(Exception, match="(?i)denied"):
        await migrate()
    await close_db()

    await init_db(await _user(mariadb_server, schema, "mlserve_migrate"), create_schema=False)
    assert (await migrate()).action == "adopted"
    assert (await inspect_schema()).action == "current"

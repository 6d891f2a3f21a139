"""The schema: Darwin's exact names, the operator's indexes, creation, adoption, seed, CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from mlserve_testing.darwin import count
from pydantic import SecretStr
from tortoise import Tortoise

from mlserve.models import Environment, User, WorkflowServeInfraConfig
from mlserve.models.db import (
    close_db,
    init_db,
    inspect_schema,
    migrate,
    migration_sql,
    prepare_schema,
    read_connection,
    table_names,
)
from mlserve.models.errors import DatabaseUnavailable, SchemaNotReady
from mlserve.models.seed import ensure_admin, seed
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.cli import main as cli
from mlserve.operator.settings import OperatorSettings

# darwin-schema.md, column by column: name -> (MySQL type, nullable). ``json`` stands for
# MySQL's JSON, which MariaDB reports as LONGTEXT (with a JSON check).
DT = ("datetime(6)", False)
DARWIN: dict[str, dict[str, tuple[str, bool]]] = {
    "users": {
        "user_id": ("int", False),
        "username": ("varchar(50)", False),
        "token": ("varchar(255)", False),
        "created_at": DT,
        "updated_at": DT,
    },
    "serves": {
        "id": ("int", False),
        "name": ("varchar(50)", False),
        "type": ("varchar(50)", False),
        "description": ("longtext", True),
        "space": ("longtext", False),
        "created_by": ("int", False),
        "created_at": DT,
        "updated_at": DT,
    },
    "environments": {
        "id": ("int", False),
        "name": ("varchar(255)", False),
        "env_configs": ("json", False),
        "is_protected": ("tinyint(1)", False),
        "created_at": DT,
        "updated_at": DT,
    },
    "artifact_builder_job": {
        "id": ("int", False),
        "serve_id": ("int", False),
        "version": ("varchar(50)", False),
        "github_repo_url": ("longtext", False),
        "branch": ("varchar(255)", True),
        "task_id": ("longtext", True),
        "status": ("varchar(50)", False),
        "created_at": DT,
        "last_picked_at": DT,
        "status_last_updated_at": ("datetime(6)", True),
        "created_by_id": ("int", False),
    },
    "artifacts": {
        "id": ("int", False),
        "serve_id": ("int", False),
        "version": ("varchar(50)", False),
        "github_repo_url": ("longtext", False),
        "image_url": ("longtext", True),
        "branch": ("varchar(50)", True),
        "file_path": ("varchar(255)", True),
        "artifact_job_id": ("int", True),
        "created_at": DT,
        "created_by_id": ("int", False),
    },
    "deployments": {
        "id": ("int", False),
        "serve_id": ("int", False),
        "artifact_id": ("int", False),
        "environment_id": ("int", False),
        "created_by_id": ("int", False),
        "created_at": DT,
        "status": ("varchar(20)", False),
        "ended_at": ("datetime(6)", True),
    },
    "active_deployments": {
        "id": ("int", False),
        "deployment_id": ("int", False),
        "previous_deployment_id": ("int", True),
        "environment_id": ("int", False),
        "serve_id": ("int", False),
        "created_at": DT,
        "updated_at": DT,
    },
    "api_serve_configs": {
        "id": ("int", False),
        "serve_id": ("int", False),
        "environment_id": ("int", False),
        "backend_type": ("varchar(50)", False),
        "additional_hosts": ("longtext", True),
        "fast_api_config": ("json", True),
        "created_by_id": ("int", False),
        "updated_by_id": ("int", False),
        "created_at": DT,
        "updated_at": DT,
    },
    "workflow_serve_configs": {
        "id": ("int", False),
        "serve_id": ("int", False),
        "environment_id": ("int", False),
        "schedule": ("varchar(50)", False),
        "worker_node_config": ("json", False),
        "head_node_config": ("json", True),  # the one addition the schema document asks for
        "created_by_id": ("int", False),
        "updated_by_id": ("int", False),
        "created_at": DT,
        "updated_at": DT,
    },
    "app_layer_deployments": {
        "id": ("int", False),
        "deployment_id": ("int", False),
        "deployment_strategy": ("varchar(50)", True),
        "deployment_params": ("json", True),
        "environment_variables": ("json", True),
    },
    "scheduled_workflow_deployments": {
        "id": ("int", False),
        "deployment_id": ("int", False),
        "workflow_id": ("varchar(255)", False),
        "job_cluster_id": ("varchar(255)", False),
        "input_params": ("json", True),
        "created_at": DT,
    },
}
EXTRA_TABLES = {"tortoise_migrations"}  # Tortoise's migration history


async def _mysql_columns() -> dict[str, dict[str, tuple[str, bool]]]:
    conn = Tortoise.get_connection("default")
    _, rows = await conn.execute_query(
        "SELECT table_name AS t, column_name AS c, column_type AS type, is_nullable AS n, "
        "EXISTS (SELECT 1 FROM information_schema.check_constraints k WHERE k.constraint_schema = "
        "columns.table_schema AND k.table_name = columns.table_name AND k.check_clause LIKE "
        "CONCAT('%json_valid(`', columns.column_name, '`)%')) AS is_json "
        "FROM information_schema.columns WHERE table_schema = DATABASE()"
    )
    result: dict[str, dict[str, tuple[str, bool]]] = {}
    for row in rows:
        kind = "json" if row["is_json"] or row["type"] == "json" else str(row["type"]).replace("int(11)", "int")
        result.setdefault(row["t"], {})[row["c"]] = (kind, row["n"] == "YES")
    return result


async def _sqlite_columns() -> dict[str, dict[str, tuple[str, bool]]]:
    conn = Tortoise.get_connection("default")
    _, tables = await conn.execute_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    result: dict[str, dict[str, tuple[str, bool]]] = {}
    for table in tables:
        _, columns = await conn.execute_query(f'PRAGMA table_info("{table["name"]}")')
        result[table["name"]] = {c["name"]: (str(c["type"]), not c["notnull"]) for c in columns}
    return result


async def test_tables_and_columns_are_darwins(empty_db: DatabaseSettings) -> None:
    await init_db(empty_db)
    if empty_db.engine == "mysql":
        actual = await _mysql_columns()
        assert set(actual) == set(DARWIN) | EXTRA_TABLES
        for table, columns in DARWIN.items():
            assert actual[table] == columns, table
    else:
        actual = await _sqlite_columns()
        assert set(actual) == set(DARWIN) | EXTRA_TABLES
        for table, columns in DARWIN.items():
            assert set(actual[table]) == set(columns), table
            assert {c: n for c, (_, n) in actual[table].items() if c != "id" and c != "user_id"} == {
                c: n for c, (_, n) in columns.items() if c != "id" and c != "user_id"
            }, table
    assert set(table_names()) == set(DARWIN)
    await close_db()


@pytest.mark.mariadb
async def test_mariadb_keys_indexes_and_delete_rules(mariadb_database: DatabaseSettings) -> None:
    """MariaDB only (information_schema); test_models exercises the same rules on both."""
    await init_db(mariadb_database)
    conn = Tortoise.get_connection("default")
    _, rows = await conn.execute_query(
        "SELECT table_name AS t, index_name AS i, non_unique AS nu, "
        "GROUP_CONCAT(column_name ORDER BY seq_in_index) AS cols "
        "FROM information_schema.statistics WHERE table_schema = DATABASE() GROUP BY t, i, nu"
    )
    indexes = {(r["t"], r["cols"], int(r["nu"])) for r in rows}
    assert ("active_deployments", "environment_id,serve_id", 0) in indexes
    assert ("deployments", "serve_id,environment_id,status", 1) in indexes
    assert ("artifacts", "serve_id,version", 0) in indexes
    assert ("users", "username", 0) in indexes
    assert ("serves", "name", 0) in indexes
    assert ("app_layer_deployments", "deployment_id", 0) in indexes
    _, rows = await conn.execute_query(
        "SELECT k.table_name AS t, k.column_name AS c, k.referenced_table_name AS rt, "
        "k.referenced_column_name AS rc, r.delete_rule AS rule "
        "FROM information_schema.key_column_usage k JOIN information_schema.referential_constraints r "
        "ON r.constraint_schema = k.constraint_schema AND r.constraint_name = k.constraint_name "
        "WHERE k.table_schema = DATABASE()"
    )
    rules = {(r["t"], r["c"]): (r["rt"], r["rc"], r["rule"]) for r in rows}
    assert rules[("active_deployments", "previous_deployment_id")] == ("deployments", "id", "SET NULL")
    assert rules[("serves", "created_by")] == ("users", "user_id", "CASCADE")
    others = {k: v for k, v in rules.items() if k != ("active_deployments", "previous_deployment_id")}
    assert {rule for _, _, rule in others.values()} == {"CASCADE"}
    assert all(rc == ("user_id" if rt == "users" else "id") for rt, rc, _ in rules.values())
    await close_db()


async def test_schema_is_created_once(empty_db: DatabaseSettings) -> None:
    state = await init_db(empty_db)
    assert state is not None and (state.action, state.applied) == ("created", ("0001_initial",))
    await close_db()
    state = await init_db(empty_db)
    assert state is not None and state.action == "current"
    assert (await migrate()).action == "current"
    await close_db()


async def test_a_darwin_created_schema_is_adopted(empty_db: DatabaseSettings) -> None:
    await init_db(empty_db)
    await Environment.create(
        name="dev", env_configs={"domain_suffix": "", "cluster_name": "c", "security_group": "", "namespace": "ns"}
    )
    # Make it look as Darwin leaves it: no head_node_config column, no migration history.
    conn = Tortoise.get_connection("default")
    await conn.execute_script("ALTER TABLE workflow_serve_configs DROP COLUMN head_node_config")
    await conn.execute_script("DROP TABLE tortoise_migrations")
    await close_db()

    state = await init_db(empty_db)
    assert state is not None and (state.action, state.applied) == ("adopted", ("0001_initial",))
    assert await count("environments") == 1  # data untouched
    assert await WorkflowServeInfraConfig.all().count() == 0  # the added column is usable
    await close_db()
    state = await init_db(empty_db)
    assert state is not None and state.action == "current"
    await close_db()


async def _darwin_made(settings: DatabaseSettings) -> None:
    """A database as Darwin ML Serve leaves it: its tables, no head_node_config, no history."""
    await init_db(settings)
    conn = Tortoise.get_connection("default")
    await conn.execute_script("ALTER TABLE workflow_serve_configs DROP COLUMN head_node_config")
    await conn.execute_script("DROP TABLE tortoise_migrations")
    await close_db()


async def _columns_and_tables() -> tuple[set[str], set[str]]:
    conn = Tortoise.get_connection("default")
    if conn.capabilities.dialect == "mysql":
        _, tables = await conn.execute_query(
            "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = DATABASE()"
        )
        _, columns = await conn.execute_query(
            "SELECT column_name AS name FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = 'workflow_serve_configs'"
        )
    else:
        _, tables = await conn.execute_query("SELECT name FROM sqlite_master WHERE type = 'table'")
        _, columns = await conn.execute_query('PRAGMA table_info("workflow_serve_configs")')
    return {str(r["name"]) for r in tables}, {str(r["name"]) for r in columns}


async def test_a_start_never_changes_a_darwin_schema_unless_told(empty_db: DatabaseSettings) -> None:
    await _darwin_made(empty_db)
    await init_db(empty_db, create_schema=False)
    before = await _columns_and_tables()
    assert (await inspect_schema()).action == "darwin"
    with pytest.raises(SchemaNotReady) as refused:
        await prepare_schema(create=True, migrate_on_start=False)
    assert "mlserve db migrate" in str(refused.value) and "MLSERVE_DB_MIGRATE_ON_START" in str(refused.value)
    statements = await migration_sql()
    assert statements[0] == "ALTER TABLE workflow_serve_configs ADD COLUMN head_node_config JSON NULL;"
    assert await _columns_and_tables() == before  # inspecting, refusing and printing wrote nothing
    state = await prepare_schema(create=True, migrate_on_start=True)
    assert (state.action, state.applied) == ("adopted", ("0001_initial",))
    assert "head_node_config" in (await _columns_and_tables())[1]
    assert (await inspect_schema()).action == "current"
    await close_db()


async def test_an_empty_database_is_created_at_start_only_when_allowed(empty_db: DatabaseSettings) -> None:
    await init_db(empty_db, create_schema=False)
    assert (await inspect_schema()).action == "absent"
    with pytest.raises(SchemaNotReady, match="MLSERVE_DB_CREATE_SCHEMA"):
        await prepare_schema(create=False, migrate_on_start=False)
    assert not set(table_names()) & (await _columns_and_tables())[0]
    assert (await prepare_schema(create=True, migrate_on_start=False)).action == "created"
    assert (await prepare_schema(create=False, migrate_on_start=False)).action == "current"
    assert await migration_sql() == []
    await close_db()


def test_mlserve_run_refuses_a_schema_to_migrate_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "darwin.sqlite3"
    asyncio.run(_darwin_made(DatabaseSettings.sqlite(path)))
    env = {"MLSERVE_DB_URL": "", "MLSERVE_DB_PATH": str(path), "MLSERVE_CLUSTER_NAME": "local"}
    env |= {"MLSERVE_LIVENESS_ENDPOINT": "off", "KUBECONFIG": str(tmp_path / "none")}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mlserve"), "run"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: not started: the schema was created by Darwin ML Serve"), result.stderr
    assert "Traceback" not in result.stderr


async def test_a_foreign_database_is_not_touched(empty_db: DatabaseSettings) -> None:
    await init_db(empty_db, create_schema=False)
    await Tortoise.get_connection("default").execute_script("CREATE TABLE users (x INT)")
    with pytest.raises(RuntimeError) as caught:
        await init_db(empty_db)
    assert "serves" in str(caught.value) and "neither empty nor" in str(caught.value)
    await close_db()


async def test_seed_is_idempotent(db: DatabaseSettings) -> None:
    first = await seed()
    assert first.created > 0
    counts = {table: await count(table) for table in table_names()}
    second = await seed()
    assert second.created == 0
    assert {table: await count(table) for table in table_names()} == counts
    assert counts["users"] == 2 and counts["environments"] == 2 and counts["serves"] == 2
    assert counts["artifacts"] == 3
    dev, prod = await Environment.get(name="dev"), await Environment.get(name="prod")
    assert (dev.is_protected, prod.is_protected) == (False, True)
    assert (dev.config.cluster_name, dev.config.namespace) == ("local", "mlserve-dev")
    assert prod.config.namespace == "mlserve-prod"
    for config in await first.serves["iris-classifier"].api_configs.all():
        assert config.config.min_replicas >= 1
    workflow = await first.serves["nightly-retrain"].workflow_configs.all()
    assert workflow[0].workers and workflow[0].head is not None


async def test_seeded_rows_take_deploys_by_the_default_user(db: DatabaseSettings) -> None:
    """The operator records deploys as MLSERVE_DEPLOY_USER, ``admin`` unless set."""
    await seed()
    assert await User.get_or_none(username=OperatorSettings.deploy_user) is not None
    assert await ensure_admin() is False


def _url(settings: DatabaseSettings) -> str:
    if settings.engine == "sqlite":
        return f"sqlite://{settings.path}"
    password = settings.password.get_secret_value() if settings.password else ""
    return f"mysql://{settings.username}:{quote(password, safe='')}@{settings.host}:{settings.port}/{settings.database}"


def test_cli_init_migrate_seed(empty_db: DatabaseSettings) -> None:
    runner = CliRunner()
    env: dict[str, Any] = {"MLSERVE_DB_URL": _url(empty_db)}
    results = [
        runner.invoke(cli, ["db", *args], env=env)
        for args in (["init"], ["init"], ["migrate"], ["seed-demo"], ["seed-demo", "--cluster-name", "other"])
    ]
    outputs = [r.output for r in results]
    assert [r.exit_code for r in results] == [0] * 5, outputs
    assert "schema created (0001_initial)" in outputs[0]
    assert "user 'admin' added" in outputs[0] and "admin" not in outputs[1]
    assert "up to date" in outputs[1] and "up to date" in outputs[2]
    assert "demo data added" in outputs[3]
    assert "nothing changed" in outputs[4]
    if empty_db.password is not None:
        assert all(empty_db.password.get_secret_value() not in o for o in outputs)


@pytest.mark.mariadb
async def test_wrong_password_is_reported_without_the_password(mariadb_database: DatabaseSettings) -> None:
    wrong = "Wr0ng-" + "p4ss-phrase"
    bad = mariadb_database.model_copy(update={"password": SecretStr(wrong)})
    with pytest.raises(DatabaseUnavailable) as caught:
        await init_db(bad)
    text = str(caught.value)
    assert "Access denied" in text
    assert "***" in text
    assert wrong not in text and wrong[: len(wrong) // 3] not in text


async def test_reads_may_use_the_replica(empty_db: DatabaseSettings) -> None:
    if empty_db.engine == "sqlite":
        await init_db(empty_db)
        assert read_connection() is Tortoise.get_connection("default")
    else:
        # The same server stands in for the replica.
        await init_db(empty_db.model_copy(update={"replica_host": "localhost"}))
        assert read_connection() is Tortoise.get_connection("replica")
    await seed()
    _, rows = await read_connection().execute_query("SELECT COUNT(*) AS n FROM serves")
    assert rows[0]["n"] == 2
    await close_db()

"""``mlserve db``: create, upgrade and fill the database.

    mlserve db init        create the schema when the database is empty (or adopt one
                           Darwin ML Serve created), and the default user ``admin``
                           when missing; say what is pending otherwise
    mlserve db migrate     apply the pending schema migrations (``--sql``: print them instead)
    mlserve db seed-demo   add the demo user, environments and serves (idempotent)

The database comes from ``MLSERVE_DB_URL``, a ``connection-<env>.conf`` file, Darwin's
``MYSQL_*`` variables, or the default SQLite file, in that order (see
``mlserve.models.settings``).
"""

from __future__ import annotations

import click

from mlserve.models.db import SchemaState, init_db, migrate, migration_sql
from mlserve.models.settings import DatabaseSettings

from .common import database_settings, run_with_database

__all__ = ["db"]


def _describe(state: SchemaState | None, settings: DatabaseSettings) -> str:
    where = settings.display_url
    if state is None:
        return f"{where}: connected"
    if state.action == "created":
        return f"{where}: schema created ({', '.join(state.applied)})"
    if state.action == "adopted":
        return f"{where}: adopted the existing Darwin ML Serve schema ({', '.join(state.applied)} recorded)"
    if state.action == "migrated":
        return f"{where}: applied {', '.join(state.applied)}"
    if state.action == "pending":
        return f"{where}: migrations pending ({', '.join(state.pending)}): run `mlserve db migrate`"
    return f"{where}: schema is up to date"


def _admin_created(created: bool, settings: DatabaseSettings) -> None:
    from mlserve.models.seed import ADMIN_USER

    if created:
        click.echo(f"{settings.display_url}: user {ADMIN_USER!r} added (the operator's default MLSERVE_DEPLOY_USER)")


@click.group()
def db() -> None:
    """Create, upgrade and fill the ML Serve database."""


@db.command("init")
def init_command() -> None:
    """Create the schema if the database is empty; adopt a Darwin-created one; add user admin."""
    from mlserve.models.seed import ensure_admin

    settings = database_settings()

    async def work() -> tuple[SchemaState | None, bool]:
        state = await init_db(settings, create_schema=True)
        if state is not None and state.action == "pending":
            return state, False  # the tables may not match this version yet
        return state, await ensure_admin()

    state, created = run_with_database(work, settings, connect=False)
    click.echo(_describe(state, settings))
    _admin_created(created, settings)


@db.command("migrate")
@click.option("--sql", "print_sql", is_flag=True, help="Print the statements it would run; change nothing.")
def migrate_command(print_sql: bool) -> None:
    """Apply pending migrations (creating the schema and user admin on an empty database)."""
    from mlserve.models.seed import ensure_admin

    settings = database_settings()
    if print_sql:
        statements = run_with_database(migration_sql, settings)
        click.echo("\n".join(statements) if statements else f"-- {settings.display_url}: nothing to migrate")
        return

    async def work() -> tuple[SchemaState, bool]:
        await init_db(settings, create_schema=False)
        state = await migrate()
        return state, state.action == "created" and await ensure_admin()

    state, created = run_with_database(work, settings, connect=False)
    click.echo(_describe(state, settings))
    _admin_created(created, settings)


@db.command("seed-demo")
@click.option(
    "--cluster-name",
    default="local",
    show_default=True,
    help="Cluster the demo environments are bound to (env_configs.cluster_name).",
)
def seed_demo_command(cluster_name: str) -> None:
    """Add the demo user, environments (dev, prod) and serves; a second run changes nothing."""
    from mlserve.models.seed import seed

    settings = database_settings()

    async def work() -> int:
        await init_db(settings, create_schema=True)
        return (await seed(cluster_name=cluster_name)).created

    created = run_with_database(work, settings, connect=False)
    if created:
        click.echo(f"{settings.display_url}: demo data added ({created} rows)")
    else:
        click.echo(f"{settings.display_url}: demo data already present, nothing changed")

"""``mlserve rollback SERVE --env ENV``: run the previous deployment's artifact again.

Writes the database only, as a deploy through Darwin would: a new ``deployments`` row for
the previous deployment's artifact (history is never rewritten). The operator's database
sync then updates the MLServe, and the MLServe's children run the new deployment. The
cluster is not needed; to roll back through the cluster instead, annotate the MLServe:
``kubectl annotate mls NAME mlserve.darwin.io/rollback=$(date +%s) --overwrite``.
"""

from __future__ import annotations

import asyncio

import click

__all__ = ["rollback"]


async def _rollback(serve: str, environment: str, user: str) -> str:
    from mlserve.models.db import close_db, init_db
    from mlserve.operator.reconcile.rollback import rollback_in_database

    await init_db()
    try:
        new, previous, artifact = await rollback_in_database(serve, environment, user)
    finally:
        await close_db()
    return (
        f"rolled back serve {serve} in {environment}: deployment {new.pk} runs artifact "
        f"{artifact.version} again (replacing deployment {previous.pk})"
    )


@click.command("rollback")
@click.argument("serve")
@click.option("--env", "environment", required=True, help="The environment (environments.name).")
@click.option(
    "--user",
    default="admin",
    show_default=True,
    envvar="MLSERVE_DEPLOY_USER",
    help="The users.username the new deployment is recorded as.",
)
def rollback(serve: str, environment: str, user: str) -> None:
    """Redeploy SERVE's previous artifact in ENV as a new deployment (database settings from
    MLSERVE_DB_URL or MYSQL_*)."""
    from mlserve.operator.reconcile.errors import InvalidInput

    try:
        message = asyncio.run(_rollback(serve, environment, user))
    except InvalidInput as exc:
        raise click.ClickException(exc.message) from None
    except ValueError as exc:  # settings errors name the variable
        raise click.ClickException(str(exc)) from None
    click.echo(message)

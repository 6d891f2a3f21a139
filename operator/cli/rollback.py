"""``mlserve rollback SERVE --env ENV``: run the previous deployment's artifact again.

Writes the database only, as a deploy through Darwin would: a new ``deployments`` row for
the previous deployment's artifact (history is never rewritten). The operator's database
sync then updates the MLServe, and the MLServe's children run the new deployment. The
cluster is not needed; to roll back through the cluster instead, annotate the MLServe:
``kubectl annotate mls NAME mlserve.darwin.io/rollback=$(date +%s) --overwrite``.
``--dry-run`` says what would be deployed and writes nothing.
"""

from __future__ import annotations

import click

from .common import database_settings, environment_option, run_with_database

__all__ = ["rollback"]


async def _rollback(serve: str, environment: str, user: str, dry_run: bool) -> str:
    from mlserve.operator.reconcile.errors import InvalidInput
    from mlserve.operator.reconcile.rollback import plan_rollback, rollback_in_database

    try:
        if dry_run:
            plan = await plan_rollback(serve, environment, user)
            return (
                f"would roll back serve {serve} in {environment}: a new deployment of artifact "
                f"{plan.artifact.version} (run by deployment {plan.previous.pk}), replacing deployment "
                f"{plan.active.pk}, recorded as {user}; nothing written"
            )
        new, previous, artifact = await rollback_in_database(serve, environment, user)
    except InvalidInput as exc:
        raise click.ClickException(exc.message) from None
    return (
        f"rolled back serve {serve} in {environment}: deployment {new.pk} runs artifact "
        f"{artifact.version} again (replacing deployment {previous.pk})"
    )


@click.command("rollback")
@click.argument("serve")
@environment_option
@click.option(
    "--user",
    default="admin",
    show_default=True,
    envvar="MLSERVE_DEPLOY_USER",
    help="The users.username the new deployment is recorded as.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be deployed; write nothing.")
def rollback(serve: str, environment: str, user: str, dry_run: bool) -> None:
    """Redeploy SERVE's previous artifact in ENV as a new deployment (database settings from
    MLSERVE_DB_URL or MYSQL_*)."""
    click.echo(run_with_database(lambda: _rollback(serve, environment, user, dry_run), database_settings()))

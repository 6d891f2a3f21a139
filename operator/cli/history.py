"""``mlserve history SERVE --env ENV``: the deployments of a serve in an environment, newest first."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from .common import database_settings, emit, environment_option, output_option, run_with_database

__all__ = ["history"]

COLUMNS = {
    "id": "DEPLOYMENT",
    "artifact_version": "VERSION",
    "status": "STATUS",
    "created_at": "DEPLOYED",
    "ended_at": "ENDED",
    "created_by": "BY",
    "image": "IMAGE",
}


async def _history(serve_name: str, environment_name: str, limit: int) -> list[dict[str, Any]]:
    from mlserve.models import Environment, Serve
    from mlserve.models.reports import deployment_history

    serve = await Serve.get_or_none(name=serve_name)
    if serve is None:
        raise click.ClickException(f"serve {serve_name!r} is not in the database")
    environment = await Environment.get_or_none(name=environment_name)
    if environment is None:
        raise click.ClickException(f"environment {environment_name!r} is not in the database")
    return [dataclasses.asdict(record) for record in await deployment_history(serve, environment, limit)]


@click.command("history")
@click.argument("serve")
@environment_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="At most this many.")
@output_option
def history(serve: str, environment: str, limit: int, output: str) -> None:
    """SERVE's deployments in ENV, newest first (database settings from MLSERVE_DB_URL or MYSQL_*)."""
    rows = run_with_database(lambda: _history(serve, environment, limit), database_settings())
    emit(rows, COLUMNS, output)

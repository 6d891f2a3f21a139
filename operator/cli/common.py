"""What the commands share: the database session, the output formats and the exit codes.

Exit codes (documented in the README):

====  ==========================================================================
0     done
1     the command could not do what was asked (an unknown serve, nothing to roll back to)
2     wrong usage (an unknown option, a missing argument)
3     the database did not answer or refused the settings
4     the cluster did not answer (the database side, when asked for, is printed first)
====  ==========================================================================

No command prints a traceback for these: one line names what failed and what to check.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click
import yaml

from mlserve.models.db import close_db, init_db
from mlserve.models.errors import DatabaseUnavailable, ModelsError
from mlserve.models.settings import DatabaseSettings

__all__ = [
    "EXIT_CLUSTER",
    "EXIT_DATABASE",
    "ClusterDown",
    "DatabaseDown",
    "database_settings",
    "emit",
    "environment_option",
    "output_option",
    "run_with_database",
]

T = TypeVar("T")

EXIT_DATABASE = 3
EXIT_CLUSTER = 4

FORMATS = ("table", "json", "yaml")

output_option = click.option(
    "-o",
    "--output",
    "output",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for people; json or yaml for programs (the same fields, in full).",
)


environment_option = click.option("--env", "environment", required=True, help="The environment (environments.name).")
"""The ``--env ENV`` of the commands that act on one (serve, environment)."""


class DatabaseDown(click.ClickException):
    exit_code = EXIT_DATABASE


class ClusterDown(click.ClickException):
    exit_code = EXIT_CLUSTER


def database_settings() -> DatabaseSettings:
    """The database settings of the environment; a bad one is a one-line error naming it."""
    try:
        return DatabaseSettings.from_env()
    except ModelsError as exc:
        raise DatabaseDown(str(exc)) from None


def run_with_database(work: Callable[[], Awaitable[T]], settings: DatabaseSettings, *, connect: bool = True) -> T:
    """Connect without touching the schema (unless ``connect`` is False: ``work`` connects
    itself), run ``work``, close; the database's errors become one line and exit code 3."""

    async def main() -> T:
        try:
            if connect:
                await init_db(settings, create_schema=False)
            return await work()
        finally:
            await close_db()

    try:
        return asyncio.run(main())
    except DatabaseUnavailable as exc:
        raise DatabaseDown(str(exc)) from None
    except ModelsError as exc:
        raise click.ClickException(str(exc)) from None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def emit(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str], output: str) -> None:
    """Print ``rows``: a table of ``columns`` (key -> heading), or every field as JSON or YAML."""
    if output == "json":
        click.echo(json.dumps([_plain(row) for row in rows], indent=2))
        return
    if output == "yaml":
        click.echo(yaml.safe_dump([_plain(row) for row in rows], sort_keys=False), nl=False)
        return
    table = [list(columns.values()), *([_cell(row.get(key)) for key in columns] for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        click.echo("   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())

"""``mlserve run``: start the operator.

Settings come from ``MLSERVE_*`` (see :mod:`mlserve.operator.settings`) and are validated
before anything connects: a bad value stops the command with the variable's name and the
fix. With ``MLSERVE_PEERING_NAME`` set, replicas of the operator coordinate through kopf's
peering object of that name (its CRDs:
``deploy/helm/mlserve-operator/crds/kopf.dev_peerings.yaml``) and only one of them acts;
without it the operator runs standalone and must run as one replica.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from mlserve.operator.logfields import FieldsFilter

from .common import DatabaseDown

if TYPE_CHECKING:
    from mlserve.operator.settings import OperatorSettings

__all__ = ["run"]


class _Redact(logging.Filter):
    """Replaces secrets (the database password) in every log line, whatever logged it."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 3]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self._secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            text = str(record.exc_info[1])
            if any(secret in text for secret in self._secrets):
                record.exc_info = None
                record.msg = f"{record.msg} (exception text withheld: it contained a secret)"
        return True


def _secrets_of(database: object) -> list[str]:
    found: list[str] = []
    for attribute in ("password", "mysql_password"):
        value = getattr(database, attribute, None)
        if value is not None:
            reveal = getattr(value, "get_secret_value", None)
            found.append(str(reveal() if callable(reveal) else value))
    return found


def configure_logging(log_format: str, level: str, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(FieldsFilter())
    handler.addFilter(_Redact(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kopf's own per-event lines would drown the operator's; its warnings and errors stay.
    logging.getLogger("kopf").setLevel(logging.WARNING)
    for noisy in (
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "aiohttp.access",
        "tortoise",
        "asyncio",
        "aiomysql",
        "asyncmy",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _check_database(settings: OperatorSettings) -> None:
    """Before anything watches, log in once and check the schema. A login the server refuses
    (wrong password, no such user or database, TLS required) or a schema the settings do not
    let the operator use as it is (a migration pending) stops ``mlserve run`` with exit code 3
    and the reason, instead of a start-up retried forever. A server that does not answer is
    left to the operator's own retries (it may come up later); it checks the schema then."""
    from mlserve.models.db import close_db, init_db, prepare_schema
    from mlserve.models.errors import DatabaseUnavailable, LoginRefused, SchemaNotReady

    async def check() -> None:
        try:
            async with asyncio.timeout(settings.db_timeout):
                await init_db(settings.database, create_schema=False)
        except LoginRefused:
            raise
        except (DatabaseUnavailable, TimeoutError) as exc:
            logging.getLogger(__name__).warning(
                "the database did not answer at start-up (%s); the operator starts and retries", type(exc).__name__
            )
            return
        try:
            await prepare_schema(create=settings.db_create_schema, migrate_on_start=settings.db_migrate_on_start)
        finally:
            await close_db()

    try:
        asyncio.run(check())
    except LoginRefused as exc:
        raise DatabaseDown(f"not started: {exc}") from None
    except SchemaNotReady as exc:
        raise DatabaseDown(f"not started: {exc}") from None


@click.command("run")
def run() -> None:
    """Run the operator in the foreground (settings from MLSERVE_* variables)."""
    from mlserve.operator.settings import OperatorSettings, SettingsError

    try:
        settings = OperatorSettings.from_env()
    except SettingsError as exc:
        raise click.ClickException(f"invalid setting: {exc}") from None

    configure_logging(settings.log_format, settings.log_level, _secrets_of(settings.database))
    _check_database(settings)
    if settings.metrics_port:
        from mlserve.operator import metrics

        try:
            metrics.serve(settings.metrics_port)
        except OSError as exc:
            raise click.ClickException(
                f"MLSERVE_METRICS_PORT={settings.metrics_port}: cannot serve the metrics there "
                f"({exc.strerror}): choose a free port, or 0 for none"
            ) from None

    import kopf

    from mlserve.operator import handlers

    memo = kopf.Memo(state=handlers.OperatorState(settings))
    priority = settings.peering_priority
    if priority is None and settings.peering_name is not None:
        # kopf pauses every replica when two share a priority: make them differ.
        priority = secrets.randbelow(2**31)
    kopf.run(
        priority=priority,
        clusterwide=settings.clusterwide,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
        standalone=settings.peering_name is None,
        peering_name=settings.peering_name,
        memo=memo,
    )

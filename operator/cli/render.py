"""``mlserve render``: print the manifests an MLServe turns into, with no cluster needed.

    mlserve render -f mlserve.yaml                  the MLServe's children; the rest from the database
    mlserve render --serve S --env E [--version V]  the children of a deployment in the database
    mlserve render ... --context context.yaml       take the database's side from a file instead
    mlserve render ... --at 2025-01-02T03:00:00Z    a scheduled workflow's RayJob for that time

The database is reached through the ``MYSQL_*`` / ``MLSERVE_*`` settings of
``mlserve.models.settings``; render settings (ingress class, RayCronJob, ...) come from
``MLSERVE_*`` as for the operator. The output is multi-document YAML on stdout, owner
references excepted (the operator adds them).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import IO, Any

import click
import yaml
from pydantic import ValidationError

from mlserve.models.configs import invalid_config_from
from mlserve.models.errors import InvalidConfig
from mlserve.operator.render import dump_yaml, render_children
from mlserve.operator.settings import SettingsError, read_render_settings
from mlserve.operator.spec import MLServeSpec, ServeContext
from mlserve.operator.spec.schedule import next_time
from mlserve.operator.spec.times import parse_rfc3339

__all__ = ["render"]


def _read_mlserves(stream: IO[str]) -> list[dict[str, Any]]:
    try:
        documents = [d for d in yaml.safe_load_all(stream) if d]
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{stream.name}: not YAML: {exc}") from None
    mlserves = [d for d in documents if isinstance(d, dict) and d.get("kind") == "MLServe"]
    if not mlserves:
        raise click.ClickException(f"{stream.name}: no MLServe in it (kind: MLServe)")
    return mlserves


def _read_context(stream: IO[str]) -> ServeContext:
    try:
        return ServeContext.model_validate(yaml.safe_load(stream))
    except (yaml.YAMLError, ValueError) as exc:
        # The first problem by field, without pydantic's echo of the input (it may be a secret).
        problem = invalid_config_from(exc, "") if isinstance(exc, ValidationError) else exc
        raise click.ClickException(f"{stream.name}: not a serve context: {problem}") from None


async def _context_from_database(serve_name: str, environment_name: str, version: str | None) -> ServeContext:
    """Rows → ServeContext for the CLI: the named serve and environment, the given version
    (default: the active deployment's), through the operator's own ``load_context``."""
    from mlserve.models import ActiveDeployment, Artifact, Environment, Serve, current_deployment
    from mlserve.models.db import close_db, init_db
    from mlserve.models.settings import DatabaseSettings
    from mlserve.operator.reconcile.context import load_context
    from mlserve.operator.reconcile.errors import ReconcileError

    await init_db(DatabaseSettings.from_env())
    try:
        serve = await Serve.get_or_none(name=serve_name)
        if serve is None:
            raise click.ClickException(f"serve {serve_name!r} is not in the database (serves.name)")
        environment = await Environment.get_or_none(name=environment_name)
        if environment is None:
            raise click.ClickException(f"environment {environment_name!r} is not in the database (environments.name)")
        active = await current_deployment(serve, environment)
        if version is None:
            if active is None:
                raise click.ClickException(
                    f"serve {serve_name!r} has no active deployment in {environment_name!r}: give --version"
                )
            artifact = await Artifact.get(id=active.artifact_id)
        else:
            found = await Artifact.get_or_none(serve_id=serve.pk, version=version)
            if found is None:
                raise click.ClickException(f"serve {serve_name!r} has no artifact {version!r} (artifacts.version)")
            artifact = found
        deployment = active if active is not None and active.artifact_id == artifact.pk else None
        previous_id = None
        if deployment is not None:
            pointer = await ActiveDeployment.filter(deployment_id=deployment.pk).first()
            previous_id = pointer.previous_deployment_id if pointer is not None else None
        try:
            return await load_context(serve, environment, artifact, deployment, previous_id)
        except ReconcileError as exc:
            raise click.ClickException(exc.message) from None
    finally:
        await close_db()


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = parse_rfc3339(value)  # a time without a zone is UTC
    if parsed is None:
        raise click.BadParameter(f"{value!r} is not an ISO time, e.g. 2025-01-02T03:00:00Z", param_hint="--at")
    return parsed


def _next_run(ctx: ServeContext, spec: MLServeSpec) -> datetime | None:
    """The next scheduled time after now, for a scheduled workflow rendered per run."""
    schedule = spec.schedule or ctx.schedule
    if not schedule:
        return None
    return next_time(schedule, datetime.now(UTC))


@click.command()
@click.option("-f", "--filename", type=click.File("r"), help="An MLServe YAML file ('-' for stdin).")
@click.option("--serve", "serve_name", help="Serve name (serves.name), with --env.")
@click.option("--env", "environment_name", help="Environment name (environments.name), with --serve.")
@click.option("--version", "version", help="Artifact version (default: the active deployment's).")
@click.option(
    "--context",
    "context_file",
    type=click.File("r"),
    help="A YAML file with the database's side (a ServeContext) instead of the database.",
)
@click.option("--at", "at", help="Scheduled time of the RayJob to render (ISO, UTC by default; default: the next one).")
def render(
    filename: IO[str] | None,
    serve_name: str | None,
    environment_name: str | None,
    version: str | None,
    context_file: IO[str] | None,
    at: str | None,
) -> None:
    """Print the Kubernetes manifests of an MLServe (or of a deployment in the database)."""
    if (filename is None) == (serve_name is None and environment_name is None):
        raise click.UsageError("give either -f FILE or --serve S --env E")
    if filename is None and (serve_name is None or environment_name is None):
        raise click.UsageError("--serve and --env go together")
    if filename is not None and version is not None:
        raise click.UsageError("--version is for --serve/--env; with -f the MLServe's artifactVersion is used")
    try:
        settings = read_render_settings()
    except SettingsError as exc:
        raise click.ClickException(f"invalid setting: {exc}") from None
    context_from_file = _read_context(context_file) if context_file is not None else None
    scheduled_time = _parse_time(at)

    requests: list[tuple[MLServeSpec | None, str, str, str | None]] = []
    namespaces: dict[int, str] = {}
    if filename is not None:
        for body in _read_mlserves(filename):
            namespace = (body.get("metadata") or {}).get("namespace")
            try:
                parsed = MLServeSpec.from_resource(body)
            except InvalidConfig as exc:
                name = (body.get("metadata") or {}).get("name", "?")
                raise click.ClickException(f"MLServe {name}: {exc}") from None
            if namespace:
                namespaces[len(requests)] = namespace
            requests.append((parsed, parsed.serve, parsed.environment, parsed.artifact_version))
    else:
        assert serve_name is not None and environment_name is not None
        requests.append((None, serve_name, environment_name, version))

    manifests: list[dict[str, Any]] = []
    for index, (spec, serve, environment, wanted) in enumerate(requests):
        ctx = context_from_file or asyncio.run(_context_from_database(serve, environment, wanted))
        if index in namespaces and namespaces[index] != ctx.namespace:
            click.echo(
                f"# warning: the MLServe is in namespace {namespaces[index]!r} but environment "
                f"{ctx.environment.name!r} runs in {ctx.namespace!r}: the operator will not act on it",
                err=True,
            )
        if spec is None:
            spec = MLServeSpec.parse(
                {
                    "serve": ctx.serve,
                    "environment": ctx.environment.name,
                    "type": ctx.serve_type.value,
                    "artifactVersion": ctx.artifact_version,
                }
            )
        when = scheduled_time
        if when is None and not settings.ray_cron_job:
            when = _next_run(ctx, spec)
            if when is not None:
                click.echo(f"# rendering the scheduled run at {when.isoformat()} (choose with --at)", err=True)
        elif when is not None and not (spec.schedule or ctx.schedule):
            when = None
        try:
            manifests.extend(render_children(ctx, spec, settings, when))
        except InvalidConfig as exc:
            raise click.ClickException(f"{serve} in {environment}: {exc}") from None
    sys.stdout.write(dump_yaml(manifests))

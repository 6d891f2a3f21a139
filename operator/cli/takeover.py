"""``mlserve takeover SERVE --env ENV``: the serve's MLServe replaces the Helm release Darwin's
cluster manager installed (``<env>-<serve>``), with no moment without a ready pod.

The database says what runs (the pair's active deployment); the MLServe is the sync's, or made
here as the sync makes it; Darwin's release is removed only once the MLServe is Ready on that
deployment. Details: :mod:`mlserve.operator.dcm.takeover`, and the README's cutover steps.
"""

from __future__ import annotations

import click

from .common import ClusterDown, database_settings, environment_option, run_with_database

__all__ = ["takeover"]


async def _pair(serve: str, environment: str) -> object:
    from mlserve.models import Environment, Serve
    from mlserve.models.reports import active_pairs
    from mlserve.operator.dcm.takeover import Pair

    found_serve = await Serve.get_or_none(name=serve)
    if found_serve is None:
        raise click.ClickException(f"serve {serve!r} is not in the database")
    found_env = await Environment.get_or_none(name=environment)
    if found_env is None:
        raise click.ClickException(f"environment {environment!r} is not in the database")
    pairs = await active_pairs(found_serve, found_env)
    if not pairs:
        raise click.ClickException(
            f"serve {serve!r} has no active deployment in {environment!r}: nothing runs to take over"
        )
    (pair,) = pairs
    if not pair.namespace:
        raise click.ClickException(f"environment {environment!r} has no env_configs.namespace")
    return Pair(
        serve=serve,
        serve_type=str(found_serve.type),
        environment=environment,
        namespace=pair.namespace,
        deployment_id=pair.deployment.id,
        artifact_version=pair.deployment.artifact_version,
    )


@click.command("takeover")
@click.argument("serve")
@environment_option
@click.option(
    "--timeout",
    default="10m",
    show_default=True,
    help="How long to wait for the MLServe to be Ready before giving up (Darwin's release is then left as it was).",
)
@click.option(
    "--no-helm",
    is_flag=True,
    help="Remove the release's objects by their labels even when helm is on PATH.",
)
def takeover(serve: str, environment: str, timeout: str, no_helm: bool) -> None:
    """Replace Darwin's Helm release of SERVE in ENV by its MLServe: create the MLServe (when the
    database sync has not yet), wait until it is Ready, then remove the release (helm uninstall
    when helm is on PATH and knows it, else its objects by the release's labels)."""
    from lightkube import ApiError, Client
    from lightkube.core.exceptions import ConfigError

    from mlserve.models.errors import SettingsError
    from mlserve.models.settings import parse_duration
    from mlserve.operator.dcm.takeover import Pair, TakeoverFailed, helm_binary
    from mlserve.operator.dcm.takeover import takeover as run_takeover
    from mlserve.operator.spec.api import FIELD_MANAGER

    try:
        seconds = parse_duration("--timeout", timeout)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    pair = run_with_database(lambda: _pair(serve, environment), database_settings())
    assert isinstance(pair, Pair)
    try:
        client = Client(field_manager=FIELD_MANAGER)
        run_takeover(
            client,
            pair,
            timeout=seconds,
            field_manager=FIELD_MANAGER,
            helm=None if no_helm else helm_binary(),
            say=click.echo,
        )
    except TakeoverFailed as exc:
        raise click.ClickException(str(exc)) from None
    except ConfigError as exc:
        raise ClusterDown(f"no cluster to ask: {exc}; set KUBECONFIG") from None
    except ApiError as exc:
        raise ClusterDown(f"the cluster refused a request: {exc.status.message}") from None
    click.echo(f"serve {serve} in {environment} now runs from its MLServe only")

"""``mlserve dev``: the local control plane for development, the demo and the tests.

    mlserve dev build [--with-helm] [--with-kuberay]
                                              build (or reuse) the binaries (and fetch KubeRay's CRDs)
    mlserve dev kuberay-crds                  print the folder of KubeRay's CRDs (fetched once)
    mlserve dev cluster up [--nodes N]        start a cluster and return (it keeps running)
    mlserve dev cluster up --with-kuberay     ... with KubeRay's controller beside it
    mlserve dev cluster up --foreground       ... or stay until Ctrl-C, then stop it
    mlserve dev cluster kubeconfig            print the kubeconfig path
    mlserve dev cluster down                  stop it
    mlserve dev kind up [--offline/--online]  a kind cluster with MariaDB, KubeRay and the operator (Helm)
    mlserve dev kind down                     delete it

The cluster's state (certificates, etcd data, logs in ``logs/``, kubeconfig) lives in
``--state-dir``, by default ``$MLSERVE_DEV_STATE_DIR`` or ``.mlserve/dev-cluster`` under
the current folder; each ``up`` starts from an empty one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from mlserve.operator.dev.cluster import (
    DevClusterError,
    LocalCluster,
    ensure_binaries,
    kuberay_crd_dir,
    names,
    running_pids,
    stop_recorded,
)


def _default_state_dir() -> Path:
    return Path(os.environ.get(names.ENV_STATE_DIR) or names.DEFAULT_STATE_DIR)


_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=_default_state_dir,
    show_default=f"${names.ENV_STATE_DIR} or {names.DEFAULT_STATE_DIR}",
    help="Folder of the cluster's certificates, data, logs and kubeconfig.",
)


@click.group()
def dev() -> None:
    """A local Kubernetes control plane (etcd, kube-apiserver, controller manager, scheduler, kwok)."""


@dev.command()
@click.option("--with-helm", is_flag=True, help="Also build helm (needed by the chart's tests).")
@click.option(
    "--with-kuberay",
    is_flag=True,
    help="Also build KubeRay's controller, kuberay-operator (needed by the RayJob tests).",
)
@click.option("--force", is_flag=True, help="Rebuild even when the cached binaries are current.")
def build(with_helm: bool, with_kuberay: bool, force: bool) -> None:
    """Build the binaries from Go modules, or reuse the cached ones; print their folder."""
    try:
        binaries = ensure_binaries(with_helm=with_helm, with_kuberay=with_kuberay, force=force)
        crds = kuberay_crd_dir()
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"KubeRay's CRDs in {crds}", err=True)
    click.echo(binaries.folder)


@dev.command("kuberay-crds")
def kuberay_crds() -> None:
    """Print the folder of KubeRay's CRD files: $MLSERVE_KUBERAY_CRDS, else KubeRay's operator
    module at the version of deploy/local-cluster/versions.json, downloaded once into Go's
    module cache."""
    try:
        click.echo(kuberay_crd_dir())
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from exc


@dev.group()
def cluster() -> None:
    """Start, stop and reach the local cluster."""


@cluster.command()
@click.option("--nodes", type=click.IntRange(min=0), default=1, show_default=True, help="Fake nodes run by kwok.")
@_state_dir_option
@click.option("--foreground", is_flag=True, help="Stay until Ctrl-C or SIGTERM, then stop the cluster.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for all-ready.")
@click.option(
    "--with-kuberay",
    is_flag=True,
    help="Also run KubeRay's controller (its CRDs installed), watching every namespace; built first when missing.",
)
def up(nodes: int, state_dir: Path, foreground: bool, timeout: float, with_kuberay: bool) -> None:
    """Start a cluster and wait until it is ready."""
    try:
        binaries = ensure_binaries(with_kuberay=with_kuberay)
        local = LocalCluster(
            binaries,
            nodes=nodes,
            state_dir=state_dir,
            detach=not foreground,
            start_timeout=timeout,
            kuberay=with_kuberay,
            kuberay_crds=kuberay_crd_dir() if with_kuberay else None,
        )
        handle = local.start()
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"cluster ready in {local.started_in:.1f} s at {handle.server} with {nodes} node(s)", err=True)
    click.echo(f"logs in {local.state_dir}/logs; use it with:", err=True)
    click.echo(f"export KUBECONFIG={handle.kubeconfig}")
    if not foreground:
        click.echo("stop it with: mlserve dev cluster down" + _state_dir_suffix(state_dir), err=True)
        return
    try:
        while True:
            for process in local.processes.values():
                process.check()
            time.sleep(1)
    except KeyboardInterrupt:
        click.echo("stopping the cluster", err=True)
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        local.stop()


@cluster.command()
@_state_dir_option
def down(state_dir: Path) -> None:
    """Stop the cluster started with `up`."""
    stopped = stop_recorded(state_dir)
    if stopped:
        click.echo(f"stopped {', '.join(stopped)}", err=True)
    else:
        click.echo(f"no cluster running from {state_dir}", err=True)


@cluster.command()
@_state_dir_option
def kubeconfig(state_dir: Path) -> None:
    """Print the path of the running cluster's kubeconfig."""
    if not running_pids(state_dir):
        raise click.ClickException(f"no cluster running from {state_dir}: start one with `mlserve dev cluster up`")
    click.echo((state_dir / names.KUBECONFIG_FILE).resolve())


def _state_dir_suffix(state_dir: Path) -> str:
    return "" if state_dir == _default_state_dir() else f" --state-dir {state_dir}"


@dev.group("kind")
def kind_group() -> None:
    """A kind cluster with MariaDB, KubeRay's controller and the operator installed by its Helm chart
    (the end-to-end suite's)."""


_kind_state_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: Path(os.environ.get("MLSERVE_KIND_STATE_DIR") or ".mlserve/kind"),
    show_default="$MLSERVE_KIND_STATE_DIR or .mlserve/kind",
    help="Folder of the cluster's kubeconfig, database passwords, build contexts and timings.",
)


@kind_group.command("up")
@_kind_state_option
@click.option(
    "--offline/--online",
    default=None,
    help="Build the node image here (offline) or use kind's (online). Default: $MLSERVE_KIND_OFFLINE, "
    "else online when kind's node image can be pulled.",
)
def kind_up(state_dir: Path, offline: bool | None) -> None:
    """Build (or reuse) the images, create the cluster, install MariaDB, KubeRay and the operator.

    Prints the environment the suite under tests/kind needs, as `export` lines."""
    from mlserve.operator.dev.kind import e2e
    from mlserve.operator.dev.kind import names as kind_names

    try:
        choice = offline if offline is not None else e2e.offline_choice(os.environ.get(kind_names.ENV_OFFLINE))
        env = e2e.up(state_dir, offline=choice)
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(e2e.summary(env.steps), err=True)
    for key, value in env.test_env().items():
        click.echo(f"export {key}={value}")


@kind_group.command("down")
@_kind_state_option
@click.option("--keep-docker", is_flag=True, help="Leave a Docker daemon started by `up` running.")
@click.option(
    "--export-logs",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="First save kind's logs of the node (kubelet, containerd, every pod's) in this folder.",
)
def kind_down(state_dir: Path, keep_docker: bool, export_logs: Path | None) -> None:
    """Delete the cluster, and stop the Docker daemon `up` started (if it did)."""
    from mlserve.operator.dev.kind import e2e

    try:
        done = e2e.down(state_dir, stop_docker=not keep_docker, export_logs=export_logs)
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("; ".join(done) or "nothing to do", err=True)

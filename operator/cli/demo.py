"""``mlserve demo``: the README's first command (the logic is in :mod:`mlserve.operator.dev.demo`)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["demo"]


@click.command("demo")
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the cluster and the operator running at the end (stop them with --down).",
)
@click.option(
    "--down",
    is_flag=True,
    help="Stop the cluster and the operator that an earlier `mlserve demo --keep` left running.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".mlserve/demo"),
    show_default=True,
    help="Where the cluster's state, the database, the MLServe files and the logs go (wiped first).",
)
@click.option("--nodes", type=click.IntRange(min=1), default=2, show_default=True, help="Fake nodes (kwok).")
@click.option(
    "--timeout", type=float, default=90.0, show_default=True, help="Longest wait for one thing to be ready, in seconds."
)
def demo(keep: bool, down: bool, work_dir: Path, nodes: int, timeout: float) -> None:
    """Run the whole flow on this machine: a local cluster, a SQLite database with demo data,
    the operator, an API and a workflow serve deployed with kubectl, a deploy through the
    database, a rollback and the history. Needs no settings; with a warm build cache it takes
    about a minute."""
    from mlserve.operator.dev.demo import DemoError, DemoOptions, run_demo, stop_kept_demo

    if down:
        if not stop_kept_demo(work_dir, echo=click.echo):
            click.echo(f"nothing of a demo is running from {work_dir}")
        return
    try:
        run_demo(DemoOptions(keep=keep, work_dir=work_dir, nodes=nodes, timeout=timeout, echo=click.echo))
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None

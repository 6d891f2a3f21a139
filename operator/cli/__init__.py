"""The ``mlserve`` command line.

Each command group lives in its own module and is imported only when it is used, so
``mlserve render`` does not pay for the operator's imports and ``mlserve --help``
stays fast.
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute", relative to this package
_COMMANDS = {
    "db": "db:db",
    "render": "render:render",
    "dev": "dev:dev",
    "run": "run:run",
    "demo": "demo:demo",
    "rollback": "rollback:rollback",
    "status": "status:status",
    "history": "history:history",
    "takeover": "takeover:takeover",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in _COMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = _COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module_name}":
                return None  # command not built yet
            raise
        command = getattr(module, attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module.__name__}.{attribute} is not a click command")
        return command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="mlserve-operator")
def main() -> None:
    """mlserve: keep Kubernetes clusters in step with the Darwin ML Serve database."""

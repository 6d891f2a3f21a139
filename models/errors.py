"""Exceptions raised by ``mlserve.models``.

Each message names the field, the rule it broke and how to fix it, so it can be shown
to a user as is (a condition message, a CLI error).
"""

from __future__ import annotations

__all__ = [
    "ActiveDeploymentConflict",
    "DatabaseUnavailable",
    "InvalidConfig",
    "LoginRefused",
    "ModelsError",
    "SchemaNotReady",
    "SettingsError",
]


class ModelsError(Exception):
    """Base class of the errors of this package."""


class InvalidConfig(ModelsError, ValueError):
    """A JSON column (or another input) does not have the shape the operator needs.

    ``field`` is the dotted path of the first offending value, e.g.
    ``env_configs.namespace`` or ``worker_node_config.0.min_pods``; ``problems`` holds
    every ``(field, message)`` pair found, in order.
    """

    def __init__(self, field: str, message: str, *, problems: tuple[tuple[str, str], ...] = ()) -> None:
        self.field = field
        self.message = message
        self.problems = problems or ((field, message),)
        text = f"{field}: {message}" if len(self.problems) == 1 else "; ".join(f"{f}: {m}" for f, m in self.problems)
        super().__init__(text)


class SettingsError(InvalidConfig):
    """A setting (an environment variable, or a key of a connection file) has a value the
    operator cannot use. The one error of every settings reader: the message names the
    variable and the fix, never the value of a secret.

    ``variable`` is the setting's name (``MLSERVE_SYNC_INTERVAL``, ``MYSQL_PORT``,
    ``connection-prod.conf.password``); it is also the :attr:`InvalidConfig.field`.
    """

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(variable, message)
        self.variable = variable


class ActiveDeploymentConflict(ModelsError):
    """More than one ACTIVE deployment exists for a (serve, environment) pair.

    Raised instead of guessing which one the operator should trust; the fix is to end
    all but one of the rows named in the message.
    """

    def __init__(self, serve: str, environment: str, deployment_ids: list[int]) -> None:
        self.serve = serve
        self.environment = environment
        self.deployment_ids = deployment_ids
        super().__init__(
            f"active_deployments: serve {serve!r} has {len(deployment_ids)} active deployments in "
            f"environment {environment!r} (ids {deployment_ids}); the rule is at most one per "
            "(serve, environment): end all but one of them"
        )


class DatabaseUnavailable(ModelsError):
    """The database cannot be used: down, unreachable, timed out, or it refused the login.

    A fault of the server or the network, never of the data (a missing row or a broken
    constraint is not "unavailable"). The message names the server in its masked form and
    never holds the password. This is the one definition; the reconcile reports it as a
    retried failure with reason ``DatabaseUnavailable`` (``reconcile.deploy.as_unavailable``).
    """


class SchemaNotReady(ModelsError):
    """The database's schema is not one the operator may use as it is, and the settings do not
    allow it to change it at start: the message says which command (and which grants) fix it."""


class LoginRefused(DatabaseUnavailable):
    """The server answered and refused the login: a wrong user or password, a user without
    rights on the database, a database that does not exist, or a server that requires TLS.

    A setting to fix, not a fault that goes away by waiting: ``mlserve run`` stops with it at
    start-up (exit status 1). Once running, it is still retried as the database being
    unavailable (a password being rotated). The message never holds the password.
    """

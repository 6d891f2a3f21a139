"""A serve's container environment, as Darwin's runtime expects it.

Darwin's deployer (its Helm values) gives every serve's container:

- ``ENV``: the environment's name;
- ``SERVICE_NAME``: the serve's service name, ``<serve>-<environment>``, or ``<serve>`` in a
  protected environment (the name Darwin gives the release's objects);
- the deployment's ``environment_variables``, each name upper-cased, each JSON scalar as text
  (``{"port": 8000}`` gives ``PORT=8000``); a variable named ``env`` or ``service_name``
  replaces the injected one, as in Darwin.

On top of these, the MLServe's ``spec.env`` (names as written) wins over both.

A value ``secret://NAME/KEY`` is a reference to key ``KEY`` of the Secret ``NAME`` in the
serve's namespace: it becomes ``valueFrom.secretKeyRef`` and the value itself never
passes through the operator. Every name must be one Kubernetes accepts on every supported
version (``[-._a-zA-Z][-._a-zA-Z0-9]*``). Every error names the variable, never its value.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from mlserve.models.errors import InvalidConfig

__all__ = [
    "ENV_NAME_VARIABLE",
    "SECRET_SCHEME",
    "SERVICE_NAME_VARIABLE",
    "EnvVar",
    "SecretRef",
    "container_environment",
    "service_name",
]

ENV_NAME_VARIABLE = "ENV"
SERVICE_NAME_VARIABLE = "SERVICE_NAME"
SECRET_SCHEME = "secret://"

# Kubernetes' C_IDENTIFIER-like rule for env var names, the one every version accepts
# (newer API servers accept more; a serve should render the same on every cluster).
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_DB_FIELD = "environment_variables"
_SPEC_FIELD = "spec.env"


class SecretRef(BaseModel):
    """Key ``key`` of the Secret ``name`` in the serve's namespace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    key: str


class EnvVar(BaseModel):
    """One variable of a container: a plain value, or a reference to a Secret's key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    value: str = ""
    secret: SecretRef | None = None


def service_name(serve: str, environment: str, protected: bool) -> str:
    """Darwin's ``SERVICE_NAME``: ``<serve>-<environment>``, or ``<serve>`` when protected."""
    return serve if protected else f"{serve}-{environment}"


def _secret_ref(field: str, value: str) -> SecretRef | None:
    """The reference a ``secret://NAME/KEY`` value makes (None for a plain value)."""
    if not value.startswith(SECRET_SCHEME):
        return None
    name, slash, key = value[len(SECRET_SCHEME) :].partition("/")
    if not slash or not name or not key:
        raise InvalidConfig(
            field,
            "is a secret reference without a Secret name and key: write secret://NAME/KEY, e.g. "
            "secret://fraud-score-db/password",
        )
    if len(name) > 253 or not _SECRET_NAME.match(name):
        raise InvalidConfig(
            field,
            "is a secret reference whose Secret name is not a Kubernetes name: use lower-case "
            "letters, digits, '-' and '.' (secret://NAME/KEY)",
        )
    if len(key) > 253 or not _SECRET_KEY.match(key):
        raise InvalidConfig(
            field,
            "is a secret reference whose key is not a Secret key: use letters, digits, '-', '_' "
            "and '.' (secret://NAME/KEY)",
        )
    return SecretRef(name=name, key=key)


def _check_name(field: str, name: str) -> None:
    if not _ENV_NAME.match(name):
        raise InvalidConfig(
            field,
            "is not a name Kubernetes accepts for an environment variable: start with a letter, "
            "'_', '-' or '.', and use only letters, digits, '_', '-' and '.'",
        )


def container_environment(
    *,
    serve: str,
    environment: str,
    protected: bool,
    database: Mapping[str, str],
    spec: Mapping[str, str] | None = None,
) -> tuple[EnvVar, ...]:
    """The container's variables, sorted by name: the injected ``ENV`` and ``SERVICE_NAME``,
    the deployment's ``environment_variables`` (``database``, names upper-cased) over them, and
    ``spec.env`` over all. Raises :class:`InvalidConfig` naming the variable."""
    values: dict[str, tuple[str, str]] = {
        ENV_NAME_VARIABLE: ("injected", environment),
        SERVICE_NAME_VARIABLE: ("injected", service_name(serve, environment, protected)),
    }
    spelled: dict[str, str] = {}
    for stored, value in database.items():
        name = stored.upper()
        field = f"{_DB_FIELD}.{stored}"
        if name in spelled:
            raise InvalidConfig(
                field,
                f"and {_DB_FIELD}.{spelled[name]} both become the variable {name} (names are "
                "upper-cased, as Darwin does): keep one of them",
            )
        spelled[name] = stored
        _check_name(field, name)
        values[name] = (field, value)
    for name, value in (spec or {}).items():
        field = f"{_SPEC_FIELD}.{name}"
        _check_name(field, name)
        values[name] = (field, value)
    result = []
    for name, (field, value) in sorted(values.items()):
        secret = _secret_ref(field, value)
        result.append(EnvVar(name=name, secret=secret) if secret else EnvVar(name=name, value=value))
    return tuple(result)

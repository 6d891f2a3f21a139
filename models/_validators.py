"""Write-time checks attached to model fields.

Tortoise runs a field's validators when it converts a value for the database, before
any SQL is sent, so a rejected value leaves nothing written. Each check raises
:class:`~mlserve.models.errors.InvalidConfig` naming the column, the rule and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from .configs import (
    EnvConfig,
    FastAPIConfig,
    HeadNodeConfig,
    parse_environment_variables,
    parse_worker_node_configs,
)
from .errors import InvalidConfig


class EnumValue:
    """Accept only the values of ``enum_type`` (members or their exact text)."""

    def __init__(self, enum_type: type[Enum], column: str) -> None:
        self.enum_type = enum_type
        self.column = column

    def __call__(self, value: Any) -> None:
        allowed = [str(member.value) for member in self.enum_type]
        if isinstance(value, self.enum_type) or value in allowed:
            return
        raise InvalidConfig(
            self.column,
            f"{value!r} is not a valid {self.enum_type.__name__}; the rule is one of "
            f"{', '.join(repr(a) for a in allowed)}: use one of them",
        )


class JSONShape:
    """Validate a JSON column through its typed view (``None`` allowed when nullable)."""

    def __init__(self, parse: Callable[[Any, str], object], column: str, *, nullable: bool) -> None:
        self.parse = parse
        self.column = column
        self.nullable = nullable

    def __call__(self, value: Any) -> None:
        if value is None and self.nullable:
            return
        self.parse(value, self.column)


def env_configs() -> JSONShape:
    return JSONShape(EnvConfig.parse, "env_configs", nullable=False)


def fast_api_config() -> JSONShape:
    return JSONShape(FastAPIConfig.parse, "fast_api_config", nullable=True)


def worker_node_config() -> JSONShape:
    return JSONShape(parse_worker_node_configs, "worker_node_config", nullable=False)


def head_node_config() -> JSONShape:
    return JSONShape(HeadNodeConfig.parse, "head_node_config", nullable=True)


def environment_variables() -> JSONShape:
    return JSONShape(parse_environment_variables, "environment_variables", nullable=True)

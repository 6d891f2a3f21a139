"""Typed, validated views of Darwin ML Serve's JSON columns.

The database keeps these as free-form JSON; the operator reads them through these frozen
models so a wrong value is reported once, with the field, the rule and the fix, instead
of surfacing later as a ``KeyError`` in a renderer. Every parse error is raised as
:class:`~mlserve.models.errors.InvalidConfig`.

Keys that Darwin adds in the future are kept (``model_extra``) and otherwise ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .enums import NodeCapacityType
from .errors import InvalidConfig

__all__ = [
    "MAX_CORES",
    "MAX_MEMORY_GB",
    "MAX_REPLICAS",
    "MIN_CORES",
    "EnvConfig",
    "FastAPIConfig",
    "HeadNodeConfig",
    "InvalidConfig",
    "WorkerNodeConfig",
    "env_value_text",
    "lenient_json_loads",
    "parse_environment_variables",
    "parse_worker_node_configs",
]

# The bounds of the MLServe CRD (crds/mlserve.darwin.io_mlserves.yaml) for the same numbers:
# a value the CRD refuses in an MLServe is refused in the database too.
MIN_CORES = 0.1
MAX_CORES = 128.0
MAX_MEMORY_GB = 1024
MAX_REPLICAS = 1000

# Kubernetes namespace names are DNS-1123 labels.
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# What to tell the user for pydantic's error types; the rest fall back to pydantic's text.
_FIXES: dict[str, str] = {
    "missing": "it is required: add it",
    "string_type": "must be a JSON string: quote the value",
    "int_type": "must be a whole number (a JSON integer, not a string or a fraction)",
    "float_type": "must be a number (a JSON number, not a string)",
    "bool_type": "must be true or false",
    "dict_type": "must be a JSON object",
    "list_type": "must be a JSON list",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
}
_BOUND_RULES: dict[str, str] = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
}


def _describe(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    given = error.get("input")
    if kind in _BOUND_RULES:
        rule = _BOUND_RULES[kind].format(**(error.get("ctx") or {}))
        return f"{rule}, got {given!r}: set a value that satisfies it"
    if kind in _FIXES:
        if kind == "missing":
            return _FIXES[kind]
        return f"{_FIXES[kind]}, got {type(given).__name__} {given!r}"
    message = str(error.get("msg", "invalid value"))
    return message.removeprefix("Value error, ")


def _path(prefix: str, loc: tuple[Any, ...]) -> str:
    parts = [prefix] if prefix else []
    parts.extend(str(p) for p in loc)
    return ".".join(parts) or prefix


def invalid_config_from(exc: ValidationError, field: str) -> InvalidConfig:
    """Turn a pydantic ``ValidationError`` into one :class:`InvalidConfig`."""
    problems = tuple((_path(field, tuple(e["loc"])), _describe(e)) for e in exc.errors())
    first_field, first_message = problems[0]
    return InvalidConfig(first_field, first_message, problems=problems)


def lenient_json_loads(text: str | bytes) -> Any:
    """The decoder of Darwin's JSON columns: the decoded value, or the text as it is when it is
    not JSON. Loading a row never fails on one column (the ORM would raise for the whole query,
    echoing the column's content); the typed view of the column then reports it, naming the
    column and never its content."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _capacity(value: Any) -> NodeCapacityType:
    try:
        return NodeCapacityType.parse(value)
    except InvalidConfig as exc:
        raise ValueError(exc.message) from None


# Darwin writes four spellings; all normalise to a NodeCapacityType member.
CapacityType = Annotated[NodeCapacityType, BeforeValidator(_capacity)]


def _split_csv(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(part.strip() for part in value.split(",") if part.strip())


class _JSONView(BaseModel):
    """Common behaviour: frozen, strict types, unknown keys kept."""

    model_config = ConfigDict(frozen=True, strict=True, extra="allow")

    column: ClassVar[str] = ""

    @classmethod
    def parse(cls, raw: Any, field: str | None = None) -> Self:
        """Validate ``raw`` (the decoded JSON, or a JSON string) into this model.

        ``field`` is the column name used as the prefix of error paths.
        """
        name = field if field is not None else cls.column
        if isinstance(raw, cls):
            return raw
        if raw is None:
            raise InvalidConfig(name, "is empty (NULL): set it to a JSON object")
        if isinstance(raw, str | bytes):
            try:
                return cls.model_validate_json(raw)
            except ValidationError as exc:
                raise invalid_config_from(exc, name) from None
        if not isinstance(raw, Mapping):
            raise InvalidConfig(name, f"must be a JSON object, got {type(raw).__name__}: store an object with keys")
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            raise invalid_config_from(exc, name) from None


class EnvConfig(_JSONView):
    """``environments.env_configs``: where and how an environment's serves run."""

    column: ClassVar[str] = "env_configs"

    domain_suffix: str
    """Appended to ``<serve>-<environment>`` to form the host name, e.g. ``.example.com``."""
    cluster_name: str
    """The Kubernetes cluster this environment deploys to; an operator serves its own only."""
    security_group: str
    """Comma-separated security group ids (see :attr:`security_groups`)."""
    subnets: str | None = None
    """Optional comma-separated subnet ids (see :attr:`subnet_list`)."""
    ft_redis_url: str = ""
    workflow_url: str = ""
    namespace: str
    """Kubernetes namespace the environment's serves live in (a DNS-1123 label)."""

    @field_validator("namespace")
    @classmethod
    def _namespace_is_label(cls, value: str) -> str:
        if len(value) > 63 or not _DNS1123_LABEL.match(value):
            raise ValueError(
                f"{value!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
                "starting and ending with a letter or digit, at most 63 characters): "
                "use a valid Kubernetes namespace name"
            )
        return value

    @property
    def security_groups(self) -> tuple[str, ...]:
        return _split_csv(self.security_group)

    @property
    def subnet_list(self) -> tuple[str, ...]:
        return _split_csv(self.subnets)


def _at_least_min(value: int, info: ValidationInfo) -> int:
    """Validator of a ``max_<x>`` field: not below the ``min_<x>`` field declared before it."""
    high = str(info.field_name)
    low_name = "min_" + high.removeprefix("max_")
    low = info.data.get(low_name)
    if isinstance(low, int) and value < low:
        raise ValueError(
            f"{high} ({value}) is below {low_name} ({low}): the rule is "
            f"{low_name} <= {high}; raise {high} or lower {low_name}"
        )
    return value


class FastAPIConfig(_JSONView):
    """``api_serve_configs.fast_api_config``: size and scaling of an API serve."""

    column: ClassVar[str] = "fast_api_config"

    min_replicas: int = Field(ge=1, le=MAX_REPLICAS)
    max_replicas: int = Field(ge=1, le=MAX_REPLICAS)
    cores: float = Field(ge=MIN_CORES, le=MAX_CORES, allow_inf_nan=False)
    """CPUs per pod (requests = limits)."""
    memory: int = Field(ge=1, le=MAX_MEMORY_GB)
    """Whole GB per pod (requests = limits)."""
    node_capacity_type: CapacityType = NodeCapacityType.ON_DEMAND

    _replica_bounds = field_validator("max_replicas")(_at_least_min)


class WorkerNodeConfig(_JSONView):
    """One entry of ``workflow_serve_configs.worker_node_config``: a Ray worker group."""

    column: ClassVar[str] = "worker_node_config"

    cores_per_pods: float = Field(ge=MIN_CORES, le=MAX_CORES, allow_inf_nan=False)
    memory_per_pods: int = Field(ge=1, le=MAX_MEMORY_GB)
    min_pods: int = Field(ge=0, le=MAX_REPLICAS)
    max_pods: int = Field(ge=1, le=MAX_REPLICAS)
    node_capacity_type: CapacityType = NodeCapacityType.ON_DEMAND

    _pod_bounds = field_validator("max_pods")(_at_least_min)


class HeadNodeConfig(_JSONView):
    """``workflow_serve_configs.head_node_config``: the Ray head pod."""

    column: ClassVar[str] = "head_node_config"

    cores: float = Field(ge=MIN_CORES, le=MAX_CORES, allow_inf_nan=False)
    memory: int = Field(ge=1, le=MAX_MEMORY_GB)
    node_capacity_type: CapacityType = NodeCapacityType.ON_DEMAND


def parse_worker_node_configs(raw: Any, field: str = "worker_node_config") -> tuple[WorkerNodeConfig, ...]:
    """Validate the worker list; the error path names the index, e.g. ``worker_node_config.1.min_pods``."""
    if raw is None:
        raise InvalidConfig(field, "is empty (NULL): set it to a JSON list of worker groups")
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise InvalidConfig(field, f"is not valid JSON ({exc}): store a JSON list") from None
    if isinstance(raw, Mapping) or not isinstance(raw, list | tuple):
        raise InvalidConfig(field, f"must be a JSON list of worker groups, got {type(raw).__name__}: wrap it in [...]")
    if not raw:
        raise InvalidConfig(field, "is an empty list: add at least one worker group")
    return tuple(WorkerNodeConfig.parse(item, f"{field}.{index}") for index, item in enumerate(raw))


def env_value_text(value: Any) -> str | None:
    """A JSON scalar as the text a container sees, as Darwin's chart renders it (Helm's
    ``quote``): a string as it is, ``8000`` as ``"8000"``, ``0.5`` as ``"0.5"``, ``true`` as
    ``"true"``, ``null`` as ``""``. None for a value that is not a scalar (an object or a list).

    Whole numbers keep all their digits (Helm would print a large one in exponent form, a
    quirk not kept); other numbers use Python's shortest round-trip form (``1e+20``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None  # not JSON
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    return None


def parse_environment_variables(raw: Any, field: str = "environment_variables") -> dict[str, str]:
    """Validate a container environment: a JSON object of names to JSON scalars (NULL means
    none). Values become text as Darwin renders them (:func:`env_value_text`).

    Names are returned as stored; the renderers' rules (upper-casing, Kubernetes' name rule)
    are applied where the environment is put together (``mlserve.operator.spec.env``).
    A message names the variable and the type of a wrong value, never the value: variables
    carry passwords and tokens.
    """
    if raw is None:
        return {}
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise InvalidConfig(field, "is not valid JSON: store a JSON object of NAME: value") from None
    if not isinstance(raw, Mapping):
        raise InvalidConfig(field, f"must be a JSON object of NAME: value, got {_json_type(raw)}")
    result: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            raise InvalidConfig(field, "has an empty variable name: remove it or name it")
        text = env_value_text(value)
        if text is None:
            raise InvalidConfig(
                f"{field}.{key}",
                f"must be a string, number, true/false or null, got {_json_type(value)}: "
                "store the value as a JSON string",
            )
        result[key] = text
    return result


def _json_type(value: Any) -> str:
    """The JSON name of a value's type (for messages that must not show the value)."""
    if isinstance(value, Mapping):
        return "a JSON object"
    if isinstance(value, list | tuple):
        return "a JSON list"
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return "a number JSON cannot hold (NaN or infinity)"
    return f"a {type(value).__name__}"

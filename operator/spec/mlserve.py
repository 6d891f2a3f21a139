"""The MLServe's ``spec``, parsed and checked: the same rules as the CRD's schema and CEL.

The API server already enforces the CRD; these checks repeat it so that ``mlserve render -f``
and the operator report the same errors for a file or an object that never went through an
API server (or went through an older version of the CRD).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlserve.models.configs import CapacityType, invalid_config_from
from mlserve.models.enums import ServeType
from mlserve.models.errors import InvalidConfig

from .schedule import parse_schedule

__all__ = [
    "Autoscaling",
    "HeadOverride",
    "MLServeSpec",
    "PodResources",
    "ReplicaBounds",
    "WorkerGroupOverride",
]

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
WORKER_GROUP_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")

SERVE_NAME_MAX = 50  # serves.name is VARCHAR(50)
ENVIRONMENT_NAME_MAX = 63  # a label value
WORKER_GROUP_NAME_MAX = 15

# Fields that only one serve type may set, by their names in the MLServe (camelCase).
API_ONLY_FIELDS = ("replicas", "resources", "nodeCapacityType", "autoscaling", "hosts")
WORKFLOW_ONLY_FIELDS = ("schedule", "head", "workerGroups", "entrypoint", "runtimeEnv")


def _check_label(value: str, what: str, max_length: int, pattern: re.Pattern[str] = DNS1123_LABEL) -> str:
    if not value or len(value) > max_length or not pattern.match(value):
        raise ValueError(
            f"{value!r} is not a valid {what}: use at most {max_length} lower-case letters, digits "
            "and '-', starting and ending with a letter or digit"
        )
    return value


class _SpecModel(BaseModel):
    """Frozen, strict, camelCase keys as in the MLServe, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class ReplicaBounds(_SpecModel):
    """``spec.replicas``: overrides of fast_api_config min_replicas and max_replicas."""

    min: int | None = Field(default=None, ge=1, le=1000)
    max: int | None = Field(default=None, ge=1, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise InvalidConfig(
                "spec.replicas",
                f"min ({self.min}) is greater than max ({self.max}): spec.replicas.min must be "
                "less than or equal to spec.replicas.max",
            )
        return self


class PodResources(_SpecModel):
    """``spec.resources``: overrides of fast_api_config cores and memory."""

    cores: float | None = Field(default=None, ge=0.1, le=128)
    memory: int | None = Field(default=None, ge=1, le=1024)


class Autoscaling(_SpecModel):
    """``spec.autoscaling``: the HorizontalPodAutoscaler's targets, in percent."""

    cpu_utilization: int | None = Field(default=None, alias="cpuUtilization", ge=1, le=100)
    memory_utilization: int | None = Field(default=None, alias="memoryUtilization", ge=1, le=100)


class HeadOverride(_SpecModel):
    """``spec.head``: overrides of head_node_config, field by field."""

    cores: float | None = Field(default=None, ge=0.1, le=128)
    memory: int | None = Field(default=None, ge=1, le=1024)
    node_capacity_type: CapacityType | None = Field(default=None, alias="nodeCapacityType")


class WorkerGroupOverride(_SpecModel):
    """One item of ``spec.workerGroups`` (the list replaces worker_node_config)."""

    name: str | None = None
    cores: float = Field(ge=0.1, le=128)
    memory: int = Field(ge=1, le=1024)
    min_replicas: int = Field(alias="minReplicas", ge=0, le=1000)
    max_replicas: int = Field(alias="maxReplicas", ge=1, le=1000)
    node_capacity_type: CapacityType | None = Field(default=None, alias="nodeCapacityType")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value or len(value) > WORKER_GROUP_NAME_MAX or not WORKER_GROUP_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid worker group name: use at most {WORKER_GROUP_NAME_MAX} "
                "lower-case letters, digits and '-', starting with a letter"
            )
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) is greater than maxReplicas "
                f"({self.max_replicas}): a worker group's minReplicas must be less than or equal "
                "to its maxReplicas"
            )
        return self


class MLServeSpec(_SpecModel):
    """An MLServe's ``spec``.

    Build it with :meth:`parse` (a spec dict) or :meth:`from_resource` (a whole MLServe),
    which apply the ``serve`` default (``metadata.name``) and raise
    :class:`~mlserve.models.errors.InvalidConfig` naming the field, e.g. ``spec.replicas.min``.
    """

    serve: str
    environment: str
    type: ServeType
    artifact_version: str = Field(alias="artifactVersion", min_length=1, max_length=50)
    paused: bool = False

    # API serves
    replicas: ReplicaBounds | None = None
    resources: PodResources | None = None
    node_capacity_type: CapacityType | None = Field(default=None, alias="nodeCapacityType")
    autoscaling: Autoscaling | None = None
    hosts: tuple[str, ...] | None = Field(default=None, max_length=20, strict=False)
    env: dict[str, str] | None = Field(default=None, max_length=100)

    # workflow serves
    schedule: str | None = Field(default=None, max_length=50)
    head: HeadOverride | None = None
    worker_groups: tuple[WorkerGroupOverride, ...] | None = Field(
        default=None, alias="workerGroups", max_length=10, strict=False
    )
    entrypoint: str | None = Field(default=None, min_length=1, max_length=4096)
    runtime_env: dict[str, Any] | None = Field(default=None, alias="runtimeEnv")

    @field_validator("serve")
    @classmethod
    def _serve(cls, value: str) -> str:
        return _check_label(value, "serve name", SERVE_NAME_MAX)

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        return _check_label(value, "environment name", ENVIRONMENT_NAME_MAX)

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        if isinstance(value, str) and value in {t.value for t in ServeType}:
            return ServeType(value)
        if isinstance(value, ServeType):
            return value
        raise ValueError(f"{value!r} is not a serve type: use api or workflow")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return value
        for host in value:
            if len(host) > 253 or not DNS1123_SUBDOMAIN.match(host):
                raise ValueError(
                    f"{host!r} is not a host name: use lower-case DNS labels joined by '.', e.g. models.example.com"
                )
        if len(set(value)) != len(value):
            raise ValueError("lists a host twice: remove the duplicate")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        for name in value:
            if not ENV_VAR_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not an environment variable name: start with a letter or '_' "
                    "and use only letters, digits, '_', '.' and '-'"
                )
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parse_schedule(value)  # InvalidSchedule is a ValueError: its message says what to write
        return value

    @field_validator("worker_groups")
    @classmethod
    def _unique_groups(cls, value: tuple[WorkerGroupOverride, ...] | None) -> tuple[WorkerGroupOverride, ...] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("is an empty list: list at least one worker group, or leave workerGroups out")
        names = [group.name for group in value if group.name is not None]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"names {duplicates} appear more than once: worker group names must be unique")
        return value

    @model_validator(mode="after")
    def _type_specific_fields(self) -> Self:
        if self.type is ServeType.WORKFLOW:
            wrong = [name for name in API_ONLY_FIELDS if self._has(name)]
            if wrong:
                raise InvalidConfig(
                    f"spec.{wrong[0]}",
                    f"{', '.join(wrong)} apply to API serves only: remove them from this workflow "
                    "serve (use head and workerGroups to size it)",
                )
        else:
            wrong = [name for name in WORKFLOW_ONLY_FIELDS if self._has(name)]
            if wrong:
                raise InvalidConfig(
                    f"spec.{wrong[0]}",
                    f"{', '.join(wrong)} apply to workflow serves only: remove them from this API "
                    "serve (use replicas and resources to size it)",
                )
        return self

    def _has(self, alias: str) -> bool:
        for name, field in type(self).model_fields.items():
            if (field.alias or name) == alias:
                return getattr(self, name) is not None
        raise KeyError(alias)

    @classmethod
    def parse(cls, spec: Any, *, default_serve: str | None = None) -> MLServeSpec:
        """Validate an MLServe's ``spec`` dict; ``default_serve`` fills an omitted ``serve``."""
        if not isinstance(spec, Mapping):
            raise InvalidConfig("spec", f"must be an object, got {type(spec).__name__}: add a spec")
        data = dict(spec)
        if data.get("serve") is None:
            if default_serve is None:
                raise InvalidConfig("spec.serve", "it is required: add it (or give the MLServe that name)")
            data["serve"] = default_serve
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _as_invalid_config(exc) from None

    @classmethod
    def from_resource(cls, body: Mapping[str, Any]) -> MLServeSpec:
        """Validate a whole MLServe object (a dict as the API server or a YAML file gives it)."""
        metadata = body.get("metadata") or {}
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        if body.get("spec") is None:
            raise InvalidConfig("spec", "it is required: add a spec with environment, type and artifactVersion")
        if (body.get("spec") or {}).get("serve") is None and name is not None:
            try:
                _check_label(name, "serve name", SERVE_NAME_MAX)
            except ValueError as exc:
                raise InvalidConfig(
                    "spec.serve",
                    f"is omitted, so the serve name is taken from metadata.name, and {exc}: set spec.serve",
                ) from None
        return cls.parse(body["spec"], default_serve=name)

    def to_resource_spec(self) -> dict[str, Any]:
        """The spec as an MLServe carries it (camelCase keys, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=False)


def _as_invalid_config(exc: ValidationError) -> InvalidConfig:
    """Keep an :class:`InvalidConfig` raised by a validator as it is (its field is exact)."""
    for error in exc.errors():
        original = (error.get("ctx") or {}).get("error")
        if isinstance(original, InvalidConfig):
            return original
    unknown = [e for e in exc.errors() if e.get("type") == "extra_forbidden"]
    if unknown:
        loc = tuple(str(part) for part in unknown[0]["loc"])
        return InvalidConfig(
            ".".join(("spec", *loc)),
            f"{loc[-1]!r} is not a field here: check its spelling and place "
            "(kubectl explain mlserve.spec lists the fields)",
        )
    return invalid_config_from(exc, "spec")

"""Enumerations stored in Darwin ML Serve's string columns.

Every enum is a ``str`` enum whose values are exactly what Darwin writes, so a row
written by Darwin reads back as a member and a member compares equal to its text.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from .errors import InvalidConfig

__all__ = [
    "BackendType",
    "DeploymentStatus",
    "JobStatus",
    "NodeCapacityType",
    "ServeType",
]


class ServeType(str, Enum):
    """``serves.type``: what a serve runs."""

    API = "api"
    WORKFLOW = "workflow"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> Any:
        raise _not_a_member(cls, value)


class JobStatus(str, Enum):
    """``artifact_builder_job.status``: state of an image build."""

    PENDING = "PENDING"
    SUCCESSFUL = "SUCCESSFUL"
    FAILED = "FAILED"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> Any:
        raise _not_a_member(cls, value)


class DeploymentStatus(str, Enum):
    """``deployments.status``."""

    ACTIVE = "ACTIVE"
    ENDED = "ENDED"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> Any:
        raise _not_a_member(cls, value)


class BackendType(str, Enum):
    """``api_serve_configs.backend_type``: the server behind an API serve."""

    FASTAPI = "fastapi"
    RAY = "ray"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> Any:
        raise _not_a_member(cls, value)


# The column each enum is stored in, for error messages (a row read with a value the operator
# does not know names its table and column).
_COLUMNS: dict[str, str] = {
    "ServeType": "serves.type",
    "JobStatus": "artifact_builder_job.status",
    "DeploymentStatus": "deployments.status",
    "BackendType": "api_serve_configs.backend_type",
    "NodeCapacityType": "node_capacity_type",
}


def _not_a_member(cls: type[Enum], value: object) -> InvalidConfig:
    allowed = ", ".join(repr(str(m.value)) for m in cls)
    return InvalidConfig(
        _COLUMNS.get(cls.__name__, cls.__name__),
        f"{value!r} is not a valid {cls.__name__}; the rule is one of {allowed}: use one of them",
    )


# Darwin's data holds four spellings of the same two values.
_CAPACITY_SPELLINGS: dict[str, str] = {
    "spot": "spot",
    "on_demand": "on_demand",
    "on-demand": "on_demand",
    "ondemand": "on_demand",
}


class NodeCapacityType(str, Enum):
    """``node_capacity_type`` inside the infra configs: which nodes a pod may land on.

    The value is what the ``karpenter.sh/capacity-type`` node selector expects, except
    ``on_demand`` which renderers map to Karpenter's ``on-demand``.
    """

    SPOT = "spot"
    ON_DEMAND = "on_demand"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> Any:
        # NodeCapacityType("on-demand") works like parse().
        return cls.parse(value)

    @classmethod
    def accepted_spellings(cls) -> tuple[str, ...]:
        return tuple(_CAPACITY_SPELLINGS)

    @classmethod
    def parse(cls, value: Any) -> NodeCapacityType:
        """Normalise any of Darwin's spellings (case-insensitive) to a member.

        Raises ``ValueError`` naming the accepted values for anything else.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            canonical = _CAPACITY_SPELLINGS.get(value.strip().lower())
            if canonical is not None:
                return cls(canonical)
        accepted = ", ".join(repr(s) for s in _CAPACITY_SPELLINGS)
        raise InvalidConfig(
            "node_capacity_type",
            f"{value!r} is not a node capacity type; the rule is one of {accepted} "
            "(case-insensitive): use 'spot' or 'on_demand'",
        )

"""Pod settings a platform adds to every serve's pods: service account, image pull secrets,
extra labels and annotations, tolerations and a node selector.

Two sources, merged by :func:`merge_pod_extras`: the operator's settings (``MLSERVE_POD_*``,
for every environment) and the environment's ``env_configs`` (keys below, for its serves).
The environment's service account replaces the settings'; its lists (image pull secrets,
tolerations) are added after the settings'; its maps (labels, annotations, node selector)
are merged over the settings', key by key. The operator's own labels and annotations, and the
capacity-type node selector of the serve's infra config, always win over both.

``env_configs`` keys (all optional; Darwin ignores them):

- ``service_account``: a ServiceAccount name;
- ``image_pull_secrets``: a list of Secret names, or one comma-separated string;
- ``pod_labels``, ``pod_annotations``: objects of string values;
- ``tolerations``: a list of Kubernetes tolerations (``key``, ``operator``, ``value``,
  ``effect``, ``tolerationSeconds``);
- ``node_selector``: an object of node label values.

Pure: no I/O; every error is an :class:`InvalidConfig` naming the key and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlserve.models.configs import EnvConfig, invalid_config_from
from mlserve.models.errors import InvalidConfig

__all__ = ["ENV_CONFIG_POD_KEYS", "PodExtras", "Toleration", "merge_pod_extras", "pod_extras_from_env_config"]

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")

ENV_CONFIG_POD_KEYS: dict[str, str] = {
    "service_account": "service_account",
    "image_pull_secrets": "image_pull_secrets",
    "pod_labels": "labels",
    "pod_annotations": "annotations",
    "tolerations": "tolerations",
    "node_selector": "node_selector",
}
"""``env_configs`` key → :class:`PodExtras` field."""


def _qualified(kind: str, key: str) -> None:
    name = key.rpartition("/")[2]
    if len(name) > 63 or len(key) > 316 or not QUALIFIED_NAME.match(key):
        raise ValueError(f"{key!r} is not a {kind} key: use [prefix/]name, e.g. example.com/team")


def _names(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Toleration(BaseModel):
    """One Kubernetes toleration."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, populate_by_name=True)

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value:
            _qualified("taint", value)
        return value

    @model_validator(mode="after")
    def _rules(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value: remove value, or use Equal")
        if not self.key and self.operator != "Exists":
            raise ValueError("a toleration without a key must have operator Exists (it tolerates every taint)")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds is only allowed with effect NoExecute")
        return self

    def manifest(self) -> dict[str, Any]:
        """The toleration as it goes in a pod spec (unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True)


class PodExtras(BaseModel):
    """What a platform adds to every pod of a serve."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    service_account: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    node_selector: dict[str, str] = Field(default_factory=dict)

    @field_validator("image_pull_secrets", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        value = _names(value)
        return tuple(value) if isinstance(value, list) else value

    @field_validator("tolerations", mode="before")
    @classmethod
    def _tolerations(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("service_account")
    @classmethod
    def _service_account(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not DNS1123_SUBDOMAIN.match(value)):
            raise ValueError(f"{value!r} is not a ServiceAccount name: use lower-case letters, digits, '-' and '.'")
        return value

    @field_validator("image_pull_secrets")
    @classmethod
    def _secrets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
                raise ValueError(f"{name!r} is not a Secret name: use lower-case letters, digits, '-' and '.'")
        return value

    @field_validator("labels", "node_selector")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            _qualified("label", key)
            if len(text) > 63 or not LABEL_VALUE.match(text):
                raise ValueError(
                    f"the value of {key!r} is not a label value: at most 63 letters, digits, '-', '_' "
                    "and '.', starting and ending with a letter or digit"
                )
        return value

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            _qualified("annotation", key)
        return value


def pod_extras_from_env_config(config: EnvConfig) -> PodExtras:
    """The pod settings an environment's ``env_configs`` carries (its extra keys)."""
    extra = config.model_extra or {}
    values = {field: extra[key] for key, field in ENV_CONFIG_POD_KEYS.items() if extra.get(key) is not None}
    if not values:
        return PodExtras()
    try:
        return PodExtras.model_validate(values)
    except ValidationError as exc:
        error = invalid_config_from(exc, "")
        field, _, rest = error.field.partition(".")
        key = next(k for k, f in ENV_CONFIG_POD_KEYS.items() if f == field)
        path = ".".join(part for part in ("env_configs", key, rest) if part)
        raise InvalidConfig(path, error.message) from None


def merge_pod_extras(base: PodExtras, over: PodExtras) -> PodExtras:
    """``over`` (an environment's) merged over ``base`` (the settings'): see the module's rules."""
    secrets = tuple(dict.fromkeys((*base.image_pull_secrets, *over.image_pull_secrets)))
    tolerations = tuple(dict.fromkeys((*base.tolerations, *over.tolerations)))
    return PodExtras(
        service_account=over.service_account or base.service_account,
        image_pull_secrets=secrets,
        labels={**base.labels, **over.labels},
        annotations={**base.annotations, **over.annotations},
        tolerations=tolerations,
        node_selector={**base.node_selector, **over.node_selector},
    )


def pod_extras_of(values: Mapping[str, Any]) -> PodExtras:
    """A :class:`PodExtras` from plain values (settings), errors as :class:`InvalidConfig`."""
    try:
        return PodExtras.model_validate(dict(values))
    except ValidationError as exc:
        raise invalid_config_from(exc, "") from None

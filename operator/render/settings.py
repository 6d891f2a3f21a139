"""The renderers' settings: one typed object, read from ``MLSERVE_*`` by the caller.

Renderers never read the environment; ``mlserve run`` (``mlserve.operator.settings``) and
``mlserve render`` call :meth:`RenderSettings.from_env` once and pass the object down.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["DEFAULT_INGRESS_ANNOTATIONS", "RenderSettings", "RenderSettingsError"]

PREFIX = "MLSERVE_"

# Annotations every Ingress gets (on top of the security groups and subnets): the AWS load
# balancer controller checks Darwin's health path and sends traffic straight to the pods,
# which a ClusterIP Service needs.
DEFAULT_INGRESS_ANNOTATIONS: tuple[tuple[str, str], ...] = (
    ("alb.ingress.kubernetes.io/healthcheck-path", "/healthcheck"),
    ("alb.ingress.kubernetes.io/target-type", "ip"),
)

_QUALIFIED_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


class RenderSettingsError(ValueError):
    """A setting has a value the renderers cannot use; names the variable and the fix."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class RenderSettings(BaseModel):
    """How manifests are rendered, beyond what the MLServe and the database say."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ingress_class: str | None = "alb"
    """MLSERVE_INGRESS_CLASS: the Ingress's ingressClassName; ``none`` leaves it unset."""

    security_groups_annotation: str | None = "alb.ingress.kubernetes.io/security-groups"
    """MLSERVE_INGRESS_SECURITY_GROUPS_ANNOTATION: the annotation carrying the environment's
    security groups (env_configs.security_group); ``none`` leaves them out."""

    subnets_annotation: str | None = "alb.ingress.kubernetes.io/subnets"
    """MLSERVE_INGRESS_SUBNETS_ANNOTATION: the annotation carrying env_configs.subnets (when
    set); ``none`` leaves them out."""

    ingress_annotations: tuple[tuple[str, str], ...] = DEFAULT_INGRESS_ANNOTATIONS
    """MLSERVE_INGRESS_ANNOTATIONS: a JSON object of further annotations for every Ingress;
    replaces the defaults (``{}`` for none)."""

    capacity_type_label: str | None = "karpenter.sh/capacity-type"
    """MLSERVE_CAPACITY_TYPE_LABEL: the node label that selects spot or on-demand nodes (values
    ``spot`` and ``on-demand``); ``none`` renders no node selector."""

    image_pull_policy: str = Field(default="IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    """MLSERVE_IMAGE_PULL_POLICY: Always, IfNotPresent or Never."""

    hpa_cpu_utilization: int = Field(default=60, ge=1, le=100)
    """MLSERVE_HPA_CPU_UTILIZATION: default HPA CPU target in percent (Darwin: 60)."""

    hpa_memory_utilization: int = Field(default=80, ge=1, le=100)
    """MLSERVE_HPA_MEMORY_UTILIZATION: default HPA memory target in percent (Darwin: 80)."""

    ray_cron_job: bool = False
    """MLSERVE_RAY_CRON_JOB: render a scheduled workflow as one KubeRay RayCronJob (KubeRay 1.6+
    with the RayCronJob feature gate). Off: the operator creates one RayJob per scheduled time."""

    rayjob_ttl_seconds: int = Field(default=3600, ge=0, le=2**31 - 1)
    """MLSERVE_RAYJOB_TTL_SECONDS: how long a finished RayJob's cluster is kept for its logs."""

    ray_version: str | None = None
    """MLSERVE_RAY_VERSION: the rayVersion KubeRay is told (e.g. 2.40.0); unset leaves it out."""

    workflow_entrypoint: str = Field(default="python main.py", min_length=1)
    """MLSERVE_WORKFLOW_ENTRYPOINT: the RayJob entrypoint when the MLServe gives none."""

    schedule_time_zone: str | None = "Etc/UTC"
    """MLSERVE_SCHEDULE_TIME_ZONE: the RayCronJob's timeZone (cron schedules are UTC in
    Darwin); ``none`` leaves it to the KubeRay operator's clock."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RenderSettings:
        """Read ``MLSERVE_*`` (``os.environ`` by default); unset or empty keeps the default."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        optional = {
            "INGRESS_CLASS": "ingress_class",
            "INGRESS_SECURITY_GROUPS_ANNOTATION": "security_groups_annotation",
            "INGRESS_SUBNETS_ANNOTATION": "subnets_annotation",
            "CAPACITY_TYPE_LABEL": "capacity_type_label",
            "RAY_VERSION": "ray_version",
            "SCHEDULE_TIME_ZONE": "schedule_time_zone",
        }
        for variable, name in optional.items():
            raw = _get(env, variable)
            if raw is not None:
                values[name] = None if raw.lower() == "none" else raw
        for variable, name in {
            "IMAGE_PULL_POLICY": "image_pull_policy",
            "WORKFLOW_ENTRYPOINT": "workflow_entrypoint",
        }.items():
            raw = _get(env, variable)
            if raw is not None:
                values[name] = raw
        for variable, name in {
            "HPA_CPU_UTILIZATION": "hpa_cpu_utilization",
            "HPA_MEMORY_UTILIZATION": "hpa_memory_utilization",
            "RAYJOB_TTL_SECONDS": "rayjob_ttl_seconds",
        }.items():
            raw = _get(env, variable)
            if raw is not None:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise RenderSettingsError(PREFIX + variable, f"{raw!r} is not a whole number") from None
        raw = _get(env, "RAY_CRON_JOB")
        if raw is not None:
            if raw.lower() not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
                raise RenderSettingsError(PREFIX + "RAY_CRON_JOB", f"{raw!r} is not a boolean: write true or false")
            values["ray_cron_job"] = raw.lower() in {"1", "true", "yes", "on"}
        raw = _get(env, "INGRESS_ANNOTATIONS")
        if raw is not None:
            values["ingress_annotations"] = _annotations(raw)
        for name in ("security_groups_annotation", "subnets_annotation", "capacity_type_label"):
            key = values.get(name)
            if isinstance(key, str) and not _QUALIFIED_NAME.match(key):
                variable = next(v for v, n in optional.items() if n == name)
                raise RenderSettingsError(PREFIX + variable, f"{key!r} is not an annotation or label key")
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValidationError as exc:
            error = exc.errors()[0]
            name = str(error["loc"][0])
            variable = PREFIX + name.upper()
            raise RenderSettingsError(variable, str(error["msg"])) from None


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(PREFIX + name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _annotations(raw: str) -> tuple[tuple[str, str], ...]:
    variable = PREFIX + "INGRESS_ANNOTATIONS"
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise RenderSettingsError(variable, 'is not JSON: write an object, e.g. {"key": "value"}') from None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise RenderSettingsError(variable, "must be a JSON object of string values")
    for key in parsed:
        if not _QUALIFIED_NAME.match(key):
            raise RenderSettingsError(variable, f"{key!r} is not an annotation key")
    return tuple(sorted(parsed.items()))

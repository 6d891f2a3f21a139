"""The renderers' settings: one typed, validated value.

Renderers never read the environment: the settings reader (``mlserve.operator.settings``,
used by ``mlserve run`` and ``mlserve render``) reads ``MLSERVE_*`` once and passes this
object down. Its validators are pure, so a value built in a test is checked alike.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlserve.models.errors import InvalidConfig
from mlserve.operator.spec.pods import PodExtras, Toleration, pod_extras_of

__all__ = ["DEFAULT_INGRESS_ANNOTATIONS", "RenderSettings"]

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

    progress_deadline_seconds: int = Field(default=600, ge=1, le=2**31 - 1)
    """MLSERVE_PROGRESS_DEADLINE_SECONDS: a Deployment's ``progressDeadlineSeconds``: a rollout
    with no progress for this long is reported as phase Failed (Kubernetes's default, 600)."""

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

    pod_service_account: str | None = None
    """MLSERVE_POD_SERVICE_ACCOUNT: the ServiceAccount of every serve's pods (an environment's
    ``env_configs.service_account`` replaces it); unset: the namespace's default."""

    pod_image_pull_secrets: tuple[str, ...] = ()
    """MLSERVE_POD_IMAGE_PULL_SECRETS: comma-separated Secret names every serve's pods pull
    images with (an environment's ``env_configs.image_pull_secrets`` are added)."""

    pod_labels: tuple[tuple[str, str], ...] = ()
    """MLSERVE_POD_LABELS: a JSON object of labels for every serve's pods (an environment's
    ``env_configs.pod_labels`` are merged over them; the operator's own labels win)."""

    pod_annotations: tuple[tuple[str, str], ...] = ()
    """MLSERVE_POD_ANNOTATIONS: a JSON object of annotations for every serve's pods (merged
    like the labels, with ``env_configs.pod_annotations``)."""

    pod_tolerations: tuple[Toleration, ...] = ()
    """MLSERVE_POD_TOLERATIONS: a JSON list of tolerations for every serve's pods (an
    environment's ``env_configs.tolerations`` are added)."""

    pod_node_selector: tuple[tuple[str, str], ...] = ()
    """MLSERVE_POD_NODE_SELECTOR: a JSON object of node labels every serve's pods must run on
    (merged like the labels, with ``env_configs.node_selector``; the capacity-type label of
    the infra config wins)."""

    @property
    def pod_extras(self) -> PodExtras:
        """The ``MLSERVE_POD_*`` settings as one value (validated when the settings are built)."""
        return pod_extras_of(self._pod_values())

    def _pod_values(self) -> dict[str, Any]:
        return {
            "service_account": self.pod_service_account,
            "image_pull_secrets": self.pod_image_pull_secrets,
            "labels": dict(self.pod_labels),
            "annotations": dict(self.pod_annotations),
            "tolerations": self.pod_tolerations,
            "node_selector": dict(self.pod_node_selector),
        }

    @model_validator(mode="after")
    def _pod_extras_valid(self) -> RenderSettings:
        try:
            pod_extras_of(self._pod_values())
        except InvalidConfig as exc:
            raise ValueError(f"pod_{exc.field}: {exc.message}") from None
        return self

    @field_validator("security_groups_annotation", "subnets_annotation", "capacity_type_label")
    @classmethod
    def _label_key(cls, value: str | None) -> str | None:
        if value is not None and not _QUALIFIED_NAME.match(value):
            raise ValueError(f"{value!r} is not an annotation or label key")
        return value

    @field_validator("ingress_annotations")
    @classmethod
    def _annotation_keys(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        for key, _ in value:
            if not _QUALIFIED_NAME.match(key):
                raise ValueError(f"{key!r} is not an annotation key")
        return value

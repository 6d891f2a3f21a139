"""Manifests of an API serve: Deployment, Service, HorizontalPodAutoscaler, PDB and Ingress.

Each function takes the resolved :class:`~mlserve.operator.spec.ApiServe` and the
:class:`~.settings.RenderSettings` and returns one manifest (a plain dict) or None when the
object is not wanted. Darwin's conventions: container port 8000 behind service port 80,
``GET /healthcheck``, requests = limits, memory in ``G``, the HPA at 60 % CPU and 80 %
memory, the capacity-type node selector.
"""

from __future__ import annotations

import re
from typing import Any

from mlserve.models.errors import InvalidConfig
from mlserve.operator.spec import ApiServe, api

from . import names
from .pods import container_env, node_selector, pod_extras, pod_metadata, pod_spec_extras, resources
from .settings import RenderSettings

__all__ = [
    "render_api",
    "render_deployment",
    "render_hpa",
    "render_ingress",
    "render_pdb",
    "render_service",
]

_HOST = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _metadata(serve: ApiServe) -> dict[str, Any]:
    return {
        "name": names.child_name(serve.serve, serve.environment.name),
        "namespace": serve.namespace,
        "labels": names.labels(serve.serve, serve.environment.name, serve.deployment_id),
        "annotations": {api.ANNOTATION_ARTIFACT_VERSION: serve.artifact_version},
    }


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": names.HEALTH_PATH, "port": names.HTTP_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def render_deployment(serve: ApiServe, settings: RenderSettings) -> dict[str, Any]:
    """The Deployment; no ``spec.replicas`` when the HPA manages the count (min < max)."""
    config = serve.config
    container: dict[str, Any] = {
        "name": names.CONTAINER_NAME,
        "image": serve.image,
        "imagePullPolicy": settings.image_pull_policy,
        "ports": [{"name": names.HTTP_PORT_NAME, "containerPort": names.CONTAINER_PORT, "protocol": "TCP"}],
        "resources": resources(config.cores, config.memory),
        # A model may take minutes to load: the startup probe allows 5 minutes before
        # liveness starts counting; readiness takes the pod out of the Service at once.
        "startupProbe": _probe(period=5, failures=60),
        "readinessProbe": _probe(period=5, failures=3),
        "livenessProbe": _probe(period=10, failures=5),
    }
    if serve.env:
        container["env"] = container_env(serve.env)
    extras = pod_extras(serve.pod, settings)
    pod_spec: dict[str, Any] = {"containers": [container]}
    pod_spec.update(pod_spec_extras(extras, node_selector(config.node_capacity_type, settings)))
    metadata = _metadata(serve)
    spec: dict[str, Any] = {}
    if not serve.autoscaled:
        spec["replicas"] = config.min_replicas
    spec.update(
        {
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": settings.progress_deadline_seconds,
            "selector": {"matchLabels": names.selector(serve.serve, serve.environment.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": pod_metadata(extras, metadata["labels"], metadata["annotations"]),
                "spec": pod_spec,
            },
        }
    )
    return {"apiVersion": api.DEPLOYMENT.api_version, "kind": api.DEPLOYMENT.kind, "metadata": metadata, "spec": spec}


def render_service(serve: ApiServe, settings: RenderSettings) -> dict[str, Any]:
    """A ClusterIP Service: port 80 to the container's 8000."""
    return {
        "apiVersion": api.SERVICE.api_version,
        "kind": api.SERVICE.kind,
        "metadata": _metadata(serve),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector(serve.serve, serve.environment.name),
            "ports": [
                {
                    "name": names.HTTP_PORT_NAME,
                    "port": names.SERVICE_PORT,
                    "targetPort": names.HTTP_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def render_hpa(serve: ApiServe, settings: RenderSettings) -> dict[str, Any] | None:
    """An autoscaling/v2 HPA on CPU and memory, only when min replicas < max replicas."""
    if not serve.autoscaled:
        return None
    cpu = serve.cpu_utilization or settings.hpa_cpu_utilization
    memory = serve.memory_utilization or settings.hpa_memory_utilization
    return {
        "apiVersion": api.HORIZONTAL_POD_AUTOSCALER.api_version,
        "kind": api.HORIZONTAL_POD_AUTOSCALER.kind,
        "metadata": _metadata(serve),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": api.DEPLOYMENT.api_version,
                "kind": api.DEPLOYMENT.kind,
                "name": names.child_name(serve.serve, serve.environment.name),
            },
            "minReplicas": serve.config.min_replicas,
            "maxReplicas": serve.config.max_replicas,
            "metrics": [
                _utilization("cpu", cpu),
                _utilization("memory", memory),
            ],
        },
    }


def _utilization(resource: str, percent: int) -> dict[str, Any]:
    return {
        "type": "Resource",
        "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": percent}},
    }


def render_pdb(serve: ApiServe, settings: RenderSettings) -> dict[str, Any] | None:
    """A PodDisruptionBudget allowing one pod down at a time, when at least two pods run."""
    if serve.config.min_replicas < 2:
        return None
    return {
        "apiVersion": api.POD_DISRUPTION_BUDGET.api_version,
        "kind": api.POD_DISRUPTION_BUDGET.kind,
        "metadata": _metadata(serve),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.selector(serve.serve, serve.environment.name)},
        },
    }


def api_hosts(serve: ApiServe) -> tuple[str, ...]:
    """Darwin's host rule plus the additional hosts; each checked as a DNS name."""
    env = serve.environment
    result = names.hosts(serve.serve, env.name, env.config.domain_suffix, env.is_protected, serve.additional_hosts)
    for index, host in enumerate(result):
        if len(host) > 253 or not _HOST.match(host):
            field = "env_configs.domain_suffix" if index == 0 and env.config.domain_suffix else "additional_hosts"
            raise InvalidConfig(
                field,
                f"gives the host name {host!r}, which is not a DNS name: use lower-case labels "
                "joined by '.', e.g. .models.example.com",
            )
    return result


def render_ingress(serve: ApiServe, settings: RenderSettings) -> dict[str, Any] | None:
    """The Ingress for the serve's hosts; None when there is no host (no domain suffix, no extras)."""
    hosts = api_hosts(serve)
    if not hosts:
        return None
    metadata = _metadata(serve)
    annotations = dict(settings.ingress_annotations)
    config = serve.environment.config
    if settings.security_groups_annotation and config.security_groups:
        annotations[settings.security_groups_annotation] = ",".join(config.security_groups)
    if settings.subnets_annotation and config.subnet_list:
        annotations[settings.subnets_annotation] = ",".join(config.subnet_list)
    metadata["annotations"] = dict(sorted({**metadata["annotations"], **annotations}.items()))
    backend = {
        "service": {
            "name": names.child_name(serve.serve, serve.environment.name),
            "port": {"name": names.HTTP_PORT_NAME},
        }
    }
    spec: dict[str, Any] = {}
    if settings.ingress_class:
        spec["ingressClassName"] = settings.ingress_class
    spec["rules"] = [
        {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]}} for host in hosts
    ]
    return {"apiVersion": api.INGRESS.api_version, "kind": api.INGRESS.kind, "metadata": metadata, "spec": spec}


def render_api(serve: ApiServe, settings: RenderSettings) -> list[dict[str, Any]]:
    """Every child of an API serve, in apply order: Deployment, Service, HPA, PDB, Ingress."""
    rendered = (
        render_deployment(serve, settings),
        render_service(serve, settings),
        render_hpa(serve, settings),
        render_pdb(serve, settings),
        render_ingress(serve, settings),
    )
    return [manifest for manifest in rendered if manifest is not None]

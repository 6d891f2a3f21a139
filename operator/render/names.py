"""Every child name, label, selector and host name, in one place.

Names are deterministic functions of (serve, environment[, deployment id | scheduled time]):
no clock, no randomness. A name that is too long, or that had to be changed to be valid, is
cut and given a short stable hash of the full text, so two different inputs never share a
name by being cut the same way. The label keys are those of :mod:`mlserve.operator.spec.api`.

Limits:

- Deployment, Service, HPA, PDB, Ingress: a DNS-1035 label of at most 63 characters (a
  Service needs DNS-1035; the others accept it).
- RayJob: DNS-1035, at most 47 characters (KubeRay's rule: it derives longer names from it).
- RayCronJob: at most 41, because KubeRay names each RayJob it creates ``<name>-<5 chars>``.
- Label values: at most 63 characters of ``[A-Za-z0-9_.-]``, alphanumeric at both ends.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from mlserve.operator.spec.api import (
    LABEL_DEPLOYMENT_ID,
    LABEL_ENVIRONMENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_SERVE,
    MANAGED_BY,
)

__all__ = [
    "CONTAINER_NAME",
    "CONTAINER_PORT",
    "HEALTH_PATH",
    "HTTP_PORT_NAME",
    "MAX_NAME_LENGTH",
    "MAX_RAYCRONJOB_NAME_LENGTH",
    "MAX_RAYJOB_NAME_LENGTH",
    "RAY_HEAD_CONTAINER",
    "RAY_WORKER_CONTAINER",
    "SERVICE_PORT",
    "child_name",
    "fit_name",
    "hosts",
    "label_value",
    "labels",
    "mlserve_name",
    "primary_host",
    "raycronjob_name",
    "rayjob_name",
    "scheduled_rayjob_name",
    "selector",
    "short_hash",
]

# --- containers and ports (Darwin's conventions) -------------------------------------------
CONTAINER_NAME = "app"
HTTP_PORT_NAME = "http"
CONTAINER_PORT = 8000
SERVICE_PORT = 80
HEALTH_PATH = "/healthcheck"
RAY_HEAD_CONTAINER = "ray-head"
RAY_WORKER_CONTAINER = "ray-worker"

# --- limits ----------------------------------------------------------------------------------
MAX_NAME_LENGTH = 63
MAX_RAYJOB_NAME_LENGTH = 47
MAX_RAYCRONJOB_NAME_LENGTH = MAX_RAYJOB_NAME_LENGTH - len("-abcde")
HASH_LENGTH = 6

_INVALID_NAME_CHARS = re.compile(r"[^a-z0-9-]+")
_INVALID_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def short_hash(text: str, length: int = HASH_LENGTH) -> str:
    """A stable, lower-case hex digest of ``text`` (not for security)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def fit_name(base: str, limit: int = MAX_NAME_LENGTH, *, suffix: str = "") -> str:
    """``base`` + ``suffix`` as a DNS-1035 label of at most ``limit`` characters.

    ``suffix`` (e.g. ``-202501020300``) is kept whole; ``base`` is lower-cased, invalid
    characters become ``-``, and when it had to change or is too long it is cut and
    ``-<hash of the original base>`` appended. A base that does not start with a letter
    gets an ``m`` in front (DNS-1035).
    """
    if len(suffix) + HASH_LENGTH + 2 > limit:
        raise ValueError(f"suffix {suffix!r} leaves no room for a name within {limit} characters")
    clean = _INVALID_NAME_CHARS.sub("-", base.lower()).strip("-")
    clean = re.sub(r"-{2,}", "-", clean)
    if not clean or not clean[0].isalpha():
        clean = "m" + (clean if not clean or clean[0] == "-" else "-" + clean)
    room = limit - len(suffix)
    if clean == base and len(clean) <= room:
        name = clean
    else:
        keep = room - HASH_LENGTH - 1
        name = f"{clean[:keep].rstrip('-')}-{short_hash(base)}"
    result = name + suffix
    if len(result) > limit or not _DNS1035.match(result):  # an invariant; a bug if it ever fires
        raise RuntimeError(f"fit_name produced {result!r} from {base!r}, {suffix!r}, {limit}")
    return result


def label_value(value: str) -> str:
    """``value`` as a valid label value (at most 63 characters), cut with a hash when needed."""
    if len(value) <= MAX_NAME_LENGTH and _LABEL_VALUE.match(value):
        return value
    clean = _INVALID_LABEL_CHARS.sub("-", value).strip("-_.")
    keep = MAX_NAME_LENGTH - HASH_LENGTH - 1
    return f"{clean[:keep].rstrip('-_.')}-{short_hash(value)}".lstrip("-")


# --- object names --------------------------------------------------------------------------
def mlserve_name(serve: str, environment: str) -> str:
    """The MLServe the database sync creates: ``<serve>-<environment>`` (DESIGN.md)."""
    return fit_name(f"{serve}-{environment}")


def child_name(serve: str, environment: str) -> str:
    """Deployment, Service, HPA, PDB and Ingress of an API serve: ``<serve>-<environment>``.

    The environment is part of the name so that two environments sharing a namespace
    never collide.
    """
    return fit_name(f"{serve}-{environment}")


def rayjob_name(serve: str, environment: str, deployment_id: int | None = None) -> str:
    """The RayJob of an unscheduled workflow: ``<serve>-<environment>-d<deployment id>``.

    One RayJob per deployment: a new deployment runs the workflow again under a new name.
    """
    suffix = f"-d{deployment_id}" if deployment_id is not None else ""
    return fit_name(f"{serve}-{environment}", MAX_RAYJOB_NAME_LENGTH, suffix=suffix)


def scheduled_rayjob_name(serve: str, environment: str, scheduled_time: datetime) -> str:
    """The RayJob for one scheduled time: ``<serve>-<environment>-<YYYYMMDDHHMM>`` (UTC)."""
    if scheduled_time.tzinfo is None:
        raise ValueError("scheduled_time must be timezone-aware (UTC)")
    stamp = scheduled_time.astimezone(UTC).strftime("%Y%m%d%H%M")
    return fit_name(f"{serve}-{environment}", MAX_RAYJOB_NAME_LENGTH, suffix=f"-{stamp}")


def raycronjob_name(serve: str, environment: str) -> str:
    """The RayCronJob of a scheduled workflow: ``<serve>-<environment>``, at most 41 characters."""
    return fit_name(f"{serve}-{environment}", MAX_RAYCRONJOB_NAME_LENGTH)


# --- labels and selectors ------------------------------------------------------------------
def selector(serve: str, environment: str) -> dict[str, str]:
    """The labels that select a serve's pods in one environment.

    Never includes the deployment id: a Deployment's selector is immutable, and pods of
    the previous deployment must still be selected during a rollout.
    """
    return {
        LABEL_NAME: label_value(serve),
        LABEL_SERVE: label_value(serve),
        LABEL_ENVIRONMENT: label_value(environment),
    }


def labels(serve: str, environment: str, deployment_id: int | None = None) -> dict[str, str]:
    """The labels of every child and pod template: the selector, managed-by and the deployment id."""
    result = {**selector(serve, environment), LABEL_MANAGED_BY: MANAGED_BY}
    if deployment_id is not None:
        result[LABEL_DEPLOYMENT_ID] = str(deployment_id)
    return dict(sorted(result.items()))


def matches(selector_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> bool:
    """Whether a ``matchLabels`` selector selects a pod with these labels."""
    return all(pod_labels.get(key) == value for key, value in selector_labels.items())


# --- host names (Darwin's rule) --------------------------------------------------------------
def primary_host(serve: str, environment: str, domain_suffix: str, is_protected: bool) -> str:
    """``<serve>-<environment><domain_suffix>``, or ``<serve><domain_suffix>`` when protected."""
    stem = serve if is_protected else f"{serve}-{environment}"
    return f"{stem}{domain_suffix}".lower()


def hosts(
    serve: str,
    environment: str,
    domain_suffix: str,
    is_protected: bool,
    additional: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """The primary host (when the environment has a domain suffix) then each additional host, once."""
    result: list[str] = []
    if domain_suffix:
        result.append(primary_host(serve, environment, domain_suffix, is_protected))
    for host in additional:
        host = host.strip().lower()
        if host and host not in result:
            result.append(host)
    return tuple(result)

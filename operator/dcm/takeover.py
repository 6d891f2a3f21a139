"""``mlserve takeover``: move one serve from the Helm release Darwin's cluster manager installed
to the MLServe that runs it from now on, without a moment of no ready pod.

Darwin's release of an API serve is ``<environment>-<serve>`` in the environment's namespace,
from its chart ``darwin-fastapi-serve``; every object of it carries
``darwin.dream11.com/resource-instance-id=<release>`` (the label DCM itself selects pods by),
and Helm keeps the release in Secrets labelled ``owner=helm,name=<release>``. The steps:

1. the MLServe of the pair: the one the database sync created, or created here exactly as the
   sync would (the database's active deployment, so it records nothing);
2. wait until it is Ready on that deployment: its pods serve beside Darwin's, whose Ingress
   still routes the host to Darwin's pods;
3. remove the release's Ingress, then wait until the MLServe's own Ingress exists: the
   reconcile holds the MLServe's Ingress back while another Ingress of the namespace claims
   one of its hosts (``reconcile/children.py``, condition Synced ``HostClaimed``) and looks
   again every two seconds, so the host is never claimed by two Ingresses, only unclaimed
   for those seconds;
4. remove the rest of the release: ``helm uninstall`` when helm is at hand and knows the
   release, else its objects by label, Helm's records last.

Nothing is removed when step 2 times out: Darwin's release keeps serving. When step 3 times
out, Darwin's Ingress is gone and its pods are left serving nothing; the command says so and
exits 1 (the MLServe's Ingress follows once its reconcile runs).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, Client
from lightkube.core.resource import NamespacedResource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Secret, Service, ServiceAccount
from lightkube.resources.networking_v1 import Ingress
from lightkube.resources.policy_v1 import PodDisruptionBudget

from mlserve.operator.reconcile.kube import MLServe, as_dict
from mlserve.operator.reconcile.sync_plan import ActiveRow, new_mlserve
from mlserve.operator.render import names
from mlserve.operator.spec import api

__all__ = [
    "RELEASE_KINDS",
    "RELEASE_LABEL",
    "Pair",
    "TakeoverFailed",
    "find_mlserve",
    "release_objects",
    "remove_release",
    "takeover",
    "wait_ready",
]

RELEASE_LABEL = "darwin.dream11.com/resource-instance-id"
"""The label Darwin's chart puts on every object of a release (its value: the release name)."""

RELEASE_KINDS: tuple[type[NamespacedResource], ...] = (
    Ingress,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    Deployment,
    Service,
    ServiceAccount,
    ConfigMap,
    Secret,
)
"""The kinds of Darwin's chart removed by label, in this order: the Ingress first, so the host is
released before anything that serves it goes; the Deployment before its Service."""


class TakeoverFailed(Exception):
    """The takeover stopped; the message says where and what is left as it was."""


@dataclass(frozen=True)
class Pair:
    """The database's active deployment of one (serve, environment)."""

    serve: str
    serve_type: str
    environment: str
    namespace: str
    deployment_id: int
    artifact_version: str

    @property
    def release(self) -> str:
        return f"{self.environment}-{self.serve}"


def _name(obj: Any) -> str:
    return str(obj.metadata.name)


def release_objects(client: Client, namespace: str, release: str) -> list[tuple[type[NamespacedResource], str]]:
    """(kind, name) of every object of the release, in :data:`RELEASE_KINDS` order, then Helm's records."""
    found: list[tuple[type[NamespacedResource], str]] = []
    for kind in RELEASE_KINDS:
        selector: dict[str, Any] = {RELEASE_LABEL: release}
        for obj in client.list(kind, namespace=namespace, labels=selector):
            found.append((kind, _name(obj)))
    records: dict[str, Any] = {"owner": "helm", "name": release}
    for record in client.list(Secret, namespace=namespace, labels=records):
        if (Secret, _name(record)) not in found:
            found.append((Secret, _name(record)))
    return found


def find_mlserve(client: Client, namespace: str, serve: str, environment: str) -> dict[str, Any] | None:
    """The MLServe of the pair in the namespace, by its labels (the oldest when several)."""
    labels: dict[str, Any] = {
        api.LABEL_SERVE: names.label_value(serve),
        api.LABEL_ENVIRONMENT: names.label_value(environment),
    }
    bodies = [as_dict(obj, "MLServe") for obj in client.list(MLServe, namespace=namespace, labels=labels)]
    bodies = [b for b in bodies if (b.get("spec") or {}).get("serve", b["metadata"]["name"]) == serve]
    bodies.sort(key=lambda b: (b["metadata"].get("creationTimestamp") or "", b["metadata"]["name"]))
    return bodies[0] if bodies else None


def _ready_on(body: Mapping[str, Any], deployment_id: int) -> bool:
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return (
        ready
        and status.get("deploymentId") == deployment_id
        and status.get("observedGeneration") == meta.get("generation")
    )


def wait_ready(
    client: Client,
    namespace: str,
    name: str,
    deployment_id: int,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """The MLServe once Ready on ``deployment_id``; TakeoverFailed after ``timeout`` seconds."""
    deadline = clock() + timeout
    body: dict[str, Any] = {}
    while True:
        body = as_dict(client.get(MLServe, name, namespace=namespace), "MLServe")
        if _ready_on(body, deployment_id):
            return body
        if clock() >= deadline:
            status = body.get("status") or {}
            raise TakeoverFailed(
                f"MLServe {namespace}/{name} is not Ready on deployment {deployment_id} after {timeout:g}s "
                f"(phase {status.get('phase')!r}: {status.get('message') or 'no message'}); "
                "Darwin's release is left as it was"
            )
        sleep(1.0)


def _helm_knows(helm: str, release: str, namespace: str) -> bool:
    shown = subprocess.run(
        [helm, "status", release, "--namespace", namespace], capture_output=True, text=True, check=False, timeout=60
    )
    return shown.returncode == 0


def remove_release(client: Client, namespace: str, release: str, *, helm: str | None) -> list[str]:
    """Remove Darwin's release: with ``helm uninstall`` when ``helm`` is given and knows it, then
    whatever is still labelled as the release (helm leaves nothing; a release without helm's
    records, or a helm that cannot reach the cluster, is removed object by object)."""
    removed: list[str] = []
    if helm is not None and _helm_knows(helm, release, namespace):
        done = subprocess.run(
            [helm, "uninstall", release, "--namespace", namespace],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if done.returncode != 0:
            raise TakeoverFailed(f"helm uninstall {release} failed: {done.stderr.strip()[:500]}")
        removed.append(f"helm release {release}")
    for kind, name in release_objects(client, namespace, release):
        try:
            client.delete(kind, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        removed.append(f"{kind.__name__}/{name}")
    return removed


def takeover(
    client: Client,
    pair: Pair,
    *,
    timeout: float,
    field_manager: str,
    helm: str | None = None,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Steps 1 to 3 (module docstring); returns what was removed."""
    if pair.serve_type != "api":
        raise TakeoverFailed(
            f"serve {pair.serve!r} is a {pair.serve_type} serve: Darwin's Helm releases are API serves"
        )
    release = release_objects(client, pair.namespace, pair.release)
    if not release:
        say(f"no object of Darwin's release {pair.release} in namespace {pair.namespace}")
    else:
        say(f"Darwin's release {pair.release}: " + ", ".join(f"{k.__name__}/{n}" for k, n in release))

    body = find_mlserve(client, pair.namespace, pair.serve, pair.environment)
    if body is None:
        row = ActiveRow(
            serve=pair.serve,
            serve_type=pair.serve_type,
            environment=pair.environment,
            namespace=pair.namespace,
            deployment_id=pair.deployment_id,
            artifact_version=pair.artifact_version,
        )
        created = client.create(MLServe.from_dict(new_mlserve(row)), field_manager=field_manager)
        body = as_dict(created, "MLServe")
        say(f"created MLServe {pair.namespace}/{body['metadata']['name']} at {pair.artifact_version}")
    name = body["metadata"]["name"]
    say(f"waiting for MLServe {pair.namespace}/{name} to be Ready on deployment {pair.deployment_id}")
    ready = wait_ready(client, pair.namespace, name, pair.deployment_id, timeout, clock=clock, sleep=sleep)
    say(f"MLServe {pair.namespace}/{name} is Ready ({(ready.get('status') or {}).get('ready') or 'ready'})")

    removed = _remove_ingresses(client, pair.namespace, pair.release)
    for what in removed:
        say(f"removed {what}")
    ingress = names.child_name(pair.serve, pair.environment)
    say(f"waiting for the MLServe's Ingress {pair.namespace}/{ingress}")
    _wait_ingress(client, pair.namespace, ingress, timeout, clock=clock, sleep=sleep)
    rest = remove_release(client, pair.namespace, pair.release, helm=helm)
    for what in rest:
        say(f"removed {what}")
    return removed + rest


def _remove_ingresses(client: Client, namespace: str, release: str) -> list[str]:
    """Delete the release's Ingresses: the host is then free for the MLServe's."""
    removed = []
    for kind, name in release_objects(client, namespace, release):
        if kind is not Ingress:
            continue
        try:
            client.delete(Ingress, name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        removed.append(f"Ingress/{name}")
    return removed


def _wait_ingress(
    client: Client,
    namespace: str,
    name: str,
    timeout: float,
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    deadline = clock() + timeout
    while True:
        try:
            client.get(Ingress, name, namespace=namespace)
            return
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        if clock() >= deadline:
            raise TakeoverFailed(
                f"Darwin's Ingress is removed but the MLServe's Ingress {namespace}/{name} did not appear within "
                f"{timeout:g}s (is the operator running? see the MLServe's Synced condition); the rest of "
                "Darwin's release is left as it was: run the takeover again to finish"
            )
        sleep(0.5)


def helm_binary() -> str | None:
    """``helm`` on PATH, if any."""
    return shutil.which("helm")

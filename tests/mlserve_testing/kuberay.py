"""KubeRay for the tests.

Its CRD files: ``$MLSERVE_KUBERAY_CRDS``, else KubeRay's operator module at the version of
``deploy/local-cluster/versions.json``, downloaded once into Go's module cache
(``mlserve dev kuberay-crds`` prints the same folder).

Also a pytest plugin: the ``kuberay_operator`` fixture, KubeRay's real controller (built from
the same module, ``mlserve dev build --with-kuberay``) acting on the test's namespace.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from mlserve.operator.dev.cluster import LocalCluster, ensure_binaries, names
from mlserve.operator.dev.cluster.kuberay import install_kuberay
from mlserve.operator.reconcile.kube import RayCronJob, RayJob
from mlserve.operator.spec.api import KUBERAY_CRONJOB_NAME_LABEL, KUBERAY_CRONJOB_TIME_ANNOTATION
from mlserve_testing.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
ENV_KUBERAY_CRDS = "MLSERVE_KUBERAY_CRDS"
#: the KubeRay release the tests use unless MLSERVE_KUBERAY_CRDS says otherwise
KUBERAY_VERSION: str = json.loads((ROOT / "deploy" / "local-cluster" / "versions.json").read_text())["kuberay"]


@functools.cache
def _lookup(explicit: str | None) -> tuple[Path | None, str]:
    from mlserve.operator.dev.cluster import DevClusterError
    from mlserve.operator.dev.cluster import kuberay_crd_dir as fetch

    try:
        return fetch(), ""
    except DevClusterError as exc:
        return None, str(exc)


def kuberay_crd_dir() -> Path:
    """The folder of KubeRay's CRD files; fails the test, saying why, when it can't be had."""
    folder, error = _lookup(os.environ.get(ENV_KUBERAY_CRDS))
    if folder is None:
        pytest.fail(f"KubeRay's CRDs: {error}")
    return folder


def kuberay_release() -> str:
    """What the tests validate against, for messages: the pinned release or the override."""
    explicit = os.environ.get(ENV_KUBERAY_CRDS)
    return f"the KubeRay CRDs in {explicit}" if explicit else f"KubeRay {KUBERAY_VERSION}"


# --- KubeRay's controller, for the tests that watch it act on our RayJobs and RayCronJobs ---------

#: the field manager of every CRD the tests apply (the same one: re-applying is then a no-op)
CRD_FIELD_MANAGER = "mlserve-tests"
#: KubeRay's resources the controller makes (the CRDs come from KubeRay's module)
RayCluster = create_namespaced_resource("ray.io", "v1", "RayCluster", "rayclusters")
#: KubeRay's finalizer on the RayJobs it runs (``utils.RayJobStopJobFinalizer``)
RAYJOB_FINALIZER = "ray.io/rayjob-finalizer"
#: how long a finished submitter may wait for Ray's answer before KubeRay fails the RayJob
#: (``DefaultSubmitterFinishedTimeout`` of its RayJob controller, 30 s and not configurable)
SUBMITTER_FINISHED_TIMEOUT = 30.0


@dataclass(frozen=True)
class KubeRayController:
    """KubeRay's controller acting on one test's namespace: a process of the local control
    plane (``log`` is its log), or the one installed in $KUBECONFIG's cluster (``log`` None)."""

    namespace: str
    log: Path | None


@pytest.fixture(scope="session")
def kuberay_installed(local_cluster: LocalCluster | None, kube_client: Client, mlserve_crd: None) -> Path | None:
    """KubeRay's four CRDs and its controller's ClusterRole, installed once per session on
    the local control plane (returns the CRD folder); on $KUBECONFIG's cluster KubeRay must be
    installed already (None). After ``mlserve_crd``, which gives the nodes the capacity-type
    labels our pods' node selectors ask for (else KubeRay's pods stay Pending)."""
    if local_cluster is None:
        try:
            kube_client.get(CustomResourceDefinition, "rayclusters.ray.io")
        except ApiError as exc:
            pytest.fail(
                f"MLSERVE_TEST_USE_KUBECONFIG=1 but the cluster has no KubeRay ({exc.status.message}): "
                f"install KubeRay {KUBERAY_VERSION}'s operator in it first"
            )
        return None
    folder = kuberay_crd_dir()
    install_kuberay(kube_client, folder, field_manager=CRD_FIELD_MANAGER)
    return folder


@pytest.fixture
def kuberay_operator(
    local_cluster: LocalCluster | None, kuberay_installed: Path | None, kube_client: Client, namespace: str
) -> Iterator[KubeRayController]:
    """KubeRay's real controller, acting on this test's namespace only (``--watch-namespace``),
    so the RayJobs of other tests are left alone. On $KUBECONFIG's cluster: the cluster's own.

    At the end the namespace's RayJobs are deleted while the controller still runs, so it
    removes its finalizer from them (else the namespace could never go)."""
    if local_cluster is None or kuberay_installed is None:
        yield KubeRayController(namespace, None)
        return
    if local_cluster.binaries.missing([names.KUBERAY_OPERATOR]):  # reached without collection's build
        local_cluster.binaries = ensure_binaries(with_kuberay=True)
    process = local_cluster.start_kuberay_operator(kuberay_installed, [namespace], install=False)
    try:
        yield KubeRayController(namespace, process.log_path)
        _delete_rayjobs(kube_client, namespace)
    finally:
        local_cluster.stop_process(process.name)


def _delete_rayjobs(client: Client, namespace: str) -> None:
    """Delete the namespace's RayCronJobs (which make RayJobs) and RayJobs, and wait until
    KubeRay has let the RayJobs go."""
    for cron_job in client.list(RayCronJob, namespace=namespace):
        with contextlib.suppress(ApiError):
            client.delete(RayCronJob, cron_job.metadata.name, namespace=namespace)
    for job in client.list(RayJob, namespace=namespace):
        with contextlib.suppress(ApiError):
            client.delete(RayJob, job.metadata.name, namespace=namespace)
    wait_for(
        lambda: not list(client.list(RayJob, namespace=namespace)),
        60,
        f"KubeRay to let the RayJobs of {namespace} go (remove {RAYJOB_FINALIZER})",
    )


#: from a RayJob's creation to KubeRay's end of it on kwok: the cluster and the submitter take
#: seconds, then KubeRay waits SUBMITTER_FINISHED_TIMEOUT for Ray's answer, then its retry
#: back-off (it keeps failing to reach the dashboard, and controller-runtime spaces the
#: retries of a failing reconcile out, up to doubling the wait)
RUN_ENDS_WITHIN = 150.0


def wait_until_kuberay_ends_run(client: Client, name: str, namespace: str) -> dict[str, Any]:
    """Wait until KubeRay's controller ends RayJob ``name`` and return its status.

    On kwok's nodes no Ray head answers, so the run ends the one way KubeRay can end it
    without Ray: ``jobDeploymentStatus: Failed``, ``jobStatus: FAILED``, reason
    ``JobDeploymentStatusTransitionGracePeriodExceeded``, 30 s after the submitter Job is done.
    ``SUCCEEDED`` cannot be reached here (it needs Ray's own answer)."""

    def ended() -> dict[str, Any] | None:
        status = dict(client.get(RayJob, name, namespace=namespace).to_dict().get("status") or {})
        return status if status.get("jobDeploymentStatus") in ("Complete", "Failed") else None

    return wait_for(ended, RUN_ENDS_WITHIN, f"KubeRay's controller to end RayJob {name}")


def cron_run(cron_job: dict[str, Any], name: str, stamp: str) -> dict[str, Any]:
    """A RayJob of the cron time ``stamp`` as KubeRay 1.6.1's RayCronJob controller makes one
    (``constructRayJob``: ``<cronjob>-<5 random chars>``, its label and time annotation, the
    RayCronJob as controller, the ``jobTemplate`` as spec)."""
    meta = cron_job["metadata"]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {KUBERAY_CRONJOB_NAME_LABEL: meta["name"]},
            "annotations": {KUBERAY_CRONJOB_TIME_ANNOTATION: stamp},
            "ownerReferences": [
                {
                    "apiVersion": "ray.io/v1",
                    "kind": "RayCronJob",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": copy.deepcopy(cron_job["spec"]["jobTemplate"]),
    }

"""KubeRay's controller beside the local control plane: its CRDs, its ClusterRole, its process.

KubeRay's operator (``kuberay-operator``, built from ``github.com/ray-project/kuberay/ray-operator``
at the version of ``versions.json``) runs as a process of the cluster, as the user
``kuberay-operator`` bound to the ClusterRole KubeRay ships (``config/rbac/role.yaml`` of the
same module), so it has exactly the rights it has in a real cluster. It is started with:

* ``--enable-leader-election=false``: one instance, no Lease to wait for;
* ``--metrics-addr=0``: no metrics server (two clusters side by side would clash on :8080);
* ``--health-probe-bind-address=127.0.0.1:<free port>``: its ``/readyz``, waited for;
* ``--watch-namespace=a,b``: when given, it acts only there (a test's own namespace);
* ``--feature-gates=RayCronJob=true``: the RayCronJob controller is alpha and off in 1.6.

``mlserve dev kind up`` runs the same controller as a pod of the kind cluster (operator/dev/kind/
install.py), with the same CRDs, ClusterRole and command line (its probes on the pod's port,
its ServiceAccount instead of a kubeconfig).

Here its pods run on kwok's fake nodes: kwok marks them Running and Ready, so RayClusters become
``ready`` and RayJobs get their submitter Job; nothing listens in them, so the RayJob
controller's calls to the Ray dashboard fail (docs/kuberay.md says what status it reaches).
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from lightkube import ApiError, Client, codecs
from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import RoleRef, Subject
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.rbac_authorization_v1 import ClusterRoleBinding

from . import names
from .errors import DevClusterError
from .ports import free_ports
from .process import ManagedProcess

FIELD_MANAGER = "mlserve-dev"
#: how long the controller may take to answer /readyz, and the CRDs to be Established
START_TIMEOUT = 60.0
# the CRD files are large (1.4 MB for RayJob): parse them with libyaml when it is there
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def kuberay_rbac_dir(crd_dir: Path) -> Path:
    """``config/rbac/`` of KubeRay's module, from its ``config/crd/bases/`` folder."""
    folder = crd_dir.resolve().parent.parent / "rbac"
    if not (folder / names.KUBERAY_ROLE_FILE).is_file():
        raise DevClusterError(
            f"no {names.KUBERAY_ROLE_FILE} in {folder}: KubeRay's controller runs with the ClusterRole of "
            f"KubeRay's module; {crd_dir} is not that module's config/crd/bases/ folder "
            f"(unset {names.ENV_KUBERAY_CRDS} to use the module of versions.json)"
        )
    return folder


def _documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as stream:
        return [d for d in yaml.load_all(stream, Loader=_YAML_LOADER) if d]


def _established(client: Client, name: str) -> bool:
    crd = client.get(CustomResourceDefinition, name)
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def install_kuberay(
    client: Client,
    crd_dir: Path,
    timeout: float = START_TIMEOUT,
    field_manager: str = FIELD_MANAGER,
    subject: Subject | None = None,
) -> list[str]:
    """Apply KubeRay's four CRDs and its controller's ClusterRole, bound to ``subject`` (by
    default the user ``kuberay-operator`` of the local control plane; in a real cluster the
    controller's ServiceAccount); wait until the CRDs are served. Returns the CRDs' names.

    ``field_manager``: the same as whoever else applies these CRDs to the cluster, so that the
    applies of the same files are no-ops (taking a 1.4 MB CRD's fields over from another
    manager is slow, and makes its storage re-initialise)."""
    missing = [f for f in names.KUBERAY_CONTROLLER_CRD_FILES if not (crd_dir / f).is_file()]
    if missing:
        raise DevClusterError(f"no {', '.join(missing)} in {crd_dir} (KubeRay's CRD folder)")
    crds: list[str] = []
    resources: list[type[NamespacedResource]] = []
    for filename in names.KUBERAY_CONTROLLER_CRD_FILES:
        for document in _documents(crd_dir / filename):
            # server-side apply: these CRDs are too large for client-side apply's annotation
            client.apply(codecs.from_dict(document), field_manager=field_manager, force=True)
            crds.append(str(document["metadata"]["name"]))
            spec = document["spec"]
            served = next(v["name"] for v in spec["versions"] if v.get("storage"))
            plural, kind = spec["names"]["plural"], spec["names"]["kind"]
            resources.append(create_namespaced_resource(spec["group"], served, kind, plural))
    roles = [
        d for d in _documents(kuberay_rbac_dir(crd_dir) / names.KUBERAY_ROLE_FILE) if d.get("kind") == "ClusterRole"
    ]
    if len(roles) != 1:
        raise DevClusterError(f"KubeRay's {names.KUBERAY_ROLE_FILE} holds {len(roles)} ClusterRoles, not one")
    role = codecs.from_dict(roles[0])
    client.apply(role, field_manager=field_manager, force=True)
    client.apply(
        ClusterRoleBinding(
            metadata=ObjectMeta(name=names.KUBERAY_CLUSTER_ROLE_BINDING),
            roleRef=RoleRef(
                apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=roles[0]["metadata"]["name"]
            ),
            subjects=[
                subject or Subject(kind="User", name=names.KUBERAY_USER[0], apiGroup="rbac.authorization.k8s.io")
            ],
        ),
        field_manager=field_manager,
        force=True,
    )
    deadline = time.monotonic() + timeout
    for name in crds:
        while not _established(client, name):
            if time.monotonic() > deadline:
                raise DevClusterError(f"KubeRay's CRD {name} is not Established after {timeout:.0f} s")
            time.sleep(0.1)
    # Established is not yet servable: a CRD just changed answers "storage is (re)initializing"
    # for a moment, which the controller's first list (or anyone's) must not meet
    for resource in resources:
        while True:
            try:
                list(client.list(resource, namespace="default"))
                break
            except ApiError as exc:
                if time.monotonic() > deadline:
                    raise DevClusterError(
                        f"KubeRay's {resource.__name__} is not served after {timeout:.0f} s: {exc.status.message}"
                    ) from exc
                time.sleep(0.1)
    return crds


def operator_args(
    probe_address: str, watch_namespaces: Sequence[str] = (), kubeconfig: Path | None = None
) -> list[str]:
    """The command line of KubeRay's controller (see the module's docstring): its probes on
    ``probe_address`` (``host:port``, or ``:port`` in a pod); ``kubeconfig`` None: in a pod,
    with its ServiceAccount."""
    args = [f"--kubeconfig={kubeconfig}"] if kubeconfig is not None else []
    args += [
        "--enable-leader-election=false",
        "--metrics-addr=0",
        f"--health-probe-bind-address={probe_address}",
        f"--feature-gates={names.KUBERAY_FEATURE_GATES}",
        "--log-stdout-encoder=console",
    ]
    if watch_namespaces:
        args.append(f"--watch-namespace={','.join(watch_namespaces)}")
    return args


def log_name(watch_namespaces: Iterable[str]) -> str:
    """The process's name and log file stem: one controller per set of watched namespaces."""
    scope = "-".join(watch_namespaces)
    return f"{names.KUBERAY_OPERATOR}-{scope}" if scope else names.KUBERAY_OPERATOR


def wait_ready(process: ManagedProcess, probe_port: int, timeout: float = START_TIMEOUT) -> None:
    """Wait for the controller's ``/readyz``; raise with its log tail when it exits or stays unready."""
    url = f"http://{names.HOST}:{probe_port}/readyz"
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        process.check()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError, ssl.SSLError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise process.failure(f"/readyz not answered within {timeout:.0f} s (last attempt: {last})")
        time.sleep(0.1)


def probe_port() -> int:
    (port,) = free_ports(1)
    return port

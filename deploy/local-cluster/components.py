"""The components of the local control plane: one Go module of this folder each.

Shared by ``generate.py`` and ``build.py``; versions live in ``versions.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.json"
LOCAL_MODULE_PREFIX = "mlserve.local/local-cluster"  # + "/<component>" names each module

#: KubeRay's operator module: its CRDs are installed beside ours (and are the schemas the tests
#: validate RayJobs and RayCronJobs against), and its controller is the kuberay-operator
#: component; its version is "kuberay" in versions.json
KUBERAY_MODULE = "github.com/ray-project/kuberay/ray-operator"
KUBERAY_CRD_DIR = "config/crd/bases"  # in the module
KUBERAY = "kuberay"


@dataclass(frozen=True)
class Component:
    """One Go module of this folder and the programs it builds."""

    name: str  # folder of the module and key in versions.json
    module: str  # upstream module that holds the programs
    programs: dict[str, str]  # binary name -> package path
    default: bool = True  # built when no component is named
    version_key: str | None = None  # its key in versions.json, when not its name
    tags: tuple[str, ...] = ()  # build tags (``go build -tags``)

    @property
    def versions_key(self) -> str:
        """The key of its version in versions.json."""
        return self.version_key or self.name

    @property
    def folder(self) -> Path:
        return HERE / self.name

    @property
    def local_module(self) -> str:
        return f"{LOCAL_MODULE_PREFIX}/{self.name}"

    @property
    def upstream_programs(self) -> list[str]:
        """Package paths of the programs that come from the upstream module."""
        return [p for p in self.programs.values() if not p.startswith(self.local_module + "/")]


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component(
            "kubernetes",
            "k8s.io/kubernetes",
            {
                "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
                "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
                "kubectl": "k8s.io/kubernetes/cmd/kubectl",
            },
        ),
        Component("etcd", "go.etcd.io/etcd/server/v3", {"etcd": "go.etcd.io/etcd/server/v3"}),
        Component(
            "kwok",
            "sigs.k8s.io/kwok",
            {
                "kwok": "sigs.k8s.io/kwok/cmd/kwok",
                # ours: prints kwok's default Stages, which the kwok program needs as config
                "kwok-stages": f"{LOCAL_MODULE_PREFIX}/kwok/stages",
            },
        ),
        # needed by the chart's tests only, so built when asked for
        Component("helm", "helm.sh/helm/v3", {"helm": "helm.sh/helm/v3/cmd/helm"}, default=False),
        # KubeRay's controller, for the tests that watch it act on our RayJobs and RayCronJobs;
        # built when asked for
        Component(
            "kuberay-operator",
            KUBERAY_MODULE,
            {"kuberay-operator": KUBERAY_MODULE},
            default=False,
            version_key=KUBERAY,
        ),
        # --- the kind cluster of the end-to-end suite (operator/dev/kind), built when asked for
        Component(
            "kind",
            "sigs.k8s.io/kind",
            {
                "kind": "sigs.k8s.io/kind",
                # ours: the pod sandbox's pause process (no registry to pull registry.k8s.io/pause from)
                "pause": f"{LOCAL_MODULE_PREFIX}/kind/pause",
            },
            default=False,
        ),
        # the node's programs, from the same release as the control plane (a module of its
        # own so that the control plane's go.mod, and so its build stamp, stay as they are)
        Component(
            "kubernetes-node",
            "k8s.io/kubernetes",
            {
                "kubelet": "k8s.io/kubernetes/cmd/kubelet",
                "kubeadm": "k8s.io/kubernetes/cmd/kubeadm",
                "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
            },
            default=False,
            version_key="kubernetes",
        ),
        Component(
            "containerd",
            "github.com/containerd/containerd/v2",
            {
                "containerd": "github.com/containerd/containerd/v2/cmd/containerd",
                "ctr": "github.com/containerd/containerd/v2/cmd/ctr",
                "containerd-shim-runc-v2": "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
            },
            default=False,
            tags=("no_btrfs", "no_devmapper", "no_zfs", "no_aufs"),
        ),
        Component("cri-tools", "sigs.k8s.io/cri-tools", {"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"}, default=False),
        Component("coredns", "github.com/coredns/coredns", {"coredns": "github.com/coredns/coredns"}, default=False),
    )
}


def load_versions() -> dict[str, str]:
    """Version of each component, from versions.json."""
    versions: dict[str, str] = json.loads(VERSIONS_FILE.read_text())
    missing = {*(c.versions_key for c in COMPONENTS.values()), KUBERAY} - set(versions)
    if missing:
        raise SystemExit(f"{VERSIONS_FILE.name}: no version for {', '.join(sorted(missing))}")
    return versions

"""A real Kubernetes control plane on this machine, for the cluster tests and the demo.

Built from Go modules by ``deploy/local-cluster/`` (see its README) and started as local
processes: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and kwok for
the nodes.

    from mlserve.operator.dev.cluster import LocalCluster, ensure_binaries

    with LocalCluster(ensure_binaries(), nodes=2) as cluster:
        with cluster.handle.client() as client:
            ...
"""

from __future__ import annotations

from .build import Binaries, binary_dir, ensure_binaries, ensure_components, kuberay_crd_dir, local_cluster_dir
from .cluster import ClusterHandle, LocalCluster, running_pids, stop_recorded
from .errors import DevClusterError

__all__ = [
    "Binaries",
    "ClusterHandle",
    "DevClusterError",
    "LocalCluster",
    "binary_dir",
    "ensure_binaries",
    "ensure_components",
    "kuberay_crd_dir",
    "local_cluster_dir",
    "running_pids",
    "stop_recorded",
]

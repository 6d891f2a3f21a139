"""A single-node kind cluster for the end-to-end suite.

The cluster's config carries what this machine needs (see ``host.py``), each only when
detected, and, with a locally built node image, kind's default CNI disabled (the node
image has a static CNI config instead: kindnetd can't be had offline). The node is
labelled as a spot node for the serves' capacity-type node selector.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlserve.operator.dev.cluster.errors import DevClusterError

from . import names
from .docker import Docker, env_with
from .host import HostFacts

CREATE_WAIT = "3m"
POD_SUBNET = "10.244.0.0/16"
#: Karpenter's capacity-type label, which the serves' pods select (spot by default)
CAPACITY_LABEL = "karpenter.sh/capacity-type"


def kind_config(node_image: str, facts: HostFacts, *, local_node_image: bool) -> dict[str, object]:
    """kind's cluster config for one node."""
    config: dict[str, object] = {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "networking": {"apiServerAddress": "127.0.0.1", "podSubnet": POD_SUBNET},
        "nodes": [{"role": "control-plane", "image": node_image, "labels": {CAPACITY_LABEL: "spot"}}],
    }
    if local_node_image:
        config["networking"]["disableDefaultCNI"] = True  # type: ignore[index]
    if facts.lacks_sys_resource:
        # a negative OOM score needs CAP_SYS_RESOURCE: without this every pod sandbox fails
        config["containerdConfigPatches"] = ['[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true\n']
    if facts.cgroup_v1:
        config["kubeadmConfigPatches"] = ["kind: KubeletConfiguration\nfailCgroupV1: false\n"]
    return config


@dataclass
class KindCluster:
    """kind, one cluster of it, and the docker daemon it runs on."""

    kind: Path
    docker: Docker
    name: str = names.CLUSTER_NAME

    def _kind(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                [str(self.kind), *args],
                env=env_with(self.docker),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DevClusterError(f"kind {' '.join(args[:2])} took longer than {timeout:g} s") from exc
        if result.returncode != 0:
            raise DevClusterError(
                f"kind {' '.join(args[:3])} failed (exit {result.returncode}):\n{result.stderr.strip()[-3000:]}"
            )
        return result

    def exists(self) -> bool:
        return self.name in self._kind("get", "clusters").stdout.split()

    def create(self, config: dict[str, object], kubeconfig: Path, work: Path) -> float:
        """Create the cluster (deleting one of the same name first); returns the seconds it took."""
        if self.exists():
            self.delete()
        path = work / "kind-config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        started = time.monotonic()
        self._kind(
            "create",
            "cluster",
            "--name",
            self.name,
            "--config",
            str(path),
            "--kubeconfig",
            str(kubeconfig),
            "--wait",
            CREATE_WAIT,
        )
        return time.monotonic() - started

    def delete(self) -> None:
        self._kind("delete", "cluster", "--name", self.name)

    def load(self, *images: str) -> float:
        started = time.monotonic()
        self._kind("load", "docker-image", "--name", self.name, *images)
        return time.monotonic() - started

    def node_logs(self, folder: Path) -> None:
        """kind's export of the node's logs (for a failed run)."""
        try:
            self._kind("export", "logs", str(folder), "--name", self.name)
        except DevClusterError as exc:
            print(f"could not export kind's logs: {exc}", file=sys.stderr)

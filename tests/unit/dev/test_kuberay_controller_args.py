"""KubeRay's controller as the local cluster starts it: its command line, its RBAC's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlserve.operator.dev.cluster import DevClusterError
from mlserve.operator.dev.cluster.kuberay import kuberay_rbac_dir, log_name, operator_args


def test_the_controller_runs_alone_without_metrics_and_with_the_raycronjob_gate() -> None:
    args = operator_args("127.0.0.1:40123", ["ns-a", "ns-b"], Path("/state/kuberay.kubeconfig"))
    assert "--kubeconfig=/state/kuberay.kubeconfig" in args
    assert "--enable-leader-election=false" in args
    assert "--metrics-addr=0" in args  # two clusters side by side would clash on :8080
    assert "--health-probe-bind-address=127.0.0.1:40123" in args
    assert "--feature-gates=RayCronJob=true" in args  # alpha in KubeRay 1.6: off by default
    assert "--watch-namespace=ns-a,ns-b" in args


def test_every_namespace_is_watched_when_none_is_named() -> None:
    assert not [a for a in operator_args("127.0.0.1:1", [], Path("k")) if a.startswith("--watch-namespace")]
    assert log_name([]) == "kuberay-operator"
    assert log_name(["ns-a"]) == "kuberay-operator-ns-a"


def test_in_a_pod_the_controller_uses_its_service_account_and_probes_on_the_pods_port() -> None:
    args = operator_args(":8082")
    assert not [a for a in args if a.startswith("--kubeconfig")]
    assert "--health-probe-bind-address=:8082" in args
    assert "--enable-leader-election=false" in args
    assert "--feature-gates=RayCronJob=true" in args


def test_the_clusterrole_comes_from_the_module_of_the_crds(tmp_path: Path) -> None:
    bases = tmp_path / "config" / "crd" / "bases"
    bases.mkdir(parents=True)
    with pytest.raises(DevClusterError, match="role.yaml"):
        kuberay_rbac_dir(bases)
    (tmp_path / "config" / "rbac").mkdir()
    (tmp_path / "config" / "rbac" / "role.yaml").write_text("kind: ClusterRole\n")
    assert kuberay_rbac_dir(bases) == tmp_path / "config" / "rbac"

"""Fixtures shared by every suite come from the plugins in ``mlserve_testing``: the local
control plane, MariaDB, the operator as a subprocess, the project's helm, the chart's
ServiceAccount, which the operator's tests run as, and KubeRay's controller; and the check that
no seeded secret value shows in any log, status or Event of the whole run."""

pytest_plugins: list[str] = [
    "mlserve_testing.secrets",  # first: the others import it
    "mlserve_testing.cluster",
    "mlserve_testing.mariadb",
    "mlserve_testing.kuberay",  # before the operator's, which imports it
    "mlserve_testing.operator",
    "mlserve_testing.chart",
    "mlserve_testing.identity",
    "mlserve_testing.faults",
]

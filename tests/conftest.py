"""Fixtures shared by every suite come from the plugins in ``mlserve_testing``: the local
control plane, MariaDB, the operator as a subprocess, the project's helm, and the chart's
ServiceAccount, which the operator's tests run as."""

pytest_plugins: list[str] = [
    "mlserve_testing.cluster",
    "mlserve_testing.mariadb",
    "mlserve_testing.operator",
    "mlserve_testing.chart",
    "mlserve_testing.identity",
    "mlserve_testing.faults",
]

"""Fixtures shared by every suite come from the plugins in ``mlserve_testing`` (and the
chart's ServiceAccount, which the operator's tests run as, from ``helm.identity``)."""

pytest_plugins: list[str] = [
    "mlserve_testing.cluster",
    "mlserve_testing.mariadb",
    "mlserve_testing.operator",
    "helm.identity",
]

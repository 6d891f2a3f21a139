"""Fixtures shared by every suite come from the plugins in ``mlserve_testing``."""

pytest_plugins: list[str] = ["mlserve_testing.cluster", "mlserve_testing.mariadb", "mlserve_testing.operator"]

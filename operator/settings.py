"""The operator's settings: one typed object read once from ``MLSERVE_*`` at start-up.

Every field is validated when the object is built, so a typo stops ``mlserve run``
before it touches the cluster, with an error that names the variable and the fix. The
database settings (``mlserve.models.settings``), the renderers' settings
(``mlserve.operator.render``) and the scheduler's (``mlserve.operator.reconcile.schedule``)
are read by their own modules and composed here, so each variable has exactly one reader.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["OperatorSettings", "SettingsError", "parse_duration"]

PREFIX = "MLSERVE_"
LogFormat = Literal["json", "plain"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# A namespace name, or a glob of one (kopf's patterns: * and ?, ! to exclude).
_NAMESPACE_PATTERN = re.compile(r"^!?[a-z0-9*?]([-a-z0-9*?]*[a-z0-9*?])?$")


class SettingsError(ValueError):
    """A setting has a value the operator cannot use; names the variable and the fix."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


def parse_duration(variable: str, raw: str) -> float:
    """Seconds from ``30``, ``30s``, ``1.5m``, ``500ms`` or ``2h``."""
    match = _DURATION.match(raw)
    if match is None:
        raise SettingsError(variable, f"{raw!r} is not a duration: write seconds (30), or 30s, 5m, 500ms, 1h")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise SettingsError(variable, f"{raw!r} must be more than zero")
    return seconds


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(PREFIX + name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _duration(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _get(env, name)
    return default if raw is None else parse_duration(PREFIX + name, raw)


def _int(env: Mapping[str, str], name: str) -> int | None:
    raw = _get(env, name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(PREFIX + name, f"{raw!r} is not a whole number") from None


def _load_database_settings(env: Mapping[str, str]) -> Any:
    from mlserve.models.settings import DatabaseSettings

    return DatabaseSettings.from_env(env)


def _load_render_settings(env: Mapping[str, str]) -> Any:
    from mlserve.operator.render.settings import RenderSettings

    return RenderSettings.from_env(env)


def _load_schedule_settings(env: Mapping[str, str]) -> Any:
    from mlserve.operator.reconcile.schedule import ScheduleSettings

    return ScheduleSettings.from_env(env)


@dataclass(frozen=True)
class OperatorSettings:
    """What ``mlserve run`` needs; build it with :meth:`from_env`."""

    cluster_name: str
    """MLSERVE_CLUSTER_NAME: this cluster's name as written in ``env_configs.cluster_name``.
    The operator acts only for environments bound to it. Required by ``mlserve run``."""

    namespaces: tuple[str, ...] = ()
    """MLSERVE_NAMESPACES: comma-separated namespaces to watch (globs such as ``team-*`` and
    exclusions such as ``!kube-*`` allowed); empty watches the whole cluster."""

    sync_interval: float = 10.0
    """MLSERVE_SYNC_INTERVAL: seconds between two database → cluster sync ticks."""

    full_resync_interval: float = 300.0
    """MLSERVE_FULL_RESYNC_INTERVAL: seconds between two full database → cluster resyncs."""

    drift_check_interval: float = 60.0
    """MLSERVE_DRIFT_CHECK_INTERVAL: seconds between two reconciles of an unchanged MLServe,
    the upper bound on how long drift the child watches miss stays unrepaired."""

    deletion_db_timeout: float = 30.0
    """MLSERVE_DELETION_DB_TIMEOUT: how long a deletion waits for the database before it lets the
    MLServe go and leaves the ended deployment to the sync loop."""

    db_timeout: float = 10.0
    """MLSERVE_DB_TIMEOUT: the longest one reconcile's database work may take."""

    retry_delay: float = 5.0
    """MLSERVE_RETRY_DELAY: first retry delay after a temporary failure (database down, child
    not applied); doubles per retry up to :attr:`retry_max_delay`."""

    retry_max_delay: float = 120.0
    """MLSERVE_RETRY_MAX_DELAY: the longest delay between two retries."""

    deploy_user: str = "admin"
    """MLSERVE_DEPLOY_USER: the ``users.username`` deploys recorded by the operator are made by."""

    field_manager: str = "mlserve-operator"
    """MLSERVE_FIELD_MANAGER: the server-side apply field manager owning the children."""

    log_format: LogFormat = "plain"
    """MLSERVE_LOG_FORMAT: ``plain`` for people, ``json`` for log collectors."""

    log_level: str = "INFO"
    """MLSERVE_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""

    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    """MLSERVE_LIVENESS_ENDPOINT: kopf's liveness probe URL; ``off`` disables it."""

    peering_name: str | None = None
    """MLSERVE_PEERING_NAME: the kopf peering object shared by the operator's replicas, so only
    one acts at a time (needs crds/kopf-peering.yaml). Empty runs standalone (one replica)."""

    peering_priority: int | None = None
    """MLSERVE_PEERING_PRIORITY: this replica's kopf peering priority; the highest live one
    acts. Unset: a random priority per process, because replicas of equal priority all pause."""

    operator_namespace: str | None = None
    """MLSERVE_OPERATOR_NAMESPACE: the namespace the operator runs in (the Helm chart sets it);
    holds the ConfigMap of undeploys a deletion had to skip. Unset: that list is in memory only."""

    pending_configmap: str = "mlserve-operator-pending"
    """MLSERVE_PENDING_CONFIGMAP: the ConfigMap (in MLSERVE_OPERATOR_NAMESPACE) that keeps the
    undeploys a deletion had to skip across restarts."""

    database: Any = field(default=None, repr=False)
    """The database settings (``mlserve.models.settings.DatabaseSettings``)."""

    render: Any = field(default=None, repr=False)
    """The renderers' settings (``mlserve.operator.render.settings.RenderSettings``)."""

    schedule: Any = field(default=None, repr=False)
    """The scheduler's settings (``mlserve.operator.reconcile.schedule.ScheduleSettings``:
    MLSERVE_SCHEDULE_HISTORY_LIMIT, MLSERVE_SCHEDULE_STARTING_DEADLINE); None: its defaults."""

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        require_cluster_name: bool = True,
    ) -> OperatorSettings:
        """Read and validate every setting; raise :class:`SettingsError` on the first bad one."""
        env = os.environ if env is None else env
        cluster_name = _get(env, "CLUSTER_NAME") or ""
        if require_cluster_name and not cluster_name:
            raise SettingsError(
                PREFIX + "CLUSTER_NAME",
                "is required: set it to the env_configs.cluster_name of the environments this "
                "cluster runs (e.g. MLSERVE_CLUSTER_NAME=local)",
            )

        namespaces: tuple[str, ...] = ()
        raw_namespaces = _get(env, "NAMESPACES")
        if raw_namespaces:
            namespaces = tuple(n.strip() for n in raw_namespaces.split(",") if n.strip())
            for namespace in namespaces:
                if not _NAMESPACE_PATTERN.match(namespace) or len(namespace) > 64:
                    raise SettingsError(
                        PREFIX + "NAMESPACES",
                        f"{namespace!r} is not a namespace name or pattern: list namespaces separated "
                        "by commas (globs like team-* and exclusions like !kube-* allowed), or leave "
                        "it empty to watch the whole cluster",
                    )

        log_format = (_get(env, "LOG_FORMAT") or "plain").lower()
        if log_format not in ("json", "plain"):
            raise SettingsError(PREFIX + "LOG_FORMAT", f"{log_format!r} must be json or plain")

        log_level = (_get(env, "LOG_LEVEL") or "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(PREFIX + "LOG_LEVEL", f"{log_level!r} must be DEBUG, INFO, WARNING or ERROR")

        liveness: str | None = _get(env, "LIVENESS_ENDPOINT") or cls.liveness_endpoint
        if liveness is not None and liveness.lower() in ("off", "none", "false", "0"):
            liveness = None
        if liveness is not None and not re.match(r"^https?://[^/]+(/.*)?$", liveness):
            raise SettingsError(
                PREFIX + "LIVENESS_ENDPOINT",
                f"{liveness!r} is not a URL: write e.g. http://0.0.0.0:8080/healthz, or off",
            )

        field_manager = _get(env, "FIELD_MANAGER") or cls.field_manager
        if len(field_manager) > 128:
            raise SettingsError(PREFIX + "FIELD_MANAGER", "must be at most 128 characters")

        retry_delay = _duration(env, "RETRY_DELAY", cls.retry_delay)
        retry_max_delay = _duration(env, "RETRY_MAX_DELAY", cls.retry_max_delay)
        if retry_max_delay < retry_delay:
            raise SettingsError(
                PREFIX + "RETRY_MAX_DELAY",
                f"must be at least MLSERVE_RETRY_DELAY ({retry_delay:g}s)",
            )

        return cls(
            cluster_name=cluster_name,
            namespaces=namespaces,
            sync_interval=_duration(env, "SYNC_INTERVAL", cls.sync_interval),
            full_resync_interval=_duration(env, "FULL_RESYNC_INTERVAL", cls.full_resync_interval),
            drift_check_interval=_duration(env, "DRIFT_CHECK_INTERVAL", cls.drift_check_interval),
            deletion_db_timeout=_duration(env, "DELETION_DB_TIMEOUT", cls.deletion_db_timeout),
            db_timeout=_duration(env, "DB_TIMEOUT", cls.db_timeout),
            retry_delay=retry_delay,
            retry_max_delay=retry_max_delay,
            field_manager=field_manager,
            deploy_user=_get(env, "DEPLOY_USER") or cls.deploy_user,
            log_format=log_format,  # type: ignore[arg-type]
            log_level=log_level,
            liveness_endpoint=liveness,
            peering_name=_get(env, "PEERING_NAME"),
            peering_priority=_int(env, "PEERING_PRIORITY"),
            operator_namespace=_get(env, "OPERATOR_NAMESPACE"),
            pending_configmap=_get(env, "PENDING_CONFIGMAP") or cls.pending_configmap,
            database=_load_database_settings(env),
            render=_load_render_settings(env),
            schedule=_load_schedule_settings(env),
        )

    def backoff(self, retry: int) -> float:
        """The delay before retry number ``retry`` (0-based): doubling, capped."""
        return min(self.retry_max_delay, self.retry_delay * (2 ** max(0, min(retry, 16))))

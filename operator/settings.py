"""The operator's settings: one typed object read once from the environment at start-up.

:meth:`OperatorSettings.from_env` is the one reader of every ``MLSERVE_*`` variable (and of
Darwin's ``MYSQL_*``): it reads them all through one :class:`~mlserve.models.settings.EnvReader`
and composes typed sections, the database's (:class:`~mlserve.models.settings.DatabaseSettings`),
the renderers' (:class:`~mlserve.operator.render.settings.RenderSettings`) and the scheduler's
(:class:`~mlserve.operator.spec.schedule.ScheduleSettings`). The sections themselves are plain
values: the renderers and the planner never read the environment.

Every value is validated when the object is built, so a typo stops ``mlserve run`` before it
touches the cluster. Every bad value raises the one :class:`SettingsError`, whose message
names the variable and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from pydantic import ValidationError

from mlserve.models.errors import SettingsError
from mlserve.models.settings import DATABASE_VARIABLES, DatabaseSettings, EnvReader, parse_duration
from mlserve.operator.render.settings import RenderSettings
from mlserve.operator.spec.api import FIELD_MANAGER
from mlserve.operator.spec.namespaces import DEFAULT_DENIED_NAMESPACES, NamespacePolicy
from mlserve.operator.spec.schedule import ScheduleSettings

__all__ = [
    "OPERATOR_VARIABLES",
    "RENDER_VARIABLES",
    "SCHEDULE_VARIABLES",
    "OperatorSettings",
    "SettingsError",
    "parse_duration",
    "read_render_settings",
    "read_schedule_settings",
    "variables",
]

PREFIX = "MLSERVE_"
LogFormat = Literal["json", "plain"]

# A namespace name, or a glob of one (kopf's patterns: * and ?, ! to exclude).
_NAMESPACE_PATTERN = re.compile(r"^!?[a-z0-9*?]([-a-z0-9*?]*[a-z0-9*?])?$")

OPERATOR_VARIABLES = (
    "MLSERVE_CLUSTER_NAME",
    "MLSERVE_NAMESPACES",
    "MLSERVE_SYNC_INTERVAL",
    "MLSERVE_FULL_RESYNC_INTERVAL",
    "MLSERVE_DRIFT_CHECK_INTERVAL",
    "MLSERVE_DELETION_DB_TIMEOUT",
    "MLSERVE_DB_TIMEOUT",
    "MLSERVE_RETRY_DELAY",
    "MLSERVE_RETRY_MAX_DELAY",
    "MLSERVE_DEPLOY_USER",
    "MLSERVE_FIELD_MANAGER",
    "MLSERVE_LOG_FORMAT",
    "MLSERVE_LOG_LEVEL",
    "MLSERVE_LIVENESS_ENDPOINT",
    "MLSERVE_PEERING_NAME",
    "MLSERVE_PEERING_PRIORITY",
    "MLSERVE_OPERATOR_NAMESPACE",
    "MLSERVE_PENDING_CONFIGMAP",
    "MLSERVE_ALLOWED_NAMESPACES",
    "MLSERVE_DENIED_NAMESPACES",
)
"""The variables of :class:`OperatorSettings`' own fields."""

RENDER_VARIABLES: dict[str, str] = {
    "ingress_class": "MLSERVE_INGRESS_CLASS",
    "security_groups_annotation": "MLSERVE_INGRESS_SECURITY_GROUPS_ANNOTATION",
    "subnets_annotation": "MLSERVE_INGRESS_SUBNETS_ANNOTATION",
    "ingress_annotations": "MLSERVE_INGRESS_ANNOTATIONS",
    "capacity_type_label": "MLSERVE_CAPACITY_TYPE_LABEL",
    "image_pull_policy": "MLSERVE_IMAGE_PULL_POLICY",
    "hpa_cpu_utilization": "MLSERVE_HPA_CPU_UTILIZATION",
    "hpa_memory_utilization": "MLSERVE_HPA_MEMORY_UTILIZATION",
    "ray_cron_job": "MLSERVE_RAY_CRON_JOB",
    "rayjob_ttl_seconds": "MLSERVE_RAYJOB_TTL_SECONDS",
    "ray_version": "MLSERVE_RAY_VERSION",
    "workflow_entrypoint": "MLSERVE_WORKFLOW_ENTRYPOINT",
    "schedule_time_zone": "MLSERVE_SCHEDULE_TIME_ZONE",
}
"""The variable of each :class:`RenderSettings` field."""

SCHEDULE_VARIABLES = ("MLSERVE_SCHEDULE_HISTORY_LIMIT", "MLSERVE_SCHEDULE_STARTING_DEADLINE")
"""The variables of :class:`ScheduleSettings`."""


def variables() -> tuple[str, ...]:
    """Every variable the operator's settings read, in the order of the README's tables."""
    return (*OPERATOR_VARIABLES, *SCHEDULE_VARIABLES, *RENDER_VARIABLES.values(), *DATABASE_VARIABLES)


# The render fields whose value ``none`` means "leave it out", the plain text ones, the numbers.
_RENDER_OPTIONAL = (
    "ingress_class",
    "security_groups_annotation",
    "subnets_annotation",
    "capacity_type_label",
    "ray_version",
    "schedule_time_zone",
)
_RENDER_TEXT = ("image_pull_policy", "workflow_entrypoint")
_RENDER_INTEGER = ("hpa_cpu_utilization", "hpa_memory_utilization", "rayjob_ttl_seconds")


def _reader(env: Mapping[str, str] | EnvReader | None) -> EnvReader:
    return env if isinstance(env, EnvReader) else EnvReader(env)


def read_render_settings(env: Mapping[str, str] | EnvReader | None = None) -> RenderSettings:
    """The renderers' settings from ``MLSERVE_*`` (``os.environ`` by default); unset or empty
    keeps the default. ``mlserve render`` uses it alone; ``mlserve run`` through
    :meth:`OperatorSettings.from_env`."""
    reader = _reader(env)
    values: dict[str, object] = {}
    for name in _RENDER_OPTIONAL:
        raw = reader.text(RENDER_VARIABLES[name])
        if raw is not None:
            values[name] = None if raw.lower() == "none" else raw
    for name in _RENDER_TEXT:
        raw = reader.text(RENDER_VARIABLES[name])
        if raw is not None:
            values[name] = raw
    for name in _RENDER_INTEGER:
        number = reader.integer(RENDER_VARIABLES[name])
        if number is not None:
            values[name] = number
    cron_job = reader.boolean(RENDER_VARIABLES["ray_cron_job"])
    if cron_job is not None:
        values["ray_cron_job"] = cron_job
    raw = reader.text(RENDER_VARIABLES["ingress_annotations"])
    if raw is not None:
        values["ingress_annotations"] = _annotations(RENDER_VARIABLES["ingress_annotations"], raw)
    try:
        return RenderSettings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = RENDER_VARIABLES.get(str(error["loc"][0]), PREFIX + str(error["loc"][0]).upper())
        message = str(error["msg"]).removeprefix("Value error, ")
        raise SettingsError(variable, message) from None


def _annotations(variable: str, raw: str) -> tuple[tuple[str, str], ...]:
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise SettingsError(variable, 'is not JSON: write an object, e.g. {"key": "value"}') from None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise SettingsError(variable, "must be a JSON object of string values")
    return tuple(sorted(parsed.items()))


def read_schedule_settings(env: Mapping[str, str] | EnvReader | None = None) -> ScheduleSettings:
    """The scheduler's settings from ``MLSERVE_SCHEDULE_*``; unset keeps the default.

    * ``MLSERVE_SCHEDULE_HISTORY_LIMIT``: finished RayJobs kept per MLServe (default 3).
    * ``MLSERVE_SCHEDULE_STARTING_DEADLINE``: a duration (``600``, ``10m``, ``1h``), or
      ``none`` to start a missed run however late (default 10m).
    """
    reader = _reader(env)
    defaults = ScheduleSettings()
    history_variable, deadline_variable = SCHEDULE_VARIABLES
    history_limit = defaults.history_limit
    raw = reader.text(history_variable)
    if raw is not None:
        if not raw.isdigit():
            raise SettingsError(
                history_variable,
                f"{raw!r} is not a whole number: write how many finished RayJobs to keep, e.g. 3",
            )
        history_limit = int(raw)
    deadline = defaults.starting_deadline
    raw = reader.text(deadline_variable)
    if raw is not None:
        deadline = None if raw.lower() in {"none", "off"} else timedelta(seconds=parse_duration(deadline_variable, raw))
    return ScheduleSettings(history_limit=history_limit, starting_deadline=deadline)


def _namespaces(raw: str | None, variable: str = PREFIX + "NAMESPACES") -> tuple[str, ...]:
    """MLSERVE_NAMESPACES: names or kopf patterns, comma-separated; empty is the whole cluster."""
    namespaces = tuple(n.strip() for n in (raw or "").split(",") if n.strip())
    for namespace in namespaces:
        if not _NAMESPACE_PATTERN.match(namespace) or len(namespace) > 64:
            raise SettingsError(
                variable,
                f"{namespace!r} is not a namespace name or pattern: list namespaces separated "
                "by commas (globs like team-* and exclusions like !kube-* allowed), or leave "
                "it empty for the default",
            )
    return namespaces


def _namespace_policy(reader: EnvReader, operator_namespace: str | None) -> NamespacePolicy:
    """MLSERVE_ALLOWED_NAMESPACES (empty: any) and MLSERVE_DENIED_NAMESPACES (unset: Kubernetes'
    own namespaces and the operator's, MLSERVE_OPERATOR_NAMESPACE; ``none``: none). A list
    given replaces the whole default."""
    denied_raw = reader.text(PREFIX + "DENIED_NAMESPACES")
    refused_own: str | None = None
    if denied_raw is None:
        denied: tuple[str, ...] = DEFAULT_DENIED_NAMESPACES
        refused_own = operator_namespace
    elif denied_raw.strip().lower() == "none":
        denied = ()
    else:
        denied = _namespaces(denied_raw, PREFIX + "DENIED_NAMESPACES")
    allowed = _namespaces(reader.text(PREFIX + "ALLOWED_NAMESPACES"), PREFIX + "ALLOWED_NAMESPACES")
    return NamespacePolicy(allowed=allowed, denied=denied, operator_namespace=refused_own)


def _liveness(raw: str | None, default: str | None) -> str | None:
    """MLSERVE_LIVENESS_ENDPOINT: a URL, or ``off`` for none."""
    liveness = raw or default
    if liveness is not None and liveness.lower() in ("off", "none", "false", "0"):
        return None
    if liveness is not None and not re.match(r"^https?://[^/]+(/.*)?$", liveness):
        raise SettingsError(
            PREFIX + "LIVENESS_ENDPOINT",
            f"{liveness!r} is not a URL: write e.g. http://0.0.0.0:8080/healthz, or off",
        )
    return liveness


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

    field_manager: str = FIELD_MANAGER
    """MLSERVE_FIELD_MANAGER: the server-side apply field manager owning the children."""

    log_format: LogFormat = "plain"
    """MLSERVE_LOG_FORMAT: ``plain`` for people, ``json`` for log collectors."""

    log_level: str = "INFO"
    """MLSERVE_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""

    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    """MLSERVE_LIVENESS_ENDPOINT: kopf's liveness probe URL; ``off`` disables it."""

    peering_name: str | None = None
    """MLSERVE_PEERING_NAME: the kopf peering object shared by the operator's replicas, so only
    one acts at a time (needs kopf's peering CRDs, in the Helm chart:
    deploy/helm/mlserve-operator/crds/kopf.dev_peerings.yaml). Empty runs standalone (one replica)."""

    peering_priority: int | None = None
    """MLSERVE_PEERING_PRIORITY: this replica's kopf peering priority; the highest live one
    acts. Unset: a random priority per process, because replicas of equal priority all pause."""

    operator_namespace: str | None = None
    """MLSERVE_OPERATOR_NAMESPACE: the namespace the operator runs in (the Helm chart sets it);
    holds the ConfigMap of undeploys a deletion had to skip. Unset: that list is in memory only."""

    pending_configmap: str = "mlserve-operator-pending"
    """MLSERVE_PENDING_CONFIGMAP: the ConfigMap (in MLSERVE_OPERATOR_NAMESPACE) that keeps the
    undeploys a deletion had to skip across restarts."""

    namespace_policy: NamespacePolicy = field(default_factory=NamespacePolicy)
    """MLSERVE_ALLOWED_NAMESPACES / MLSERVE_DENIED_NAMESPACES: the namespaces the database may
    point the operator at (the operator's own namespace is always refused)."""

    database: DatabaseSettings | None = field(default=None, repr=False)
    """The database settings; None: read from the environment when connecting."""

    render: RenderSettings = field(default_factory=RenderSettings, repr=False)
    """The renderers' settings (MLSERVE_INGRESS_*, MLSERVE_HPA_*, MLSERVE_RAY*, ...)."""

    schedule: ScheduleSettings = field(default_factory=ScheduleSettings, repr=False)
    """The scheduler's settings (MLSERVE_SCHEDULE_HISTORY_LIMIT, MLSERVE_SCHEDULE_STARTING_DEADLINE)."""

    def namespace_refusal(self, namespace: str) -> str | None:
        """Why the database may not point at ``namespace`` (naming the setting), or None."""
        return self.namespace_policy.refusal(namespace)

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | EnvReader | None = None,
        *,
        require_cluster_name: bool = True,
    ) -> OperatorSettings:
        """Read and validate every setting; raise :class:`SettingsError` on the first bad one."""
        reader = _reader(env)
        cluster_name = reader.text(PREFIX + "CLUSTER_NAME") or ""
        if require_cluster_name and not cluster_name:
            raise SettingsError(
                PREFIX + "CLUSTER_NAME",
                "is required: set it to the env_configs.cluster_name of the environments this "
                "cluster runs (e.g. MLSERVE_CLUSTER_NAME=local)",
            )

        namespaces = _namespaces(reader.text(PREFIX + "NAMESPACES"))
        log_format = (reader.text(PREFIX + "LOG_FORMAT") or "plain").lower()
        if log_format not in ("json", "plain"):
            raise SettingsError(PREFIX + "LOG_FORMAT", f"{log_format!r} must be json or plain")
        log_level = (reader.text(PREFIX + "LOG_LEVEL") or "INFO").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(PREFIX + "LOG_LEVEL", f"{log_level!r} must be DEBUG, INFO, WARNING or ERROR")
        liveness = _liveness(reader.text(PREFIX + "LIVENESS_ENDPOINT"), cls.liveness_endpoint)
        field_manager = reader.text(PREFIX + "FIELD_MANAGER") or cls.field_manager
        if len(field_manager) > 128:
            raise SettingsError(PREFIX + "FIELD_MANAGER", "must be at most 128 characters")

        def duration(name: str, default: float) -> float:
            seconds = reader.duration(PREFIX + name)
            return default if seconds is None else seconds

        retry_delay = duration("RETRY_DELAY", cls.retry_delay)
        retry_max_delay = duration("RETRY_MAX_DELAY", cls.retry_max_delay)
        if retry_max_delay < retry_delay:
            raise SettingsError(
                PREFIX + "RETRY_MAX_DELAY",
                f"must be at least MLSERVE_RETRY_DELAY ({retry_delay:g}s)",
            )

        operator_namespace = reader.text(PREFIX + "OPERATOR_NAMESPACE")
        return cls(
            cluster_name=cluster_name,
            namespaces=namespaces,
            sync_interval=duration("SYNC_INTERVAL", cls.sync_interval),
            full_resync_interval=duration("FULL_RESYNC_INTERVAL", cls.full_resync_interval),
            drift_check_interval=duration("DRIFT_CHECK_INTERVAL", cls.drift_check_interval),
            deletion_db_timeout=duration("DELETION_DB_TIMEOUT", cls.deletion_db_timeout),
            db_timeout=duration("DB_TIMEOUT", cls.db_timeout),
            retry_delay=retry_delay,
            retry_max_delay=retry_max_delay,
            field_manager=field_manager,
            deploy_user=reader.text(PREFIX + "DEPLOY_USER") or cls.deploy_user,
            log_format="json" if log_format == "json" else "plain",
            log_level=log_level,
            liveness_endpoint=liveness,
            peering_name=reader.text(PREFIX + "PEERING_NAME"),
            peering_priority=reader.integer(PREFIX + "PEERING_PRIORITY"),
            operator_namespace=operator_namespace,
            namespace_policy=_namespace_policy(reader, operator_namespace),
            pending_configmap=reader.text(PREFIX + "PENDING_CONFIGMAP") or cls.pending_configmap,
            database=DatabaseSettings.from_env(reader),
            render=read_render_settings(reader),
            schedule=read_schedule_settings(reader),
        )

    def backoff(self, retry: int) -> float:
        """The delay before retry number ``retry`` (0-based): doubling, capped."""
        return min(self.retry_max_delay, self.retry_delay * float(2 ** max(0, min(retry, 16))))

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

from mlserve.models.errors import InvalidConfig, SettingsError
from mlserve.models.settings import DATABASE_VARIABLES, DatabaseSettings, EnvReader, parse_duration
from mlserve.operator.render.settings import RenderSettings
from mlserve.operator.spec.api import FIELD_MANAGER
from mlserve.operator.spec.images import image_reference_problem
from mlserve.operator.spec.namespaces import DEFAULT_DENIED_NAMESPACES, NamespacePolicy
from mlserve.operator.spec.pods import pod_extras_of
from mlserve.operator.spec.schedule import ScheduleSettings

__all__ = [
    "BUILDER_VARIABLES",
    "OPERATOR_VARIABLES",
    "RENDER_VARIABLES",
    "SCHEDULE_VARIABLES",
    "BuilderSettings",
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
    "MLSERVE_SYNC_TICK_TIMEOUT",
    "MLSERVE_SYNC_STALL_TIMEOUT",
    "MLSERVE_DRIFT_CHECK_INTERVAL",
    "MLSERVE_DELETION_DB_TIMEOUT",
    "MLSERVE_DB_TIMEOUT",
    "MLSERVE_DB_CREATE_SCHEMA",
    "MLSERVE_DB_MIGRATE_ON_START",
    "MLSERVE_RETRY_DELAY",
    "MLSERVE_RETRY_MAX_DELAY",
    "MLSERVE_WORKERS",
    "MLSERVE_RECONCILE_RATE",
    "MLSERVE_DEPLOY_USER",
    "MLSERVE_FIELD_MANAGER",
    "MLSERVE_LOG_FORMAT",
    "MLSERVE_LOG_LEVEL",
    "MLSERVE_LIVENESS_ENDPOINT",
    "MLSERVE_METRICS_PORT",
    "MLSERVE_DCM_LISTEN",
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
    "progress_deadline_seconds": "MLSERVE_PROGRESS_DEADLINE_SECONDS",
    "ray_cron_job": "MLSERVE_RAY_CRON_JOB",
    "rayjob_ttl_seconds": "MLSERVE_RAYJOB_TTL_SECONDS",
    "ray_version": "MLSERVE_RAY_VERSION",
    "workflow_entrypoint": "MLSERVE_WORKFLOW_ENTRYPOINT",
    "schedule_time_zone": "MLSERVE_SCHEDULE_TIME_ZONE",
    "pod_service_account": "MLSERVE_POD_SERVICE_ACCOUNT",
    "pod_image_pull_secrets": "MLSERVE_POD_IMAGE_PULL_SECRETS",
    "pod_labels": "MLSERVE_POD_LABELS",
    "pod_annotations": "MLSERVE_POD_ANNOTATIONS",
    "pod_tolerations": "MLSERVE_POD_TOLERATIONS",
    "pod_node_selector": "MLSERVE_POD_NODE_SELECTOR",
}
"""The variable of each :class:`RenderSettings` field."""

SCHEDULE_VARIABLES = ("MLSERVE_SCHEDULE_HISTORY_LIMIT", "MLSERVE_SCHEDULE_STARTING_DEADLINE")
"""The variables of :class:`ScheduleSettings`."""


BUILDER_VARIABLES = (
    "MLSERVE_BUILDER_ENABLED",
    "MLSERVE_BUILDER_IMAGE",
    "MLSERVE_BUILDER_ARGS",
    "MLSERVE_BUILDER_IMAGE_URL",
    "MLSERVE_BUILDER_NAMESPACE",
    "MLSERVE_BUILDER_TIMEOUT",
    "MLSERVE_BUILDER_MAX_RETRIES",
    "MLSERVE_BUILDER_LEASE",
    "MLSERVE_BUILDER_CONCURRENCY",
    "MLSERVE_BUILDER_SERVICE_ACCOUNT",
    "MLSERVE_BUILDER_SECRET",
    "MLSERVE_BUILDER_POD_LABELS",
)
"""The variables of :class:`BuilderSettings`."""


def variables() -> tuple[str, ...]:
    """Every variable the operator's settings read, in the order of the README's tables."""
    return (
        *OPERATOR_VARIABLES,
        *SCHEDULE_VARIABLES,
        *RENDER_VARIABLES.values(),
        *BUILDER_VARIABLES,
        *DATABASE_VARIABLES,
    )


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
_RENDER_INTEGER = (
    "hpa_cpu_utilization",
    "hpa_memory_utilization",
    "progress_deadline_seconds",
    "rayjob_ttl_seconds",
)


def _port(reader: EnvReader, name: str, default: int) -> int:
    value = reader.integer(PREFIX + name, "a port number, or 0 for none")
    if value is None:
        return default
    if not 0 <= value <= 65535:
        raise SettingsError(PREFIX + name, f"{value} must be a port number (1-65535), or 0 for none")
    return value


def _flag(reader: EnvReader, name: str, default: bool) -> bool:
    value = reader.boolean(PREFIX + name)
    return default if value is None else value


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
    values.update(_pod_settings(reader))
    try:
        return RenderSettings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        variable = RENDER_VARIABLES.get(str(error["loc"][0]), PREFIX + str(error["loc"][0]).upper())
        message = str(error["msg"]).removeprefix("Value error, ")
        raise SettingsError(variable, message) from None


def _pod_settings(reader: EnvReader) -> dict[str, object]:
    """The ``MLSERVE_POD_*`` variables, each checked on its own so an error names it."""
    values: dict[str, object] = {}
    for name in ("pod_service_account", "pod_image_pull_secrets"):
        raw = reader.text(RENDER_VARIABLES[name])
        if raw is not None:
            values[name] = raw if name == "pod_service_account" else _pod_extra(name, raw)
    for name in ("pod_labels", "pod_annotations", "pod_node_selector"):
        raw = reader.text(RENDER_VARIABLES[name])
        if raw is not None:
            values[name] = _annotations(RENDER_VARIABLES[name], raw)
    raw = reader.text(RENDER_VARIABLES["pod_tolerations"])
    if raw is not None:
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise SettingsError(
                RENDER_VARIABLES["pod_tolerations"],
                'is not JSON: write a list, e.g. [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]',
            ) from None
        if not isinstance(parsed, list):
            raise SettingsError(RENDER_VARIABLES["pod_tolerations"], "must be a JSON list of tolerations")
        values["pod_tolerations"] = _pod_extra("pod_tolerations", parsed)
    for name, value in values.items():
        _pod_extra(name, value)
    return values


def _pod_extra(name: str, value: object) -> object:
    """One pod setting, validated as :class:`PodExtras` does (SettingsError naming the variable)."""
    field = name.removeprefix("pod_")
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        value = dict(value)  # pairs of a JSON object
    try:
        extras = pod_extras_of({field: value})
    except InvalidConfig as exc:
        raise SettingsError(RENDER_VARIABLES[name], exc.message) from None
    return getattr(extras, field)


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


def _rate(raw: str | None, default: float | None) -> float | None:
    """MLSERVE_RECONCILE_RATE: a positive number per second, or ``off``."""
    if raw is None:
        return default
    if raw.lower() in ("off", "none", "0"):
        return None
    try:
        rate = float(raw)
    except ValueError:
        rate = -1.0
    if not rate > 0 or rate != rate or rate == float("inf"):
        raise SettingsError(
            PREFIX + "RECONCILE_RATE",
            f"{raw!r} is not a rate: write reconciles per second (e.g. 100), or off for no limit",
        )
    return rate


def _listen(raw: str | None) -> tuple[str, int] | None:
    """MLSERVE_DCM_LISTEN: ``HOST:PORT``, or empty / ``off`` for none."""
    if raw is None or raw.lower() in ("off", "none", "false", "0"):
        return None
    host, sep, port = raw.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(PREFIX + "DCM_LISTEN", f"{raw!r} is not HOST:PORT: write e.g. 0.0.0.0:8090, or off")
    return host, int(port)


_KANIKO = "gcr.io/kaniko-project/executor:v1.23.2"
_KANIKO_ARGS = ("--context=$(BUILD_GIT_CONTEXT)", "--destination=$(BUILD_IMAGE)")
_IMAGE_URL_FIELDS = ("serve", "version", "job")


@dataclass(frozen=True)
class BuilderSettings:
    """The optional artifact builder (``MLSERVE_BUILDER_*``): PENDING ``artifact_builder_job``
    rows built as Kubernetes Jobs (``reconcile/builder.py``). Off by default."""

    enabled: bool = False
    """MLSERVE_BUILDER_ENABLED: build PENDING jobs of the database (any serve, any environment)."""

    image: str = _KANIKO
    """MLSERVE_BUILDER_IMAGE: the image of the Job's one container: a Dockerfile builder (kaniko's
    executor by default; buildkit's ``moby/buildkit:rootless`` with ``buildctl-daemonless.sh``
    works as well)."""

    args: tuple[str, ...] = _KANIKO_ARGS
    """MLSERVE_BUILDER_ARGS: the container's arguments, a JSON list. Kubernetes expands
    ``$(BUILD_...)`` from the variables the container gets: BUILD_JOB_ID, BUILD_SERVE,
    BUILD_VERSION, BUILD_REPOSITORY, BUILD_BRANCH, BUILD_GIT_CONTEXT (kaniko's
    ``git://host/path#refs/heads/branch``) and BUILD_IMAGE (where to push)."""

    image_url: str = ""
    """MLSERVE_BUILDER_IMAGE_URL: where a build pushes and what ``artifacts.image_url`` records,
    with ``{serve}``, ``{version}`` and ``{job}`` filled in; Darwin's is
    ``<registry>/<repository>:{serve}_{version}``. Required when the builder is enabled."""

    namespace: str = ""
    """MLSERVE_BUILDER_NAMESPACE: where the build Jobs run; default MLSERVE_OPERATOR_NAMESPACE."""

    timeout: float = 1800.0
    """MLSERVE_BUILDER_TIMEOUT: the longest one build may run, retries included (the Job's
    ``activeDeadlineSeconds``); then the job is FAILED."""

    max_retries: int = 2
    """MLSERVE_BUILDER_MAX_RETRIES: how many times a failed build pod is started again (the Job's
    ``backoffLimit``) before the job is FAILED."""

    lease: float = 10.0
    """MLSERVE_BUILDER_LEASE: how long a job's ``last_picked_at`` keeps it from other pickers;
    renewed every quarter of it while the build runs. 10 s is Darwin's poller's, so a job the
    operator builds is never taken by Darwin's poller either."""

    concurrency: int = 2
    """MLSERVE_BUILDER_CONCURRENCY: builds one operator runs at once."""

    service_account: str | None = None
    """MLSERVE_BUILDER_SERVICE_ACCOUNT: the build pods' service account (e.g. one with the
    registry's push rights through workload identity)."""

    secret: str | None = None
    """MLSERVE_BUILDER_SECRET: a Secret of the builder's namespace whose keys become the build
    container's variables (``envFrom``): Git and registry credentials, never in the database."""

    pod_labels: tuple[tuple[str, str], ...] = ()
    """MLSERVE_BUILDER_POD_LABELS: extra labels of the build pods, a JSON object."""

    def image_url_of(self, serve: str, version: str, job: int) -> str:
        return self.image_url.format(serve=serve, version=version, job=job)


def _builder_settings(reader: EnvReader, operator_namespace: str | None) -> BuilderSettings:
    defaults = BuilderSettings()
    enabled = _flag(reader, "BUILDER_ENABLED", defaults.enabled)
    raw_args = reader.text(PREFIX + "BUILDER_ARGS")
    args = defaults.args
    if raw_args is not None:
        try:
            parsed = json.loads(raw_args)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
            raise SettingsError(
                PREFIX + "BUILDER_ARGS", 'must be a JSON list of strings, e.g. ["--destination=$(BUILD_IMAGE)"]'
            )
        args = tuple(parsed)
    image_url = reader.text(PREFIX + "BUILDER_IMAGE_URL") or ""
    namespace = reader.text(PREFIX + "BUILDER_NAMESPACE") or operator_namespace or ""
    if enabled:
        if not image_url:
            raise SettingsError(
                PREFIX + "BUILDER_IMAGE_URL",
                "is required with MLSERVE_BUILDER_ENABLED: where builds push, e.g. registry.example.com/serves:{serve}_{version}",
            )
        if not namespace:
            raise SettingsError(
                PREFIX + "BUILDER_NAMESPACE",
                "is required with MLSERVE_BUILDER_ENABLED when MLSERVE_OPERATOR_NAMESPACE is not set: the build Jobs' namespace",
            )
    if image_url:
        try:
            sample = image_url.format(serve="serve", version="1.0", job=1)
        except (KeyError, IndexError, ValueError):
            raise SettingsError(
                PREFIX + "BUILDER_IMAGE_URL", "may hold only {serve}, {version} and {job} as fields"
            ) from None
        problem = image_reference_problem(sample)
        if problem:
            raise SettingsError(PREFIX + "BUILDER_IMAGE_URL", problem)
    timeout = reader.duration(PREFIX + "BUILDER_TIMEOUT")
    lease = reader.duration(PREFIX + "BUILDER_LEASE")
    if lease is not None and lease < 2:
        raise SettingsError(
            PREFIX + "BUILDER_LEASE", f"{lease:g}s is too short: at least 2s (Darwin's poller uses 10s)"
        )
    retries = reader.integer(PREFIX + "BUILDER_MAX_RETRIES")
    if retries is not None and not 0 <= retries <= 20:
        raise SettingsError(PREFIX + "BUILDER_MAX_RETRIES", f"{retries} must be between 0 and 20")
    concurrency = reader.integer(PREFIX + "BUILDER_CONCURRENCY")
    if concurrency is not None and not 1 <= concurrency <= 64:
        raise SettingsError(PREFIX + "BUILDER_CONCURRENCY", f"{concurrency} must be between 1 and 64")
    raw_labels = reader.text(PREFIX + "BUILDER_POD_LABELS")
    return BuilderSettings(
        enabled=enabled,
        image=reader.text(PREFIX + "BUILDER_IMAGE") or defaults.image,
        args=args,
        image_url=image_url,
        namespace=namespace,
        timeout=defaults.timeout if timeout is None else max(1.0, timeout),
        max_retries=defaults.max_retries if retries is None else retries,
        lease=defaults.lease if lease is None else lease,
        concurrency=defaults.concurrency if concurrency is None else concurrency,
        service_account=reader.text(PREFIX + "BUILDER_SERVICE_ACCOUNT"),
        secret=reader.text(PREFIX + "BUILDER_SECRET"),
        pod_labels=() if raw_labels is None else _annotations(PREFIX + "BUILDER_POD_LABELS", raw_labels),
    )


@dataclass(frozen=True)
class OperatorSettings:
    """What ``mlserve run`` needs; build it with :meth:`from_env`."""

    cluster_name: str
    """MLSERVE_CLUSTER_NAME: this cluster's name as written in ``env_configs.cluster_name``.
    The operator acts only for environments bound to it. Required by ``mlserve run``."""

    namespaces: tuple[str, ...] = ()
    """MLSERVE_NAMESPACES: comma-separated namespaces to watch (globs such as ``team-*`` and
    exclusions such as ``!kube-*`` allowed); empty watches the whole cluster."""

    sync_interval: float = 1.0
    """MLSERVE_SYNC_INTERVAL: seconds between two database → cluster sync ticks (an idle tick
    is one database statement and no API request)."""

    full_resync_interval: float = 300.0
    """MLSERVE_FULL_RESYNC_INTERVAL: seconds between two full database → cluster resyncs."""

    sync_tick_timeout: float = 120.0
    """MLSERVE_SYNC_TICK_TIMEOUT: the longest one sync tick may take; a longer one is cancelled,
    logged, and the next tick starts with a full pass."""

    sync_stall_timeout: float = 300.0
    """MLSERVE_SYNC_STALL_TIMEOUT: the liveness probe fails when the sync loop has not finished a
    tick (well or not) for this long, so a stuck loop restarts the pod."""

    drift_check_interval: float = 60.0
    """MLSERVE_DRIFT_CHECK_INTERVAL: seconds between two reconciles of an unchanged MLServe,
    the upper bound on how long drift the child watches miss stays unrepaired."""

    deletion_db_timeout: float = 30.0
    """MLSERVE_DELETION_DB_TIMEOUT: how long a deletion waits for the database before it lets the
    MLServe go and leaves the ended deployment to the sync loop."""

    db_timeout: float = 10.0
    """MLSERVE_DB_TIMEOUT: the longest one database statement or transaction may run once it has
    a connection (waiting for a pooled connection is not counted)."""

    db_create_schema: bool = True
    """MLSERVE_DB_CREATE_SCHEMA: create the schema at start when the database has no tables.
    A database that has tables is never changed at start unless MLSERVE_DB_MIGRATE_ON_START."""

    db_migrate_on_start: bool = False
    """MLSERVE_DB_MIGRATE_ON_START: apply pending migrations (or adopt a schema Darwin created) at
    start; off, the operator refuses to start until ``mlserve db migrate`` has run."""

    retry_delay: float = 5.0
    """MLSERVE_RETRY_DELAY: first retry delay after a temporary failure (database down, child
    not applied); doubles per retry up to :attr:`retry_max_delay`."""

    retry_max_delay: float = 120.0
    """MLSERVE_RETRY_MAX_DELAY: the longest delay between two retries."""

    workers: int = 16
    """MLSERVE_WORKERS: how many MLServes are reconciled at once (the work queue's workers); a
    reconcile mostly waits for the API server and the database, so more help when they answer
    slowly, up to what the database pool serves."""

    reconcile_rate: float | None = 100.0
    """MLSERVE_RECONCILE_RATE: reconciles started per second, all MLServes together, as a
    token bucket holding one second's worth (so bursts of that size start at once);
    ``off`` for no limit."""

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

    metrics_port: int = 9090
    """MLSERVE_METRICS_PORT: the port of the Prometheus metrics (``/metrics`` on every address);
    0 serves none."""
    dcm_listen: tuple[str, int] | None = None
    """MLSERVE_DCM_LISTEN: ``HOST:PORT`` on which the operator answers the calls Darwin's ML Serve
    API makes to its cluster manager (DCM_URL), e.g. ``0.0.0.0:8090``; unset or ``off``: not served."""

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

    builder: BuilderSettings = field(default_factory=BuilderSettings, repr=False)
    """The optional artifact builder's settings (MLSERVE_BUILDER_*)."""

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

        sync_interval = duration("SYNC_INTERVAL", cls.sync_interval)
        stall_timeout = duration("SYNC_STALL_TIMEOUT", cls.sync_stall_timeout)
        if stall_timeout <= 2 * sync_interval:
            raise SettingsError(
                PREFIX + "SYNC_STALL_TIMEOUT",
                f"must be more than twice MLSERVE_SYNC_INTERVAL ({sync_interval:g}s), or a healthy "
                "loop that waits between ticks fails the liveness probe",
            )
        db_timeout = duration("DB_TIMEOUT", cls.db_timeout)
        workers = reader.integer(PREFIX + "WORKERS")
        if workers is not None and not 1 <= workers <= 256:
            raise SettingsError(PREFIX + "WORKERS", f"{workers} must be between 1 and 256, e.g. 8")
        reconcile_rate = _rate(reader.text(PREFIX + "RECONCILE_RATE"), cls.reconcile_rate)

        operator_namespace = reader.text(PREFIX + "OPERATOR_NAMESPACE")
        return cls(
            cluster_name=cluster_name,
            namespaces=namespaces,
            sync_interval=sync_interval,
            full_resync_interval=duration("FULL_RESYNC_INTERVAL", cls.full_resync_interval),
            sync_tick_timeout=duration("SYNC_TICK_TIMEOUT", cls.sync_tick_timeout),
            sync_stall_timeout=stall_timeout,
            drift_check_interval=duration("DRIFT_CHECK_INTERVAL", cls.drift_check_interval),
            deletion_db_timeout=duration("DELETION_DB_TIMEOUT", cls.deletion_db_timeout),
            db_timeout=db_timeout,
            db_create_schema=_flag(reader, "DB_CREATE_SCHEMA", cls.db_create_schema),
            db_migrate_on_start=_flag(reader, "DB_MIGRATE_ON_START", cls.db_migrate_on_start),
            retry_delay=retry_delay,
            retry_max_delay=retry_max_delay,
            workers=cls.workers if workers is None else workers,
            reconcile_rate=reconcile_rate,
            field_manager=field_manager,
            deploy_user=reader.text(PREFIX + "DEPLOY_USER") or cls.deploy_user,
            log_format="json" if log_format == "json" else "plain",
            log_level=log_level,
            liveness_endpoint=liveness,
            metrics_port=_port(reader, "METRICS_PORT", cls.metrics_port),
            dcm_listen=_listen(reader.text(PREFIX + "DCM_LISTEN")),
            peering_name=reader.text(PREFIX + "PEERING_NAME"),
            peering_priority=reader.integer(PREFIX + "PEERING_PRIORITY"),
            operator_namespace=operator_namespace,
            namespace_policy=_namespace_policy(reader, operator_namespace),
            pending_configmap=reader.text(PREFIX + "PENDING_CONFIGMAP") or cls.pending_configmap,
            database=DatabaseSettings.from_env(reader).model_copy(update={"statement_timeout": db_timeout}),
            render=read_render_settings(reader),
            schedule=read_schedule_settings(reader),
            builder=_builder_settings(reader, operator_namespace),
        )

    def backoff(self, retry: int) -> float:
        """The delay before retry number ``retry`` (0-based): doubling, capped."""
        return min(self.retry_max_delay, self.retry_delay * float(2 ** max(0, min(retry, 16))))

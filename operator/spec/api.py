"""Every name the operator shares with the cluster, in one place.

The MLServe API (group, version, kind, plural, finalizer), every label and annotation key
the operator reads or writes, the field managers, the condition types, reasons and phases
of an MLServe's status, and the one registry of child kinds. Apply, prune, the watches,
RBAC (:mod:`mlserve.operator.permissions`) and the renderers all read these; a key spelled
anywhere else is a bug waiting to happen (grep for the literal should find only this file).

Pure data: no I/O, importable from every layer above ``models``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mlserve.models.enums import ServeType

__all__ = [
    "ANNOTATION_APPLIED_HASH",
    "ANNOTATION_ARTIFACT_VERSION",
    "ANNOTATION_DEPLOYMENT_ID",
    "ANNOTATION_ROLLBACK",
    "ANNOTATION_ROLLBACK_HANDLED",
    "ANNOTATION_SCHEDULED_TIME",
    "API_CHILD_KINDS",
    "API_VERSION",
    "CHILD_KINDS",
    "CRD_NAME",
    "DEPLOYMENT",
    "FIELD_MANAGER",
    "FINALIZER",
    "GROUP",
    "HORIZONTAL_POD_AUTOSCALER",
    "INGRESS",
    "KIND",
    "KOPF_ANNOTATION_PREFIX",
    "KUBERAY_CRONJOB_NAME_LABEL",
    "KUBERAY_CRONJOB_TIME_ANNOTATION",
    "LABEL_DEPLOYMENT_ID",
    "LABEL_ENVIRONMENT",
    "LABEL_MANAGED_BY",
    "LABEL_NAME",
    "LABEL_SERVE",
    "MANAGED_BY",
    "PLURAL",
    "POD_DISRUPTION_BUDGET",
    "RAYCRONJOB",
    "RAYJOB",
    "SERVICE",
    "SHORT_NAME",
    "SYNC_FIELD_MANAGER_SUFFIX",
    "VERSION",
    "WORKFLOW_CHILD_KINDS",
    "ChildKind",
    "ConditionType",
    "Phase",
    "Reason",
    "child_kind",
    "sync_field_manager",
]

# --- the MLServe custom resource (crds/mlserve.darwin.io_mlserves.yaml) ---------------------
GROUP = "mlserve.darwin.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "MLServe"
PLURAL = "mlserves"
SHORT_NAME = "mls"
CRD_NAME = f"{PLURAL}.{GROUP}"
FINALIZER = f"{GROUP}/finalizer"
KOPF_ANNOTATION_PREFIX = GROUP
"""The prefix of the annotations kopf itself keeps on an MLServe."""

# --- labels on every child (DESIGN.md) and on the MLServes the sync finds ---------------------
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_SERVE = f"{GROUP}/serve"
LABEL_ENVIRONMENT = f"{GROUP}/environment"
LABEL_DEPLOYMENT_ID = f"{GROUP}/deployment-id"
MANAGED_BY = "mlserve-operator"

# --- annotations -------------------------------------------------------------------------------
ANNOTATION_ARTIFACT_VERSION = f"{GROUP}/artifact-version"
"""On a child: the artifact version it runs."""
ANNOTATION_SCHEDULED_TIME = f"{GROUP}/scheduled-time"
"""On a scheduled RayJob: the cron time it runs for (RFC 3339)."""
ANNOTATION_DEPLOYMENT_ID = f"{GROUP}/deployment-id"
"""On an MLServe: the id of the ``deployments`` row its spec.artifactVersion reflects."""
ANNOTATION_APPLIED_HASH = f"{GROUP}/applied-hash"
"""On a child: the hash of the manifest last applied, to tell our changes from edits by hand."""
ANNOTATION_ROLLBACK = f"{GROUP}/rollback"
"""On an MLServe: any new token asks for a rollback to the previous deployment."""
ANNOTATION_ROLLBACK_HANDLED = f"{GROUP}/rollback-handled"
"""On an MLServe: the last rollback token the operator answered."""

# --- what KubeRay's RayCronJob controller writes on each RayJob it creates ----------------------
KUBERAY_CRONJOB_NAME_LABEL = "ray.io/cronjob-name"
"""The label naming the RayCronJob a RayJob was made by (``utils.RayCronJobNameLabelKey``)."""
KUBERAY_CRONJOB_TIME_ANNOTATION = "ray.io/cronjob-scheduled-timestamp"
"""The cron time a RayJob was made for, RFC 3339 in UTC (``utils.RayCronJobTimestampAnnotationKey``)."""

# --- field managers ---------------------------------------------------------------------------
FIELD_MANAGER = "mlserve-operator"
"""The default server-side apply field manager (``MLSERVE_FIELD_MANAGER``)."""
SYNC_FIELD_MANAGER_SUFFIX = "-sync"


def sync_field_manager(field_manager: str) -> str:
    """The field manager of the database sync's writes, told apart from the reconcile's."""
    return field_manager + SYNC_FIELD_MANAGER_SUFFIX


# --- status -----------------------------------------------------------------------------------
class ConditionType(StrEnum):
    """The conditions of an MLServe's status, in the order they are listed."""

    READY = "Ready"
    ARTIFACT_RESOLVED = "ArtifactResolved"
    DATABASE_SYNCED = "DatabaseSynced"
    SYNCED = "Synced"
    CONFLICT = "Conflict"


class Reason(StrEnum):
    """Every reason the operator writes: on a condition of an MLServe's status, on an Event, or
    both. CamelCase, as Kubernetes wants them; the member's value is what is stored."""

    # The MLServe or the database rows it names cannot be used (permanent until they change).
    INVALID_SPEC = "InvalidSpec"
    UNKNOWN_SERVE = "UnknownServe"
    UNKNOWN_ENVIRONMENT = "UnknownEnvironment"
    UNKNOWN_ARTIFACT = "UnknownArtifact"
    UNKNOWN_USER = "UnknownUser"
    ARTIFACT_NOT_BUILT = "ArtifactNotBuilt"
    ARTIFACT_BUILD_FAILED = "ArtifactBuildFailed"
    """The newest artifact_builder_job of the requested version is FAILED."""
    SERVE_TYPE_MISMATCH = "ServeTypeMismatch"
    INVALID_ENV_CONFIG = "InvalidEnvConfig"
    INVALID_INFRA_CONFIG = "InvalidInfraConfig"
    INVALID_SCHEDULE = "InvalidSchedule"
    WRONG_NAMESPACE = "WrongNamespace"
    FOREIGN_CLUSTER = "ForeignCluster"
    DUPLICATE_ACTIVE_DEPLOYMENTS = "DuplicateActiveDeployments"
    NOTHING_TO_ROLL_BACK = "NothingToRollBack"
    INVALID_DATABASE_ROW = "InvalidDatabaseRow"
    """A database row holds a value the operator does not know (an enum, a name the CRD refuses)."""
    NAMESPACE_REFUSED = "NamespaceRefused"
    """env_configs.namespace is refused by MLSERVE_ALLOWED_NAMESPACES / MLSERVE_DENIED_NAMESPACES."""
    INVALID_IMAGE = "InvalidImage"
    PENDING_LIST_MALFORMED = "PendingListMalformed"
    """Entries of the pending-undeploy ConfigMap that cannot be read: kept aside, the sync goes on."""
    """artifacts.image_url cannot be a container image reference."""
    RESOLVED = "Resolved"
    """ArtifactResolved: serve, environment and artifact found and usable."""
    ARTIFACT_BUILDING = "ArtifactBuilding"
    """ArtifactResolved and Ready: the requested version's build job is PENDING (phase Building)."""

    # Conflict: who holds the (serve, environment) pair.
    PAIR_CLAIMED = "PairClaimed"
    NO_CONFLICT = "NoConflict"
    CONFLICT = "Conflict"
    """Ready is False because another MLServe holds the pair."""

    # DatabaseSynced.
    DATABASE_UNAVAILABLE = "DatabaseUnavailable"
    IN_SYNC = "InSync"
    DEPLOYMENT_RECORDED = "DeploymentRecorded"
    SUPERSEDED = "Superseded"
    """The MLServe's request lost to a deployment the database recorded first (an Event too)."""
    ROLLBACK_NOT_HELD = "RollbackNotHeld"
    """A rollback token on an MLServe that does not hold its pair: answered, not kept."""
    UNDEPLOYED_IN_DATABASE = "UndeployedInDatabase"

    # Synced: applying the children (temporary failures are retried).
    APPLIED = "Applied"
    PAUSED = "Paused"
    API_ERROR = "ApiError"
    APPLY_FAILED = "ApplyFailed"
    LIST_FAILED = "ListFailed"
    PRUNE_FAILED = "PruneFailed"
    KIND_NOT_INSTALLED = "KindNotInstalled"
    HOST_CLAIMED = "HostClaimed"
    """The MLServe's Ingress is held back: another Ingress of the namespace claims one of its hosts."""
    """A write refused because the cluster does not serve the kind (its CRD is not installed)."""
    NAME_TAKEN = "NameTaken"
    """A child's name is held by an object this MLServe does not control (made by hand, or
    another MLServe's): nothing is written until it is gone."""
    SCHEDULED_RUN_FAILED = "ScheduledRunFailed"
    HISTORY_CLEANUP_FAILED = "HistoryCleanupFailed"
    RECONCILE_ERROR = "ReconcileError"
    """The reason of an error that names none (never written by the operator's own errors)."""

    # Ready: what the serving child reports.
    PODS_READY = "PodsReady"
    PODS_NOT_READY = "PodsNotReady"
    ROLLING_OUT = "RollingOut"
    ROLLOUT_STALLED = "ProgressDeadlineExceeded"
    """The Deployment made no progress for ``progressDeadlineSeconds``: phase Failed."""
    REPLICA_FAILURE = "ReplicaFailure"
    """The Deployment's pods could not be created (quota, admission): phase Failed."""
    IMAGE_PULL_ERROR = "ImagePullError"
    """The rollout's pods cannot pull their image (ErrImagePull, ImagePullBackOff...): phase Failed."""
    CHILD_MISSING = "ChildMissing"
    JOB_SUBMITTED = "JobSubmitted"
    JOB_RUNNING = "JobRunning"
    JOB_SUCCEEDED = "JobSucceeded"
    JOB_FAILED = "JobFailed"
    SCHEDULED = "Scheduled"

    # Events only.
    DEPLOYED = "Deployed"
    ROLLED_BACK = "RolledBack"
    UNDEPLOYED = "Undeployed"
    DRIFT_REPAIRED = "DriftRepaired"
    SCHEDULED_RUN = "ScheduledRun"
    MISSED_SCHEDULE = "MissedSchedule"
    DUPLICATE_RUN_DELETED = "DuplicateRunDeleted"
    """KubeRay's RayCronJob controller made a second RayJob for one cron time: deleted (docs/kuberay.md)."""


class Phase(StrEnum):
    """``status.phase`` (the CRD's enum)."""

    PENDING = "Pending"
    BUILDING = "Building"
    DEPLOYING = "Deploying"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    PAUSED = "Paused"
    CONFLICT = "Conflict"
    INVALID = "Invalid"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    SCHEDULED = "Scheduled"
    DELETING = "Deleting"


# --- children ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChildKind:
    """One kind of child the renderers may produce."""

    group: str
    """API group; empty for the core group."""
    version: str
    kind: str
    plural: str
    serve_type: ServeType
    """The serve type that renders it."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


DEPLOYMENT = ChildKind("apps", "v1", "Deployment", "deployments", ServeType.API)
SERVICE = ChildKind("", "v1", "Service", "services", ServeType.API)
HORIZONTAL_POD_AUTOSCALER = ChildKind(
    "autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", ServeType.API
)
POD_DISRUPTION_BUDGET = ChildKind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", ServeType.API)
INGRESS = ChildKind("networking.k8s.io", "v1", "Ingress", "ingresses", ServeType.API)
RAYJOB = ChildKind("ray.io", "v1", "RayJob", "rayjobs", ServeType.WORKFLOW)
RAYCRONJOB = ChildKind("ray.io", "v1", "RayCronJob", "raycronjobs", ServeType.WORKFLOW)

API_CHILD_KINDS: tuple[ChildKind, ...] = (
    DEPLOYMENT,
    SERVICE,
    HORIZONTAL_POD_AUTOSCALER,
    POD_DISRUPTION_BUDGET,
    INGRESS,
)
WORKFLOW_CHILD_KINDS: tuple[ChildKind, ...] = (RAYJOB, RAYCRONJOB)
CHILD_KINDS: tuple[ChildKind, ...] = API_CHILD_KINDS + WORKFLOW_CHILD_KINDS
"""Every kind the renderers may produce: what apply finds and prunes, what kopf watches,
what the operator's RBAC grants."""


def child_kind(api_version: str, kind: str) -> ChildKind:
    """The registry's entry of a rendered manifest's kind; ValueError for one we never render."""
    for child in CHILD_KINDS:
        if (child.api_version, child.kind) == (api_version, kind):
            return child
    raise ValueError(f"{api_version} {kind} is not a child kind: add it to CHILD_KINDS in spec/api.py")

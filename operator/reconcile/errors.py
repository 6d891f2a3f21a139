"""Why a reconcile could not finish: typed errors that become conditions and Events.

Every error carries a ``reason`` (a :class:`~mlserve.operator.spec.api.Reason`, the reason of
a condition and of an Event) and a ``message`` that says what to fix. :class:`InvalidInput` is
permanent: retrying cannot help until the MLServe or the database rows change, so the operator
reports it and waits for a change. :class:`TemporaryFailure` is retried with backoff.
"""

from __future__ import annotations

from mlserve.operator.spec.api import ConditionType, Reason

from .events import EventType

__all__ = [
    "ArtifactPending",
    "ClaimConflict",
    "InvalidInput",
    "ReconcileError",
    "TemporaryFailure",
]


class ReconcileError(Exception):
    """Base class: a reason for conditions and Events, and a message saying what to fix."""

    reason: Reason = Reason.RECONCILE_ERROR
    condition: ConditionType = ConditionType.READY
    """The condition this error turns False (besides Ready)."""
    event_type: EventType = "Warning"
    """The type of the Event posted when the error first appears."""

    def __init__(self, reason: Reason, message: str, *, condition: ConditionType | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        if condition is not None:
            self.condition = condition


class InvalidInput(ReconcileError):
    """The MLServe or the database rows it names cannot be used; nothing was written.

    Reasons: InvalidSpec, UnknownServe, UnknownEnvironment, UnknownArtifact, UnknownUser,
    ArtifactNotBuilt, ArtifactBuildFailed, ServeTypeMismatch, InvalidEnvConfig, InvalidInfraConfig, InvalidSchedule,
    WrongNamespace, ForeignCluster, DuplicateActiveDeployments, NothingToRollBack.
    """

    condition = ConditionType.ARTIFACT_RESOLVED


class ArtifactPending(ReconcileError):
    """The requested artifact is still being built (its ``artifact_builder_job`` is PENDING).

    Not a fault: the MLServe waits (phase ``Building``, reason ``ArtifactBuilding``), nothing is
    written, and the reconcile runs again when the sync sees the job's status change."""

    condition = ConditionType.ARTIFACT_RESOLVED
    event_type = "Normal"


class ClaimConflict(ReconcileError):
    """Another MLServe holds this (serve, environment); this one changes nothing."""

    condition = ConditionType.CONFLICT

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(Reason.PAIR_CLAIMED, message)
        self.holder = holder


class TemporaryFailure(ReconcileError):
    """Something that should go away by itself (API error, a child not yet accepted).

    The database being down is one too: reason ``DatabaseUnavailable`` on the
    ``DatabaseSynced`` condition (:func:`~.deploy.as_unavailable`); the one class that means
    "the database did not answer" is :class:`mlserve.models.errors.DatabaseUnavailable`.
    """

    condition = ConditionType.SYNCED

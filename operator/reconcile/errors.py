"""Why a reconcile could not finish: typed errors that become conditions and Events.

Every error carries a CamelCase ``reason`` (a condition's reason and an Event's reason) and
a ``message`` that says what to fix. :class:`InvalidInput` is permanent: retrying cannot help
until the MLServe or the database rows change, so the operator reports it and waits for a
change. :class:`TemporaryFailure` is retried with backoff.
"""

from __future__ import annotations

from mlserve.models import errors as models_errors

__all__ = [
    "ClaimConflict",
    "DatabaseUnavailable",
    "InvalidInput",
    "ReconcileError",
    "TemporaryFailure",
]


class ReconcileError(Exception):
    """Base class: a reason for conditions and Events, and a message saying what to fix."""

    reason: str = "ReconcileError"
    condition: str = "Ready"
    """The condition this error turns False (besides Ready)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class InvalidInput(ReconcileError):
    """The MLServe or the database rows it names cannot be used; nothing was written.

    Reasons: InvalidSpec, UnknownServe, UnknownEnvironment, UnknownArtifact,
    ArtifactNotBuilt, ServeTypeMismatch, InvalidEnvConfig, InvalidInfraConfig,
    WrongNamespace, ForeignCluster, DuplicateActiveDeployments, NothingToRollBack.
    """

    condition = "ArtifactResolved"


class ClaimConflict(ReconcileError):
    """Another MLServe holds this (serve, environment); this one changes nothing."""

    condition = "Conflict"

    def __init__(self, message: str, holder: str) -> None:
        super().__init__("PairClaimed", message)
        self.holder = holder


class TemporaryFailure(ReconcileError):
    """Something that should go away by itself (API error, a child not yet accepted)."""

    condition = "Synced"


class DatabaseUnavailable(TemporaryFailure, models_errors.DatabaseUnavailable):
    """:class:`mlserve.models.errors.DatabaseUnavailable` as a reconcile failure: retried with
    backoff, reported on the ``DatabaseSynced`` condition (not a second notion of "down")."""

    condition = "DatabaseSynced"

    def __init__(self, message: str) -> None:
        super().__init__("DatabaseUnavailable", message)

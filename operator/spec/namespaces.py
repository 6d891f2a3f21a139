"""Which namespaces an operator serves, from ``MLSERVE_NAMESPACES`` (as a list). Pure functions.

The list is what kopf is given, and it serves a namespace exactly when these functions say so:
the database sync (which must not create MLServes the operator would never reconcile), the
kopf settings (:func:`scope_of`) and the RBAC table (:mod:`mlserve.operator.permissions`)
read them. ``tests/operator/test_reconcile_units.py`` checks them against kopf's own matcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from fnmatch import fnmatchcase

__all__ = [
    "DEFAULT_DENIED_NAMESPACES",
    "NamespacePolicy",
    "Scope",
    "is_pattern",
    "matches_pattern",
    "scope_of",
    "watches_namespace",
]

DEFAULT_DENIED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
"""``MLSERVE_DENIED_NAMESPACES`` when it is not set: Kubernetes' own namespaces."""


class Scope(Enum):
    """What the operator watches (``MLSERVE_NAMESPACES``)."""

    CLUSTER = "the whole cluster"
    NAMESPACES = "namespaces given by name"
    PATTERNS = "namespaces matching patterns"

    @property
    def cluster_role(self) -> bool:
        """Namespaced rights granted cluster-wide (a ClusterRole) rather than per namespace."""
        return self is not Scope.NAMESPACES


def is_pattern(namespace: str) -> bool:
    """A kopf namespace pattern (glob or exclusion) rather than a name."""
    return namespace.startswith("!") or any(c in namespace for c in "*?")


def scope_of(namespaces: Sequence[str]) -> Scope:
    if not namespaces:
        return Scope.CLUSTER
    return Scope.PATTERNS if any(is_pattern(n) for n in namespaces) else Scope.NAMESPACES


def matches_pattern(namespace: str, pattern: str) -> bool:
    """Whether one entry of ``MLSERVE_NAMESPACES`` selects ``namespace``, by kopf's rules.

    An entry is a comma-separated list of globs (``*`` and ``?``; spaces around them ignored);
    a glob starting with ``!`` excludes. The first glob decides whether the namespace is a
    candidate at all (an exclusion first stands for ``*, !...``); after it, the last glob that
    matches the namespace decides: included by a plain glob, excluded by a ``!`` one.
    """
    globs = [glob.strip() for glob in pattern.split(",")]
    if globs[0].startswith("!"):
        globs.insert(0, "*")
    first, *rest = globs
    if not fnmatchcase(namespace, first):
        return False
    included = True
    for glob in rest:
        if fnmatchcase(namespace, glob.removeprefix("!")):
            included = not glob.startswith("!")
    return included


def watches_namespace(namespaces: Sequence[str], namespace: str) -> bool:
    """Whether an operator run with ``MLSERVE_NAMESPACES`` (as a list) serves ``namespace``.

    A namespace is served when any entry selects it (a name equals it; ``team-*`` globs;
    ``!kube-*`` selects every namespace but those). An empty list is the whole cluster.
    """
    if not namespaces:
        return True
    return any(matches_pattern(namespace, pattern) for pattern in namespaces)


@dataclass(frozen=True)
class NamespacePolicy:
    """The namespaces the database may point the operator at (``env_configs.namespace``).

    ``allowed`` is ``MLSERVE_ALLOWED_NAMESPACES`` (empty: any), ``denied`` is
    ``MLSERVE_DENIED_NAMESPACES``; both take names and kopf patterns, as ``MLSERVE_NAMESPACES``
    does. When ``MLSERVE_DENIED_NAMESPACES`` is not set, Kubernetes' own namespaces and the
    operator's (``operator_namespace``, from ``MLSERVE_OPERATOR_NAMESPACE``) are refused.
    """

    allowed: tuple[str, ...] = ()
    denied: tuple[str, ...] = DEFAULT_DENIED_NAMESPACES
    operator_namespace: str | None = None

    def refusal(self, namespace: str) -> str | None:
        """Why ``namespace`` may not hold serves (a message naming the setting), or None."""
        if namespace == self.operator_namespace:
            return (
                f"namespace {namespace!r} is the operator's own (MLSERVE_OPERATOR_NAMESPACE), which "
                "MLSERVE_DENIED_NAMESPACES refuses by default: point env_configs.namespace at another "
                "namespace, or set MLSERVE_DENIED_NAMESPACES"
            )
        if self.denied and watches_namespace(self.denied, namespace):
            return (
                f"namespace {namespace!r} is refused by MLSERVE_DENIED_NAMESPACES ({','.join(self.denied)}): "
                "point env_configs.namespace at another namespace, or change the setting"
            )
        if self.allowed and not watches_namespace(self.allowed, namespace):
            return (
                f"namespace {namespace!r} is not among MLSERVE_ALLOWED_NAMESPACES ({','.join(self.allowed)}): "
                "point env_configs.namespace at an allowed namespace, or add it to the setting"
            )
        return None

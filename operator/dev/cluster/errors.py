"""The one error type of the local control plane."""

from __future__ import annotations


class DevClusterError(RuntimeError):
    """The local control plane could not be built, started or reached.

    The message names the component and, when it has one, ends with the tail of its log.
    """

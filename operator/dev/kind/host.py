"""What this machine needs from kind: facts read from /proc and /sys, never assumed.

Three things differ between a laptop or hosted CI and some virtual machines:

- the capability bounding set may lack ``CAP_SYS_RESOURCE``: then ``docker run --privileged``
  (every kind node) fails with "unable to apply caps", and a runtime wrapper for dockerd has
  to drop that one capability from each container's OCI config;
- for the same reason a negative OOM score can't be set: the node's containerd must run
  with ``restrict_oom_score_adj = true`` or every pod sandbox fails;
- the host may have cgroup v1 (or hybrid): the kubelet refuses it unless told
  ``failCgroupV1: false``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: capability number of CAP_SYS_RESOURCE (linux/capability.h)
CAP_SYS_RESOURCE = 24


def bounding_set(status: str) -> int | None:
    """The ``CapBnd`` mask of a ``/proc/<pid>/status`` text, or None when it has none."""
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split(":", 1)[1].strip(), 16)
    return None


def cgroup_v2_only(cgroup_root: Path) -> bool:
    """True when the unified hierarchy alone is mounted at ``cgroup_root`` (cgroup v2)."""
    return (cgroup_root / "cgroup.controllers").is_file()


@dataclass(frozen=True)
class HostFacts:
    """The adjustments this machine needs, each detected."""

    lacks_sys_resource: bool
    cgroup_v1: bool

    @classmethod
    def detect(
        cls, proc_status: Path = Path("/proc/self/status"), cgroup_root: Path = Path("/sys/fs/cgroup")
    ) -> HostFacts:
        mask = bounding_set(proc_status.read_text())
        return cls(
            lacks_sys_resource=mask is not None and not mask & (1 << CAP_SYS_RESOURCE),
            cgroup_v1=not cgroup_v2_only(cgroup_root),
        )

    def describe(self) -> list[str]:
        notes = []
        if self.lacks_sys_resource:
            notes.append(
                "the capability bounding set lacks CAP_SYS_RESOURCE: containers run through a runtime "
                "wrapper that drops it, and the node's containerd restricts OOM score adjustments"
            )
        if self.cgroup_v1:
            notes.append("cgroup v1: the kubelet is configured with failCgroupV1: false")
        return notes

"""Build (or reuse) the control plane's binaries (and, when asked for, helm and KubeRay's
controller) with ``deploy/local-cluster/build.py``.

The Go build itself lives beside the Go modules, in ``deploy/local-cluster/``, so it can
be run without this package; this module finds that folder, runs it and says where the
binaries are, and where KubeRay's CRDs are (the same script fetches KubeRay's module).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import names
from .errors import DevClusterError

BUILD_SCRIPT = "build.py"


def local_cluster_dir() -> Path:
    """The folder with the Go modules: ``$MLSERVE_LOCAL_CLUSTER_DIR`` or the checkout's."""
    explicit = os.environ.get(names.ENV_LOCAL_CLUSTER_DIR)
    if explicit:
        folder = Path(explicit).expanduser()
        where = f"{names.ENV_LOCAL_CLUSTER_DIR}={explicit}"
    else:
        # operator/dev/cluster/build.py -> the checkout's root (an editable install runs from it)
        folder = Path(__file__).resolve().parents[3] / "deploy" / "local-cluster"
        where = "the checkout this package runs from"
    if not (folder / BUILD_SCRIPT).is_file():
        raise DevClusterError(
            f"no {BUILD_SCRIPT} in {folder} ({where}): the control plane is built from the "
            f"repository's deploy/local-cluster/ folder; run from a checkout installed with "
            f"`pip install -e .`, or set {names.ENV_LOCAL_CLUSTER_DIR} to that folder, or set "
            f"{names.ENV_BIN_DIR} to a folder of already built binaries"
        )
    return folder


@dataclass(frozen=True)
class Binaries:
    """The folder of built programs."""

    folder: Path

    def path(self, program: str) -> Path:
        return self.folder / program

    def missing(self, programs: Iterable[str] = names.DEFAULT_PROGRAMS) -> list[str]:
        return [p for p in programs if not os.access(self.path(p), os.X_OK)]


def _run_build_script(args: list[str], *, quiet: bool) -> Path:
    folder = local_cluster_dir()
    command = [sys.executable, str(folder / BUILD_SCRIPT), *args]
    # progress goes to our stderr (kept for the error when quiet); the folder is the last line of stdout
    result = subprocess.run(
        command,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if quiet else None,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        why = result.stderr.strip() if quiet else "its output above says why"
        raise DevClusterError(f"{' '.join(command[1:])} exited {result.returncode}: {why}")
    lines = result.stdout.strip().splitlines()
    if not lines:
        raise DevClusterError(f"{BUILD_SCRIPT} printed no binary folder")
    return Path(lines[-1])


def binary_dir() -> Path:
    """Where the binaries are (or will be), without building anything."""
    explicit = os.environ.get(names.ENV_BIN_DIR)
    if explicit:  # build.py honours the same variable; no checkout needed to use it
        return Path(explicit).expanduser()
    return _run_build_script(["--print-dir"], quiet=True)


def ensure_binaries(*, with_helm: bool = False, with_kuberay: bool = False, force: bool = False) -> Binaries:
    """Build what is missing or out of date (seconds when the cache is current); helm and
    KubeRay's controller (``kuberay-operator``) only when asked for."""
    expected = [
        *names.DEFAULT_PROGRAMS,
        *([names.HELM] if with_helm else []),
        *([names.KUBERAY_OPERATOR] if with_kuberay else []),
    ]
    if shutil.which("go") is None:
        prebuilt = Binaries(binary_dir())
        lacking = prebuilt.missing(expected)
        if not lacking:
            return prebuilt
        raise DevClusterError(
            f"go is not on PATH and {prebuilt.folder} lacks {', '.join(lacking)}: "
            "install Go 1.26 to build the control plane"
        )
    components = (
        ["kubernetes", "etcd", "kwok"]
        + (["helm"] if with_helm else [])
        + ([names.KUBERAY_OPERATOR] if with_kuberay else [])
    )
    folder = _run_build_script([*components, *(["--force"] if force else [])], quiet=False)
    binaries = Binaries(folder)
    missing = binaries.missing(expected)
    if missing:
        raise DevClusterError(f"the build left no {', '.join(missing)} in {folder}")
    return binaries


def ensure_components(components: Iterable[str], *, force: bool = False) -> Binaries:
    """Build (or reuse) the named components of ``deploy/local-cluster/`` (e.g. kind's)."""
    if shutil.which("go") is None:
        raise DevClusterError("go is not on PATH: install Go 1.26 to build " + ", ".join(components))
    return Binaries(_run_build_script([*components, *(["--force"] if force else [])], quiet=False))


def kuberay_crd_dir() -> Path:
    """The folder of KubeRay's CRD files: ``$MLSERVE_KUBERAY_CRDS``, else KubeRay's operator
    module at the version of ``versions.json``, downloaded into Go's module cache on first use
    (a second or so; then a few hundredths, offline too)."""
    explicit = os.environ.get(names.ENV_KUBERAY_CRDS)
    if explicit:
        folder = Path(explicit).expanduser()
    elif shutil.which("go") is None:
        raise DevClusterError(
            f"go is not on PATH: install Go 1.26 to fetch KubeRay's CRDs, "
            f"or set {names.ENV_KUBERAY_CRDS} to a folder of them"
        )
    else:
        folder = _run_build_script(["--kuberay-crds"], quiet=True)
    missing = [name for name in names.KUBERAY_CRD_FILES if not (folder / name).is_file()]
    if missing:
        raise DevClusterError(f"no {', '.join(missing)} in {folder} (KubeRay's CRD folder)")
    return folder

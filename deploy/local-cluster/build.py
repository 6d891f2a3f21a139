#!/usr/bin/env python3
"""Build the local control plane's programs from the Go modules of this folder.

    python3 build.py                 # kube-apiserver, kube-controller-manager, kube-scheduler,
                                     # kubectl, etcd and kwok
    python3 build.py helm            # only helm
    python3 build.py kuberay-operator  # only KubeRay's controller (its version: "kuberay")
    python3 build.py --print-dir     # where the binaries go, and nothing else
    python3 build.py --kuberay-crds  # download KubeRay's module (once); print its CRD folder

Binaries are static (``CGO_ENABLED=0``), built with ``-trimpath`` and cached outside
the repository, in ``$MLSERVE_BIN_DIR`` when set, else in
``${MLSERVE_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/mlserve}/k8s-<kubernetes version>/``.
Each component leaves a stamp beside its binaries (versions, link flags, go.sum digest and
Go version); a component whose binaries exist and whose stamp matches is not rebuilt, so
a second run takes seconds. Go's own caches (GOMODCACHE, GOCACHE) are used as they are.

KubeRay's CRDs are read where Go's module cache keeps KubeRay's operator module
(``config/crd/bases/`` of ``github.com/ray-project/kuberay/ray-operator`` at the version of
versions.json): ``go mod download`` fetches it once, checked against Go's checksum database,
and afterwards answers from the cache, offline too.

The Kubernetes programs are linked with the version variables of
``k8s.io/component-base/version`` and ``k8s.io/client-go/pkg/version`` set to the exact
release, so ``/version`` and ``kubectl version`` report it.

Standard library only; needs ``go`` on PATH.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from components import COMPONENTS, HERE, KUBERAY, KUBERAY_CRD_DIR, KUBERAY_MODULE, Component, load_versions


def bin_dir(versions: dict[str, str]) -> Path:
    explicit = os.environ.get("MLSERVE_BIN_DIR")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("MLSERVE_CACHE_DIR")
    if cache:
        root = Path(cache).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "mlserve"
    return root / f"k8s-{versions['kubernetes']}"


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    env.setdefault("GOTOOLCHAIN", "local")
    return env


#: flags of every build: no cgo, no machine paths, no VCS stamp (the binaries are the same
#: wherever they are built from these modules), and go.mod/go.sum as committed
BUILD_FLAGS = ["-trimpath", "-buildvcs=false", "-mod=readonly"]


def go(*args: str, cwd: Path) -> str:
    out = subprocess.run(["go", *args], cwd=cwd, env=go_env(), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"go {' '.join(args)} failed in {cwd.name}/:\n{out.stderr}")
    return out.stdout


def release_time(component: Component, version: str) -> str:
    """The release's commit time as the proxy reports it: a reproducible build date."""
    info = json.loads(go("mod", "download", "-json", f"{component.module}@{version}", cwd=component.folder))
    stamp = json.loads(Path(info["Info"]).read_text())["Time"]
    return re.sub(r"\.\d+Z$", "Z", stamp)


def _major_minor(version: str) -> tuple[str, str]:
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if match is None:
        raise SystemExit(f"kubernetes version {version!r} is not of the form vMAJOR.MINOR.PATCH")
    return match[1], match[2]


def ldflags(component: Component, version: str, kubernetes: str) -> list[str]:
    """Link flags of ``component`` at ``version``; ``kubernetes`` is the control plane's
    version (versions.json), which helm assumes when it renders without a cluster."""
    flags = ["-s", "-w"]
    if component.module == "k8s.io/kubernetes":
        major, minor = _major_minor(version)
        built = release_time(component, version)
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {package}.gitVersion={version}",
                f"-X {package}.gitMajor={major}",
                f"-X {package}.gitMinor={minor}",
                f"-X {package}.gitTreeState=clean",
                f"-X {package}.buildDate={built}",
            ]
    elif component.name == "helm":
        flags += [
            f"-X helm.sh/helm/v3/internal/version.version={version}",
            "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
        ]
        # The Kubernetes version `helm template` and `helm lint` assume without --kube-version
        # (helm's own Makefile sets the same variables; unset, helm 3.22 assumes v1.20).
        major, minor = _major_minor(kubernetes)
        for package in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
            flags += [f"-X {package}.k8sVersionMajor={major}", f"-X {package}.k8sVersionMinor={minor}"]
    elif component.name == "containerd":
        # what `containerd --version` and `ctr version` report (and kind's node image build reads)
        flags += [f"-X {component.module}/version.Version={version}"]
    return flags


def tag_flags(component: Component) -> list[str]:
    return ["-tags", ",".join(component.tags)] if component.tags else []


def stamp_for(component: Component, version: str, flags: list[str]) -> dict[str, object]:
    folder = component.folder
    return {
        "component": component.name,
        "version": version,
        "flags": [*BUILD_FLAGS, *tag_flags(component)],
        "ldflags": flags,
        # go.mod, go.sum and our own Go sources, if any
        "sources": _digest(sorted([folder / "go.mod", folder / "go.sum", *folder.rglob("*.go")])),
        "go": go("env", "GOVERSION", cwd=folder).strip(),
    }


def _digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def stamp_path(out: Path, component: Component) -> Path:
    return out / f".{component.name}.stamp.json"


def up_to_date(out: Path, component: Component, stamp: dict[str, object]) -> bool:
    path = stamp_path(out, component)
    if not all((out / name).is_file() for name in component.programs):
        return False
    try:
        return bool(json.loads(path.read_text()) == stamp)
    except (OSError, ValueError):
        return False


#: how often a build in progress says so (seconds)
PROGRESS_EVERY = 20.0

#: a line of ``go build -v``: the import path of a package it compiled
_PACKAGE_LINE = re.compile(r"^[\w.~/-]+$")


def count_packages(component: Component) -> int | None:
    """How many packages the component's programs import, the standard library's included:
    what a build from an empty Go cache compiles (None when go cannot tell)."""
    out = subprocess.run(
        ["go", "list", "-mod=readonly", *tag_flags(component), "-deps", *component.programs.values()],
        cwd=component.folder,
        env=go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return len(out.stdout.split()) if out.returncode == 0 else None


class Progress:
    """The progress of one build, from the package lines of ``go build -v``: a build whose
    Go cache is warm compiles fewer packages than the total, and finishes early."""

    def __init__(self, label: str, total: int | None, left: tuple[str, ...]) -> None:
        self.label = label
        self.total = total
        self.left = left
        self.compiled = 0
        self.started = time.monotonic()

    def line(self, text: str) -> bool:
        """Count one line of go's output; False when it is not a package (an error to show)."""
        if _PACKAGE_LINE.match(text.strip()):
            self.compiled += 1
            return True
        return False

    def report(self, now: float) -> str:
        elapsed = int(now - self.started)
        done = f"{self.compiled} of {self.total} packages" if self.total else f"{self.compiled} packages"
        then = f"; then {', '.join(self.left)}" if self.left else ""
        return f"{self.label}: {done} compiled, {elapsed // 60}m{elapsed % 60:02d}s{then}"


def run_with_progress(command: list[str], cwd: Path, progress: Progress) -> int:
    """Run ``go build -v``, printing a progress line every PROGRESS_EVERY seconds and any
    line that is not a package name (compiler errors) as it comes."""
    process = subprocess.Popen(command, cwd=cwd, env=go_env(), stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(stream: IO[str]) -> None:
        for text in stream:
            lines.put(text)
        lines.put(None)

    threading.Thread(target=pump, args=(process.stderr,), daemon=True).start()
    next_report = time.monotonic() + PROGRESS_EVERY
    while True:
        try:
            text = lines.get(timeout=max(0.0, next_report - time.monotonic()))
        except queue.Empty:
            text = ""
        if text is None:
            break
        if text and not progress.line(text):
            print(text, end="", file=sys.stderr, flush=True)
        if time.monotonic() >= next_report:
            print(progress.report(time.monotonic()), file=sys.stderr, flush=True)
            next_report += PROGRESS_EVERY
    return process.wait()


def build(
    component: Component, version: str, out: Path, force: bool, kubernetes: str, left: tuple[str, ...] = ()
) -> None:
    """Build ``component`` unless its stamp matches; ``left`` names the components after it (for the progress lines)."""
    flags = ldflags(component, version, kubernetes)
    stamp = stamp_for(component, version, flags)
    if not force and up_to_date(out, component, stamp):
        print(f"{component.name} {version}: up to date in {out}", file=sys.stderr)
        return
    folder = component.folder
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"{component.name} {version}: building {', '.join(component.programs)}"
        f" (a progress line every {PROGRESS_EVERY:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as tmp:
        command = [
            "go",
            "build",
            *BUILD_FLAGS,
            *tag_flags(component),
            "-v",
            "-ldflags",
            " ".join(flags),
            "-o",
            tmp + os.sep,
            *component.programs.values(),
        ]
        total = count_packages(component)
        returncode = run_with_progress(command, folder, Progress(f"{component.name} {version}", total, left))
        if returncode != 0:
            raise SystemExit(f"{component.name}: go build failed (exit {returncode})")
        # go build names each binary after the last element of its package path
        for name, package in component.programs.items():
            elements = package.split("/")
            if re.fullmatch(r"v\d+", elements[-1]):  # a major-version suffix is not the name
                elements.pop()
            built = Path(tmp) / elements[-1]
            os.replace(built, out / name)
    stamp_path(out, component).write_text(json.dumps(stamp, indent=2) + "\n")
    print(f"{component.name} {version}: built in {time.monotonic() - started:.0f} s", file=sys.stderr)


def kuberay_crds(version: str) -> Path:
    """The folder of KubeRay's CRD files at ``version``, in Go's module cache (downloaded once)."""
    started = time.monotonic()
    module = f"{KUBERAY_MODULE}@{version}"
    out = subprocess.run(
        ["go", "mod", "download", "-json", module],
        cwd=HERE,
        env=go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        info = json.loads(out.stdout) if out.stdout.strip() else {}
    except ValueError:
        info = {}
    if out.returncode != 0 or "Dir" not in info:
        raise SystemExit(f"cannot download {module}: {info.get('Error') or out.stderr.strip()}")
    folder = Path(info["Dir"]) / KUBERAY_CRD_DIR
    if not folder.is_dir():
        raise SystemExit(f"{module} has no {KUBERAY_CRD_DIR}/")
    print(f"kuberay {version}: CRDs in {folder} ({time.monotonic() - started:.1f} s)", file=sys.stderr)
    return folder


DEFAULTS = [name for name, c in COMPONENTS.items() if c.default]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "components",
        nargs="*",
        metavar="COMPONENT",
        help=f"any of {', '.join(COMPONENTS)} (default: {' '.join(DEFAULTS)})",
    )
    parser.add_argument("--print-dir", action="store_true", help="print the binary folder and exit")
    parser.add_argument("--force", action="store_true", help="rebuild even when the stamp matches")
    parser.add_argument(
        "--kuberay-crds",
        action="store_true",
        help="download KubeRay's operator module if needed, print its CRD folder and exit",
    )
    args = parser.parse_args(argv)
    unknown = set(args.components) - set(COMPONENTS)
    if unknown:
        parser.error(f"unknown component(s): {', '.join(sorted(unknown))}")
    versions = load_versions()
    if args.kuberay_crds:
        if shutil.which("go") is None:
            raise SystemExit("go is not on PATH: install Go 1.26 to fetch KubeRay's CRDs")
        print(kuberay_crds(versions[KUBERAY]))
        return 0
    out = bin_dir(versions)
    if not args.print_dir:
        if shutil.which("go") is None:
            raise SystemExit("go is not on PATH: install Go 1.26 to build the local control plane")
        chosen = args.components or DEFAULTS
        for i, name in enumerate(chosen):
            build(
                COMPONENTS[name],
                versions[COMPONENTS[name].versions_key],
                out,
                args.force,
                versions["kubernetes"],
                tuple(chosen[i + 1 :]),
            )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The images of the kind cluster, built here.

Online (a machine that can pull), the base images are the official ones (``debian:bookworm-slim``,
``python:3.11-slim-bookworm``) and kind's own node image is used. Offline everything is made
on this machine:

- a Debian base: ``mmdebstrap --variant=minbase bookworm`` then ``docker import``; it gets the
  host's apt sources (when they name the suite: the same mirror the host reaches) and the host's
  CA certificates (so that apt and pip inside builds trust what the host trusts);
- a Python base: Debian's python3 in a virtual environment, on that base;
- the node image: kind's base image rebuilt from the files in kind's module, containerd v2 and
  crictl from their Go modules, then ``kind build node-image --type file`` with a Kubernetes
  tarball whose image archives also carry etcd, CoreDNS and a pause image of our own, so
  that nothing is pulled.

Then, either way: the operator's image from the repository's Dockerfile (its base a build
argument), a tiny model server for the tests, MariaDB (Debian's mariadb-server), KubeRay's
controller (the binary built for the local control plane, static, ``FROM scratch``) and Ray
(PyPI's ``ray[default]`` wheel on the Python base, with the workflow the suite runs).

Every image built here is tagged with a digest of its inputs: an image whose tag exists is
reused, so a second run builds nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mlserve.operator.dev.cluster.build import local_cluster_dir
from mlserve.operator.dev.cluster.errors import DevClusterError

from . import names
from .docker import Docker, env_with

ROOT = Path(__file__).resolve().parents[3]
KIND_IMAGES_DIR = ROOT / "deploy" / "kind"
OFFICIAL_DEBIAN = "debian:bookworm-slim"
OFFICIAL_PYTHON = "python:3.11-slim-bookworm"
#: bumped when the recipe of a locally built image changes in a way its inputs don't show
RECIPE = "1"


def digest(*parts: str | bytes | Path) -> str:
    """A short digest of strings, bytes, files and folder trees (paths and contents)."""
    h = hashlib.sha256(RECIPE.encode())
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
            for path in files:
                if "__pycache__" in path.parts:
                    continue
                h.update(str(path.relative_to(part if part.is_dir() else part.parent)).encode() + b"\0")
                h.update(path.read_bytes() + b"\0")
        else:
            h.update((part.encode() if isinstance(part, str) else part) + b"\0")
    return h.hexdigest()[:12]


@dataclass
class Step:
    """One build step and how long it took (``reused``: the image already existed)."""

    name: str
    seconds: float
    reused: bool


@dataclass
class Images:
    """Builds (or reuses) the images; ``steps`` records what each took."""

    docker: Docker
    work: Path
    offline: bool
    bin_dir: Path
    versions: dict[str, str]
    steps: list[Step] = field(default_factory=list)
    _memo: dict[str, str] = field(default_factory=dict)

    # --- helpers ---------------------------------------------------------------------------
    def _log(self, text: str) -> None:
        print(f"==> {text}", file=sys.stderr, flush=True)

    def _ensure(self, name: str, tag: str, build: Callable[[], None]) -> str:
        if name in self._memo:
            return self._memo[name]
        started = time.monotonic()
        if self.docker.image_exists(tag):
            self.steps.append(Step(name, time.monotonic() - started, True))
            self._log(f"{name}: {tag} (reused)")
        else:
            self._log(f"{name}: building {tag}")
            build()
            seconds = time.monotonic() - started
            self.steps.append(Step(name, seconds, False))
            self._log(f"{name}: built {tag} in {seconds:.0f} s")
        self._memo[name] = tag
        return tag

    def _pull_or_fail(self, name: str, ref: str) -> str:
        def pull() -> None:
            self.docker.run("pull", ref, timeout=1800)

        return self._ensure(name, ref, pull)

    def _binary(self, program: str) -> Path:
        path = self.bin_dir / program
        if not path.is_file():
            raise DevClusterError(f"{path} is missing: build it with deploy/local-cluster/build.py")
        return path

    def _stamps(self, *components: str) -> list[Path]:
        return [self.bin_dir / f".{c}.stamp.json" for c in components]

    # --- bases -----------------------------------------------------------------------------
    def debian(self) -> str:
        if not self.offline:
            return self._pull_or_fail("debian base", OFFICIAL_DEBIAN)
        sources = host_apt_sources(names.DEBIAN_SUITE)
        cas = host_ca_files()
        tag = f"{names.DEBIAN_BASE}:{names.DEBIAN_SUITE}-{digest(sources, *(p for p in cas if p.is_file()))}"

        def build() -> None:
            if shutil.which("mmdebstrap") is None:
                raise DevClusterError(
                    "mmdebstrap is not installed: `apt-get install mmdebstrap` (scripts/e2e-kind does it as root)"
                )
            with tempfile.TemporaryDirectory(dir=self.work, prefix="debian-") as tmp:
                staging = Path(tmp) / "staging"
                for path in cas:
                    if path.is_file():
                        target = staging / path.relative_to("/")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(path, target)
                pip_conf = staging / "etc" / "pip.conf"
                pip_conf.parent.mkdir(parents=True, exist_ok=True)
                # pip uses its own CA bundle unless told: trust the system's (the host's, copied in)
                pip_conf.write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
                rootfs = Path(tmp) / "rootfs.tar"
                argv = [
                    "mmdebstrap",
                    "--variant=minbase",
                    "--quiet",
                    f"--customize-hook=sync-in {staging} /",
                    names.DEBIAN_SUITE,
                    str(rootfs),
                ]
                if sources:
                    mirror = Path(tmp) / "host.sources"
                    mirror.write_text(sources)
                    argv.append(str(mirror))
                run(argv, "mmdebstrap")
                self.docker.run("import", "--change", 'CMD ["/bin/bash"]', str(rootfs), tag, timeout=600)

        return self._ensure("debian base", tag, build)

    def python(self) -> str:
        if not self.offline:
            return self._pull_or_fail("python base", OFFICIAL_PYTHON)
        base = self.debian()
        context = KIND_IMAGES_DIR / "python"
        tag = f"{names.PYTHON_BASE}:3-{digest(base, context)}"
        return self._ensure(
            "python base", tag, lambda: self.docker.build(context, tag, build_args={"BASE_IMAGE": base})
        )

    # --- what runs in the cluster ------------------------------------------------------------
    def operator(self) -> str:
        base = self.python()
        inputs = [
            ROOT / n for n in ("Dockerfile", "pyproject.toml", "README.md", "requirements.lock", "models", "operator")
        ]
        tag = f"{names.OPERATOR_IMAGE}:{digest(base, *inputs)}"

        def build() -> None:
            with tempfile.TemporaryDirectory(dir=self.work, prefix="operator-") as tmp:
                context = Path(tmp)
                for path in inputs:
                    if path.is_dir():
                        shutil.copytree(path, context / path.name, ignore=shutil.ignore_patterns("__pycache__"))
                    else:
                        shutil.copyfile(path, context / path.name)
                self.docker.build(context, tag, build_args={"PYTHON_IMAGE": base})

        return self._ensure("operator image", tag, build)

    def model_server(self) -> str:
        base = self.python()
        context = KIND_IMAGES_DIR / "model-server"
        tag = f"{names.MODEL_SERVER_IMAGE}:{digest(base, context)}"
        return self._ensure(
            "model server image", tag, lambda: self.docker.build(context, tag, build_args={"BASE_IMAGE": base})
        )

    def mariadb(self) -> str:
        base = self.debian()
        context = KIND_IMAGES_DIR / "mariadb"
        tag = f"{names.MARIADB_IMAGE}:{digest(base, context)}"
        return self._ensure(
            "mariadb image", tag, lambda: self.docker.build(context, tag, build_args={"BASE_IMAGE": base})
        )

    def kuberay(self) -> str:
        """KubeRay's controller: the static binary the local control plane runs, alone in an
        image (``FROM scratch``; built with ``CGO_ENABLED=0``)."""
        program = "kuberay-operator"
        tag = f"{names.KUBERAY_IMAGE}:{self.versions['kuberay']}-{digest(self._binary(program))}"
        return self._ensure(
            "KubeRay image",
            tag,
            lambda: self._program_image(tag, {program: program}, entrypoint=[f"/usr/local/bin/{program}"]),
        )

    def ray(self) -> str:
        """Ray from PyPI's wheel on the Python base, with the suite's workflow."""
        base = self.python()
        context = KIND_IMAGES_DIR / "ray"
        tag = f"{names.RAY_IMAGE}:{names.RAY_VERSION}-{digest(base, context)}"
        return self._ensure(
            "Ray image",
            tag,
            lambda: self.docker.build(context, tag, build_args={"BASE_IMAGE": base, "RAY_VERSION": names.RAY_VERSION}),
        )

    # --- the node image (offline) --------------------------------------------------------------
    def kubeadm_images(self) -> list[str]:
        out = run(
            [
                str(self._binary("kubeadm")),
                "config",
                "images",
                "list",
                "--kubernetes-version",
                self.versions["kubernetes"],
            ],
            "kubeadm config images list",
        )
        return [line.strip() for line in out.splitlines() if line.strip()]

    def kind_base(self) -> str:
        base = self.debian()
        kind_files = kind_module_dir(self.versions["kind"]) / "images" / "base" / "files"
        context = KIND_IMAGES_DIR / "node"
        programs = ["containerd", "ctr", "containerd-shim-runc-v2", "crictl"]
        sandbox = next(i for i in self.kubeadm_images() if "/pause:" in i)
        tag = (
            f"{names.KIND_BASE}:{digest(base, context, kind_files, sandbox, *self._stamps('containerd', 'cri-tools'))}"
        )

        def build() -> None:
            with tempfile.TemporaryDirectory(dir=self.work, prefix="kind-base-") as tmp:
                ctx = Path(tmp)
                shutil.copytree(context, ctx, dirs_exist_ok=True)
                shutil.copytree(kind_files, ctx / "files")
                (ctx / "bin").mkdir()
                for program in programs:
                    shutil.copy2(self._binary(program), ctx / "bin" / program)
                for path in ctx.rglob("*"):  # the module cache is read-only
                    path.chmod(path.stat().st_mode | 0o200)
                self.docker.build(ctx, tag, build_args={"BASE_IMAGE": base, "SANDBOX_IMAGE": sandbox})

        return self._ensure("kind base image", tag, build)

    def node_image(self, kind: Path) -> str:
        if not self.offline:
            return kind_default_node_image(kind_module_dir(self.versions["kind"]))
        base = self.kind_base()
        debian = self.debian()
        required = self.kubeadm_images()
        stamps = self._stamps("kubernetes", "kubernetes-node", "etcd", "coredns", "kind")
        tag = f"{names.NODE_IMAGE}:{self.versions['kubernetes']}-{digest(base, debian, *required, *stamps)}"

        def build() -> None:
            with tempfile.TemporaryDirectory(dir=self.work, prefix="node-") as tmp:
                self._build_node_image(Path(tmp), kind, base, debian, required, tag)

        return self._ensure("node image", tag, build)

    def _program_image(
        self,
        tag: str,
        programs: dict[str, str],
        base: str = "scratch",
        packages: str = "",
        entrypoint: list[str] | None = None,
    ) -> None:
        """An image holding ``programs`` (name in the image -> binary name here)."""
        with tempfile.TemporaryDirectory(dir=self.work, prefix="program-") as tmp:
            ctx = Path(tmp)
            (ctx / "bin").mkdir()
            for target, program in programs.items():
                shutil.copy2(self._binary(program), ctx / "bin" / target)
            lines = [f"FROM {base}"]
            if packages:
                lines.append(
                    "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                    f"{packages} && rm -rf /var/lib/apt/lists/*"
                )
            lines += [
                "COPY bin/ /usr/local/bin/",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ]
            if entrypoint:
                lines.append(f"ENTRYPOINT {json.dumps(entrypoint)}")
            (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
            self.docker.build(ctx, tag)

    def _build_node_image(self, tmp: Path, kind: Path, base: str, debian: str, required: list[str], tag: str) -> None:
        version = self.versions["kubernetes"]
        server_bin = tmp / "kubernetes" / "server" / "bin"
        server_bin.mkdir(parents=True)
        (tmp / "kubernetes" / "version").write_text(version + "\n")
        for program in ("kubeadm", "kubelet", "kubectl"):
            shutil.copy2(self._binary(program), server_bin / program)
        registry = "registry.k8s.io"
        # program -> (base image, Debian packages): kube-proxy calls the packet-filter tools
        control_plane = {
            "kube-apiserver": ("scratch", ""),
            "kube-controller-manager": ("scratch", ""),
            "kube-scheduler": ("scratch", ""),
            "kube-proxy": (debian, "iptables nftables conntrack ipset"),
        }
        extras: list[str] = []
        for program, (image_base, packages) in control_plane.items():
            ref = f"{registry}/{program}:{version}"
            self._program_image(ref, {program: program}, base=image_base, packages=packages)
        for image in required:
            repo = image.rsplit(":", 1)[0]
            if repo.endswith("/etcd"):
                self._program_image(image, {"etcd": "etcd"})
            elif repo.endswith("/coredns"):
                self._program_image(image, {"coredns": "coredns"}, entrypoint=["/usr/local/bin/coredns"])
            elif repo.endswith("/pause"):
                self._program_image(image, {"pause": "pause"}, entrypoint=["/usr/local/bin/pause"])
            else:
                continue
            extras.append(image)
        # kind's node image build also wants its CNI (kindnetd) and storage images; neither
        # runs here (the default CNI is disabled, the storage manifest removed below), so our
        # pause image stands in under their names and nothing is pulled
        pause = next(i for i in extras if "/pause:" in i)
        for image in kind_default_images(kind_module_dir(self.versions["kind"])):
            self.docker.run("tag", pause, image)
            extras.append(image)
        archives = {program: [f"{registry}/{program}:{version}"] for program in control_plane}
        archives["kube-apiserver"] += extras
        for program, refs in archives.items():
            raw = tmp / f"{program}.raw.tar"
            self.docker.run("save", "-o", str(raw), *refs, timeout=600)
            qualify_archive(raw, server_bin / f"{program}.tar", refs)
            raw.unlink()
        tarball = tmp / "kubernetes-server-linux-amd64.tar.gz"
        with tarfile.open(tarball, "w:gz", compresslevel=1) as archive:
            archive.add(tmp / "kubernetes", arcname="kubernetes")
        built = f"{tag}-kind"
        run(
            [str(kind), "build", "node-image", "--type", "file", str(tarball), "--image", built, "--base-image", base],
            "kind build node-image",
            env=env_with(self.docker),
        )
        # no default storage manifest: kind then installs its fallback, a StorageClass with no
        # provisioner pod (whose image can't be had here)
        self.docker.build_from_text(
            f"FROM {built}\nRUN rm -f /kind/manifests/default-storage.yaml\n", tag, tmp / "node"
        )
        self.docker.run("rmi", built, check=False)


def run(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-40:])
        raise DevClusterError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def host_apt_sources(suite: str, apt: Path = Path("/etc/apt")) -> str:
    """The host's apt sources that name ``suite`` (deb822 or one-line), '' when none do."""
    files = [
        apt / "sources.list",
        *sorted((apt / "sources.list.d").glob("*.list")),
        *sorted((apt / "sources.list.d").glob("*.sources")),
    ]
    deb822, lines = [], []
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields = [ln for ln in stanza.splitlines() if ln and not ln.startswith("#")]
                if any(ln.startswith("Suites:") and suite in ln.split() for ln in fields) and any(
                    ln.strip() == "Types: deb" for ln in fields
                ):
                    deb822.append("\n".join(fields))
        else:
            lines += [ln for ln in text.splitlines() if ln.startswith("deb ") and f" {suite}" in ln]
    if deb822:
        return "\n\n".join(deb822) + "\n"
    return "\n".join(lines) + ("\n" if lines else "")


def host_ca_files() -> list[Path]:
    """The host's CA bundle and its locally added certificates."""
    local = Path("/usr/local/share/ca-certificates")
    return [Path("/etc/ssl/certs/ca-certificates.crt"), *(sorted(local.rglob("*.crt")) if local.is_dir() else [])]


def kind_module_dir(version: str) -> Path:
    """kind's module in Go's module cache (downloaded when kind was built)."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/kind@{version}"],
        cwd=local_cluster_dir(),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        info = json.loads(out.stdout)
    except ValueError:
        info = {}
    if out.returncode != 0 or "Dir" not in info:
        raise DevClusterError(f"cannot find sigs.k8s.io/kind@{version} in Go's module cache: {out.stderr.strip()}")
    return Path(info["Dir"])


def kind_default_node_image(module: Path) -> str:
    """The node image this release of kind uses by default (pinned by digest)."""
    text = (module / "pkg" / "apis" / "config" / "defaults" / "image.go").read_text()
    for line in text.splitlines():
        if line.strip().startswith("const Image = "):
            return line.split('"')[1]
    raise DevClusterError(f"no default node image in {module}/pkg/apis/config/defaults/image.go")


def kind_default_images(module: Path) -> list[str]:
    """The CNI and storage images kind's node image build pulls (read from its sources)."""
    found: list[str] = []
    for name in ("const_cni.go", "const_storage.go"):
        text = (module / "pkg" / "build" / "nodeimage" / name).read_text()
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("const ") and 'Image = "' in line:
                found.append(line.split('"')[1])
    if not found:
        raise DevClusterError(f"no image names found in {module}/pkg/build/nodeimage")
    return found


def qualify_archive(source: Path, target: Path, refs: Iterable[str]) -> None:
    """Rewrite a ``docker save`` archive so that its tags are fully qualified (docker writes
    ``kindest/x`` for ``docker.io/kindest/x``) and its ``repositories`` entry comes first:
    kind's node image build reads the first of ``repositories``/``manifest.json`` to learn
    which images it needn't pull."""
    wanted = {short_name(r): r for r in refs}
    with tarfile.open(source) as src:
        members = src.getmembers()
        payload = {m.name: src.extractfile(m).read() if m.isfile() else None for m in members}  # type: ignore[union-attr]
    manifest = json.loads(payload["manifest.json"] or b"[]")
    repositories: dict[str, dict[str, str]] = {}
    for entry in manifest:
        tags = [wanted.get(t, t) for t in entry.get("RepoTags") or []]
        entry["RepoTags"] = tags
        layer = entry["Layers"][-1].split("/")[0]
        for ref in tags:
            repo, tag_ = ref.rsplit(":", 1)
            repositories.setdefault(repo, {})[tag_] = layer
    payload["manifest.json"] = json.dumps(manifest).encode()
    payload["repositories"] = json.dumps(repositories).encode()
    order = ["repositories"] + [m.name for m in members if m.name != "repositories"]
    by_name = {m.name: m for m in members}
    with tarfile.open(target, "w") as out:
        for name in order:
            data = payload.get(name)
            info = by_name.get(name) or tarfile.TarInfo(name)
            if data is not None:
                info = tarfile.TarInfo(name) if name in ("repositories", "manifest.json") else info
                info.size = len(data)
                info.mode = 0o644
                out.addfile(info, io.BytesIO(data))
            else:
                out.addfile(info)


def short_name(ref: str) -> str:
    """How docker writes a reference in an archive: ``docker.io/library/`` and ``docker.io/`` dropped."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref

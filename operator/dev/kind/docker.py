"""The Docker daemon kind and the image builds talk to.

When one answers (``DOCKER_HOST`` or the default socket), it is used as it is. When none
does (a machine without systemd, CI in a container), one is started here like the local
control plane starts its programs: its own ``--data-root`` (kept between runs, so built
images are reused), ``--exec-root``, pid file and unix socket, and ``DOCKER_HOST`` pointing
at it for every command run from here (kind's too). It has no default bridge and touches no
iptables: kind makes its own network, and the API server is published on 127.0.0.1.

When the machine's capability bounding set lacks ``CAP_SYS_RESOURCE`` (see ``host.py``),
the daemon runs containers through a runtime wrapper that removes that capability from each
container's OCI config before calling runc: ``--privileged`` asks for every capability and
runc fails to apply one the bounding set doesn't hold.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mlserve.operator.dev.cluster.errors import DevClusterError
from mlserve.operator.dev.cluster.process import ManagedProcess, group_alive, log_tail, stop_group

from .host import HostFacts

RUNTIME_NAME = "mlserve-runc"
START_TIMEOUT = 60.0

#: the wrapper runc is called through: edits the bundle's config.json (create/run) or the
#: process file (exec), then runs runc with the same arguments
RUNTIME_WRAPPER = """\
import json, os, sys

CAP = "CAP_SYS_RESOURCE"
args = sys.argv[1:]


def value_of(*flags):
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(flag + "="):
                return arg[len(flag) + 1 :]
    return None


def drop(path, process_key):
    with open(path) as handle:
        spec = json.load(handle)
    process = spec.get(process_key, {}) if process_key else spec
    caps = process.get("capabilities") or {}
    if any(CAP in (caps.get(kind) or []) for kind in caps):
        for kind in caps:
            caps[kind] = [c for c in caps[kind] or [] if c != CAP]
        with open(path, "w") as handle:
            json.dump(spec, handle)


if "create" in args or "run" in args:
    bundle = value_of("--bundle", "-b") or "."
    drop(os.path.join(bundle, "config.json"), "process")
elif "exec" in args:
    process_file = value_of("--process", "-p")
    if process_file:
        drop(process_file, None)
os.execvp(RUNC, [RUNC, *args])
"""


class Docker:
    """The docker command line of one daemon."""

    def __init__(self, env: dict[str, str], client: str = "docker", started: ManagedProcess | None = None) -> None:
        self.env = env
        self.client = client
        self.started = started

    def command(self, *args: str) -> list[str]:
        return [self.client, *args]

    def run(
        self,
        *args: str,
        check: bool = True,
        capture: bool = True,
        timeout: float | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **(extra_env or {})}
        try:
            result = subprocess.run(
                self.command(*args),
                env=env,
                capture_output=capture,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DevClusterError(f"docker {' '.join(args[:3])} took longer than {timeout:g} s") from exc
        if check and result.returncode != 0:
            err = result.stderr or ""
            raise DevClusterError(
                f"docker {' '.join(args[:4])} failed (exit {result.returncode}): {err.strip()[-2000:]}"
            )
        return result

    def answers(self) -> bool:
        try:
            result = subprocess.run(
                self.command("version", "--format", "{{.Server.Version}}"),
                env=self.env,
                capture_output=True,
                text=True,
                timeout=15,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return result.returncode == 0 and bool(result.stdout.strip())

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "inspect", "--format", "{{.Id}}", ref, check=False).returncode == 0

    def build_command(self) -> tuple[list[str], dict[str, str]]:
        """``docker build`` with BuildKit (the operator's Dockerfile mounts a stage's files):
        buildx when the client has it, else the client's built-in BuildKit."""
        probe = subprocess.run(self.command("buildx", "version"), env=self.env, capture_output=True, check=False)
        if probe.returncode == 0:
            return self.command("buildx", "build", "--load"), {}
        return self.command("build"), {"DOCKER_BUILDKIT": "1"}

    def build(
        self,
        context: Path,
        tag: str,
        dockerfile: Path | None = None,
        build_args: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        command, env = self.build_command()
        argv = [*command, "--network", "host", "--progress", "plain", "-t", tag]
        if dockerfile is not None:
            argv += ["-f", str(dockerfile)]
        for key, value in (build_args or {}).items():
            argv += ["--build-arg", f"{key}={value}"]
        for key, value in (labels or {}).items():
            argv += ["--label", f"{key}={value}"]
        argv.append(str(context))
        result = subprocess.run(argv, env={**self.env, **env}, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-40:])
            raise DevClusterError(f"building {tag} from {context} failed (exit {result.returncode}):\n{tail}")

    def build_from_text(self, dockerfile: str, tag: str, work: Path) -> None:
        """A small image from a Dockerfile's text alone (no context files)."""
        context = work / ".empty-context"
        context.mkdir(parents=True, exist_ok=True)
        path = work / ".Dockerfile.generated"
        path.write_text(dockerfile)
        self.build(context, tag, dockerfile=path)

    def stop(self) -> None:
        """Stop the daemon if it was started here."""
        if self.started is not None:
            self.started.stop(grace=30)
            self.started = None


def _client_beside(dockerd: str) -> str:
    """The docker client of the daemon's own release when installed beside it (its
    ``build`` has BuildKit built in), else the one on PATH."""
    folder = Path(dockerd).resolve().parent
    for candidate in (
        folder / "docker",
        folder.parent / "bin" / "docker",
    ):  # Debian: /usr/sbin/dockerd, /usr/bin/docker
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return "docker"


def write_runtime_wrapper(folder: Path) -> Path:
    runc = shutil.which("runc")
    if runc is None:
        raise DevClusterError("runc is not on PATH: install Docker (e.g. `apt-get install docker.io`)")
    path = folder / "runc-wrapper"
    path.write_text(f"#!{sys.executable} -I\nRUNC = {runc!r}\n{RUNTIME_WRAPPER}")
    path.chmod(0o755)
    return path


def daemon_argv(dockerd: str, folder: Path, facts: HostFacts) -> list[str]:
    socket = folder / "docker.sock"
    argv = [
        dockerd,
        "--data-root",
        str(folder / "data"),
        "--exec-root",
        str(folder / "exec"),
        "--pidfile",
        str(folder / "dockerd.pid"),
        "-H",
        f"unix://{socket}",
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
    ]
    if facts.lacks_sys_resource:
        wrapper = write_runtime_wrapper(folder)
        argv += ["--add-runtime", f"{RUNTIME_NAME}={wrapper}", "--default-runtime", RUNTIME_NAME]
    return argv


def _recorded_pid(folder: Path) -> int | None:
    try:
        return int((folder / "dockerd.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def find_daemon(folder: Path) -> Docker | None:
    """The Docker daemon that answers (the user's, or one started earlier in ``folder``), or None."""
    env = dict(os.environ)
    user = Docker(env)
    if shutil.which("docker") is not None and user.answers():
        return user
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    own = Docker({**env, "DOCKER_HOST": f"unix://{folder / 'docker.sock'}"}, _client_beside(dockerd))
    return own if own.answers() else None


def ensure_daemon(folder: Path, facts: HostFacts, *, log: bool = True) -> Docker:
    """A Docker daemon that answers: the user's, the one started earlier in ``folder``, or a new one."""
    env = dict(os.environ)
    user = Docker(env)
    if shutil.which("docker") is not None and user.answers():
        return user
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if os.access("/usr/sbin/dockerd", os.X_OK) else None)
    if dockerd is None:
        raise DevClusterError(
            "no Docker daemon answers and dockerd is not installed: install Docker (e.g. `apt-get install docker.io`)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    own_env = {**env, "DOCKER_HOST": f"unix://{folder / 'docker.sock'}"}
    own = Docker(own_env, _client_beside(dockerd))
    if own.answers():  # started by an earlier run and still running
        return own
    pid = _recorded_pid(folder)
    if pid is not None and group_alive(pid):
        stop_group(pid, grace=30)
    if log:
        print(f"==> starting a Docker daemon in {folder} (none answers)", file=sys.stderr, flush=True)
    process = ManagedProcess(
        "dockerd", daemon_argv(dockerd, folder, facts), folder / "dockerd.log", detach=True
    ).start()
    own.started = process
    deadline = time.monotonic() + START_TIMEOUT
    while not own.answers():
        process.check()
        if time.monotonic() > deadline:
            process.stop()
            raise DevClusterError(
                f"dockerd did not answer within {START_TIMEOUT:g} s:\n{log_tail(folder / 'dockerd.log')}"
            )
        time.sleep(0.5)
    return own


def stop_daemon(folder: Path) -> bool:
    """Stop a daemon started earlier in ``folder`` (by its recorded process group); False if none runs."""
    pid = _recorded_pid(folder)
    if pid is None or not group_alive(pid):
        return False
    stop_group(pid, grace=30)
    return True


def env_with(docker: Docker, extra: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """The environment for programs that call docker themselves (kind): the daemon's, and
    the daemon's own client first on PATH."""
    env = dict(docker.env)
    client_dir = str(Path(docker.client).parent) if os.sep in docker.client else ""
    if client_dir:
        env["PATH"] = client_dir + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env

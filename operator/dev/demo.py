"""``mlserve demo``: the whole flow on this machine, from nothing, in about a minute.

1. build (or reuse) the control plane's binaries and start a local cluster;
2. install the MLServe CRD and KubeRay's CRDs (fetched with KubeRay's Go module);
3. create a SQLite database with the demo data, and start the operator on it;
4. ``kubectl apply`` an MLServe for the API serve and one for the workflow serve, wait for
   them, and show what the operator made;
5. deploy a new version through the database (as Darwin does), roll back with
   ``mlserve rollback``, deploy by editing the MLServe, and show the history;
6. stop everything, or, with ``keep``, leave the cluster and the operator running and say how
   to use and stop them.

Every step prints the command a user would type, so the demo doubles as a walkthrough.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from mlserve.operator.dev.cluster import ClusterHandle, DevClusterError, LocalCluster, ensure_binaries, kuberay_crd_dir
from mlserve.operator.dev.cluster import names as devnames
from mlserve.operator.render import names
from mlserve.operator.spec.api import GROUP as MLSERVE_GROUP

__all__ = ["DemoError", "DemoOptions", "DemoResult", "run_demo", "stop_kept_demo"]

CLUSTER_NAME = "local"
ENV_MLSERVE_CRD = "MLSERVE_CRD_FILE"
OPERATOR_PID_FILE = "operator.pid"


class DemoError(RuntimeError):
    """A step failed; the message says which and where its log is."""


def repository_root() -> Path:
    """The checkout this package runs from (operator/dev/demo.py -> the root)."""
    return Path(__file__).resolve().parents[2]


def mlserve_crd_file() -> Path:
    """The MLServe CRD: ``$MLSERVE_CRD_FILE``, else the checkout's ``crds/``."""
    explicit = os.environ.get(ENV_MLSERVE_CRD)
    path = Path(explicit) if explicit else repository_root() / "crds" / "mlserve.darwin.io_mlserves.yaml"
    if not path.is_file():
        raise DemoError(f"no MLServe CRD at {path}: run from a checkout, or set {ENV_MLSERVE_CRD}")
    return path


@dataclass
class DemoOptions:
    keep: bool = False
    """Leave the cluster and the operator running at the end."""
    work_dir: Path = Path(".mlserve/demo")
    """Cluster state, database, manifests and logs."""
    nodes: int = 2
    timeout: float = 90.0
    """Longest wait for any one thing to become ready."""
    echo: Callable[[str], None] = print


@dataclass
class DemoResult:
    wall_seconds: float
    steps: list[tuple[str, float]] = field(default_factory=list)
    kubeconfig: Path | None = None


# --- small helpers ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mlserve_command() -> list[str]:
    script = Path(sys.executable).parent / "mlserve"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from mlserve.operator.cli import main; main()"]


def _wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep waiting; say what was seen at the end
            last_error = exc
        if time.monotonic() >= deadline:
            seen = f" (last error: {last_error})" if last_error else ""
            raise DemoError(f"timed out after {timeout:g} s waiting for {what}{seen}")
        time.sleep(interval)


class _Shell:
    """Runs and prints commands, as a user would type them."""

    def __init__(self, echo: Callable[[str], None], env: Mapping[str, str], kubectl: Path) -> None:
        self.echo = echo
        self.env = dict(env)
        self.kubectl = kubectl

    def run(
        self,
        argv: Sequence[str],
        *,
        show: str | None = None,
        check: bool = True,
        quiet: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> str:
        shown = show or " ".join(argv)
        self.echo(f"$ {shown}")
        done = subprocess.run(list(argv), env={**self.env, **(env or {})}, capture_output=True, text=True, check=False)
        output = (done.stdout + done.stderr).rstrip()
        if output and not quiet:
            self.echo(output)
        if check and done.returncode != 0:
            raise DemoError(f"`{shown}` failed (exit {done.returncode}):\n{output}")
        return done.stdout

    def k(self, *args: str, check: bool = True, quiet: bool = False) -> str:
        return self.run([str(self.kubectl), *args], show="kubectl " + " ".join(args), check=check, quiet=quiet)

    def get_json(self, *args: str) -> Any:
        done = subprocess.run(
            [str(self.kubectl), *args, "-o", "json"], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise DemoError(done.stderr.strip())
        return json.loads(done.stdout)


# --- the database ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoRows:
    """What the seeded database holds that the demo uses."""

    api_serve: str
    api_versions: tuple[str, ...]
    workflow_serve: str | None
    workflow_version: str | None
    environment: str
    namespaces: dict[str, str]
    """environment name -> namespace, for every environment bound to the demo's cluster."""


def _database_env(db_file: Path) -> dict[str, str]:
    # The operator records its deploys as the default MLSERVE_DEPLOY_USER, admin, which the
    # demo data includes.
    return {"MLSERVE_DB_PATH": str(db_file)}


async def _with_db(db_file: Path, work: Callable[[], Any]) -> Any:
    from mlserve.models.db import database
    from mlserve.models.settings import DatabaseSettings

    async with database(DatabaseSettings.sqlite(db_file)):
        return await work()


async def _create_and_seed(db_file: Path) -> DemoRows:
    from mlserve.models import Artifact, Environment, Serve, ServeType
    from mlserve.models.seed import seed

    async def work() -> DemoRows:
        await seed()
        namespaces: dict[str, str] = {}
        for environment in await Environment.all().order_by("id"):
            config = environment.config
            if config.cluster_name == CLUSTER_NAME:
                namespaces[environment.name] = config.namespace
        if not namespaces:
            raise DemoError(f"the demo data binds no environment to cluster {CLUSTER_NAME!r}")
        api_serve: Serve | None = None
        api_versions: tuple[str, ...] = ()
        for serve in await Serve.filter(type=ServeType.API).order_by("id"):
            versions = tuple(a.version for a in await Artifact.filter(serve_id=serve.pk).order_by("id") if a.image_url)
            if len(versions) >= 2:
                api_serve, api_versions = serve, versions
                break
        if api_serve is None:
            raise DemoError("the demo data has no API serve with two built artifacts")
        workflow = await Serve.filter(type=ServeType.WORKFLOW).order_by("id").first()
        workflow_version = None
        if workflow is not None:
            artifact = await Artifact.filter(serve_id=workflow.pk).exclude(image_url=None).order_by("id").first()
            workflow_version = artifact.version if artifact is not None else None
        return DemoRows(
            api_serve=api_serve.name,
            api_versions=api_versions,
            workflow_serve=workflow.name if workflow is not None and workflow_version else None,
            workflow_version=workflow_version,
            environment=next(iter(namespaces)),
            namespaces=namespaces,
        )

    return await _with_db(db_file, work)  # type: ignore[no-any-return]


async def _deploy_in_database(db_file: Path, serve_name: str, environment_name: str, version: str) -> int:
    """A deploy as Darwin records it: new ACTIVE row, old one ENDED, pointer moved."""
    from mlserve.models import Artifact, Environment, Serve, User, activate

    async def work() -> int:
        serve = await Serve.get(name=serve_name)
        environment = await Environment.get(name=environment_name)
        artifact = await Artifact.get(serve_id=serve.pk, version=version)
        from mlserve.models.seed import DEMO_USER

        user = await User.filter(username=DEMO_USER).first() or await User.all().order_by("user_id").first()
        assert user is not None
        deployment = await activate(serve, environment, artifact, user)
        return int(deployment.pk)

    return await _with_db(db_file, work)  # type: ignore[no-any-return]


# --- the operator -----------------------------------------------------------------------------------


class _Operator:
    """``mlserve run`` as a child process, logging to a file."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_file: Path,
        pid_file: Path,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.env = dict(env)
        self.settings = dict(settings or {})
        self.log_file = log_file
        self.pid_file = pid_file
        self.process: subprocess.Popen[bytes] | None = None
        self.port = _free_port()
        self.metrics_port = _free_port()

    def start(self) -> None:
        env = {
            **self.env,
            "MLSERVE_CLUSTER_NAME": CLUSTER_NAME,
            "MLSERVE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.port}/healthz",
            "MLSERVE_METRICS_PORT": str(self.metrics_port),
            "MLSERVE_SYNC_INTERVAL": "1s",
            "MLSERVE_LOG_LEVEL": "INFO",
            # The local cluster's fake nodes carry no Karpenter capacity-type label.
            "MLSERVE_CAPACITY_TYPE_LABEL": "none",
            **self.settings,
        }
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [*_mlserve_command(), "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in the terminal reaches the demo, which stops it
            )
        self.pid_file.write_text(f"{self.process.pid}\n")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        import urllib.request

        if not self.alive():
            raise DemoError(f"the operator exited; see its log: {self.log_file}\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.pid_file.unlink(missing_ok=True)


# --- manifests ---------------------------------------------------------------------------------------


def mlserve_manifest(serve: str, environment: str, namespace: str, serve_type: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{MLSERVE_GROUP}/v1alpha1",
        "kind": "MLServe",
        "metadata": {"name": names.mlserve_name(serve, environment), "namespace": namespace},
        "spec": {"serve": serve, "environment": environment, "type": serve_type, "artifactVersion": version},
    }


# --- the demo ----------------------------------------------------------------------------------------


class _Clock:
    def __init__(self, echo: Callable[[str], None]) -> None:
        self.began = time.monotonic()
        self.echo = echo
        self.steps: list[tuple[str, float]] = []
        self._current: tuple[str, float] | None = None

    def step(self, title: str) -> None:
        self._close()
        now = time.monotonic()
        self._current = (title, now)
        self.echo(f"\n==> [{now - self.began:5.1f}s] {title}")

    def _close(self) -> None:
        if self._current is not None:
            title, started = self._current
            self.steps.append((title, time.monotonic() - started))
            self._current = None

    def total(self) -> float:
        self._close()
        return time.monotonic() - self.began


def _mls(shell: _Shell, name: str, namespace: str) -> dict[str, Any]:
    return shell.get_json("get", "mlserve", name, "-n", namespace)  # type: ignore[no-any-return]


def _ready(body: Mapping[str, Any]) -> bool:
    status = body.get("status") or {}
    if status.get("observedGeneration") != (body.get("metadata") or {}).get("generation"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def _wait_mlserve(
    shell: _Shell, name: str, namespace: str, timeout: float, what: str, check: Callable[[Mapping[str, Any]], bool]
) -> dict[str, Any]:
    return _wait(  # type: ignore[no-any-return]
        lambda: (lambda body: body if check(body) else None)(_mls(shell, name, namespace)),
        timeout,
        f"MLServe {namespace}/{name} {what}",
    )


def _established(shell: _Shell, crd: str) -> bool:
    conditions = (shell.get_json("get", crd).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _show(shell: _Shell, namespace: str, kinds: str) -> None:
    shell.k("get", kinds, "-n", namespace)


def run_demo(options: DemoOptions) -> DemoResult:
    echo = options.echo
    clock = _Clock(echo)
    work = options.work_dir.resolve()
    cluster_dir = work / "cluster"
    if work.exists():
        stop_kept_demo(work, echo=lambda _: None)
        shutil.rmtree(work)
    (work / "manifests").mkdir(parents=True)
    db_file = work / "darwin.sqlite3"

    clock.step("building (or reusing) the control plane's binaries")
    binaries = ensure_binaries()
    kubectl = binaries.path(devnames.KUBECTL)

    clock.step(f"starting a local control plane ({options.nodes} kwok nodes) in {cluster_dir}")
    local = LocalCluster(binaries, nodes=options.nodes, state_dir=cluster_dir, detach=options.keep)
    operator: _Operator | None = None
    shell: _Shell | None = None
    ok = False
    try:
        handle: ClusterHandle = local.start()
        shell = _Shell(echo, handle.environ(), kubectl)
        echo(f"ready in {local.started_in or 0:.1f} s; KUBECONFIG={handle.kubeconfig}")

        clock.step("installing the CustomResourceDefinitions")
        shell.k("apply", "--server-side", "-f", str(mlserve_crd_file()))
        crds = ["crd/mlserves.mlserve.darwin.io"]
        kuberay: Path | None = None
        try:
            kuberay = kuberay_crd_dir()  # fetched once with KubeRay's Go module
        except DevClusterError as exc:
            echo(f"KubeRay's CRDs not found ({exc}): the demo deploys the API serve only")
        if kuberay is not None:
            files = [arg for file in devnames.KUBERAY_CRD_FILES for arg in ("-f", str(kuberay / file))]
            shell.k("apply", "--server-side", *files)
            crds += ["crd/rayjobs.ray.io", "crd/raycronjobs.ray.io"]
        echo(f"waiting for {', '.join(c.removeprefix('crd/') for c in crds)} to be Established")
        for crd in crds:
            _wait(partial(_established, shell, crd), options.timeout, f"{crd} to be Established")

        clock.step(f"creating a SQLite database with the demo data: {db_file}")
        rows = asyncio.run(_create_and_seed(db_file))
        echo(
            f"serve {rows.api_serve!r} (api, versions {', '.join(rows.api_versions)})"
            + (f", serve {rows.workflow_serve!r} (workflow)" if rows.workflow_serve else "")
            + "; environments "
            + ", ".join(f"{env} -> namespace {ns}" for env, ns in rows.namespaces.items())
            + f", bound to cluster {CLUSTER_NAME!r}"
        )
        for namespace in sorted(set(rows.namespaces.values())):
            manifest = work / "manifests" / f"namespace-{namespace}.yaml"
            manifest.write_text(
                yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            )
            shell.k("apply", "-f", str(manifest))

        clock.step("starting the operator: mlserve run")
        db_env = _database_env(db_file)
        operator = _Operator({**shell.env, **db_env}, work / "operator.log", work / OPERATOR_PID_FILE)
        echo(
            f"$ MLSERVE_CLUSTER_NAME={CLUSTER_NAME} MLSERVE_DB_PATH={db_file} mlserve run   (log: {operator.log_file})"
        )
        operator.start()
        _wait(operator.healthy, options.timeout, "the operator's liveness endpoint")
        echo(f"metrics: curl http://127.0.0.1:{operator.metrics_port}/metrics")

        environment = rows.environment
        namespace = rows.namespaces[environment]
        api_name = names.mlserve_name(rows.api_serve, environment)
        clock.step(f"deploying {rows.api_serve} {rows.api_versions[0]} to {environment} with kubectl apply")
        api_file = work / "manifests" / f"{api_name}.yaml"
        api_file.write_text(
            yaml.safe_dump(
                mlserve_manifest(rows.api_serve, environment, namespace, "api", rows.api_versions[0]), sort_keys=False
            )
        )
        echo(api_file.read_text().rstrip())
        shell.k("apply", "-f", str(api_file))
        workflow_name: str | None = None
        if rows.workflow_serve and rows.workflow_version and kuberay is not None:
            workflow_name = names.mlserve_name(rows.workflow_serve, environment)
            wf_file = work / "manifests" / f"{workflow_name}.yaml"
            wf_file.write_text(
                yaml.safe_dump(
                    mlserve_manifest(rows.workflow_serve, environment, namespace, "workflow", rows.workflow_version),
                    sort_keys=False,
                )
            )
            shell.k("apply", "-f", str(wf_file))
        _wait_mlserve(shell, api_name, namespace, options.timeout, "Ready", _ready)
        if workflow_name:
            _wait_mlserve(shell, workflow_name, namespace, options.timeout, "Ready", _ready)
        kinds = "mls,deploy,svc,hpa,ingress" + (",rayjobs" if kuberay is not None else "")
        _show(shell, namespace, kinds)
        if workflow_name:
            echo(f"the workflow {rows.workflow_serve} runs on a schedule: one RayJob per cron time, one at a time")
            shell.k(
                "get",
                "mls",
                workflow_name,
                "-n",
                namespace,
                "-o",
                "custom-columns=NAME:.metadata.name,SCHEDULE:.status.schedule,"
                "NEXT RUN:.status.nextScheduledTime,LAST RUN:.status.lastScheduledTime",
            )

        old = _mls(shell, api_name, namespace)
        new_version = rows.api_versions[1]
        clock.step(f"deploying {new_version} through the database, as Darwin does (no kubectl)")
        deployment_id = asyncio.run(_deploy_in_database(db_file, rows.api_serve, environment, new_version))
        echo(f"recorded deployment {deployment_id} of {rows.api_serve} {new_version} in {environment}")
        _wait_mlserve(
            shell,
            api_name,
            namespace,
            options.timeout,
            f"at {new_version} and Ready",
            lambda b: (
                b["spec"].get("artifactVersion") == new_version
                and _ready(b)
                and (b.get("status") or {}).get("deploymentId") == deployment_id
            ),
        )
        shell.k("get", "mls", api_name, "-n", namespace)

        clock.step(f"rolling back: mlserve rollback {rows.api_serve} --env {environment}")
        shell.run(
            [*_mlserve_command(), "rollback", rows.api_serve, "--env", environment],
            show=f"mlserve rollback {rows.api_serve} --env {environment}",
            env=db_env,
        )
        _wait_mlserve(
            shell,
            api_name,
            namespace,
            options.timeout,
            f"back at {old['spec']['artifactVersion']}",
            lambda b: (
                b["spec"].get("artifactVersion") == old["spec"]["artifactVersion"]
                and _ready(b)
                and ((b.get("status") or {}).get("deploymentId") or 0) > deployment_id
            ),
        )
        shell.k("get", "mls", api_name, "-n", namespace)

        clock.step(f"deploying {new_version} again by editing the MLServe (kubectl patch)")
        before = (_mls(shell, api_name, namespace).get("status") or {}).get("deploymentId") or 0
        shell.k(
            "patch",
            "mlserve",
            api_name,
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"artifactVersion": new_version}}),
        )
        _wait_mlserve(
            shell,
            api_name,
            namespace,
            options.timeout,
            f"recorded at {new_version}",
            lambda b: ((b.get("status") or {}).get("deploymentId") or 0) > before and _ready(b),
        )
        _show(shell, namespace, kinds)

        clock.step(f"the history of {rows.api_serve} in {environment}: mlserve history")
        mlserve = _mlserve_command()
        shell.run(
            [*mlserve, "history", rows.api_serve, "--env", environment],
            show=f"mlserve history {rows.api_serve} --env {environment}",
            env=db_env,
        )
        clock.step("the database and the cluster side by side: mlserve status")
        shell.run([*mlserve, "status"], show="mlserve status", env=db_env)
        ok = True
    except BaseException:
        if shell is not None:
            with contextlib.suppress(Exception):
                echo("\nwhat the cluster holds:")
                shell.k("get", "mls,deploy,pods,rayjobs", "-A", "-o", "wide", check=False)
                shell.k(
                    "get",
                    "mls",
                    "-A",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.name}: {.status.phase} {.status.message}{'\\n'}{end}",
                    check=False,
                )
        if operator is not None and operator.log_file.exists():
            echo(f"\noperator log (last lines of {operator.log_file}):\n{operator.tail()}")
        raise
    finally:
        keep = options.keep and ok
        if not keep:
            if operator is not None:
                operator.stop()
            local.stop()
    total = clock.total()
    result = DemoResult(total, clock.steps, handle.kubeconfig)
    echo(f"\n==> done in {total:.1f} s")
    if options.keep:
        echo(
            "The cluster and the operator keep running. Go on with:\n"
            f"  export KUBECONFIG={handle.kubeconfig}\n"
            f"  {kubectl} get mls -A\n"
            f"  the MLServe files are in {work / 'manifests'}; the operator's log is {work / 'operator.log'}\n"
            "Stop everything with:\n"
            f"  mlserve demo --down{'' if options.work_dir == Path('.mlserve/demo') else f' --work-dir {options.work_dir}'}"
        )
    else:
        echo(
            "Everything is stopped. Run `mlserve demo --keep` to leave the cluster and the operator running, "
            "or start a cluster of your own with `mlserve dev cluster up`."
        )
    return result


def stop_kept_demo(work_dir: Path, echo: Callable[[str], None] = print) -> bool:
    """Stop what ``mlserve demo --keep`` left running in ``work_dir``; True when something was."""
    from mlserve.operator.dev.cluster.cluster import stop_recorded

    stopped = False
    pid_file = work_dir / OPERATOR_PID_FILE
    if pid_file.is_file():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            pid = int(pid_file.read_text().strip())
            os.killpg(pid, signal.SIGTERM)
            echo(f"stopped the operator (pid {pid})")
            stopped = True
        pid_file.unlink(missing_ok=True)
    if (work_dir / "cluster").is_dir() and stop_recorded(work_dir / "cluster"):
        echo(f"stopped the cluster of {work_dir / 'cluster'}")
        stopped = True
    return stopped

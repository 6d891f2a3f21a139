"""The history test's driver: seeded random schedules of the two writers, the operator in-process.

One schedule is a list of steps, each chosen by a seeded :class:`random.Random`:

- Darwin's writes, by plain SQL in one transaction each, as Darwin's API writes them
  (``darwin_deploy``: a new ``deployments`` row ACTIVE, the previous one ENDED with
  ``ended_at``, the ``active_deployments`` pointer moved with ``previous_deployment_id``, an
  ``app_layer_deployments`` row with the previous row's environment variables;
  ``darwin_undeploy``: END and delete the pointer; ``pointer_move``: the same rows as a deploy
  of the previous deployment's artifact, as a rollback through Darwin would write them);
- a user's ``kubectl``: server-side apply of an MLServe with a version (``apply``), a merge
  patch of ``replicas``, ``paused`` or ``env`` only (``patch``), a label-only apply
  (``label``), a delete (``delete``), an apply in a namespace that is not the environment's
  (``stray``);
- ``mlserve rollback``: the function the CLI calls (``rollback_in_database``);
- the operator's own code, wired as ``operator/handlers.py`` wires it: one reconcile of one
  MLServe (``reconcile``; the finalizer, ``finalize``, when it is being deleted: kopf keeps
  the finalizer on the object until the handler says done, and so does this driver), one
  tick of the database sync (``sync``), a restart (``restart``: a new Runtime, a new
  SyncState, the pending undeploys read back from their ConfigMap) and a SIGKILL (``kill``:
  a reconcile or a sync tick cancelled after a random delay, then a restart with new
  database connections).

At the end of a schedule the operator settles (sync ticks and reconciles of every MLServe
until a full round writes nothing, bounded) and :meth:`Schedule.check` reports the invariants
that do not hold (:class:`Violation`). The same seed gives the same steps; the timing of a
SIGKILL is the only thing a replay may not repeat exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment as K8sDeployment
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType
from tortoise import Tortoise, connections
from tortoise.transactions import in_transaction

from mlserve.models.db import close_db, init_db
from mlserve.models.settings import DatabaseSettings
from mlserve.operator.reconcile.events import RecordingEvents
from mlserve.operator.reconcile.finalize import finalize
from mlserve.operator.reconcile.identity import Claim, claim_of, pair_of
from mlserve.operator.reconcile.kube import MLServe, as_dict
from mlserve.operator.reconcile.mlserve import Runtime, reconcile
from mlserve.operator.reconcile.pending import ConfigMapStore, PendingUndeploys
from mlserve.operator.reconcile.rollback import rollback_in_database
from mlserve.operator.reconcile.rows import RowCache
from mlserve.operator.reconcile.sync import SyncState, sync_once
from mlserve.operator.render import names
from mlserve.operator.render.settings import RenderSettings
from mlserve.operator.settings import OperatorSettings
from mlserve.operator.spec import api
from mlserve_testing import darwin
from mlserve_testing.wait import async_wait_for

__all__ = [
    "STEP_WEIGHTS",
    "Schedule",
    "ScheduleResult",
    "Violation",
    "WriteCounter",
    "install_mlserve_crd",
    "pair_violations",
    "run_schedule",
]

CLUSTER = "local"
USER_MANAGER = "kubectl"
"""``kubectl apply --server-side --force-conflicts`` of the user's manifest."""
LABEL_MANAGER = "kubectl-label"
EDIT_MANAGER = "kubectl-edit"
SERVES_PER_SCHEDULE = 2
MAX_SETTLE_ROUNDS = 8
KILL_DELAY = (0.0, 0.15)
"""Seconds a reconcile or a sync tick runs before the SIGKILL (uniform)."""

CLUSTER_GRACE = 30.0
"""Seconds the cluster may take after settling to show what the database says (garbage
collection of a deleted MLServe's children, the Deployment of a re-created one)."""
CLUSTER_KINDS = frozenset({"mlserve-count", "cluster-version", "cluster-image", "undeployed-still-served"})

STEP_WEIGHTS: dict[str, int] = {
    "darwin_deploy": 12,
    "darwin_undeploy": 4,
    "pointer_move": 4,
    "apply": 12,
    "patch": 8,
    "label": 4,
    "delete": 5,
    "stray": 2,
    "rollback": 4,
    "reconcile": 22,
    "sync": 12,
    "restart": 3,
    "kill": 6,
}


@dataclass(frozen=True)
class Violation:
    kind: str
    message: str


@dataclass(frozen=True)
class Request:
    """A user's apply that changed an MLServe's ``spec.artifactVersion`` (or created it)."""

    version: str
    step: str
    newest: int
    """The pair's newest deployment id when asked (0: none): a deployment recorded for this
    request may only replace one the user could have seen."""


@dataclass
class PairInfo:
    serve: str
    environment: str
    serve_id: int
    environment_id: int
    versions: dict[str, int]
    """artifact version -> artifacts.id"""

    @property
    def key(self) -> tuple[str, str]:
        return (self.serve, self.environment)

    @property
    def mlserve_name(self) -> str:
        return names.mlserve_name(self.serve, self.environment)


class WriteCounter:
    """An httpx request hook: counts the operator client's writes, status writes apart
    (a status that follows the pods' readiness is not a change of what runs)."""

    def __init__(self) -> None:
        self.writes = 0

    async def __call__(self, request: Any) -> None:
        if request.method == "GET" or request.url.path.endswith("/status"):
            return
        self.writes += 1


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _sql(conn: Any, text: str) -> str:
    return text.replace("?", "%s") if conn.capabilities.dialect == "mysql" else text


async def _rows(conn: Any, text: str, *values: Any) -> list[dict[str, Any]]:
    _, rows = await conn.execute_query(_sql(conn, text), list(values))
    return [dict(row) for row in rows]


async def _insert(conn: Any, table: str, **columns: Any) -> int:
    names_ = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    values = [json.dumps(v) if isinstance(v, dict | list) else v for v in columns.values()]
    return int(await conn.execute_insert(_sql(conn, f"INSERT INTO {table} ({names_}) VALUES ({marks})"), values))


@dataclass
class Schedule:
    """One schedule: its own namespace, environment and serves, and the operator's state."""

    seed: int
    steps: int
    operator_client: AsyncClient
    user_client: AsyncClient
    counter: WriteCounter
    database: DatabaseSettings
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    """Names this schedule's rows and namespaces apart from the run's others (8 hex digits:
    with 5, two of 200 schedules shared a serve name often enough to break a long run)."""
    rng: random.Random = field(init=False)
    namespace: str = field(init=False)
    stray_namespace: str = field(init=False)
    pairs: list[PairInfo] = field(default_factory=list)
    user_id: int = 0
    log: list[str] = field(default_factory=list)
    steps_run: int = 0
    """The steps as they ran (with what each did), for the report and a replay."""
    violations: list[Violation] = field(default_factory=list)
    operator_errors: list[str] = field(default_factory=list)
    requested_ids: set[int] = field(default_factory=set)
    """Deployments written by Darwin's SQL or ``mlserve rollback`` (asked for by definition)."""
    requests: dict[tuple[str, str], list[Request]] = field(default_factory=dict)
    """pair -> the users' requests (applies that changed the version) no deployment answered yet."""
    active_seen: dict[tuple[str, str], int | None] = field(default_factory=dict)
    """pair -> its active deployment (the pointer) at the last observation."""
    now_at: str = "set-up"
    """Where the schedule is (a step number or a settle round), for the messages."""
    seen: dict[int, str] = field(default_factory=dict)
    """deployments.id -> last status seen, after every step."""
    settings: OperatorSettings = field(init=False)
    runtime: Runtime = field(init=False)
    sync_state: SyncState = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.namespace = f"hist-{self.seed % 100000}-{self.token}"
        self.stray_namespace = f"{self.namespace}-x"

    # --- set-up and tear-down ---------------------------------------------------------------

    async def setup(self) -> None:
        for ns in (self.namespace, self.stray_namespace):
            await self.operator_client.create(Namespace(metadata=ObjectMeta(name=ns)))
        environment = f"e{self.token}"
        for index in range(SERVES_PER_SCHEDULE):
            serve = f"s{self.token}{chr(ord('a') + index)}"
            seed = await darwin.seed_api_serve(
                serve, environment, self.namespace, versions=("v1", "v2"), min_replicas=1, max_replicas=1
            )
            self.user_id = seed.user
            self.pairs.append(PairInfo(serve, environment, seed.serve, seed.environment, dict(seed.artifacts)))
        self.settings = OperatorSettings(
            cluster_name=CLUSTER,
            render=RenderSettings(),
            database=None,
            namespaces=(self.namespace, self.stray_namespace),
            operator_namespace=self.namespace,
            db_timeout=10.0,
            deletion_db_timeout=30.0,
        )
        await self.restart()

    async def teardown(self) -> None:
        """Undeploy what is left (Darwin-style) and let the namespaces go: finalizers removed."""
        conn = Tortoise.get_connection("default")
        for pair in self.pairs:
            await self._undeploy(conn, pair)
        for ns in (self.namespace, self.stray_namespace):
            for body in await self._mlserves((ns,)):
                if body["metadata"].get("finalizers"):
                    with contextlib.suppress(ApiError):
                        await self._set_finalizers(body, [])
            with contextlib.suppress(ApiError):
                await self.operator_client.delete(Namespace, ns)

    # --- the operator's wiring (handlers.py) ------------------------------------------------

    async def restart(self) -> None:
        """Everything the operator keeps in memory starts again; the pending undeploys are read
        back from their ConfigMap (the sync loop's restore before its first tick)."""
        store = ConfigMapStore(
            self.operator_client, self.namespace, self.settings.pending_configmap, self.settings.field_manager
        )
        pending = PendingUndeploys(store)
        await pending.restore()
        # The cluster's rows as the operator keeps them (handlers.py): refreshed by the sync
        # ticks only, so between two ticks the reconciles read a snapshot Darwin's writes have
        # made stale. Never expired here: staleness is what the schedules exercise.
        self.runtime = Runtime(
            settings=self.settings,
            client=self.operator_client,
            events=RecordingEvents(),
            pending=pending,
            rows=RowCache(CLUSTER, max_age=float("inf")),
        )
        self.sync_state = SyncState()

    async def _mlserves(self, namespaces: Sequence[str] | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for ns in namespaces or (self.namespace, self.stray_namespace):
            found.extend([as_dict(item) async for item in self.operator_client.list(MLServe, namespace=ns)])
        return found

    @staticmethod
    def _claims(index: Sequence[Mapping[str, Any]], body: Mapping[str, Any]) -> list[Claim]:
        """kopf's index of claims (handlers.mlserve_claims), for ``body``'s pair."""
        mine = claim_of(body)
        if mine is None:
            return []
        return [got[1] for other in index if (got := claim_of(other)) is not None and got[0] == mine[0]]

    async def _set_finalizers(self, body: Mapping[str, Any], finalizers: list[str]) -> None:
        meta = body["metadata"]
        await self.operator_client.patch(
            MLServe,
            meta["name"],
            {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}},
            namespace=meta["namespace"],
            patch_type=PatchType.MERGE,
        )

    async def operate_on(self, body: dict[str, Any], index: Sequence[Mapping[str, Any]]) -> str:
        """What kopf does with one MLServe: the finalizer first, then the worker's reconcile, or
        the deletion handler (finalize) and the finalizer's removal once it is done."""
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            if api.FINALIZER not in finalizers:
                return "deleting, not ours"
            result = await finalize(body, self.runtime, self._claims(index, body), waited=0.0)
            if result.done:
                with contextlib.suppress(ApiError):  # changed meanwhile: the next round again
                    await self._set_finalizers(body, [f for f in finalizers if f != api.FINALIZER])
            return f"finalize: done={result.done} ended={result.ended_deployment} {result.message}"
        if api.FINALIZER not in finalizers:
            await self._set_finalizers(body, [*finalizers, api.FINALIZER])
            body = as_dict(await self.operator_client.get(MLServe, meta["name"], namespace=meta["namespace"]))
        report = await reconcile(body, self.runtime, self._claims(index, body))
        error = f" error={report.error.__class__.__name__}" if report.error is not None else ""
        return f"reconcile: recorded={report.recorded_deployment}{error}"

    async def sync_tick(self, *, force_full: bool = False) -> str:
        result = await sync_once(
            self.operator_client,
            CLUSTER,
            self.sync_state,
            field_manager=api.sync_field_manager(self.settings.field_manager),
            full_resync_interval=self.settings.full_resync_interval,
            namespaces=self.settings.namespaces,
            pending=self.runtime.pending,
            force_full=force_full,
            rows=self.runtime.rows,
        )
        return (
            f"sync: created={len(result.created)} updated={len(result.updated)} deleted={len(result.deleted)} "
            f"pending={len(result.pending_written)} failed={len(result.failed)}"
        )

    # --- the steps ------------------------------------------------------------------------------

    async def run_steps(self) -> None:
        kinds = list(STEP_WEIGHTS)
        weights = [STEP_WEIGHTS[k] for k in kinds]
        for number in range(self.steps):
            kind = self.rng.choices(kinds, weights)[0]
            pair = self.rng.choice(self.pairs)
            self.now_at = f"step {number:02d}"
            try:
                what = await getattr(self, f"step_{kind}")(pair)
            except Exception as exc:
                what = f"raised {type(exc).__name__}: {exc}"
                self.operator_errors.append(f"step {number} {kind}: {what}")
            self.log.append(f"{number:02d} {kind} {pair.serve}: {what}")
            self.steps_run += 1
            await self.observe_rows()

    async def step_darwin_deploy(self, pair: PairInfo) -> str:
        if self.rng.random() < 0.4:
            version = f"v{len(pair.versions) + 1}"
            pair.versions[version] = await darwin.insert(
                "artifacts",
                serve_id=pair.serve_id,
                version=version,
                github_repo_url="https://git.example.com/ml/repo",
                image_url=f"registry.example.com/{pair.serve}:{version}",
                created_at=_now(),
                created_by_id=self.user_id,
            )
        else:
            version = self.rng.choice(sorted(pair.versions))
        new = await self._deploy(pair, version)
        return f"{version} -> deployment {new}"

    async def _deploy(self, pair: PairInfo, version: str) -> int:
        """Darwin's deploy: plain SQL in one transaction."""
        async with in_transaction("default") as conn:
            now = _now()
            pointers = await _rows(
                conn,
                "SELECT id, deployment_id FROM active_deployments WHERE serve_id = ? AND environment_id = ?",
                pair.serve_id,
                pair.environment_id,
            )
            new = await _insert(
                conn,
                "deployments",
                serve_id=pair.serve_id,
                artifact_id=pair.versions[version],
                environment_id=pair.environment_id,
                created_by_id=self.user_id,
                created_at=now,
                status="ACTIVE",
            )
            variables: Any = {"HISTORY": "1"}
            if pointers:
                old = int(pointers[0]["deployment_id"])
                carried = await _rows(
                    conn, "SELECT environment_variables FROM app_layer_deployments WHERE deployment_id = ?", old
                )
                if carried and carried[0]["environment_variables"] is not None:
                    raw = carried[0]["environment_variables"]
                    variables = json.loads(raw) if isinstance(raw, str) else raw
                await conn.execute_query(
                    _sql(conn, "UPDATE deployments SET status = 'ENDED', ended_at = ? WHERE id = ?"), [now, old]
                )
                await conn.execute_query(
                    _sql(
                        conn,
                        "UPDATE active_deployments SET deployment_id = ?, previous_deployment_id = ?, updated_at = ? "
                        "WHERE id = ?",
                    ),
                    [new, old, now, int(pointers[0]["id"])],
                )
            else:
                await _insert(
                    conn,
                    "active_deployments",
                    deployment_id=new,
                    environment_id=pair.environment_id,
                    serve_id=pair.serve_id,
                    created_at=now,
                    updated_at=now,
                )
            await _insert(
                conn,
                "app_layer_deployments",
                deployment_id=new,
                deployment_strategy="rolling",
                environment_variables=variables,
            )
        self.requested_ids.add(new)
        return new

    async def _undeploy(self, conn: Any, pair: PairInfo) -> list[int]:
        now = _now()
        ended = []
        for row in await _rows(
            conn,
            "SELECT id, deployment_id FROM active_deployments WHERE serve_id = ? AND environment_id = ?",
            pair.serve_id,
            pair.environment_id,
        ):
            await conn.execute_query(
                _sql(conn, "UPDATE deployments SET status = 'ENDED', ended_at = ? WHERE id = ?"),
                [now, int(row["deployment_id"])],
            )
            await conn.execute_query(_sql(conn, "DELETE FROM active_deployments WHERE id = ?"), [int(row["id"])])
            ended.append(int(row["deployment_id"]))
        return ended

    async def step_darwin_undeploy(self, pair: PairInfo) -> str:
        async with in_transaction("default") as conn:
            ended = await self._undeploy(conn, pair)
        return f"ended {ended}"

    async def step_pointer_move(self, pair: PairInfo) -> str:
        """A rollback written by Darwin's SQL: the previous deployment's artifact deployed again."""
        conn = Tortoise.get_connection("default")
        rows = await _rows(
            conn,
            "SELECT d.artifact_id FROM active_deployments p JOIN deployments d ON d.id = p.previous_deployment_id "
            "WHERE p.serve_id = ? AND p.environment_id = ?",
            pair.serve_id,
            pair.environment_id,
        )
        if not rows:
            return "no previous deployment"
        version = next(v for v, i in pair.versions.items() if i == int(rows[0]["artifact_id"]))
        new = await self._deploy(pair, version)
        return f"back to {version} -> deployment {new}"

    async def _current(self, pair: PairInfo, namespace: str) -> dict[str, Any] | None:
        try:
            return as_dict(await self.user_client.get(MLServe, pair.mlserve_name, namespace=namespace))
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise

    async def _apply_version(self, pair: PairInfo, namespace: str) -> str:
        version = self.rng.choice(sorted(pair.versions))
        current = await self._current(pair, namespace)
        if current is None or (current.get("spec") or {}).get("artifactVersion") != version:
            conn = Tortoise.get_connection("default")
            newest = await _rows(
                conn,
                "SELECT MAX(id) AS id FROM deployments WHERE serve_id = ? AND environment_id = ?",
                pair.serve_id,
                pair.environment_id,
            )
            request = Request(version, self.now_at, int(newest[0]["id"] or 0))
            self.requests.setdefault(pair.key, []).append(request)
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": pair.mlserve_name, "namespace": namespace},
            "spec": {"serve": pair.serve, "environment": pair.environment, "type": "api", "artifactVersion": version},
        }
        await self.user_client.patch(
            MLServe,
            pair.mlserve_name,
            body,
            namespace=namespace,
            patch_type=PatchType.APPLY,
            field_manager=USER_MANAGER,
            force=True,
        )
        return f"{version}" + (" (created)" if current is None else "")

    async def step_apply(self, pair: PairInfo) -> str:
        return await self._apply_version(pair, self.namespace)

    async def step_stray(self, pair: PairInfo) -> str:
        return await self._apply_version(pair, self.stray_namespace)

    async def _with_mlserve(self, pair: PairInfo) -> PairInfo:
        """The pair, or another that has an MLServe to edit when it has none."""
        present = {pair_of(b) for b in await self._mlserves((self.namespace,))}
        if pair.key in present:
            return pair
        return next((p for p in self.pairs if p.key in present), pair)

    async def step_patch(self, pair: PairInfo) -> str:
        pair = await self._with_mlserve(pair)
        if await self._current(pair, self.namespace) is None:
            return "absent"
        field_ = self.rng.choice(["replicas", "paused", "env"])
        spec: dict[str, Any]
        if field_ == "replicas":
            spec = {"replicas": {"min": 1, "max": self.rng.choice([1, 2, 3])}}
        elif field_ == "paused":
            spec = {"paused": self.rng.random() < 0.3}
        else:
            spec = {"env": {"FLAG": str(self.rng.randint(0, 9))}}
        await self.user_client.patch(
            MLServe,
            pair.mlserve_name,
            {"spec": spec},
            namespace=self.namespace,
            patch_type=PatchType.MERGE,
            field_manager=EDIT_MANAGER,
        )
        return json.dumps(spec)

    async def step_label(self, pair: PairInfo) -> str:
        pair = await self._with_mlserve(pair)
        if await self._current(pair, self.namespace) is None:
            return "absent"
        team = f"t{self.rng.randint(0, 9)}"
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": pair.mlserve_name, "namespace": self.namespace, "labels": {"team": team}},
        }
        await self.user_client.patch(
            MLServe,
            pair.mlserve_name,
            body,
            namespace=self.namespace,
            patch_type=PatchType.APPLY,
            field_manager=LABEL_MANAGER,
            force=True,
        )
        return f"team={team}"

    async def step_delete(self, pair: PairInfo) -> str:
        namespace = self.namespace if self.rng.random() < 0.85 else self.stray_namespace
        try:
            await self.user_client.delete(MLServe, pair.mlserve_name, namespace=namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return f"absent in {namespace}"
            raise
        return f"deleted in {namespace}"

    async def step_rollback(self, pair: PairInfo) -> str:
        from mlserve.operator.reconcile.errors import InvalidInput

        try:
            new, previous, artifact = await rollback_in_database(pair.serve, pair.environment, "admin")
        except InvalidInput as exc:
            return f"refused: {exc.reason}"
        self.requested_ids.add(new.pk)
        return f"{artifact.version}: deployment {new.pk} (from {previous.pk})"

    async def _one_operator_action(self, pair: PairInfo) -> tuple[str, Callable[[], Awaitable[str]]]:
        """A reconcile (or finalize) of one MLServe, or a sync tick."""
        index = await self._mlserves()
        if index and self.rng.random() < 0.75:
            body = self.rng.choice(index)
            ref = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
            return ref, lambda: self.operate_on(body, index)
        return "sync", lambda: self.sync_tick()

    async def step_reconcile(self, pair: PairInfo) -> str:
        """The operator acts on one MLServe: the pair's when it has one, any other otherwise."""
        index = await self._mlserves()
        if not index:
            return "no MLServe"
        own = [b for b in index if pair_of(b) == pair.key]
        body = self.rng.choice(own or index)
        done = await self.operate_on(body, index)
        return f"{body['metadata']['namespace']}/{body['metadata']['name']} {done}"

    async def step_sync(self, pair: PairInfo) -> str:
        return await self.sync_tick()

    async def step_restart(self, pair: PairInfo) -> str:
        await self.restart()
        return "memory dropped"

    async def step_kill(self, pair: PairInfo) -> str:
        what, action = await self._one_operator_action(pair)
        delay = self.rng.uniform(*KILL_DELAY)
        task = asyncio.ensure_future(action())
        done, _ = await asyncio.wait([task], timeout=delay)
        if done:
            outcome = "finished first"
            with contextlib.suppress(Exception):
                outcome += f": {task.result()}"
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            outcome = "killed"
        await self._drop_connections()
        await self.restart()
        return f"{what} after {delay:.3f}s: {outcome}"

    async def _drop_connections(self) -> None:
        """A killed process's connections are gone (the server rolls back what they had open):
        every pooled connection is closed at once, in use or not, and new ones are opened. A
        plain close would wait for a connection the cancelled task held when it was cut off."""
        for conn in connections.all():
            pool = getattr(conn, "_pool", None)
            if pool is not None:
                pool.terminate()
        async with asyncio.timeout(10):
            await close_db()
        await init_db(self.database, create_schema=False)

    # --- observing, settling, checking ------------------------------------------------------

    async def _deployment_rows(self) -> list[dict[str, Any]]:
        ids = ", ".join(str(p.serve_id) for p in self.pairs)
        conn = Tortoise.get_connection("default")
        return await _rows(
            conn,
            f"SELECT id, serve_id, environment_id, artifact_id, status FROM deployments WHERE serve_id IN ({ids})",
        )

    async def _pointer_rows(self) -> list[dict[str, Any]]:
        ids = ", ".join(str(p.serve_id) for p in self.pairs)
        conn = Tortoise.get_connection("default")
        return await _rows(
            conn,
            "SELECT id, serve_id, environment_id, deployment_id, previous_deployment_id FROM active_deployments "
            f"WHERE serve_id IN ({ids})",
        )

    async def observe_rows(self) -> None:
        """After every step (and every operator action while settling): no deployment row lost,
        no ENDED row ACTIVE again, every deployment the operator recorded answers a request."""
        found = {int(r["id"]): r for r in await self._deployment_rows()}
        for deployment_id, status in self.seen.items():
            row = found.get(deployment_id)
            if row is None:
                self._violate("row-lost", f"deployment {deployment_id} ({status}) disappeared")
            elif status == "ENDED" and row["status"] == "ACTIVE":
                self._violate("ended-reactivated", f"deployment {deployment_id} came back ACTIVE")
        for deployment_id in sorted(set(found) - set(self.seen)):
            if deployment_id not in self.requested_ids:
                self._answered(found[deployment_id])
        self.seen.update({i: str(r["status"]) for i, r in found.items()})
        pointers = await self._pointer_rows()
        for pair in self.pairs:
            mine = [
                int(p["deployment_id"])
                for p in pointers
                if int(p["serve_id"]) == pair.serve_id and int(p["environment_id"]) == pair.environment_id
            ]
            self.active_seen[pair.key] = max(mine) if mine else None

    def _answered(self, row: Mapping[str, Any]) -> None:
        """A deployment the operator recorded: which user request it answers (each once)."""
        pair = next(
            p
            for p in self.pairs
            if p.serve_id == int(row["serve_id"]) and p.environment_id == int(row["environment_id"])
        )
        version = next(v for v, i in pair.versions.items() if i == int(row["artifact_id"]))
        replaced = self.active_seen.get(pair.key)
        asked = [q for q in self.requests.get(pair.key, []) if q.version == version]
        fitting = [q for q in asked if replaced is None or q.newest >= replaced]
        where = f"{pair.serve}: deployment {row['id']} ({version}) recorded by the operator at {self.now_at}"
        if fitting:
            self.requests[pair.key].remove(fitting[0])
        elif asked:
            self._violate(
                "stale-request-recorded",
                f"{where} replaced deployment {replaced}, which the database got after the request "
                f"({asked[-1].step}, when its newest deployment was {asked[-1].newest or 'none'})",
            )
        else:
            self._violate("unrequested-version", f"{where}: no request for {version} left unanswered")

    def _violate(self, kind: str, message: str) -> None:
        violation = Violation(kind, message)
        if violation not in self.violations:
            self.violations.append(violation)

    async def _db_signature(self) -> tuple[Any, ...]:
        rows = sorted((int(r["id"]), str(r["status"])) for r in await self._deployment_rows())
        pointers = sorted(
            (int(r["id"]), int(r["deployment_id"]), r["previous_deployment_id"]) for r in await self._pointer_rows()
        )
        return (tuple(rows), tuple(pointers))

    async def _orphans(self) -> list[str]:
        """Children whose MLServe is gone and that garbage collection has not deleted yet."""
        live = {body["metadata"]["uid"] for body in await self._mlserves()}
        orphans = []
        async for child in self.operator_client.list(K8sDeployment, namespace=self.namespace):
            owners = [ref.uid for ref in (child.metadata.ownerReferences or []) if ref.kind == api.KIND]
            if owners and not set(owners) & live:
                orphans.append(str(child.metadata.name))
        return orphans

    async def settle_round(self, label: str) -> bool:
        """One sync tick, then every MLServe once; True when the round wrote nothing.

        The round starts once garbage collection has deleted the children of MLServes that are
        gone: until then a new MLServe of the same name finds its children's names taken
        (NameTaken), and the operator applies them when the deletion wakes it or at the next
        drift check, which the schedule has no time for."""
        await async_wait_for(self._orphans_gone, timeout=60, what="garbage collection of deleted MLServes' children")
        self.now_at = label
        before_db, before_writes = await self._db_signature(), self.counter.writes
        try:
            did = [await self.sync_tick(force_full=True)]
        except Exception as exc:
            self.operator_errors.append(f"{label} sync: {type(exc).__name__}: {exc}")
            return False
        await self.observe_rows()
        for listed in await self._mlserves():
            # As the watch delivers it: the MLServe as it is now, after this round's writes.
            index = await self._mlserves()
            meta = listed["metadata"]
            body = next((b for b in index if b["metadata"]["uid"] == meta["uid"]), None)
            if body is None:
                continue
            try:
                done = await self.operate_on(body, index)
            except ApiError as exc:
                if exc.status.code not in (404, 409):
                    raise
                done = f"{exc.status.code}: changed meanwhile"
            if "recorded=None" not in done:
                did.append(f"{body['metadata']['namespace']}/{body['metadata']['name']} {done}")
            await self.observe_rows()
        quiet = self.counter.writes == before_writes and await self._db_signature() == before_db
        if not quiet:
            self.log.append(f"   {label}: " + "; ".join(did))
        return quiet

    async def _orphans_gone(self) -> bool:
        return not await self._orphans()

    async def settle(self) -> int:
        """Rounds until one writes nothing; 0 when it never did."""
        for round_ in range(1, MAX_SETTLE_ROUNDS + 1):
            if await self.settle_round(f"settle {round_}"):
                return round_
        return 0

    async def check(self) -> None:
        """The invariants after settling."""
        await self.observe_rows()
        rows = await self._deployment_rows()
        pointers = await self._pointer_rows()
        mlserves = await self._mlserves((self.namespace,))
        artifacts = {i: v for p in self.pairs for v, i in p.versions.items()}
        for body in await self._mlserves():
            if body["metadata"].get("deletionTimestamp"):
                self._violate(
                    "stuck-deleting",
                    f"{body['metadata']['namespace']}/{body['metadata']['name']} still has its finalizer",
                )
        for pair in self.pairs:
            image = await self._image(pair)
            for violation in pair_violations(
                pair.serve,
                pair.environment,
                pair.serve_id,
                pair.environment_id,
                rows,
                pointers,
                mlserves,
                artifacts,
                image,
            ):
                self._violate(violation.kind, violation.message)

    async def _image(self, pair: PairInfo) -> str | None:
        name = names.child_name(pair.serve, pair.environment)
        try:
            found = await self.operator_client.get(K8sDeployment, name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise
        if found.metadata is not None and found.metadata.deletionTimestamp is not None:
            return None
        containers = found.spec.template.spec.containers if found.spec and found.spec.template.spec else []
        return containers[0].image if containers else None


def pair_violations(
    serve: str,
    environment: str,
    serve_id: int,
    environment_id: int,
    rows: Sequence[Mapping[str, Any]],
    pointers: Sequence[Mapping[str, Any]],
    mlserves: Sequence[Mapping[str, Any]],
    artifacts: Mapping[int, str],
    image: str | None,
) -> list[Violation]:
    """The sync protocol's invariants for one (serve, environment) once the writers settled.

    ``rows``: ``deployments`` rows (id, serve_id, environment_id, artifact_id, status);
    ``pointers``: ``active_deployments`` rows (id, serve_id, environment_id, deployment_id);
    ``mlserves``: the MLServes of the environment's namespace; ``artifacts``: artifacts.id ->
    version; ``image``: the image the pair's Deployment runs (None: no Deployment). Holds when:
    at most one ACTIVE deployment and one pointer, the pointer names the ACTIVE one, an
    undeployed pair has no running MLServe, a deployed pair exactly one MLServe asking for the
    active version, and its Deployment runs that version's image."""
    found: list[Violation] = []
    mine = [r for r in rows if int(r["serve_id"]) == serve_id and int(r["environment_id"]) == environment_id]
    active = [int(r["id"]) for r in mine if r["status"] == "ACTIVE"]
    ptrs = [p for p in pointers if int(p["serve_id"]) == serve_id and int(p["environment_id"]) == environment_id]
    if len(active) > 1:
        found.append(Violation("two-active", f"{serve}: ACTIVE deployments {active}"))
    if len(ptrs) > 1:
        found.append(Violation("two-pointers", f"{serve}: pointers to {[p['deployment_id'] for p in ptrs]}"))
    pointed = sorted(int(p["deployment_id"]) for p in ptrs)
    if pointed != sorted(active):
        found.append(Violation("pointer-mismatch", f"{serve}: pointer to {pointed}, ACTIVE {active}"))
    held = [b for b in mlserves if pair_of(b) == (serve, environment)]
    if not ptrs:
        # A paused MLServe's request waits for its user (it records nothing): not checked.
        running = [b for b in held if not (b.get("spec") or {}).get("paused")]
        if running:
            found.append(
                Violation(
                    "undeployed-still-served",
                    f"{serve}: no active deployment, MLServes {[b['metadata']['name'] for b in running]} "
                    f"(annotation {[(b['metadata'].get('annotations') or {}).get(api.ANNOTATION_DEPLOYMENT_ID) for b in running]})",
                )
            )
        return found
    active_row = next((r for r in mine if int(r["id"]) == int(ptrs[0]["deployment_id"])), None)
    if active_row is None:
        return found
    version = artifacts[int(active_row["artifact_id"])]
    if len(held) != 1:
        found.append(
            Violation("mlserve-count", f"{serve}: deployment {active_row['id']} ({version}), {len(held)} MLServes")
        )
        return found
    body = held[0]
    spec = body.get("spec") or {}
    if spec.get("paused"):
        return found  # paused: the user holds it; what runs is not checked
    if spec.get("artifactVersion") != version:
        found.append(
            Violation(
                "cluster-version",
                f"{serve}: database deployment {active_row['id']} runs {version}, "
                f"MLServe asks for {spec.get('artifactVersion')} "
                f"(annotation {((body['metadata'].get('annotations') or {}).get(api.ANNOTATION_DEPLOYMENT_ID))}, "
                f"status {(body.get('status') or {}).get('phase')})",
            )
        )
        return found
    expected = f"registry.example.com/{serve}:{version}"
    if image != expected:
        reasons = [
            f"{c.get('type')}={c.get('reason')}"
            for c in (body.get("status") or {}).get("conditions") or []
            if c.get("status") == ("True" if c.get("type") == "Conflict" else "False")
        ]
        found.append(
            Violation(
                "cluster-image",
                f"{serve}: Deployment runs {image}, database says {expected} "
                f"(MLServe {(body.get('status') or {}).get('phase')}: {', '.join(reasons) or 'no failing condition'})",
            )
        )
    return found


@dataclass
class ScheduleResult:
    seed: int
    steps: list[str]
    violations: list[Violation]
    operator_errors: list[str]
    settle_rounds: int
    seconds: float
    steps_run: int

    def replay(self) -> str:
        lines = [f"seed {self.seed} ({self.steps_run} steps, settled in {self.settle_rounds} rounds):"]
        lines += [f"  ! {v.kind}: {v.message}" for v in self.violations]
        lines += [f"  ~ {e}" for e in self.operator_errors]
        lines += [f"    {s}" for s in self.steps]
        return "\n".join(lines)


async def run_schedule(
    seed: int,
    steps: int,
    operator_client: AsyncClient,
    user_client: AsyncClient,
    counter: WriteCounter,
    database: DatabaseSettings,
) -> ScheduleResult:
    """One schedule from set-up to tear-down."""
    rounds = 0
    started = time.monotonic()
    schedule = Schedule(seed, steps, operator_client, user_client, counter, database)
    await schedule.setup()
    try:
        await schedule.run_steps()
        rounds = await schedule.settle()
        if not rounds:
            schedule._violate("not-settled", f"still writing after {MAX_SETTLE_ROUNDS} rounds")
        await schedule.check()
        deadline = time.monotonic() + CLUSTER_GRACE
        while any(v.kind in CLUSTER_KINDS for v in schedule.violations) and time.monotonic() < deadline:
            # Garbage collection and rollouts go at the cluster's pace: look again, with a deadline.
            await asyncio.sleep(0.5)
            await schedule.settle_round("after settling")
            schedule.violations = [v for v in schedule.violations if v.kind not in CLUSTER_KINDS]
            await schedule.check()
    finally:
        await schedule.teardown()
    return ScheduleResult(
        seed,
        schedule.log,
        schedule.violations,
        schedule.operator_errors,
        rounds,
        time.monotonic() - started,
        schedule.steps_run,
    )


def install_mlserve_crd(kube_client: Any) -> None:
    """The MLServe CRD on the API server, established and servable."""
    from pathlib import Path

    import httpx2
    from lightkube import codecs

    from mlserve_testing.wait import wait_for

    crd_file = Path(__file__).resolve().parents[2] / "crds" / "mlserve.darwin.io_mlserves.yaml"
    for crd in codecs.load_all_yaml(crd_file.read_text()):
        kube_client.apply(crd, field_manager="mlserve-tests", force=True)
    wait_for(
        lambda: list(kube_client.list(MLServe, namespace="default")) is not None,
        60,
        "MLServes to be listable",
        ignore=(ApiError, httpx2.HTTPStatusError),
    )

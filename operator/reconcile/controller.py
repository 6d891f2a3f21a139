"""The engine that drives the reconciles: caches fed by watches, a work queue, a few workers.

controller-runtime's model, beside kopf (which keeps the start-up, the peering, the Events and
the liveness endpoint; see ``handlers.py``):

1. **Caches** (:mod:`.cache`): one informer per kind (MLServes and every kind of
   ``api.CHILD_KINDS``, children selected by the ``managed-by`` label) lists, then watches,
   and keeps the projection the reconcile reads. The reconcile reads its children there
   (``Runtime.children``): a converged MLServe costs no API request at all.
2. **Queue** (:mod:`.queue`): keyed by the MLServe's uid. An MLServe is enqueued when it
   appears, when its request changes (generation, rollback annotation) or it is being
   deleted, when a child changes in a way the reconcile reads, when the holder of its pair
   goes, and by its timers: the drift check (``MLSERVE_DRIFT_CHECK_INTERVAL``, spread by
   jitter), a schedule's next run, retries with per-key backoff and jitter. A global token
   bucket (``MLSERVE_RECONCILE_RATE``) paces the reconciles that start.
3. **Workers** (``MLSERVE_WORKERS``): each takes a key, reads the MLServe from the cache and
   runs :func:`~.mlserve.reconcile`, or, when it is being deleted, :func:`~.finalize.finalize`
   and then removes the finalizer (a JSON patch that tests the finalizer is still where it
   was). A key is never processed by two workers at once; one added meanwhile runs once more.

The workers start when every informer has listed once, so a start-up reconciles against full
caches; under peering they run only while this replica is the active one (``active``), and
every MLServe is enqueued each time it becomes so.

The database sync reads the MLServes from the same cache (:class:`CachedMLServes`), so neither
a deploy nor the periodic full pass lists them from the API server: the informers list only
when they start and when a watch cannot be resumed (410 Gone, an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lightkube import ALL_NS, AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource
from lightkube.operators import not_equal
from lightkube.types import PatchType

from mlserve.operator import metrics
from mlserve.operator.spec import api

from . import kube
from .cache import ChildCache, Informer, IngressHosts, MLServeCache, watched_namespaces
from .finalize import finalize
from .identity import Pair
from .mlserve import reconcile
from .queue import WorkQueue
from .runtime import Runtime

__all__ = ["CachedMLServes", "Controller"]

log = logging.getLogger(__name__)

CHILD_SELECTOR = {api.LABEL_MANAGED_BY: api.MANAGED_BY}
OTHERS_SELECTOR = {api.LABEL_MANAGED_BY: not_equal(api.MANAGED_BY)}
"""Every object :data:`CHILD_SELECTOR` leaves out (without the label, or another value)."""
PEERING_POLL = 0.2
"""Seconds between two looks at kopf's peering (whether this replica acts); a worker also looks
before it starts a reconcile, so none starts once another replica acts (one already running
finishes: kopf's peering has no fencing)."""
SYNC_DEADLINE = 60.0
"""Seconds the workers wait for every informer's first list before they start anyway."""


class Controller:
    """Caches, queue and workers of one operator process (see the module's docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        watch_client: Callable[[], AsyncClient],
        *,
        active: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.settings = settings
        self._watch_clients: list[AsyncClient] = []
        self._active = active
        self._clock = clock
        self.queue: WorkQueue[str] = WorkQueue(
            backoff=settings.backoff,
            rate=settings.reconcile_rate,
            burst=max(1.0, settings.reconcile_rate or 1.0),
            clock=clock,
        )
        metrics.QUEUE_DEPTH.set_function(lambda: len(self.queue))
        self.mlserves = MLServeCache(self._enqueue, urgent=self._enqueue_urgent)
        self.children = ChildCache(self._enqueue)
        runtime.children = self.children
        self.ingress_hosts = IngressHosts()
        runtime.ingress_hosts = self.ingress_hosts
        self.informers: list[Informer] = []
        for namespace in watched_namespaces(settings.namespaces):
            # One client per namespace: its watches (one per kind) hold connections for good,
            # and a client's connection pool is bounded.
            client = watch_client()
            self._watch_clients.append(client)

            def informer(
                resource: type[NamespacedResource],
                put: Callable[[dict[str, Any]], None],
                remove: Callable[[str, str, str], None],
                client: AsyncClient = client,
                namespace: str = namespace,
                **how: Any,
            ) -> Informer:
                return Informer(
                    client,
                    resource,
                    namespace,
                    put=put,
                    remove=remove,
                    served_namespaces=settings.namespaces,
                    retry_delay=settings.retry_delay,
                    max_delay=settings.retry_max_delay,
                    **how,
                )

            self.informers.append(informer(kube.MLServe, self.mlserves.put, self._mlserve_gone))
            # Every Ingress's hosts, whoever made it: no two Ingresses claim one host.
            self.informers.append(
                informer(kube.resource_class(api.INGRESS), self.ingress_hosts.put, self.ingress_hosts.remove)
            )
            for child in api.CHILD_KINDS:
                resource = kube.resource_class(child)
                self.informers.append(
                    informer(resource, self.children.put, self._child_gone(child.kind), labels=CHILD_SELECTOR)
                )
                # The names of the kind's other objects: a new child's name is checked without a read.
                self.children.watch_others(child.kind)
                self.informers.append(
                    informer(
                        resource,
                        self.children.other_seen(child.kind),
                        self.children.other_gone(child.kind),
                        labels=OTHERS_SELECTOR,
                        metadata_only=True,
                    )
                )
        self._acting = asyncio.Event()
        self._deleting: dict[str, float] = {}
        """uid -> when this process first saw the MLServe being deleted."""
        self._tasks: list[asyncio.Task[None]] = []
        self.synced = asyncio.Event()
        self.sync_source = CachedMLServes(
            self.mlserves,
            [i for i in self.informers if i.resource is kube.MLServe],
            self._enqueue_urgent,
            self.queue.hold,
        )
        """What the database sync reads the MLServes from (``sync.MLServeSource``)."""

    def _mlserve_gone(self, namespace: str, name: str, uid: str) -> None:
        self.mlserves.remove(uid)

    def _child_gone(self, kind: str) -> Callable[[str, str, str], None]:
        def gone(namespace: str, name: str, uid: str) -> None:
            self.children.remove(namespace, kind, name)

        return gone

    def _enqueue(self, uids: Iterable[str]) -> None:
        for uid in uids:
            self.queue.add(uid)

    def _enqueue_urgent(self, uids: Iterable[str]) -> None:
        """A change someone asked for (a new MLServe or spec, a deploy): ahead of the keys that
        only look again. Not while the informers fill the caches at the start: every MLServe is
        new then, and none should go ahead of the deploys that come after."""
        urgent = self.synced.is_set()
        for uid in uids:
            self.queue.add(uid, urgent=urgent)

    def enqueue(self, uids: Iterable[str]) -> None:
        """Reconcile these MLServes soon (something they read changed outside the watches)."""
        self._enqueue(uids)

    def enqueue_pairs(self, pairs: Iterable[Pair]) -> None:
        """Reconcile the MLServes that claim these (serve, environment) pairs: their database
        rows changed (a deploy, a config edit), so before the keys that only look again."""
        for pair in pairs:
            self._enqueue_urgent(self.mlserves.uids_of(pair))

    # --- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the informers, wait for their first lists, then the workers; until cancelled."""
        for informer in self.informers:
            self._tasks.append(asyncio.create_task(informer.run(), name=f"watch {informer.what}"))
        try:
            try:
                async with asyncio.timeout(SYNC_DEADLINE):
                    await asyncio.gather(*(informer.synced.wait() for informer in self.informers))
            except TimeoutError:
                missing = [i.what for i in self.informers if not i.synced.is_set()]
                # Not blocked for good by one kind: a child the cache lacks is read by name
                # before it is written, and not written again when it matches.
                log.warning("not listed yet after %gs: %s; the workers start anyway", SYNC_DEADLINE, missing)
            self.synced.set()
            log.info(
                "caches filled: %d MLServes, %d children; starting %d workers",
                len(self.mlserves),
                len(self.children),
                self.settings.workers,
            )
            for index in range(self.settings.workers):
                self._tasks.append(asyncio.create_task(self._worker(), name=f"reconcile worker {index}"))
            await self._follow_peering()
        finally:
            await self.stop()

    async def stop(self) -> None:
        self.queue.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def close(self) -> None:
        """Stop, and close the watches' client."""
        await self.stop()
        for client in self._watch_clients:
            await client.close()

    async def _follow_peering(self) -> None:
        """Let the workers act while this replica is the active one; enqueue every MLServe
        each time it becomes so (standalone: once, at the start)."""
        while True:
            acting = self._active is None or self._active()
            if acting and not self._acting.is_set():
                log.info("reconciling: every MLServe (%d) is enqueued", len(self.mlserves))
                self._enqueue(self.mlserves.uids())
                self._acting.set()
            elif not acting and self._acting.is_set():
                log.info("another replica acts: the reconciles pause")
                self._acting.clear()
            if self._active is None:
                await asyncio.Event().wait()  # standalone: nothing more to follow
            await asyncio.sleep(PEERING_POLL)

    async def _worker(self) -> None:
        while True:
            await self._acting.wait()
            uid = await self.queue.get()
            metrics.QUEUE_WAIT.observe(self.queue.last_wait)
            try:
                if self._acting.is_set() and self._active is not None and not self._active():
                    # Paused since the last look: no reconcile starts from now on.
                    log.info("another replica acts: the reconciles pause")
                    self._acting.clear()
                if not self._acting.is_set():
                    self.queue.add(uid)  # processed once this replica acts again
                    continue
                await self.process(uid)
            except Exception:  # a bug must not end the worker: log it and retry with backoff
                log.exception("reconcile of MLServe %s failed unexpectedly", uid)
                self.queue.retry(uid)
            finally:
                self.queue.done(uid)

    # --- one key --------------------------------------------------------------------------------

    async def process(self, uid: str) -> None:
        """Reconcile (or finalize) the MLServe of ``uid`` as the cache holds it, and set its
        next run."""
        body = self.mlserves.body(uid)
        if body is None:  # gone
            self.queue.remove(uid)
            self._deleting.pop(uid, None)
            metrics.forget_mlserve(uid)
            return
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            await self._finalize(uid, body)
            return
        basis = meta.get("resourceVersion")
        report = await reconcile(body, self.runtime, self.mlserves.claims(body))
        known = dict(report.body or body)
        if report.new_status is not None:
            known["status"] = report.new_status
        if known.get("status") != body.get("status") or known["metadata"] != meta:
            self.mlserves.remember(uid, basis, known)  # until the watch brings our writes
        if report.retry_after is not None:
            self.queue.retry(uid)
        else:
            self.queue.forget(uid)
            self.queue.add_after(uid, self.queue.jittered(self.settings.drift_check_interval))
        if report.requeue_after is not None:  # a scheduled workflow's next run
            self.queue.add_after(uid, report.requeue_after)

    async def _finalize(self, uid: str, body: Mapping[str, Any]) -> None:
        finalizers = list(body["metadata"].get("finalizers") or [])
        if api.FINALIZER not in finalizers:
            return  # not ours to hold (never reflected a deployment, or already released)
        started = self._deleting.setdefault(uid, self._clock())
        result = await finalize(
            body,
            self.runtime,
            self.mlserves.claims(body),
            waited=self._clock() - started,
            retry=self.queue.failures(uid),
        )
        if not result.done:
            self.queue.retry(uid, at_most=result.retry_after)
            return
        if await self._release(body, finalizers):
            self._deleting.pop(uid, None)
            self.queue.forget(uid)
        else:
            self.queue.retry(uid)

    async def _release(self, body: Mapping[str, Any], finalizers: list[str]) -> bool:
        """Remove our finalizer; False when the MLServe changed meanwhile (retried)."""
        meta = body["metadata"]
        index = finalizers.index(api.FINALIZER)
        patch = [
            {"op": "test", "path": f"/metadata/finalizers/{index}", "value": api.FINALIZER},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"},
        ]
        try:
            await self.runtime.client.patch(
                kube.MLServe, meta["name"], patch, namespace=meta["namespace"], patch_type=PatchType.JSON
            )
        except ApiError as exc:
            if exc.status.code == 404:
                return True
            log.info("finalizer of %s/%s not removed yet: %s", meta["namespace"], meta["name"], exc.status.message)
            return False
        return True


class CachedMLServes:
    """The database sync's view of the MLServes (``sync.MLServeSource``): the controller's
    cache instead of a list per pass.

    A namespace is read once its informer has listed it (until then it is left out, as a list
    that failed: the pass creates nothing there). What the sync writes is fed back, so its
    next pass, which may run before the watch delivers the write, sees it: a created MLServe
    is expected (:meth:`.MLServeCache.expect`), never created twice; a changed one is kept as
    the server answered it (:meth:`.MLServeCache.remember`) and enqueued, since the watch's
    event for it then changes nothing the cache compares."""

    def __init__(
        self,
        cache: MLServeCache,
        informers: Sequence[Informer],
        enqueue: Callable[[Iterable[str]], None],
        hold: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    ):
        self.cache = cache
        self.informers = list(informers)
        self._enqueue = enqueue
        self._hold = hold

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """While a pass reads and decides, the workers start only urgent reconciles (a deploy
        waits for this pass, not for a burst of status updates sharing the process)."""
        return self._hold()

    def _informer_of(self, namespace: str) -> Informer | None:
        for informer in self.informers:
            if informer.namespace in (namespace, ALL_NS):
                return informer
        return None

    async def mlserves(self, namespaces: Sequence[str]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
        ready: list[str] = []
        failed: dict[str, str] = {}
        for namespace in namespaces:
            informer = self._informer_of(namespace)
            if informer is None:
                failed[namespace] = "not watched by this operator"
            elif not informer.synced.is_set():
                failed[namespace] = "its MLServes are not listed yet"
            elif not informer.served:
                failed[namespace] = "the cluster does not serve the MLServe kind"
            else:
                ready.append(namespace)
        return self.cache.by_namespace(ready), failed

    def written(self, before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> None:
        if before is None:
            self.cache.expect(after)
            return
        uid = str(after["metadata"].get("uid"))
        self.cache.remember(uid, (before.get("metadata") or {}).get("resourceVersion"), after)
        self._enqueue([uid])

"""The HTTP endpoint that answers Darwin's DCM calls (``MLSERVE_DCM_LISTEN``), inside the
operator's event loop (aiohttp, which kopf already depends on).

Answers are DCM's: ``{"status": "SUCCESS", "message": ..., "data": {...}}`` with 201 for an
artifact, 202 for start and stop, 200 for values and status; Darwin's client reads
``data.status.pods[].status`` of a status answer and treats any code from 400 as a failure.
A refused call gets ``{"status": "ERROR", "message": ..., "field": ...}``: 400 for a bad body
or a release that does not run here, 404 for names the database does not have, 409 for a
state that forbids it (an artifact without an image). Nothing is written: see :mod:`.`.

Darwin's client sends no credentials, so the endpoint takes none: serve it on an address only
Darwin's API reaches (the chart's ``dcm`` Service, a NetworkPolicy). It reveals which serves
exist and their pods' names and phases, and changes nothing. Bodies carry the serve's
variables (``values.envs``), secrets among them: they are never logged or echoed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod

from mlserve.operator.render import names

from .bodies import BadRequest, parse_build, parse_json, parse_release, parse_start, parse_values
from .resolve import Rejected, Release, resolve_artifact, resolve_release

__all__ = ["PodLister", "kube_pod_lister", "make_app", "serve_forever"]

log = logging.getLogger("mlserve.operator.dcm")

PodLister = Callable[[Release], Awaitable[list[dict[str, str]]]]
"""The pods of a release as DCM lists them: ``[{"name", "status", "message"}]``."""

Handler = Callable[[Mapping[str, Any]], Awaitable[tuple[int, str, dict[str, Any]]]]


def kube_pod_lister(client: AsyncClient) -> PodLister:
    """The pods of the release's MLServe (by the children's selector), with phase and reason."""

    async def pods(release: Release) -> list[dict[str, str]]:
        selector: dict[str, Any] = dict(names.selector(release.serve, release.environment))
        found = []
        async for pod in client.list(Pod, namespace=release.namespace, labels=selector):
            status = pod.status
            message = (status.message or status.reason or "") if status is not None else ""
            for container in (status.containerStatuses or []) if status is not None else []:
                waiting = container.state.waiting if container.state is not None else None
                if waiting is not None and not message:
                    message = waiting.reason or ""
            found.append(
                {
                    "name": pod.metadata.name if pod.metadata and pod.metadata.name else "",
                    "status": (status.phase or "Unknown") if status is not None else "Unknown",
                    "message": message,
                }
            )
        return sorted(found, key=lambda p: p["name"])

    return pods


def make_app(*, cluster: str, namespaces: Sequence[str], pods: PodLister) -> web.Application:
    """The application: DCM's ``/resource-instance`` routes and ``/healthcheck``."""

    async def build(body: Mapping[str, Any]) -> tuple[int, str, dict[str, Any]]:
        request = parse_build(body)
        await resolve_artifact(request.artifact_id, cluster=cluster, namespaces=namespaces)
        return 201, "Artifact Creation Success", {"artifact_id": request.artifact_id}

    async def values(body: Mapping[str, Any]) -> tuple[int, str, dict[str, Any]]:
        # Darwin wrote the new api_serve_configs row before this call; the sync applies it.
        request = parse_values(body)
        await resolve_artifact(request.artifact_id, cluster=cluster, namespaces=namespaces)
        return 200, "Values Updation Success", {"artifact_id": request.artifact_id}

    async def start(body: Mapping[str, Any]) -> tuple[int, str, dict[str, Any]]:
        # Darwin records the deployment once this answers; the sync then runs it.
        request = parse_start(body)
        release = await resolve_release(
            request.resource_id, request.kube_cluster, request.kube_namespace, cluster=cluster, namespaces=namespaces
        )
        artifact_release, _ = await resolve_artifact(request.artifact_id, cluster=cluster, namespaces=namespaces)
        if artifact_release != release:
            raise BadRequest(
                "artifact_id",
                f"is an artifact of {artifact_release.resource_id!r}, not of release {release.resource_id!r}",
            )
        return 202, "Resource Instance Start Accepted", {"resource_id": request.resource_id}

    async def stop(body: Mapping[str, Any]) -> tuple[int, str, dict[str, Any]]:
        # Darwin ends the deployment and drops its pointer once this answers; the sync then
        # deletes the MLServe, and its children with it.
        request = parse_release(body)
        await resolve_release(
            request.resource_id, request.kube_cluster, request.kube_namespace, cluster=cluster, namespaces=namespaces
        )
        return 202, "Resource Instance Stop Accepted", {"resource_id": request.resource_id}

    async def status(body: Mapping[str, Any]) -> tuple[int, str, dict[str, Any]]:
        request = parse_release(body)
        release = await resolve_release(
            request.resource_id, request.kube_cluster, request.kube_namespace, cluster=cluster, namespaces=namespaces
        )
        return (
            200,
            "Resource Instance Status Retrieved Successfully",
            {"resource_id": request.resource_id, "status": {"pods": await pods(release)}},
        )

    def route(name: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(request: web.Request) -> web.Response:
            try:
                code, message, data = await handler(parse_json(await request.read()))
            except BadRequest as exc:
                return _refused(name, 400, exc.field, str(exc))
            except Rejected as exc:
                return _refused(name, exc.status, exc.field, str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database or the API server failed
                log.warning("DCM %s: %s", name, type(exc).__name__)
                return web.json_response(
                    {"status": "ERROR", "message": f"the operator could not answer: {type(exc).__name__}"}, status=503
                )
            log.info("DCM %s: %d %s", name, code, data.get("resource_id") or data.get("artifact_id"))
            return web.json_response({"status": "SUCCESS", "message": message, "data": data}, status=code)

        return answer

    async def healthcheck(_: web.Request) -> web.Response:
        return web.json_response({"status": "SUCCESS", "message": "OK", "data": {}})

    app = web.Application()
    app.router.add_get("/healthcheck", healthcheck)
    for path in ("/resource-instance/", "/resource-instance"):
        app.router.add_post(path, route("build", build))
    app.router.add_patch("/resource-instance/values", route("values", values))
    app.router.add_post("/resource-instance/start", route("start", start))
    app.router.add_post("/resource-instance/stop", route("stop", stop))
    app.router.add_post("/resource-instance/status", route("status", status))
    return app


def _refused(name: str, code: int, field: str, message: str) -> web.Response:
    log.info("DCM %s refused (%d): %s", name, code, message)
    return web.json_response({"status": "ERROR", "message": message, "field": field}, status=code)


async def serve_forever(
    listen: tuple[str, int], *, cluster: str, namespaces: Sequence[str], client: AsyncClient
) -> None:
    """Serve until cancelled (the operator's clean-up cancels it)."""
    runner = web.AppRunner(make_app(cluster=cluster, namespaces=namespaces, pods=kube_pod_lister(client)))
    await runner.setup()
    try:
        site = web.TCPSite(runner, host=listen[0], port=listen[1])
        try:
            await site.start()
        except OSError as exc:
            log.error("cannot answer Darwin's DCM calls on %s:%d (MLSERVE_DCM_LISTEN): %s", *listen, exc)
            raise
        log.info("answering Darwin's DCM calls on %s:%d", *listen)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()

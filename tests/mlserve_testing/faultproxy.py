"""A fault-injecting HTTP proxy in front of the API server, for the faults a real API server
will not make on demand: 429 with ``Retry-After``, 500, 504, a request left unanswered until
the client gives up, and a request (or its answer) held while a test SIGKILLs the operator.

The operator reaches it over plain HTTP on 127.0.0.1 (its kubeconfig, :meth:`FaultProxy.kubeconfig`,
carries a bearer token and no CA); the proxy forwards every request over TLS to the real API
server, trusting the cluster's CA and passing the ``Authorization`` header through unchanged, so
the API server authenticates and authorizes the operator exactly as it would without the proxy
(the chart's RBAC included). Responses stream back chunked, so watches work through it.

Rules pick requests by verb (``list``, ``watch``, ``get``, ``create``, ``patch``, ``update``,
``delete``, read from the method, the path and ``?watch``) and a regular expression on the
path, and act on the first ``times`` of them (``None``: every one until removed):

    proxy.add(Rule("mlserve-status-500", verb="patch", path=r"/mlserves/[^/]+/status$", status=500, times=3))

``hold="before"`` keeps a matching request from the server, ``hold="after"`` lets it reach the
server and keeps its answer from the client; :meth:`Rule.wait_reached` returns once one is held
and :meth:`FaultProxy.release` lets it go on. The proxy runs its own event loop in a thread, so
both the synchronous waits of the tests and an operator in another process can use it.

Every request is recorded (:attr:`FaultProxy.requests`): time, verb, path, status (``None``
while held or when the client went away), the rule that acted. A test counts what was
injected from there and what the operator did after.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import yaml
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

__all__ = ["FaultProxy", "Recorded", "Rule", "request_verb"]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
HANG_LIMIT = 300.0
"""Seconds an unanswered request is kept at most (the client gives up long before)."""


def request_verb(method: str, path: str, query: str) -> str:
    """The Kubernetes verb of a request, as the API server's authorizer names it."""
    method = method.upper()
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if _names_object(path) else "deletecollection"
    if method == "GET":
        if not _names_object(path):
            watch = parse_qs(query).get("watch", ["false"])[-1]
            return "watch" if watch in ("1", "true") else "list"
        return "get"
    return method.lower()


def _names_object(path: str) -> bool:
    """Whether a resource path names one object (``.../resource/name[/sub]``)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        rest = parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        rest = parts[3:]
    else:
        return True  # not a resource path (/version, /openapi): treated as a get
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    return len(rest) >= 2


@dataclass
class Rule:
    """What the proxy does to the requests it matches (see the module's docstring)."""

    name: str
    verb: str | None = None
    """``None``: any verb."""
    path: str = ""
    """A regular expression searched in the request's path (``""``: any path)."""
    status: int | None = None
    """Answer with this code (a Kubernetes ``Status`` body) instead of forwarding."""
    retry_after: int | None = None
    """With ``status``: the ``Retry-After`` header, in seconds."""
    hang: bool = False
    """Never answer: the client times out (the request never reaches the server)."""
    hold: str | None = None
    """``"before"`` or ``"after"`` the server: keep the request until released."""
    times: int | None = 1
    """How many matching requests to act on; ``None``: every one until the rule is removed."""
    hits: int = 0
    first_at: float | None = None
    """When the first request was acted on (``time.monotonic()``)."""
    dropped: int = 0
    """Held requests dropped instead of forwarded (:meth:`FaultProxy.release` with ``forward=False``)."""
    _forward: bool = field(default=True, repr=False)
    _reached: threading.Event = field(default_factory=threading.Event, repr=False)
    _released: asyncio.Event | None = field(default=None, repr=False)

    def matches(self, verb: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.verb is not None and self.verb != verb:
            return False
        return not self.path or re.search(self.path, path) is not None

    def wait_reached(self, timeout: float) -> bool:
        """Whether a request was held (or acted on) within ``timeout`` seconds."""
        return self._reached.wait(timeout)

    @property
    def reached(self) -> bool:
        return self._reached.is_set()


@dataclass
class Recorded:
    at: float
    verb: str
    path: str
    rule: str | None
    status: int | None = None


class FaultProxy:
    """See the module's docstring. ``upstream``: the API server's URL; ``ca_file``: its CA."""

    def __init__(self, upstream: str, ca_file: Path, name: str = "proxy") -> None:
        self.upstream = upstream.rstrip("/")
        self.ca_file = ca_file
        self.name = name
        self.port = 0
        self.rules: list[Rule] = []
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    # --- the test's side (any thread) ------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy-{self.name}", daemon=True)
        self._thread.start()
        if not self._started.wait(30) or self._error is not None:
            raise RuntimeError(f"the fault proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=15)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        with self._lock:
            if rule in self.rules:
                self.rules.remove(rule)
        self.release(rule)

    def clear(self) -> None:
        with self._lock:
            rules, self.rules = list(self.rules), []
        for rule in rules:
            self.release(rule)

    def release(self, rule: Rule, *, forward: bool = True) -> None:
        """Let the requests ``rule`` holds go on (held ``before``: to the server; ``after``: their
        answer). ``forward=False``: a request held before the server never reaches it (its
        client was killed: what it had not sent is lost), its client gets a 503."""
        rule._forward = rule._forward and forward
        loop, released = self._loop, rule._released
        if loop is not None and released is not None:
            loop.call_soon_threadsafe(released.set)

    @contextlib.contextmanager
    def rule(self, rule: Rule) -> Iterator[Rule]:
        self.add(rule)
        try:
            yield rule
        finally:
            self.remove(rule)

    def recorded(self, verb: str | None = None, path: str = "", since: float = 0.0) -> list[Recorded]:
        with self._lock:
            found = list(self.requests)
        return [
            r
            for r in found
            if r.at >= since and (verb is None or r.verb == verb) and (not path or re.search(path, r.path))
        ]

    def kubeconfig(self, token: str, path: Path, user: str = "operator") -> Path:
        """A kubeconfig that reaches the API server through this proxy with ``token``."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self.name, "cluster": {"server": self.url}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": user}}],
            "current-context": self.name,
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # --- the proxy's own thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        context = ssl.create_default_context(cafile=str(self.ca_file))
        timeout = ClientTimeout(total=None, sock_connect=10)
        async with ClientSession(
            connector=TCPConnector(ssl=context, limit=0), timeout=timeout, auto_decompress=False
        ) as session:
            self._session = session
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self.port or 0)
            await site.start()
            server = site._server
            assert server is not None
            self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
            self._started.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()

    def _match(self, verb: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(verb, path):
                    rule.hits += 1
                    if rule.first_at is None:
                        rule.first_at = time.monotonic()
                    if rule._released is None:
                        rule._released = asyncio.Event()
                    return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        verb = request_verb(request.method, request.path, request.query_string)
        rule = self._match(verb, request.path)
        record = Recorded(time.monotonic(), verb, request.path, rule.name if rule else None)
        with self._lock:
            self.requests.append(record)
        body = await request.read()
        if rule is not None:
            rule._reached.set()
            if rule.status is not None:
                record.status = rule.status
                return _status_response(rule.status, rule.retry_after, f"injected by {self.name}: {rule.name}")
            if rule.hang:
                # The client gives up first; then this handler is cancelled.
                await asyncio.sleep(HANG_LIMIT)
                record.status = 504
                return _status_response(504, None, "the fault proxy hung this request")
            if rule.hold == "before":
                assert rule._released is not None
                await rule._released.wait()
                if not rule._forward:
                    rule.dropped += 1
                    record.status = 503
                    return _status_response(503, None, "dropped by the fault proxy: its client was killed")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        url = f"{self.upstream}{request.path_qs}"
        try:
            upstream = await self._session.request(request.method, url, headers=headers, data=body or None)
        except (ClientError, OSError) as exc:
            record.status = 502
            return _status_response(502, None, f"the API server did not answer the proxy: {type(exc).__name__}")
        async with upstream:
            if rule is not None and rule.hold == "after":
                assert rule._released is not None
                held = await upstream.read()
                record.status = upstream.status
                await rule._released.wait()
                headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                return web.Response(status=upstream.status, body=held, headers=headers)
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers.add(key, value)
            response.enable_chunked_encoding()
            await response.prepare(request)
            record.status = upstream.status
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ClientError, ConnectionError):
                pass  # the client went away (a watch closed, the operator killed): nothing to answer
            return response


def _status_response(code: int, retry_after: int | None, message: str) -> web.Response:
    reasons = {
        429: "TooManyRequests",
        500: "InternalError",
        502: "BadGateway",
        503: "ServiceUnavailable",
        504: "Timeout",
    }
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reasons.get(code, "InternalError"),
        "code": code,
    }
    if retry_after is not None:
        body["details"] = {"retryAfterSeconds": retry_after}
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return web.json_response(body, status=code, headers=headers)

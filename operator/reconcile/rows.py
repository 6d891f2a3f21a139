"""The rows a cluster needs, read in a few statements and kept between two moves of the watermark.

A converged reconcile needs, for its (serve, environment): the environment and its
``env_configs``, the serve, the active deployment with its artifact and per-deployment
variables, and the pair's infra config. Read one pair at a time that is about eight queries per
reconcile; :class:`RowCache` reads them for every pair of the environments bound to this
cluster in four statements (:meth:`RowCache.refresh`), when the sync's watermark moved
(``sync.py``; the watermark covers every table read here), and keeps compact values: ids,
names and the JSON columns as the database's text, parsed only when a reconcile renders.

The snapshot only ever answers "nothing changed": a reconcile whose MLServe asks for the
artifact the snapshot says is active, and whose rows are all there and valid, takes them
from it (:func:`.deploy.from_rows`, :func:`.context.context_from_rows`); anything else (a new
request, a rollback, a pair or environment not in the snapshot, an invalid row) goes to the
database, where the writers re-check under the pair's lock. A stale snapshot can so never
record a deploy: it can at worst render the previous config until the sync's next tick
refreshes it, and then the MLServes of the pairs that changed are woken
(:meth:`RowCache.subscribe`).

When the sync loop stops confirming the snapshot (a tick failed or was cancelled, or none
finished for ``max_age`` seconds), :meth:`RowCache.current` returns None and every reconcile
reads the database, as it would without a cache.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlserve.models import Deployment, EnvConfig, Environment, InvalidConfig
from mlserve.models.db import write_connection

from .identity import Pair

__all__ = ["ClusterRows", "EnvironmentRow", "PairRow", "RowCache"]

log = logging.getLogger(__name__)

ACTIVE = "ACTIVE"


@dataclass(frozen=True, slots=True)
class EnvironmentRow:
    """An environment bound to this cluster."""

    id: int
    name: str
    namespace: str
    config: EnvConfig = field(compare=False)
    model: Environment = field(compare=False)
    """An unsaved model instance with the row's values, for the code that takes models."""
    raw: tuple[Any, ...]
    """The row's columns as read: what a refresh compares."""


@dataclass(frozen=True, slots=True)
class PairRow:
    """One (serve, environment) with an active-deployment pointer, as compact values."""

    serve_id: int
    serve_name: str
    serve_type: str
    environment_id: int
    deployment_id: int
    previous_deployment_id: int | None
    status: str
    """The pointed deployment's status as stored (``ACTIVE``, or the pair is undeployed)."""
    created_at: datetime | None
    artifact_id: int
    artifact_version: str
    image_url: str | None
    environment_variables: str | None
    """``app_layer_deployments.environment_variables`` of the deployment, JSON text."""
    infra: tuple[Any, ...] | None
    """The pair's newest infra config: API ``(backend_type, additional_hosts, fast_api_config)``,
    workflow ``(schedule, worker_node_config, head_node_config)``; JSON as text. None: no row."""


@dataclass(frozen=True)
class ClusterRows:
    """One snapshot: the bound environments by name, the pairs by (serve, environment)."""

    environments: Mapping[str, EnvironmentRow]
    pairs: Mapping[Pair, PairRow]

    def pairs_of(self, environment: str) -> Iterable[Pair]:
        return (pair for pair in self.pairs if pair[1] == environment)


_POINTERS_SQL = (
    "SELECT a.serve_id, a.environment_id, a.deployment_id, a.previous_deployment_id,"
    " s.name AS serve_name, s.type AS serve_type, d.status, d.created_at, d.artifact_id,"
    " r.version, r.image_url, l.environment_variables"
    " FROM active_deployments a"
    " JOIN serves s ON s.id = a.serve_id"
    " JOIN deployments d ON d.id = a.deployment_id"
    " JOIN artifacts r ON r.id = d.artifact_id"
    " LEFT JOIN app_layer_deployments l ON l.deployment_id = a.deployment_id"
    " WHERE a.environment_id IN ({ids})"
)
_API_CONFIGS_SQL = (
    "SELECT id, serve_id, environment_id, backend_type, additional_hosts, fast_api_config"
    " FROM api_serve_configs WHERE environment_id IN ({ids})"
)
_WORKFLOW_CONFIGS_SQL = (
    "SELECT id, serve_id, environment_id, schedule, worker_node_config, head_node_config"
    " FROM workflow_serve_configs WHERE environment_id IN ({ids})"
)


def _json_text(value: Any, texts: dict[str, str]) -> str | None:
    """A JSON column as compact text, one copy per distinct value within a refresh (many
    serves share their configs)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str):
        value = json.dumps(value, separators=(",", ":"))
    return texts.setdefault(value, value)


def _bound(rows: Iterable[Mapping[str, Any]], cluster_name: str) -> dict[str, EnvironmentRow]:
    bound: dict[str, EnvironmentRow] = {}
    for row in rows:
        raw_config = row["env_configs"]
        try:
            decoded = json.loads(raw_config) if isinstance(raw_config, str | bytes) else raw_config
            config = EnvConfig.parse(decoded, "env_configs")
        except (InvalidConfig, ValueError, TypeError):
            continue  # the reconcile reads it from the database and reports it
        if config.cluster_name != cluster_name:
            continue
        name = str(row["name"])
        protected = bool(row["is_protected"])
        model = Environment(id=int(row["id"]), name=name, env_configs=decoded, is_protected=protected)
        raw = (raw_config, protected)
        bound[name] = EnvironmentRow(int(row["id"]), name, config.namespace, config, model, raw)
    return bound


class RowCache:
    """The current :class:`ClusterRows` of one cluster, refreshed by the sync loop."""

    def __init__(self, cluster_name: str, *, max_age: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.cluster_name = cluster_name
        self.max_age = max_age
        self.clock = clock
        self._rows: ClusterRows | None = None
        self._confirmed_at = 0.0
        self._listeners: list[Callable[[set[Pair]], None]] = []
        self.refreshes = 0
        self._times: dict[Any, datetime | None] = {}
        """``deployments.created_at`` as read -> as the models decode it, of the last refresh."""

    def subscribe(self, listener: Callable[[set[Pair]], None]) -> None:
        """``listener(pairs)`` after every refresh that changed the rows of ``pairs``."""
        self._listeners.append(listener)

    def current(self) -> ClusterRows | None:
        """The snapshot, while the sync loop keeps confirming it; None: read the database."""
        if self._rows is None or self.clock() - self._confirmed_at > self.max_age:
            return None
        return self._rows

    def confirm(self) -> None:
        """The watermark was read and has not moved: the snapshot is still the database's."""
        if self._rows is not None:
            self._confirmed_at = self.clock()

    def invalidate(self) -> None:
        """The database could not be read: until the next refresh, reconciles read it themselves."""
        self._rows = None

    def notify(self, pairs: set[Pair]) -> None:
        """Tell the listeners the rows of ``pairs`` changed."""
        for listener in self._listeners:
            listener(pairs)

    async def refresh(self, *, notify: bool = True) -> set[Pair]:
        """Read the rows again (four statements) and return the pairs whose rows changed; the
        listeners are told at once unless ``notify`` is False (the caller does, later)."""
        connection = write_connection()
        environments = _bound(
            await connection.execute_query_dict("SELECT id, name, env_configs, is_protected FROM environments"),
            self.cluster_name,
        )
        pairs: dict[Pair, PairRow] = {}
        if environments:
            names = {env.id: env.name for env in environments.values()}
            ids = ",".join(str(i) for i in sorted(names))
            pointers = await connection.execute_query_dict(_POINTERS_SQL.format(ids=ids))
            api = await connection.execute_query_dict(_API_CONFIGS_SQL.format(ids=ids))
            workflow = await connection.execute_query_dict(_WORKFLOW_CONFIGS_SQL.format(ids=ids))
            self._times, times = {}, self._times
            pairs = _pairs(pointers, api, workflow, names, _Times(times, self._times))
        rows = ClusterRows(environments, pairs)
        previous, self._rows = self._rows, rows
        self._confirmed_at = self.clock()
        self.refreshes += 1
        changed = _changed(previous, rows) if previous is not None else set()
        if changed and notify:
            self.notify(changed)
        return changed


def _newest(rows: Iterable[Mapping[str, Any]], columns: tuple[str, ...], texts: dict[str, str]) -> dict[Any, Any]:
    """(serve id, environment id) -> the columns of its newest row (the largest id)."""
    newest: dict[tuple[int, int], tuple[int, tuple[Any, ...]]] = {}
    for row in rows:
        key = (int(row["serve_id"]), int(row["environment_id"]))
        row_id = int(row["id"])
        if key not in newest or row_id > newest[key][0]:
            values = tuple(_json_text(row[c], texts) if c.endswith("_config") else row[c] for c in columns)
            newest[key] = (row_id, values)
    return {key: values for key, (_, values) in newest.items()}


@dataclass(frozen=True, slots=True)
class _Times:
    """Decodes ``deployments.created_at`` as the models do, once per distinct value: the last
    refresh's decoded values are reused (a thousand pairs, one new deployment)."""

    before: dict[Any, datetime | None]
    now: dict[Any, datetime | None]

    def decode(self, raw: Any) -> datetime | None:
        if raw in self.before:
            value = self.before[raw]
        else:
            value = Deployment._meta.fields_map["created_at"].to_python_value(raw)
        self.now[raw] = value
        return value


def _pairs(
    pointers: Iterable[Mapping[str, Any]],
    api: Iterable[Mapping[str, Any]],
    workflow: Iterable[Mapping[str, Any]],
    names: Mapping[int, str],
    times: _Times | None = None,
) -> dict[Pair, PairRow]:
    times = times if times is not None else _Times({}, {})
    texts: dict[str, str] = {}
    configs = _newest(api, ("backend_type", "additional_hosts", "fast_api_config"), texts)
    workflow_configs = _newest(workflow, ("schedule", "worker_node_config", "head_node_config"), texts)
    pairs: dict[Pair, PairRow] = {}
    seen: dict[Pair, int] = {}
    for row in pointers:
        key = (int(row["serve_id"]), int(row["environment_id"]))
        pair = (str(row["serve_name"]), names[key[1]])
        seen[pair] = seen.get(pair, 0) + 1
        try:
            pairs[pair] = _pair_row(row, key, pair, configs, workflow_configs, texts, times)
        except (ValueError, TypeError, KeyError) as exc:
            # A value this code cannot read: the pair's reconcile reads the database and
            # reports it; the other pairs keep their snapshot.
            log.debug("rows of %s in %s left to the database: %s", pair[0], pair[1], type(exc).__name__)
            seen[pair] += 1
    # Two pointers (a database without the unique index) or two side rows of one deployment:
    # not a converged pair; its reconcile reads the database and reports what is wrong.
    for pair, count in seen.items():
        if count > 1:
            pairs.pop(pair, None)
    return pairs


def _pair_row(
    row: Mapping[str, Any],
    key: tuple[int, int],
    pair: Pair,
    configs: Mapping[Any, Any],
    workflow_configs: Mapping[Any, Any],
    texts: dict[str, str],
    times: _Times,
) -> PairRow:
    serve_type = str(row["serve_type"])
    infra = configs.get(key) if serve_type == "api" else workflow_configs.get(key)
    return PairRow(
        serve_id=key[0],
        serve_name=pair[0],
        serve_type=serve_type,
        environment_id=key[1],
        deployment_id=int(row["deployment_id"]),
        previous_deployment_id=None if row["previous_deployment_id"] is None else int(row["previous_deployment_id"]),
        status=str(row["status"]),
        created_at=times.decode(row["created_at"]),
        artifact_id=int(row["artifact_id"]),
        artifact_version=str(row["version"]),
        image_url=row["image_url"],
        environment_variables=_json_text(row["environment_variables"], texts),
        infra=infra,
    )


def _changed(old: ClusterRows, new: ClusterRows) -> set[Pair]:
    changed = {pair for pair in old.pairs.keys() | new.pairs.keys() if old.pairs.get(pair) != new.pairs.get(pair)}
    for name in old.environments.keys() | new.environments.keys():
        if old.environments.get(name) != new.environments.get(name):
            changed.update(old.pairs_of(name))
            changed.update(new.pairs_of(name))
    return changed

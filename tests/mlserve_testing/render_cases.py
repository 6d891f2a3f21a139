"""Representative inputs of the renderers, shared by the golden, schema and behaviour tests.

Each case is one MLServe (its spec as a user writes it) with the database context it is
resolved against, the render settings and, for scheduled workflows, the scheduled time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlserve.models.configs import (
    EnvConfig,
    FastAPIConfig,
    HeadNodeConfig,
    WorkerNodeConfig,
    parse_environment_variables,
)
from mlserve.operator.render import RenderSettings, render_children
from mlserve.operator.spec import EnvironmentContext, MLServeSpec, ServeContext


def environment(
    name: str = "staging",
    *,
    protected: bool = False,
    domain_suffix: str = ".ml.example.com",
    subnets: str | None = None,
    namespace: str = "serving",
    extra: dict[str, Any] | None = None,
) -> EnvironmentContext:
    config: dict[str, Any] = {
        "domain_suffix": domain_suffix,
        "cluster_name": "eks-ml",
        "security_group": "sg-0a1b, sg-0c2d",
        "namespace": namespace,
    }
    if subnets is not None:
        config["subnets"] = subnets
    config.update(extra or {})
    return EnvironmentContext(name=name, is_protected=protected, config=EnvConfig.parse(config))


def api_context(
    serve: str = "fraud-score",
    env: EnvironmentContext | None = None,
    *,
    replicas: tuple[int, int] = (1, 1),
    cores: float = 1,
    memory: int = 2,
    capacity: str = "on_demand",
    hosts: tuple[str, ...] = (),
    env_vars: dict[str, str] | None = None,
    config: bool = True,
) -> ServeContext:
    fast_api = FastAPIConfig.parse(
        {
            "min_replicas": replicas[0],
            "max_replicas": replicas[1],
            "cores": cores,
            "memory": memory,
            "node_capacity_type": capacity,
        }
    )
    return ServeContext(
        serve=serve,
        serve_type="api",
        environment=env or environment(),
        artifact_version="1.4.0",
        image=f"registry.example.com/darwin/{serve}:1.4.0",
        deployment_id=41,
        previous_deployment_id=37,
        api_config=fast_api if config else None,
        additional_hosts=hosts,
        env_vars=env_vars or {},
    )


def workflow_context(
    serve: str = "nightly-features",
    env: EnvironmentContext | None = None,
    *,
    schedule: str | None = None,
    workers: tuple[dict[str, Any], ...] = (
        {"cores_per_pods": 2, "memory_per_pods": 8, "min_pods": 2, "max_pods": 2, "node_capacity_type": "spot"},
    ),
    head: dict[str, Any] | None = None,
) -> ServeContext:
    return ServeContext(
        serve=serve,
        serve_type="workflow",
        environment=env or environment(),
        artifact_version="2025.01.3",
        image=f"registry.example.com/darwin/{serve}:2025.01.3",
        deployment_id=77,
        schedule=schedule,
        head_config=HeadNodeConfig.parse(head) if head else None,
        worker_configs=tuple(WorkerNodeConfig.parse(w) for w in workers),
    )


def spec_for(ctx: ServeContext, **overrides: Any) -> MLServeSpec:
    body: dict[str, Any] = {
        "serve": ctx.serve,
        "environment": ctx.environment.name,
        "type": ctx.serve_type.value,
        "artifactVersion": ctx.artifact_version,
    }
    body.update(overrides)
    return MLServeSpec.parse(body)


@dataclass(frozen=True)
class Case:
    id: str
    ctx: ServeContext
    spec: MLServeSpec
    settings: RenderSettings = field(default_factory=RenderSettings)
    scheduled_time: datetime | None = None

    def render(self) -> list[dict[str, Any]]:
        return render_children(self.ctx, self.spec, self.settings, self.scheduled_time)


def _case(
    id: str, ctx: ServeContext, settings: RenderSettings | None = None, when: datetime | None = None, **spec: Any
) -> Case:
    return Case(id, ctx, spec_for(ctx, **spec), settings or RenderSettings(), when)


_LONG_ENV = environment("performance-regression-environment-eu-west-1")
_NO_ALB = RenderSettings(
    ingress_class="nginx",
    security_groups_annotation=None,
    subnets_annotation=None,
    ingress_annotations=(),
    capacity_type_label=None,
)

# An environment carrying pod settings in env_configs, and the operator's MLSERVE_POD_* settings.
_POD_ENV = environment(
    "gpu",
    extra={
        "service_account": "fraud-serving",
        "image_pull_secrets": "team-registry",
        "pod_labels": {"team": "risk", "cost-center": "cc-42"},
        "pod_annotations": {"example.com/owner": "risk@example.com"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "node_selector": {"example.com/pool": "serving"},
    },
)
_POD_SETTINGS = RenderSettings(
    pod_service_account="mlserve-default",
    pod_image_pull_secrets=("platform-registry",),
    pod_labels=(("platform", "darwin"), ("team", "platform")),
    pod_annotations=(("example.com/scrape", "true"),),
    pod_node_selector=(("kubernetes.io/os", "linux"),),
)
# Darwin's environment_variables as Darwin writes them: lower-case names, JSON scalars, a
# secret reference.
_DARWIN_VARS = parse_environment_variables(
    {
        "port": 8000,
        "debug": True,
        "sample_ratio": 0.25,
        "empty": None,
        "db_password": "secret://fraud-score-db/password",
    }
)

CASES: tuple[Case, ...] = (
    # API: one fixed pod, on-demand, unprotected environment.
    _case("api-single-replica", api_context()),
    # API: many fixed pods on spot: replicas set, a PDB, no HPA.
    _case("api-fixed-large-spot", api_context(replicas=(20, 20), cores=4, memory=16, capacity="spot")),
    # API: HPA with a PDB, protected environment (short host), extra hosts, env vars, subnets.
    _case(
        "api-hpa-protected",
        api_context(
            env=environment("prod", protected=True, subnets="subnet-1,subnet-2"),
            replicas=(2, 10),
            cores=2,
            memory=4,
            capacity="on-demand",
            hosts=("fraud.example.com", "fraud-score.partner.example.org"),
            env_vars={"MODEL_PATH": "/models/fraud", "LOG_LEVEL": "info"},
        ),
    ),
    # API: HPA from one pod (no PDB), Darwin's "ondemand" spelling.
    _case("api-hpa-from-one", api_context(replicas=(1, 4), capacity="ondemand")),
    # API: every override in the MLServe wins over the database.
    _case(
        "api-overrides",
        api_context(replicas=(1, 1), hosts=("old.example.com",), env_vars={"LOG_LEVEL": "info", "KEEP": "1"}),
        replicas={"min": 3, "max": 12},
        resources={"cores": 0.5, "memory": 1},
        nodeCapacityType="spot",
        autoscaling={"cpuUtilization": 70, "memoryUtilization": 90},
        hosts=["scores.example.com"],
        env={"LOG_LEVEL": "debug", "FEATURE_FLAG": "on"},
    ),
    # API: no infra config in the database, all from the MLServe; no domain suffix and no
    # hosts, so no Ingress; settings for a cluster without ALB and Karpenter.
    _case(
        "api-no-ingress-plain-cluster",
        api_context(env=environment("dev", domain_suffix=""), config=False),
        settings=_NO_ALB,
        replicas={"min": 1, "max": 1},
        resources={"cores": 1, "memory": 1},
    ),
    # API: Darwin's variables (upper-cased, scalars as text, a Secret reference), pod settings
    # from env_configs merged over the operator's settings.
    _case(
        "api-darwin-env-pod-settings",
        api_context(env=_POD_ENV, capacity="spot", env_vars=_DARWIN_VARS),
        settings=_POD_SETTINGS,
        env={"LOG_LEVEL": "debug"},
    ),
    # API: names too long for 63 characters are cut with a hash.
    _case("api-long-names", api_context(serve="customer-lifetime-value-prediction-service-v2", env=_LONG_ENV)),
    # Workflow: run once per deployment, one worker group, default head.
    _case("workflow-once", workflow_context()),
    # Workflow: several worker groups from the MLServe, head override, entrypoint, runtime env, env.
    _case(
        "workflow-groups-overrides",
        workflow_context(head={"cores": 4, "memory": 8, "node_capacity_type": "on_demand"}),
        settings=RenderSettings(ray_version="2.40.0"),
        head={"memory": 16},
        workerGroups=[
            {"name": "cpu", "cores": 4, "memory": 16, "minReplicas": 1, "maxReplicas": 8, "nodeCapacityType": "spot"},
            {"name": "highmem", "cores": 8, "memory": 64, "minReplicas": 0, "maxReplicas": 2},
            {"cores": 1, "memory": 2, "minReplicas": 1, "maxReplicas": 1, "nodeCapacityType": "on-demand"},
        ],
        entrypoint="python -m features.build --date yesterday",
        runtimeEnv={"env_vars": {"OMP_NUM_THREADS": "1"}, "pip": ["pyarrow==17.0.0"]},
        env={"FEATURE_STORE": "s3://features"},
    ),
    # Workflow: the environment's pod settings on the head and every worker.
    _case("workflow-pod-settings", workflow_context(env=_POD_ENV), settings=_POD_SETTINGS),
    # Workflow: several groups from the database.
    _case(
        "workflow-db-groups",
        workflow_context(
            workers=(
                {"cores_per_pods": 2, "memory_per_pods": 4, "min_pods": 1, "max_pods": 5, "node_capacity_type": "spot"},
                {"cores_per_pods": 0.5, "memory_per_pods": 1, "min_pods": 0, "max_pods": 1},
            ),
        ),
    ),
    # Workflow: scheduled, one RayJob for the given time.
    _case(
        "workflow-scheduled-rayjob",
        workflow_context(schedule="0 3 * * *"),
        when=datetime(2025, 1, 2, 3, 0, tzinfo=UTC),
    ),
    # Workflow: scheduled, as a RayCronJob, paused (suspended).
    _case(
        "workflow-raycronjob-paused",
        workflow_context(schedule="0 3 * * *"),
        settings=RenderSettings(ray_cron_job=True),
        paused=True,
    ),
    # Workflow: schedule from the MLServe, RayCronJob, long names (41 characters at most).
    _case(
        "workflow-raycronjob-long-names",
        workflow_context(serve="customer-lifetime-value-feature-backfill", env=_LONG_ENV),
        settings=RenderSettings(ray_cron_job=True, schedule_time_zone=None),
        schedule="@daily",
    ),
    # Workflow: scheduled per time, long names (47 characters at most).
    _case(
        "workflow-scheduled-long-names",
        workflow_context(serve="customer-lifetime-value-feature-backfill", env=_LONG_ENV, schedule="*/15 * * * *"),
        when=datetime(2025, 6, 30, 23, 45, tzinfo=UTC),
    ),
)

CASES_BY_ID = {case.id: case for case in CASES}

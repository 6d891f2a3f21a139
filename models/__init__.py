"""Darwin ML Serve database models (Tortoise ORM), importable as ``mlserve.models``.

The tables and columns are exactly those of a database Darwin ML Serve created, so the
operator can share it; see ``mlserve.models.db`` for connecting and creating the schema.
"""

from .artifacts import Artifact, ArtifactBuilderJob
from .configs import EnvConfig, FastAPIConfig, HeadNodeConfig, WorkerNodeConfig
from .deployments import (
    ActiveDeployment,
    AppLayerDeployment,
    Deployment,
    Proposal,
    ScheduledWorkflowDeployment,
    activate,
    current_deployment,
    propose,
)
from .enums import BackendType, DeploymentStatus, JobStatus, NodeCapacityType, ServeType
from .errors import ActiveDeploymentConflict, DatabaseUnavailable, InvalidConfig, ModelsError
from .serve_configs import APIServeInfraConfig, WorkflowServeInfraConfig
from .serves import Environment, Serve
from .users import User

# The models Tortoise registers for the app "models" (the label Darwin uses too).
__models__ = [
    User,
    Serve,
    Environment,
    ArtifactBuilderJob,
    Artifact,
    Deployment,
    ActiveDeployment,
    APIServeInfraConfig,
    WorkflowServeInfraConfig,
    AppLayerDeployment,
    ScheduledWorkflowDeployment,
]

__all__ = [
    "APIServeInfraConfig",
    "ActiveDeployment",
    "ActiveDeploymentConflict",
    "AppLayerDeployment",
    "Artifact",
    "ArtifactBuilderJob",
    "BackendType",
    "DatabaseUnavailable",
    "Deployment",
    "DeploymentStatus",
    "EnvConfig",
    "Environment",
    "FastAPIConfig",
    "HeadNodeConfig",
    "InvalidConfig",
    "JobStatus",
    "ModelsError",
    "NodeCapacityType",
    "Proposal",
    "ScheduledWorkflowDeployment",
    "Serve",
    "ServeType",
    "User",
    "WorkerNodeConfig",
    "activate",
    "current_deployment",
    "propose",
]

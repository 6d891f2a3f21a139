"""The names in Darwin's DCM calls resolved in the database: ``<env>-<serve>`` and
``<env>-<serve>-<version>`` split where environments, serves and artifacts exist, with ``-``
in any of the three; refused where the operator would not run the release."""

from __future__ import annotations

import pytest
from mlserve_testing import darwin

from mlserve.models.settings import DatabaseSettings
from mlserve.operator.dcm.resolve import Rejected, Release, resolve_artifact, resolve_release


async def test_names_with_dashes_split_where_rows_exist(db: DatabaseSettings) -> None:
    await darwin.seed_api_serve("fraud-model", "prod-eu", "serving-eu", versions=("1.0-rc1",))
    await darwin.seed_api_serve("churn", "prod", "serving", versions=("v1",))

    release = await resolve_release("prod-eu-fraud-model", "local", "serving-eu", cluster="local")
    assert release == Release("fraud-model", "prod-eu", "serving-eu", "local")
    found, artifact = await resolve_artifact("prod-eu-fraud-model-1.0-rc1", cluster="local")
    assert (found, artifact.version) == (release, "1.0-rc1")
    assert (await resolve_release("prod-churn", "local", "serving", cluster="local")).serve == "churn"


async def test_a_name_that_reads_two_ways_is_refused(db: DatabaseSettings) -> None:
    await darwin.seed_api_serve("eu-fraud", "prod", "serving")
    await darwin.seed_api_serve("fraud", "prod-eu", "serving")
    with pytest.raises(Rejected) as caught:
        await resolve_release("prod-eu-fraud", "local", "serving", cluster="local")
    assert (caught.value.status, caught.value.field) == (409, "resource_id")
    assert "prod/eu-fraud" in str(caught.value) and "prod-eu/fraud" in str(caught.value)


@pytest.mark.parametrize(
    ("call", "status", "field"),
    [
        (("dev-nothing", "local", "serving"), 404, "resource_id"),
        (("dev-fraud", "local", "elsewhere"), 400, "kube_namespace"),
        (("dev-fraud", "eks-2", "serving"), 400, "kube_cluster"),
    ],
)
async def test_a_release_that_does_not_run_here_is_refused(
    db: DatabaseSettings, call: tuple[str, str, str], status: int, field: str
) -> None:
    await darwin.seed_api_serve("fraud", "dev", "serving")
    with pytest.raises(Rejected) as caught:
        await resolve_release(*call, cluster="local")
    assert (caught.value.status, caught.value.field) == (status, field)


async def test_an_environment_of_another_cluster_or_an_unwatched_namespace_is_refused(db: DatabaseSettings) -> None:
    await darwin.seed_api_serve("fraud", "dev", "serving", cluster="eks-2")
    with pytest.raises(Rejected, match="bound to cluster 'eks-2'"):
        await resolve_release("dev-fraud", "eks-2", "serving", cluster="local")
    with pytest.raises(Rejected, match="bound to cluster 'eks-2'"):
        await resolve_artifact("dev-fraud-v1", cluster="local")
    with pytest.raises(Rejected, match="not watched"):
        await resolve_release("dev-fraud", "eks-2", "serving", cluster="eks-2", namespaces=["team-*"])


async def test_a_workflow_serve_is_not_a_dcm_release(db: DatabaseSettings) -> None:
    await darwin.seed_workflow_serve("nightly", "dev", "serving")
    with pytest.raises(Rejected, match="workflow serve") as caught:
        await resolve_release("dev-nightly", "local", "serving", cluster="local")
    assert caught.value.status == 400

"""``mlserve render`` from a file with the database's side given as a context file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from mlserve_testing.render_cases import CASES_BY_ID
from mlserve_testing.schemas import ROOT

from mlserve.operator.cli import main

EXAMPLES = ROOT / "examples"


def _context_file(tmp_path: Path, case_id: str, **changes: object) -> Path:
    ctx = CASES_BY_ID[case_id].ctx.model_copy(update=changes)
    path = tmp_path / "context.yaml"
    path.write_text(yaml.safe_dump(ctx.model_dump(mode="json")))
    return path


def _run(*args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(main, ["render", *args], env={"MLSERVE_RAY_CRON_JOB": ""})
    return result.exit_code, result.stdout, result.stderr


def test_renders_api_example(tmp_path: Path) -> None:
    context = _context_file(tmp_path, "api-hpa-protected", serve="iris-classifier", artifact_version="1.1.0")
    code, out, err = _run("-f", str(EXAMPLES / "mlserve-api.yaml"), "--context", str(context))
    assert code == 0, err
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out)]
    assert kinds == ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"]


def test_scheduled_workflow_renders_the_given_time(tmp_path: Path) -> None:
    context = _context_file(
        tmp_path,
        "workflow-once",
        serve="nightly-retrain",
        artifact_version="1.0.0",
        environment=CASES_BY_ID["workflow-once"].ctx.environment.model_copy(update={"name": "dev"}),
    )
    code, out, err = _run(
        "-f", str(EXAMPLES / "mlserve-workflow.yaml"), "--context", str(context), "--at", "2025-03-04T03:00:00Z"
    )
    assert code == 0, err
    (job,) = yaml.safe_load_all(out)
    assert job["kind"] == "RayJob" and job["metadata"]["name"] == "nightly-retrain-dev-202503040300"
    assert "namespace 'mlserve-dev'" in err  # the example's namespace differs from the context's


def test_invalid_mlserve_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    body = yaml.safe_load((EXAMPLES / "mlserve-api.yaml").read_text())
    body["spec"]["replicas"] = {"min": 9, "max": 2}
    bad.write_text(yaml.safe_dump(body))
    context = _context_file(tmp_path, "api-single-replica")
    code, _, err = _run("-f", str(bad), "--context", str(context))
    assert code != 0 and "spec.replicas" in err


@pytest.mark.parametrize(
    "args",
    [[], ["--serve", "x"], ["-f", "x.yaml", "--serve", "x", "--env", "y"]],
)
def test_usage_errors(args: list[str], tmp_path: Path) -> None:
    if "-f" in args:
        (tmp_path / "x.yaml").write_text("kind: MLServe\n")
        args = [str(tmp_path / a) if a == "x.yaml" else a for a in args]
    code, _, err = _run(*args)
    assert code == 2, err


def test_context_file_takes_darwin_typed_variables_and_never_echoes_a_bad_one(tmp_path: Path) -> None:
    context = _context_file(tmp_path, "api-hpa-protected", serve="iris-classifier", artifact_version="1.1.0")
    data = yaml.safe_load(context.read_text())
    data["env_vars"] = {"port": 8000, "debug": True}
    context.write_text(yaml.safe_dump(data))
    code, out, err = _run("-f", str(EXAMPLES / "mlserve-api.yaml"), "--context", str(context))
    assert code == 0, err
    env = next(yaml.safe_load_all(out))["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "PORT", "value": "8000"} in env and {"name": "DEBUG", "value": "true"} in env

    data["env_vars"] = {"token": {"value": "hunter2-in-a-file"}}
    context.write_text(yaml.safe_dump(data))
    code, _, err = _run("-f", str(EXAMPLES / "mlserve-api.yaml"), "--context", str(context))
    assert code != 0
    assert "environment_variables.token" in err and "hunter2" not in err

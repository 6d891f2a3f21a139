"""``mlserve demo`` end to end, as a user runs it: a process, a fresh work folder, no settings.

Slow (a control plane, the operator, several deploys): marked ``slow`` and ``cluster``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlserve_testing.kuberay import kuberay_crd_dir

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]


def _our_processes(work_dir: Path) -> list[str]:
    """Command lines of running processes that mention the demo's work folder."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(work_dir) in cmdline or str(work_dir) in environ:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_demo_runs_the_whole_flow_and_leaves_nothing_running(tmp_path: Path) -> None:
    kuberay = kuberay_crd_dir()
    work = tmp_path / "demo"
    # no settings, as on a fresh machine (the binary cache's location may be kept)
    kept = ("MLSERVE_CACHE_DIR", "MLSERVE_BIN_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLSERVE_", "MYSQL_")) or k in kept}
    env.pop("KUBECONFIG", None)
    env["MLSERVE_KUBERAY_CRDS"] = str(kuberay)
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", "from mlserve.operator.cli import main; main()", "demo", "--work-dir", str(work)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    wall = time.monotonic() - began
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]

    # the flow, in order
    steps = [
        "starting a local control plane",
        "installing the CustomResourceDefinitions",
        "creating a SQLite database with the demo data",
        "starting the operator",
        "with kubectl apply",
        "through the database",
        "mlserve rollback",
        "by editing the MLServe",
        "the history of",
        "mlserve status",
    ]
    positions = [output.find(step) for step in steps]
    assert all(p >= 0 for p in positions), dict(zip(steps, positions, strict=True))
    assert positions == sorted(positions)
    assert re.search(r"iris-classifier-dev\s+iris-classifier\s+dev\s+api\s+\S+\s+Ready\s+\d+/\d+", output), output
    assert "deployment.apps/iris-classifier-dev" in output
    assert "nightly-retrain-dev" in output
    history = output[output.find("the history of") :]
    assert len(re.findall(r"^\s*\d+\s+\S+\s+(ACTIVE|ENDED)", history, re.M)) >= 4, history
    status = output[output.find("side by side: mlserve status") :]
    assert re.search(r"^iris-classifier\s+dev\s+\d+\s+\S+\s.*\sReady\s+\d+/\d+\s+True$", status, re.M), status
    assert "Everything is stopped" in output
    assert _our_processes(work) == []
    print(f"mlserve demo took {wall:.1f} s (its own figure: {re.findall(r'done in ([0-9.]+) s', output)})")

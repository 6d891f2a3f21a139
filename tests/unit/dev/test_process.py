"""Processes of the cluster are stopped with their whole group, and a dead one says why."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mlserve_testing.wait import wait_for

from mlserve.operator.dev.cluster.errors import DevClusterError
from mlserve.operator.dev.cluster.ports import free_ports
from mlserve.operator.dev.cluster.process import ManagedProcess, group_alive, log_tail

# a parent that starts a child in the same process group, then both wait
PARENT_AND_CHILD = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "print('started', flush=True); time.sleep(60)"
)


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    process = ManagedProcess("sleeper", [sys.executable, "-c", PARENT_AND_CHILD], tmp_path / "sleeper.log").start()
    wait_for(lambda: "started" in (tmp_path / "sleeper.log").read_text(), 10, "the sleeper to start its child")
    assert group_alive(process.pid)

    process.stop(grace=5)

    assert not process.running()
    assert not group_alive(process.pid)


def test_a_process_that_died_raises_with_its_log_tail(tmp_path: Path) -> None:
    script = "import sys; print('line one'); print('fatal: port taken'); sys.exit(3)"
    process = ManagedProcess("failing", [sys.executable, "-c", script], tmp_path / "failing.log").start()
    wait_for(lambda: not process.running(), 10, "the failing process to exit")

    with pytest.raises(DevClusterError, match=r"(?s)failing exited with status 3.*fatal: port taken"):
        process.check()


def test_log_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(log, lines=2) == "line 98\nline 99"
    assert "no log" in log_tail(tmp_path / "missing.log")


def test_free_ports_are_distinct() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5

"""A cluster that cannot start says which component failed and why, and leaves nothing running."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mlserve.operator.dev.cluster import Binaries, DevClusterError, LocalCluster, names
from mlserve.operator.dev.cluster.process import group_alive


def _fake_binaries(folder: Path, etcd_script: str) -> Binaries:
    for program in (*names.CLUSTER_PROGRAMS, names.KWOK_STAGES):
        path = folder / program
        path.write_text("#!/bin/sh\n" + (etcd_script if program == names.ETCD else "exit 1\n"))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return Binaries(folder)


def test_a_component_that_exits_is_named_with_its_log_tail(tmp_path: Path) -> None:
    binaries = _fake_binaries(tmp_path, "echo 'listen tcp 127.0.0.1:2379: bind: address already in use' >&2\nexit 1\n")
    cluster = LocalCluster(binaries, state_dir=tmp_path / "state", start_timeout=30)

    with pytest.raises(DevClusterError, match=r"(?s)^etcd exited with status 1.*address already in use"):
        cluster.start()

    assert cluster.processes == {}


def test_a_component_that_never_gets_ready_fails_at_the_deadline_and_is_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "etcd.pid"
    binaries = _fake_binaries(tmp_path, f"echo $$ > {pid_file}\necho 'waiting for nothing'\nexec sleep 60\n")
    cluster = LocalCluster(binaries, state_dir=tmp_path / "state", start_timeout=1)

    with pytest.raises(
        DevClusterError, match=r"(?s)^etcd: not ready within 1 s: waited for etcd /health.*waiting for nothing"
    ):
        cluster.start()

    assert not group_alive(int(pid_file.read_text()))


def test_missing_binaries_say_how_to_build_them(tmp_path: Path) -> None:
    with pytest.raises(DevClusterError, match="mlserve dev build"):
        LocalCluster(Binaries(tmp_path)).start()


def test_a_folder_that_is_not_a_cluster_state_is_never_wiped(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    binaries = _fake_binaries(tmp_path / "bin", "exit 1\n")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")

    with pytest.raises(DevClusterError, match="not empty"):
        LocalCluster(binaries, state_dir=folder).start()

    assert (folder / "precious.txt").read_text() == "keep me"

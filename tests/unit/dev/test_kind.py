"""The pure parts of the kind environment: what is detected about the machine, the cluster
config that follows from it, the archives kind's node image build reads, the runtime wrapper."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mlserve.operator.dev.cluster import DevClusterError
from mlserve.operator.dev.cluster.kuberay import operator_args
from mlserve.operator.dev.kind import docker as kind_docker
from mlserve.operator.dev.kind import install
from mlserve.operator.dev.kind import names as kind_names
from mlserve.operator.dev.kind.cluster import kind_config
from mlserve.operator.dev.kind.e2e import offline_choice
from mlserve.operator.dev.kind.host import HostFacts, bounding_set
from mlserve.operator.dev.kind.images import host_apt_sources, qualify_archive, short_name

FULL = "000001ffffffffff"
WITHOUT_SYS_RESOURCE = "000001fffeffffff"  # bit 24 cleared


def _status(tmp_path: Path, mask: str) -> Path:
    path = tmp_path / "status"
    path.write_text(f"Name:\tpython\nCapInh:\t0000000000000000\nCapBnd:\t{mask}\nCapAmb:\t0000000000000000\n")
    return path


@pytest.mark.parametrize(("mask", "lacks"), [(FULL, False), (WITHOUT_SYS_RESOURCE, True)])
def test_the_missing_capability_is_read_from_the_bounding_set(tmp_path: Path, mask: str, lacks: bool) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cgroup.controllers").write_text("cpu memory\n")
    facts = HostFacts.detect(_status(tmp_path, mask), cgroup)
    assert facts == HostFacts(lacks_sys_resource=lacks, cgroup_v1=False)
    assert bounding_set(f"CapBnd:\t{mask}\n") == int(mask, 16)


def test_cgroup_v1_is_a_root_without_the_unified_controllers_file(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    (cgroup / "memory").mkdir(parents=True)
    assert HostFacts.detect(_status(tmp_path, FULL), cgroup).cgroup_v1


def test_a_plain_machine_gets_a_plain_config() -> None:
    config = kind_config("kindest/node:v1", HostFacts(False, False), local_node_image=False)
    assert "containerdConfigPatches" not in config
    assert "kubeadmConfigPatches" not in config
    assert "disableDefaultCNI" not in config["networking"]  # type: ignore[operator]
    (node,) = config["nodes"]  # type: ignore[misc]
    assert node["image"] == "kindest/node:v1"
    assert node["labels"] == {"karpenter.sh/capacity-type": "spot"}


def test_each_adjustment_follows_its_fact() -> None:
    config = kind_config("local/node:v1", HostFacts(True, True), local_node_image=True)
    assert config["networking"]["disableDefaultCNI"] is True  # type: ignore[index]
    (patch,) = config["containerdConfigPatches"]  # type: ignore[misc]
    assert "restrict_oom_score_adj = true" in patch
    (kubelet,) = config["kubeadmConfigPatches"]  # type: ignore[misc]
    assert "kind: KubeletConfiguration" in kubelet and "failCgroupV1: false" in kubelet


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("1", True), ("0", False)])
def test_the_offline_choice(value: str | None, expected: bool | None) -> None:
    assert offline_choice(value) is expected


def test_a_bad_offline_choice_says_what_is_expected() -> None:
    with pytest.raises(DevClusterError, match="MLSERVE_KIND_OFFLINE='maybe'"):
        offline_choice("maybe")


def _docker_save(path: Path, tags: list[str]) -> None:
    """An archive shaped like `docker save` writes it (short names, repositories last)."""
    manifest = [{"Config": "abc.json", "RepoTags": tags, "Layers": ["l1/layer.tar"]}]
    with tarfile.open(path, "w") as archive:
        for name, data in (
            ("l1/layer.tar", b"layer"),
            ("abc.json", b"{}"),
            ("manifest.json", json.dumps(manifest).encode()),
            ("repositories", json.dumps({t.rsplit(":", 1)[0]: {t.rsplit(":", 1)[1]: "l1"} for t in tags}).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_archives_name_their_images_fully_and_say_so_first(tmp_path: Path) -> None:
    refs = ["docker.io/kindest/kindnetd:v1", "registry.k8s.io/pause:3.10.1"]
    source, target = tmp_path / "raw.tar", tmp_path / "out.tar"
    _docker_save(source, [short_name(r) for r in refs])
    qualify_archive(source, target, refs)
    with tarfile.open(target) as archive:
        names = archive.getnames()
        assert names[0] == "repositories"  # kind reads the first of repositories / manifest.json
        repositories = json.loads(archive.extractfile("repositories").read())  # type: ignore[union-attr]
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert archive.extractfile("l1/layer.tar").read() == b"layer"  # type: ignore[union-attr]
    assert repositories == {"docker.io/kindest/kindnetd": {"v1": "l1"}, "registry.k8s.io/pause": {"3.10.1": "l1"}}
    assert manifest[0]["RepoTags"] == refs


def test_short_names_are_what_docker_writes() -> None:
    assert short_name("docker.io/library/debian:12") == "debian:12"
    assert short_name("docker.io/kindest/node:v1") == "kindest/node:v1"
    assert short_name("registry.k8s.io/etcd:3.7.0-0") == "registry.k8s.io/etcd:3.7.0-0"


def test_the_host_sources_of_the_suite_are_kept(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://other.example/x\nSuites: nodistro\nComponents: main\n"
    )
    (tmp_path / "sources.list.d" / "old.list.disabled").write_text("deb http://gone.example bookworm main\n")
    kept = host_apt_sources("bookworm", tmp_path)
    assert "mirror.example" in kept
    assert "other.example" not in kept and "gone.example" not in kept
    assert host_apt_sources("trixie", tmp_path) == ""


def test_the_runtime_wrapper_drops_only_that_capability(tmp_path: Path) -> None:
    fake_runc = tmp_path / "runc"
    fake_runc.write_text(f"#!{sys.executable}\nimport sys\nprint(' '.join(sys.argv[1:]))\n")
    fake_runc.chmod(0o755)
    wrapper = tmp_path / "runc-wrapper"
    wrapper.write_text(f"#!{sys.executable} -I\nRUNC = {str(fake_runc)!r}\n{kind_docker.RUNTIME_WRAPPER}")
    wrapper.chmod(0o755)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    caps = ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN"]
    spec = {"process": {"capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")}}}
    (bundle / "config.json").write_text(json.dumps(spec))
    out = subprocess.run(
        [str(wrapper), "--root", "/x", "create", "--bundle", str(bundle), "ctr-id"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    assert out.stdout.strip() == f"--root /x create --bundle {bundle} ctr-id"
    edited = json.loads((bundle / "config.json").read_text())["process"]["capabilities"]
    assert edited == {k: ["CAP_CHOWN", "CAP_SYS_ADMIN"] for k in ("bounding", "effective", "permitted")}
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"capabilities": {"bounding": list(caps)}}))
    subprocess.run([str(wrapper), "exec", "--process", str(process), "ctr-id"], capture_output=True, check=True)
    assert json.loads(process.read_text())["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_SYS_ADMIN"]


def test_kuberays_controller_runs_in_its_pod_as_beside_the_local_control_plane() -> None:
    namespace, account, deployment = install.kuberay_manifests("mlserve.local/kuberay-operator:v1.6.1-x")
    assert (namespace["kind"], namespace["metadata"]) == ("Namespace", {"name": install.KUBERAY_NAMESPACE})
    assert (account["kind"], account["metadata"]) == (
        "ServiceAccount",
        {"name": install.KUBERAY_NAME, "namespace": install.KUBERAY_NAMESPACE, "labels": account["metadata"]["labels"]},
    )
    pod = deployment["spec"]["template"]["spec"]  # type: ignore[index]
    assert pod["serviceAccountName"] == install.KUBERAY_NAME
    (container,) = pod["containers"]
    assert container["imagePullPolicy"] == "Never"  # loaded into the node, never pulled
    assert container["args"] == operator_args(f":{install.KUBERAY_PROBE_PORT}")
    assert "--feature-gates=RayCronJob=true" in container["args"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": install.KUBERAY_PROBE_PORT}


def test_the_release_tells_kuberay_the_ray_images_version() -> None:
    values = install.chart_values("mlserve.local/mlserve-operator:abc")
    assert values["operator"]["config"] == {"MLSERVE_RAY_VERSION": kind_names.RAY_VERSION}  # type: ignore[index]

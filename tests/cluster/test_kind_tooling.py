"""Fast checks of the kind tooling: its config agrees with the node image it builds,
docker-archives it writes are well formed, the runc wrapper drops only capabilities
the host's bounding set lacks."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import yaml

from tests.cluster import kind, kind_images


def test_kind_yaml_matches_the_node_image_and_ranges() -> None:
    cfg = yaml.safe_load(kind.CONFIG.read_text())
    assert cfg["name"] == kind.CLUSTER
    assert [n["image"] for n in cfg["nodes"]] == [kind_images.node_tag()]
    assert cfg["networking"]["podSubnet"] == kind.POD_CIDR
    assert cfg["networking"]["serviceSubnet"] == kind.SERVICE_CIDR
    patch = yaml.safe_load(cfg["kubeadmConfigPatches"][0])
    names = kind_images.image_names()
    etcd = patch["etcd"]["local"]
    assert f"{etcd['imageRepository']}/etcd:{etcd['imageTag']}" == names["etcd"]
    dns = patch["dns"]
    assert f"{dns['imageRepository']}/coredns:{dns['imageTag']}" == names["coredns"]


def test_manifests_name_only_images_the_node_holds() -> None:
    held = set(kind_images.image_names().values())
    for text in (kind_images.CNI_MANIFEST, kind_images.STORAGE_MANIFEST):
        rendered = kind_images._manifest(text).decode()
        named = {
            line.split("image:", 1)[1].strip()
            for line in rendered.splitlines()
            if line.strip().startswith("image:")
        }
        assert named and named <= held, named - held
    # kind templates the CNI manifest only when it carries the marker
    assert "would you kindly template this file" in kind_images.CNI_MANIFEST


def test_docker_archive_layout(tmp_path: Path) -> None:
    shared = kind_images.files_layer(tmp_path / "a.tar", {"/etc/x": (b"x\n", 0o644)})
    own = kind_images.files_layer(tmp_path / "b.tar", {"/usr/local/bin/y": (b"#!/bin/sh\n", 0o755)})
    out = kind_images.write_archive(
        tmp_path / "out.tar",
        [
            kind_images.Image("localhost/t/one:1", [shared], cmd=["/bin/sh"]),
            kind_images.Image("localhost/t/two:1", [shared, own], entrypoint=["/usr/local/bin/y"]),
        ],
    )
    with tarfile.open(out) as tar:
        names = tar.getnames()
        f = tar.extractfile("manifest.json")
        assert f is not None
        manifest = json.load(f)
        assert [m["RepoTags"] for m in manifest] == [["localhost/t/one:1"], ["localhost/t/two:1"]]
        assert names.count(f"{shared.digest}/layer.tar") == 1  # stored once
        cfg_file = tar.extractfile(manifest[1]["Config"])
        assert cfg_file is not None
        cfg = json.load(cfg_file)
    assert cfg["rootfs"]["diff_ids"] == [f"sha256:{shared.digest}", f"sha256:{own.digest}"]
    assert cfg["config"]["Entrypoint"] == ["/usr/local/bin/y"]
    with tarfile.open(tmp_path / "b.tar") as layer:
        member = layer.getmember("usr/local/bin/y")
        assert member.mode == 0o755 and member.uid == 0


def test_runc_wrapper_keeps_only_bounding_set_caps(tmp_path: Path) -> None:
    wrapper = tmp_path / "runc-wrapper"
    wrapper.write_text(kind.RUNC_WRAPPER.replace("os.execv(RUNC,", "os.execv('/bin/true',"))
    wrapper.chmod(0o755)
    status = Path("/proc/self/status").read_text()
    mask = int(next(x for x in status.splitlines() if x.startswith("CapBnd:")).split()[1], 16)
    every = ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_CHECKPOINT_RESTORE"]
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(
        json.dumps({"process": {"capabilities": {"bounding": every, "effective": every}}})
    )
    subprocess.run(
        [str(wrapper), "--root", "/x", "create", "--bundle", str(bundle), "id"], check=True
    )
    caps = json.loads((bundle / "config.json").read_text())["process"]["capabilities"]
    bits = {"CAP_CHOWN": 0, "CAP_SYS_RESOURCE": 24, "CAP_CHECKPOINT_RESTORE": 40}
    expected = [c for c in every if mask >> bits[c] & 1]
    assert caps["bounding"] == expected and caps["effective"] == expected
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"capabilities": {"permitted": every}}))
    subprocess.run([str(wrapper), "exec", "--process", str(process), "id"], check=True)
    assert json.loads(process.read_text())["capabilities"]["permitted"] == expected

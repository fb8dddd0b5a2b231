"""The Docker API's images, networks, volumes and system endpoints as dockerd 20.10 answers
them: filters, prune reports, commit, distribution, info, and what a dockerd outside a
swarm says; bad input gets dockerd's status and one message, and nothing is made."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from urllib.parse import quote

import pytest
import registry_support as rs
from engine_support import api_json, api_service

pytestmark = pytest.mark.root
IMG = "kbt/busybox:1"


@pytest.fixture(scope="module")
def api(session_base: Path, busybox_rootfs: Path):
    with api_service(session_base / "api-res", busybox_rootfs, IMG) as k:
        yield k


def call(k, method: str, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, object]:
    return api_json(k, method, path, body, raw)


def q(obj: object) -> str:
    return quote(json.dumps(obj))


# -- a dockerd outside a swarm ----------------------------------------------------------------

def test_swarm_endpoints_answer_as_a_dockerd_outside_a_swarm(api):
    not_manager = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to '
                   'connect this node to swarm and try again.')
    for method, path in [("GET", "/swarm"), ("GET", "/services"), ("GET", "/nodes"), ("GET", "/tasks"),
                         ("GET", "/secrets"), ("GET", "/configs"), ("POST", "/services/create"),
                         ("GET", "/nodes/x"), ("DELETE", "/secrets/x"), ("GET", "/swarm/unlockkey")]:
        assert call(api, method, path) == (503, {"message": not_manager}), path
    assert call(api, "POST", "/swarm/leave?force=1") == (503, {"message": "This node is not part of a swarm"})
    status, doc = call(api, "POST", "/swarm/init", {"ListenAddr": "127.0.0.1"})
    assert status == 501 and "swarm" in doc["message"]


def test_plugins_none_listed_none_installed(api):
    assert call(api, "GET", "/plugins") == (200, [])
    status, doc = call(api, "POST", "/plugins/create?name=x/y")
    assert status == 501 and "plugin" in doc["message"]
    assert call(api, "GET", "/plugins/vieux/sshfs/json") == (404, {"message": 'plugin "vieux/sshfs:latest" '
                                                                                'not found'})


def test_info_has_dockerd_keys_and_docker_info_works(api):
    status, info = call(api, "GET", "/info")
    assert status == 200
    for key in ("Debug", "ExperimentalBuild", "NFd", "NGoroutines", "SystemTime", "IPv4Forwarding",
                "RegistryConfig", "IndexServerAddress", "LiveRestoreEnabled", "Warnings", "InitBinary",
                "MemoryLimit", "SwapLimit", "OomKillDisable", "CgroupVersion", "Plugins", "Swarm"):
        assert key in info, key
    assert info["ExperimentalBuild"] is False and info["Swarm"]["LocalNodeState"] == "inactive"
    assert info["Images"] >= 1 and isinstance(info["NFd"], int)
    exe = shutil.which("docker")
    if exe:
        cp = subprocess.run([exe, "info"], env=api.env_docker, capture_output=True, text=True, timeout=30)
        assert cp.returncode == 0, cp.stderr
        assert "Server Version" in cp.stdout


# -- networks --------------------------------------------------------------------------------------

def test_network_names_ipam_options_and_inspect(api):
    body = {"Name": "kbt net 01", "Labels": {"a": "1"}, "CheckDuplicate": True,
            "Options": {"com.docker.network.bridge.name": "kbtbr0"},
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.201.0.0/16", "IPRange": "10.201.5.0/24",
                                                      "Gateway": "10.201.5.254",
                                                      "AuxiliaryAddresses": {"a": "10.201.5.1"}}]}}
    status, made = call(api, "POST", "/networks/create", body)
    assert status == 201, made
    try:
        status, doc = call(api, "GET", "/networks/" + quote("kbt net 01"))
        assert status == 200 and doc["Id"] == made["Id"] and doc["Name"] == "kbt net 01"
        assert doc["Options"] == {"com.docker.network.bridge.name": "kbtbr0"}  # as created: compose compares
        assert doc["IPAM"] == {"Driver": "default", "Options": None, "Config": [
            {"Subnet": "10.201.0.0/16", "IPRange": "10.201.5.0/24", "Gateway": "10.201.5.254",
             "AuxiliaryAddresses": {"a": "10.201.5.1"}}]}
        assert call(api, "POST", "/networks/create", body)[0] == 409
        status, twin = call(api, "POST", "/networks/create", {"Name": "kbt net 01"})  # no CheckDuplicate
        assert status == 201 and twin["Id"] != made["Id"]  # dockerd 20.10 makes a second one
        got, doc = call(api, "GET", "/networks/" + quote("kbt net 01"))
        assert got == 400 and "ambiguous" in doc["message"]
        assert call(api, "GET", "/networks/" + twin["Id"])[1]["Name"] == "kbt net 01"
        assert call(api, "DELETE", "/networks/" + twin["Id"])[0] == 204
        def ids(flt: dict) -> list[str]:
            return [n["Id"] for n in call(api, "GET", "/networks?filters=" + q(flt))[1]]

        assert ids({"name": ["kbt net 01"]}) == [made["Id"]]
        assert ids({"id": [made["Id"][:8]]}) == [made["Id"]]
        assert ids({"label": ["a=1"]}) == [made["Id"]] and ids({"label": ["a=2"]}) == []
        assert made["Id"] in ids({"type": ["custom"], "dangling": ["true"]})
        assert made["Id"] not in ids({"type": ["builtin"]})
        names = {n["Name"]: n for n in call(api, "GET", "/networks")[1]}
        assert names["host"]["Id"] and names["none"]["Id"]  # docker-py gets them by ID
        assert call(api, "GET", "/networks/" + names["host"]["Id"])[1]["Driver"] == "host"
    finally:
        assert call(api, "DELETE", "/networks/" + quote("kbt net 01"))[0] == 204
    assert call(api, "GET", "/networks/" + quote("kbt net 01"))[0] == 404


@pytest.mark.parametrize("body,status,words", [
    ({"Name": "kbt-h", "Driver": "host"}, 403, "only one instance"),
    ({"Name": "kbt-o", "Driver": "overlay"}, 404, "plugin \"overlay\" not found"),
    ({"Name": "kbt-l", "Labels": ["a=b"]}, 400, "labels"),
    ({"Name": 5}, 400, "Name"),
    ({"Name": "   "}, 400, "name"),
    ({"Name": "bridge"}, 403, "predefined"),
    ({"Name": "kbt-i", "Internal": "yes"}, 400, "Internal"),
    ({"Name": "kbt-a", "IPAM": {"Config": [{"Subnet": "10.202.0.0/16",
                                            "AuxiliaryAddresses": {"x": "10.9.9.9"}}]}}, 400, "master pool"),
])
def test_network_create_bad_input(api, body, status, words):
    got, doc = call(api, "POST", "/networks/create", body)
    assert got == status and words in doc["message"], doc
    assert body["Name"] not in [n["Name"] for n in call(api, "GET", "/networks")[1] if n["Name"] != "bridge"]


def test_bad_filters_are_refused(api):
    for path in ("/networks", "/volumes", "/images/json", "/networks/prune", "/images/prune",
                 "/volumes/prune"):
        method = "POST" if path.endswith("prune") else "GET"
        got, doc = call(api, method, path + "?filters=" + quote("{nope"))
        assert got == 400 and "invalid filter" in doc["message"], (path, doc)
        got, doc = call(api, method, path + "?filters=" + q({"color": ["red"]}))
        assert got == 400 and "invalid filter 'color'" in doc["message"], (path, doc)


def test_connect_records_endpoint_settings_and_prune_reports(api):
    assert call(api, "POST", "/networks/create", {"Name": "kbt-ep", "IPAM": {
        "Config": [{"Subnet": "10.203.0.0/24"}]}})[0] == 201
    status, c = call(api, "POST", "/containers/create", {"Image": IMG, "Cmd": ["sleep", "30"]})
    assert status == 201
    ep = {"IPAMConfig": {"IPv4Address": "10.203.0.9"}, "MacAddress": "02:42:ac:11:00:09",
          "Links": ["up:bar"], "DriverOpts": {"k": "v"}, "Aliases": ["al"]}
    got = call(api, "POST", "/networks/kbt-ep/connect", {"Container": c["Id"], "EndpointConfig": ep})
    assert got[0] == 200, got
    got = call(api, "GET", f"/containers/{c['Id']}/json")[1]["NetworkSettings"]["Networks"]["kbt-ep"]
    assert got["IPAMConfig"] == {"IPv4Address": "10.203.0.9"} and got["MacAddress"] == "02:42:ac:11:00:09"
    assert got["Links"] == ["up:bar"] and got["DriverOpts"] == {"k": "v"}
    assert got["Aliases"] == ["al", c["Id"][:12]]
    assert got["NetworkID"]
    assert call(api, "POST", "/networks/kbt-ep/connect", {"Container": c["Id"]})[0] == 403  # twice
    bad = call(api, "POST", "/networks/kbt-ep/disconnect", {"Container": c["Id"], "Force": "x"})
    assert bad[0] == 400
    assert call(api, "POST", f"/containers/{c['Id']}/start")[0] == 204
    live = call(api, "GET", f"/containers/{c['Id']}/json")[1]["NetworkSettings"]["Networks"]["kbt-ep"]
    assert (live["IPAddress"], live["MacAddress"]) == ("10.203.0.9", "02:42:ac:11:00:09")
    net = call(api, "GET", "/networks/kbt-ep")[1]
    assert list(net["Containers"]) == [c["Id"]]
    assert call(api, "POST", "/networks/kbt-ep/disconnect", {"Container": c["Id"]})[0] == 200
    call(api, "DELETE", f"/containers/{c['Id']}?force=1")
    status, rep = call(api, "POST", "/networks/prune?filters=" + q({"label": ["nope"]}))
    assert status == 200 and rep["NetworksDeleted"] is None  # the label filter keeps it
    status, rep = call(api, "POST", "/networks/prune")
    assert status == 200 and "kbt-ep" in rep["NetworksDeleted"]


# -- volumes ----------------------------------------------------------------------------------------

def test_volume_driver_filters_and_prune(api):
    got, doc = call(api, "POST", "/volumes/create", {"Name": "kbt-v0", "Driver": "invalid.driver"})
    assert got == 404 and 'plugin "invalid.driver" not found' in doc["message"]
    assert call(api, "POST", "/volumes/create", {"Name": "kbt-v1", "Labels": ["x"]})[0] == 400
    assert call(api, "GET", "/volumes/kbt-v0")[0] == 404  # nothing made
    assert call(api, "POST", "/volumes/create", {"Name": "kbt-v1", "Labels": {"k": "v"}})[0] == 201
    assert call(api, "POST", "/volumes/create", {"Name": "kbt-w2"})[0] == 201
    def names(flt: dict) -> list[str]:
        return sorted(v["Name"] for v in call(api, "GET", "/volumes?filters=" + q(flt))[1]["Volumes"])

    assert names({"name": ["kbt-v"]}) == ["kbt-v1"]
    assert names({"label": ["k=v"]}) == ["kbt-v1"]
    assert "kbt-w2" in names({"dangling": ["true"]}) and names({"driver": ["other"]}) == []
    status, rep = call(api, "POST", "/volumes/prune?filters=" + q({"label": ["k"]}))
    assert status == 200 and rep["VolumesDeleted"] == ["kbt-v1"]  # API 1.41: named volumes too
    assert call(api, "DELETE", "/volumes/kbt-w2")[0] == 204


# -- images -----------------------------------------------------------------------------------------

def test_commit_with_changes_parent_and_container_config(api):
    base = call(api, "GET", f"/images/{IMG}/json")[1]
    status, c = call(api, "POST", "/containers/create", {"Image": IMG, "Cmd": ["touch", "/made"]})
    assert status == 201
    call(api, "POST", f"/containers/{c['Id']}/start")
    call(api, "POST", f"/containers/{c['Id']}/wait")
    changes = "&changes=" + quote("EXPOSE 8000") + "&changes=" + quote('CMD ["sh"]') + "&changes=" + \
        quote("USER nobody")
    status, made = call(api, "POST", f"/commit?container={c['Id']}&repo=kbt/committed&tag=2&comment=hi"
                                     f"&author=me{changes}", {"Env": ["X=1"]})
    assert status == 201, made
    img = call(api, "GET", "/images/kbt/committed:2/json")[1]
    assert img["Id"] == made["Id"] and img["Parent"] == base["Id"] and img["Container"] == c["Id"]
    assert img["ContainerConfig"]["Image"] == IMG and img["ContainerConfig"]["Cmd"] == ["touch", "/made"]
    assert img["Config"]["Cmd"] == ["sh"] and img["Config"]["User"] == "nobody"
    assert "8000/tcp" in img["Config"]["ExposedPorts"] and img["Config"]["Env"] == ["X=1"]
    assert img["Author"] == "me" and img["Comment"] == "hi"
    assert call(api, "POST", f"/commit?container={c['Id']}&changes=" + quote("FROB x"))[0] == 400
    assert call(api, "POST", "/commit?container=kbt-nope")[0] == 404
    status, out = call(api, "DELETE", "/images/kbt/committed:2")
    assert {"Untagged": "kbt/committed:2"} in out and {"Deleted": made["Id"]} in out
    call(api, "DELETE", f"/containers/{c['Id']}")


def test_image_filters_one_row_per_image_and_quiet_cli(api):
    call(api, "POST", f"/images/{IMG}/tag?repo=kbt/other&tag=7")
    try:
        rows = call(api, "GET", "/images/json")[1]
        assert len({r["Id"] for r in rows}) == len(rows)  # one row per image, not per tag
        def refs(flt: dict) -> list[str]:
            return [t for r in call(api, "GET", "/images/json?filters=" + q(flt))[1] for t in r["RepoTags"]]

        assert refs({"reference": ["kbt/other"]}) == ["kbt/other:7"]
        assert refs({"reference": ["kbt/*:7"]}) == ["kbt/other:7"]
        assert refs({"reference": ["kbt/other:8"]}) == []
        assert refs({"dangling": ["true"]}) == []
        quiet = api("images", "-q").stdout.split()
        assert len(quiet) == len(set(quiet))
        assert api("images", "--filter", "reference=kbt/other").stdout.count("kbt/other") == 1
    finally:
        call(api, "DELETE", "/images/kbt/other:7")


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_import_changes_load_errors_and_prune_report(api):
    changes = "&changes=" + quote("USER foobar") + "&changes=" + quote('CMD ["echo"]')
    status, out = call(api, "POST", f"/images/create?fromSrc=-&repo=kbt/imp&tag=1{changes}",
                       raw=_tar({"f": b"x"}))
    assert status == 200
    img = call(api, "GET", "/images/kbt/imp:1/json")[1]
    assert img["Config"]["User"] == "foobar" and img["Config"]["Cmd"] == ["echo"]
    status, out = call(api, "POST", "/images/load", raw=b"abc")
    assert status == 200 and "not a tar archive" in out["error"]  # in the stream, as dockerd does
    keep = call(api, "POST", "/containers/create", {"Image": IMG, "Cmd": ["true"]})[1]  # IMG is in use
    status, rep = call(api, "POST", "/images/prune")  # only dangling: kbt/imp:1 stays
    assert status == 200 and img["Id"] not in [d.get("Deleted") for d in rep["ImagesDeleted"] or []]
    status, rep = call(api, "POST", "/images/prune?filters=" + q({"dangling": ["false"],
                                                                   "label!": ["never"]}))
    deleted = rep["ImagesDeleted"]
    assert {"Untagged": "kbt/imp:1"} in deleted and {"Deleted": img["Id"]} in deleted
    assert call(api, "GET", f"/images/{IMG}/json")[0] == 200  # a container uses it
    call(api, "DELETE", f"/containers/{keep['Id']}")
    got, doc = call(api, "POST", "/images/create?fromImage=kbt/x&tag=1&platform=foobar")
    assert got == 400 and "invalid platform" in doc["message"]


@pytest.mark.skipif(rs.available() is not None, reason=str(rs.available()))
def test_pull_and_import_take_a_platform_as_dockerd(api):
    """POST /images/create?platform=: the index's entry for it; one it lacks is a 404 with
    dockerd's words before any stream; import records the platform given; inspect shows it."""
    with rs.Registry() as reg:
        amd = rs.upload_image(reg, "kbt/apiplat", "amd")
        index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                           "digest": amd["manifest_digest"], "size": len(amd["manifest"]),
                                           "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
        reg.put_manifest("kbt/apiplat", "multi", index, "application/vnd.oci.image.index.v1+json")
        name = f"{reg.addr}/kbt/apiplat"
        status, doc = call(api, "POST", f"/images/create?fromImage={name}&tag=multi&platform=linux/s390x")
        assert (status, doc) == (404, {"message": "no matching manifest for linux/s390x in the manifest "
                                                  "list entries"})
        assert call(api, "GET", f"/images/{name}:multi/json")[0] == 404
        status, _ = call(api, "POST", f"/images/create?fromImage={name}&tag=multi&platform=linux/amd64")
        assert status == 200
        doc = call(api, "GET", f"/images/{name}:multi/json")[1]
        assert (doc["Os"], doc["Architecture"]) == ("linux", "amd64") and "Variant" not in doc
    status, _ = call(api, "POST", "/images/create?fromSrc=-&repo=kbt/impplat&tag=1&platform=linux/arm/v7",
                     raw=_tar({"f": b"x"}))
    assert status == 200
    doc = call(api, "GET", "/images/kbt/impplat:1/json")[1]
    assert (doc["Os"], doc["Architecture"], doc["Variant"]) == ("linux", "arm", "v7")
    call(api, "DELETE", "/images/kbt/impplat:1")


@pytest.mark.skipif(rs.available() is not None, reason=str(rs.available()))
def test_distribution_asks_the_registry(api):
    with rs.Registry() as reg:
        info = rs.upload_image(reg, "kbt/dist", "1")
        status, doc = call(api, "GET", f"/distribution/{reg.addr}/kbt/dist:1/json")
        assert status == 200, doc
        assert doc["Descriptor"]["digest"] == info["manifest_digest"]
        assert doc["Descriptor"]["size"] == len(info["manifest"])
        assert doc["Platforms"] == [{"architecture": "amd64", "os": "linux"}]
        assert call(api, "GET", f"/distribution/{reg.addr}/kbt/nope:1/json")[0] in (404, 500)

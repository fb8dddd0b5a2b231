"""The engine's list filters, endpoint wishes and Docker-shaped views of networks, volumes
and a container's network part, without root; and that the API's resource modules stand
on the engine, not on the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from kobako.engine import filters, views
from kobako.engine.networks import endpoint_config
from kobako.network.networks import NetworkError

REPO = Path(__file__).resolve().parents[2]


def test_filters_from_json_both_shapes_and_refusals():
    assert filters.from_json('{"name": ["a"], "dangling": {"true": true}}', ("name", "dangling")) == \
        {"name": ["a"], "dangling": ["true"]}
    assert filters.from_json("", ("name",)) == {}
    for text, words in [("{nope", "invalid filter"), ('["a"]', "JSON object"),
                        ('{"color": ["x"]}', "'color'"), ('{"name": [1]}', "list of strings")]:
        with pytest.raises(filters.FilterError, match=words):
            filters.from_json(text, ("name",))
    assert filters.from_args(["name=a", "name=b"], ("name",)) == {"name": ["a", "b"]}
    with pytest.raises(filters.FilterError, match="bad format"):
        filters.from_args(["name"], ("name",))
    with pytest.raises(filters.FilterError, match="true or false"):
        filters.boolean({"dangling": ["maybe"]}, "dangling")
    assert filters.boolean({}, "dangling") is None and filters.boolean({"d": ["0"]}, "d") is False


def test_labels_and_go_path_patterns():
    assert filters.labels_match({"a": "1", "b": ""}, ["a", "a=1", "b="])
    assert not filters.labels_match({"a": "1"}, ["a=2"]) and not filters.labels_match({}, ["a"])
    assert filters.path_match("kbt/*", "kbt/x") and not filters.path_match("kbt*", "kbt/x")  # stops at /
    assert filters.path_match("b?sy[a-z]ox:1", "busybox:1") and not filters.path_match("a.c", "abc")


def test_endpoint_wishes_checked():
    want = endpoint_config("10.1.0.5", ["a"], ["up", "db:d"], {"k": "v"}, "02:42:AC:11:00:02",
                           ["169.254.8.8"])
    assert want == {"ip": "10.1.0.5", "aliases": ["a"], "links": ["up:up", "db:d"],
                    "driverOpts": {"k": "v"}, "mac": "02:42:ac:11:00:02", "linkLocalIps": ["169.254.8.8"]}
    for kw, words in [({"aliases": "a"}, "aliases"), ({"mac": "01:00:00:00:00:00"}, "unicast"),
                      ({"link_local_ips": ["10.0.0.1"]}, "169.254"),
                      ({"driver_opts": {"k": 1}}, "DriverOpts"), ({"links": [":x"]}, "link")]:
        with pytest.raises(NetworkError, match=words):
            endpoint_config(**kw)
    with pytest.raises(NetworkError, match="invalid IPv6 address"):
        endpoint_config(ip6="2001:db8::zz")
    assert endpoint_config(ip6="2001:DB8:0::1")["ip6"] == "2001:db8::1"  # kept in its short form


class _Engine:
    """Just enough engine for views.container_settings on a container that is not running."""

    def __init__(self, tmp: Path) -> None:
        self.root, self.run_dir = str(tmp / "data"), str(tmp / "run")


def test_a_created_container_shows_what_it_asked_of_each_network(tmp_path: Path):
    from kobako.network.networks import NetworkStore
    e = _Engine(tmp_path)
    net = NetworkStore(e.root, e.run_dir).create("n1", subnet="10.77.0.0/24")
    rec = {"id": "c" * 64, "net": {"mode": "bridge", "networks": {
        "n1": {"ip": "10.77.0.9", "aliases": ["x"], "links": ["up:bar"], "mac": "02:42:0a:4d:00:09",
               "driverOpts": {"k": "v"}, "linkLocalIps": ["169.254.1.1"]}}}}
    mode, ns = views.container_settings(e, rec)
    ep = ns["Networks"]["n1"]
    assert mode == "n1" and ep["NetworkID"] == net["id"] and ep["IPAddress"] == ""
    assert ep["IPAMConfig"] == {"IPv4Address": "10.77.0.9", "LinkLocalIPs": ["169.254.1.1"]}
    assert (ep["Links"], ep["Aliases"], ep["MacAddress"], ep["DriverOpts"]) == \
        (["up:bar"], ["x", "c" * 12], "02:42:0a:4d:00:09", {"k": "v"})  # and the short ID, as dockerd
    bare = views.container_settings(e, {"id": "d" * 64, "net": {"mode": "bridge"}})[1]["Networks"]["bridge"]
    assert bare["IPAMConfig"] is None and bare["Links"] is None and bare["DriverOpts"] is None


def test_network_and_volume_documents(tmp_path: Path):
    from kobako.network.networks import NetworkStore
    e = _Engine(tmp_path)
    st = NetworkStore(e.root, e.run_dir)
    n = st.create("with space", subnet="10.78.0.0/24", aux={"gw2": "10.78.0.2"},
                  options={"com.docker.network.driver.mtu": "1400"}, labels={"l": "1"})
    doc = views.network_doc(e, n, [])
    assert doc["Options"] == {"com.docker.network.driver.mtu": "1400"}  # as given, nothing added
    assert doc["IPAM"]["Config"] == [{"Subnet": "10.78.0.0/24", "Gateway": "10.78.0.1",
                                      "AuxiliaryAddresses": {"gw2": "10.78.0.2"}}]
    assert doc["Labels"] == {"l": "1"} and st.get("with space")["id"] == n["id"]
    assert views.network_doc(e, st.get("bridge"), [])["Options"]["com.docker.network.bridge.name"]
    host = views.pseudo_network("host")
    assert host["Driver"] == "host" and host["Id"] == views.pseudo_network_id("host")
    assert views.pseudo_network_id("host") != views.pseudo_network_id("none")
    vol = {"Name": "v", "Mountpoint": "/m", "Labels": None}
    doc = views.volume_doc(vol)
    assert list(doc) == sorted(doc) and doc["Labels"] == {}


def test_a_twin_name_is_ambiguous_until_one_goes(tmp_path: Path):
    """dockerd 20.10 without CheckDuplicate makes a second network of a name in use."""
    from kobako.network.networks import NetworkStore
    st = NetworkStore(str(tmp_path / "data"), str(tmp_path / "run"))
    first = st.create("twin", subnet="10.79.0.0/24")
    second = st.create("twin", subnet="10.79.1.0/24", duplicate=True)
    with pytest.raises(NetworkError, match="ambiguous"):
        st.get("twin")
    assert st.get(second["id"])["displayName"] == "twin" and st.get(first["id"])["name"] == "twin"
    assert views.network_doc(_Engine(tmp_path), second, [])["Name"] == "twin"
    st.remove(first["name"], [])
    assert st.get("twin")["id"] == second["id"]

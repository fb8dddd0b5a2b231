"""engine/userns.py and runtime/idmap.py without a kernel: flag parsing, range picking,
subid files, and the upper dir's extra mapping for the host's root."""

from __future__ import annotations

from pathlib import Path

import pytest

from kobako.engine import userns
from kobako.engine.ocispec import OptionError
from kobako.runtime import idmap


def test_host_and_nothing_mean_no_user_namespace():
    assert userns.parse(None, [], []) is None
    assert userns.parse("host", [], []) is None
    assert userns.parse("", [], []) is None


def test_auto_private_and_size():
    r = userns.parse("auto", [], [])
    assert (r.mode, r.size) == ("auto", 65536)
    assert userns.parse("auto:size=1024", [], []).size == 1024
    assert userns.parse("private", [], []).mode == "private"
    assert userns.parse("container:web", [], []).join == "web"


@pytest.mark.parametrize("mode", ["bogus", "auto:size=0", "auto:size=x", "auto:uidmapping=0:1:2",
                                  "ns:/proc/1/ns/user", "auto:size=99999999"])
def test_bad_modes(mode: str):
    with pytest.raises(OptionError):
        userns.parse(mode, [], [])


def test_uidmap_gidmap_defaults_and_checks():
    r = userns.parse(None, ["0:100000:1000", "1000:500000:10"], [])
    assert r.uid_maps == r.gid_maps == [{"containerID": 0, "hostID": 100000, "size": 1000},
                                        {"containerID": 1000, "hostID": 500000, "size": 10}]
    r = userns.parse(None, [], ["0:7:1"])
    assert r.uid_maps == r.gid_maps == [{"containerID": 0, "hostID": 7, "size": 1}]
    for bad in (["0:1"], ["a:b:c"], ["0:1:0"], ["1:100:10"], ["0:100:10", "5:1000:10"],
                ["0:100:10", "20:105:10"], ["0:4294967294:2"]):
        with pytest.raises(OptionError):
            userns.parse(None, bad, [])
    with pytest.raises(OptionError):
        userns.parse("host", ["0:1:1"], [])
    with pytest.raises(OptionError):  # the gid map needs container gid 0 as well
        userns.parse(None, ["0:100:10"], ["1:200:10"])


def test_pick_finds_the_lowest_gap_that_fits():
    pool = [(1000, 100)]
    assert userns._pick(pool, [], 10) == 1000
    assert userns._pick(pool, [(1000, 1010)], 10) == 1010
    assert userns._pick(pool, [(1000, 1010), (1020, 1030)], 10) == 1010
    assert userns._pick(pool, [(1000, 1010), (1015, 1030)], 10) == 1030
    assert userns._pick(pool, [(1000, 1095)], 10) is None
    assert userns._pick([(0, 10), (50, 100)], [(0, 5)], 10) == 50


def test_allocate_skips_ranges_of_recorded_containers():
    recs = [{"userns": {"uidMappings": [{"containerID": 0, "hostID": userns.POOL[0], "size": 65536}],
                        "gidMappings": [{"containerID": 0, "hostID": userns.POOL[0], "size": 65536}]}},
            {"id": "no-userns"}]
    r2 = userns.Userns("auto")
    # the pool alone (as with a subuid file without kobako's users)
    orig = userns.subid_ranges
    try:
        userns.subid_ranges = lambda path: [userns.POOL]  # type: ignore[assignment]
        userns.allocate(r2, recs)
    finally:
        userns.subid_ranges = orig  # type: ignore[assignment]
    assert r2.uid_maps == [{"containerID": 0, "hostID": userns.POOL[0] + 65536, "size": 65536}]
    assert userns.host_root(r2) == (userns.POOL[0] + 65536, userns.POOL[0] + 65536)


def test_subid_ranges_are_kobakos_own(tmp_path: Path):
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\ncontainers:200000:1000000\n")  # Podman's: not shared
    assert userns.subid_ranges(str(f)) == [userns.POOL]
    f.write_text("kobako:300000:65536\nkobako:900000:65536\ncontainers:200000:1000000\n")
    assert userns.subid_ranges(str(f)) == [(300000, 65536), (900000, 65536)]
    f.write_text("alice:100000:65536\n")
    assert userns.subid_ranges(str(f)) == [userns.POOL]
    assert userns.subid_ranges(str(tmp_path / "missing")) == [userns.POOL]


def test_the_uppers_mapping_gives_the_hosts_root_an_id_past_the_range():
    maps = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert idmap.with_host_root(maps) == maps + [{"containerID": 65536, "hostID": 0, "size": 1}]
    has_root = [{"containerID": 0, "hostID": 0, "size": 10}]
    assert idmap.with_host_root(has_root) == has_root


def test_idmap_is_wanted_for_the_annotation_or_an_idmap_bind():
    assert not idmap.wanted({"mounts": [{"destination": "/x", "type": "bind", "options": ["rbind"]}]})
    assert idmap.wanted({"mounts": [{"destination": "/x", "type": "bind", "options": ["rbind", "idmap"]}]})
    ann = {idmap.ROOT_MOUNT_ANNOTATION: '{"type": "overlay", "options": [], "idmap": {"uidMappings": '
                                        '[{"containerID": 0, "hostID": 5, "size": 1}]}}'}
    assert idmap.wanted({"annotations": ann})
    assert idmap.maps_of({"annotations": ann})[0] == [{"containerID": 0, "hostID": 5, "size": 1}]

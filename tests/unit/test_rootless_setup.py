"""Rootless set-up without root: the user's ranges, newuidmap's arguments, the helpers'
checks, keep-id's maps and the delegated cgroup's discovery."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kobako.engine import rootless, userns
from kobako.engine.ocispec import OptionError
from kobako.runtime import cgroups


def test_subids_by_name_or_uid_and_several_ranges(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\nbob:165536:65536\n1000:300000:10\nalice:bad:1\nalice:5:0\n")
    assert rootless.subids(str(f), "alice", 1000) == [(100000, 65536), (300000, 10)]
    assert rootless.subids(str(f), "carol", 1002) == []
    assert rootless.subids(str(tmp_path / "missing"), "alice", 1000) == []


def test_newuidmap_arguments_put_the_user_at_0_then_each_range() -> None:
    assert rootless.id_map_args(1000, [(100000, 65536), (300000, 10)]) == \
        ["0", "1000", "1", "1", "100000", "65536", "65537", "300000", "10"]


def test_too_few_ids_names_the_file_and_the_usermod(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rootless, "subids", lambda path, user, uid: [(100000, 1000)] if "uid" in path else [])
    with pytest.raises(rootless.RootlessError) as e:
        rootless._ranges("alice", 1000)
    assert "only 1000 ids in /etc/subuid" in str(e.value) and "usermod --add-subuids" in e.value.hint
    assert "--add-subgids" in e.value.hint


def test_helper_missing_or_not_setuid(tmp_path: Path) -> None:
    with pytest.raises(rootless.RootlessError) as e:
        rootless.check_helper("newuidmap", (str(tmp_path),))
    assert "apt-get install uidmap" in e.value.hint
    helper = tmp_path / "newuidmap"
    helper.write_text("")
    helper.chmod(0o755)
    with pytest.raises(rootless.RootlessError) as e:
        rootless.check_helper("newuidmap", (str(tmp_path),))
    assert "not setuid root" in str(e.value)


def test_keep_id_maps_the_user_to_itself_split_along_the_parents_extents(monkeypatch) -> None:
    monkeypatch.setattr(rootless, "host_ids", lambda: (1000, 1000))
    # the user's namespace: the user at 0, then two subordinate ranges
    monkeypatch.setattr(rootless, "namespace_extents", lambda kind: [(0, 1), (1, 65536), (65537, 65536)])
    req = userns.parse("keep-id", [], [])
    assert req is not None and req.user == "1000:1000"
    assert req.uid_maps == [
        {"containerID": 1000, "hostID": 0, "size": 1},
        {"containerID": 0, "hostID": 1, "size": 1000},
        {"containerID": 1001, "hostID": 1001, "size": 64536},
        {"containerID": 65537, "hostID": 65537, "size": 65536},
    ]
    # every container id 0..131072 is mapped exactly once
    ids = sorted(i for m in req.uid_maps for i in range(m["containerID"], m["containerID"] + m["size"]))
    assert ids == list(range(131073))


def test_keep_id_and_auto_are_refused_where_they_cannot_work(monkeypatch) -> None:
    monkeypatch.setattr(rootless, "host_ids", lambda: None)
    with pytest.raises(OptionError, match="keep-id is for rootless"):
        userns.parse("keep-id", [], [])
    monkeypatch.setattr(rootless, "host_ids", lambda: (1000, 1000))
    req = userns.parse("auto", [], [])
    with pytest.raises(OptionError, match="root's to give"):
        userns.allocate(req, [])


def test_delegated_root_is_the_topmost_cgroup_the_user_owns(tmp_path: Path, monkeypatch) -> None:
    v2 = tmp_path / "cgroup"
    own = v2 / "user.slice" / "user-1000.slice" / "user@1000.service" / "app.slice" / "x.scope"
    own.mkdir(parents=True)
    for d in (own, own.parent, own.parent.parent):  # delegated: user@1000.service and below
        (d / "cgroup.procs").write_text("")
    monkeypatch.setattr(cgroups, "own_cgroup", lambda c: "/" + str(own.relative_to(v2)))
    monkeypatch.setattr(os, "access", lambda p, m: "user@1000.service" in str(p))
    assert cgroups.delegated_root(str(v2)) == "/user.slice/user-1000.slice/user@1000.service"
    monkeypatch.setattr(os, "access", lambda p, m: False)
    assert cgroups.delegated_root(str(v2)) is None


def test_errors_cross_back_from_the_users_network_namespace_with_their_kind() -> None:
    from kobako.network import rootlessns
    from kobako.network.ports import PortError
    from kobako.runtime import jsonfast

    def again(e: BaseException) -> BaseException:
        return rootlessns._error_in(jsonfast.loads(jsonfast.dumps(rootlessns._error_out(e))))
    e = again(PortError("port 80 is taken", hint="pick another"))
    assert type(e) is PortError and e.message == "port 80 is taken" and e.hint == "pick another"
    e = again(PermissionError(1, "Operation not permitted", "/x"))
    assert isinstance(e, OSError) and e.errno == 1 and e.filename == "/x"
    e = again(ValueError("odd"))
    assert type(e).__name__ == "KobakoError" and "ValueError: odd" in str(e)

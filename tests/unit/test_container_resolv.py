"""The resolv.conf a container on its own network gets from the host's (dockerd's rules)."""

from __future__ import annotations

from kobako.engine.lifecycle import container_resolv


def test_loopback_nameservers_are_dropped_and_others_kept():
    host = "search corp.example\nnameserver 127.0.0.1\nnameserver 10.0.0.53\noptions ndots:2\n"
    out = container_resolv(host, "/nonexistent")
    assert out.splitlines() == ["search corp.example", "nameserver 10.0.0.53", "options ndots:2"]


def test_systemd_resolved_stub_is_replaced_by_its_upstream_servers(tmp_path):
    up = tmp_path / "resolv.conf"
    up.write_text("nameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch lan\n")
    out = container_resolv("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n", str(up))
    assert out.splitlines() == ["nameserver 192.0.2.1", "nameserver 192.0.2.2", "search lan"]


def test_no_reachable_nameserver_falls_back_to_dockers_defaults():
    out = container_resolv("nameserver 127.0.0.53\nsearch lan\n", "/nonexistent")
    assert out.splitlines() == ["search lan", "nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    assert container_resolv("", "/nonexistent").splitlines() == ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]

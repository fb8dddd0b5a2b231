"""The pure parts of `kobako explain`: capability decoding, the parsers of what /proc and nft
print, the formatting of limits, and the text rendering of an explanation."""

from __future__ import annotations

from kobako.cli.explain import render
from kobako.engine import explain as ex

DOCKER_DEFAULT = "00000000a80425fb"  # what docker's and kobako's default set reads as in CapEff


def test_a_capability_mask_decodes_to_names_in_bit_order():
    assert ex.cap_names(DOCKER_DEFAULT) == [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
        "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_MKNOD",
        "CAP_AUDIT_WRITE", "CAP_SETFCAP"]
    assert ex.cap_names("0000000000000000") == []
    assert ex.cap_names("0000000000200000") == ["CAP_SYS_ADMIN"]
    # a bit past the names kobako knows still shows, by number
    assert ex.cap_names(f"{1 << 45:016x}") == ["CAP_45"]


def test_capsh_decodes_to_the_same_names():
    # `capsh --decode=00000000a80425fb` prints 0x00000000a80425fb=cap_chown,cap_dac_override,...
    assert ex.capsh_names(DOCKER_DEFAULT) == (
        "cap_chown,cap_dac_override,cap_fowner,cap_fsetid,cap_kill,cap_setgid,cap_setuid,cap_setpcap,"
        "cap_net_bind_service,cap_net_raw,cap_sys_chroot,cap_mknod,cap_audit_write,cap_setfcap")
    assert ex.capsh_names("0") == ""


def test_capability_sets_are_described_short():
    assert ex.describe_caps("0000000000000000", 40) == "none"
    assert ex.describe_caps("000001ffffffffff", 40) == "all 41 (CAP_CHOWN .. CAP_CHECKPOINT_RESTORE)"
    assert ex.describe_caps("000001fffeffffff", 40) == "40 of 41: all but sys_resource"
    assert ex.describe_caps(DOCKER_DEFAULT, 40).startswith("14: chown dac_override fowner")
    assert ex.describe_caps("0000000000000401", 40) == "2: chown net_bind_service"


def test_limits_read_as_a_person_says_them():
    assert ex.size(512) == "512 B"
    assert ex.size(64 << 20) == "64 MiB"
    assert ex.size(3 << 29) == "1.5 GiB"
    assert ex.limit_bytes("67108864\n") == "64 MiB (67108864)"
    assert ex.limit_bytes("9223372036854771712\n") == "no limit"  # v1's "none"
    assert ex.limit_bytes("max\n") == "no limit"  # v2's
    assert ex._cpu_max("50000 100000\n") == "0.5 CPUs (50000 us every 100000 us)"
    assert ex._cpu_max("max 100000\n") == "none (period 100000 us)"
    assert ex._v1_quota("-1\n") == "none"


def test_proc_status_fields():
    st = ex.parse_status("Name:\tsleep\nNSpid:\t4242\t1\nCapEff:\t00000000a80425fb\nSeccomp:\t2\n")
    assert st == {"Name": "sleep", "NSpid": "4242 1", "CapEff": DOCKER_DEFAULT, "Seccomp": "2"}


def test_mountinfo_lines_with_optional_fields_and_escapes():
    text = ("73 47 0:41 / / rw,relatime - overlay overlay rw,lowerdir=l/A:l/B,upperdir=/u,workdir=/w\n"
            "90 73 254:0 /data/my\\040dir /mnt/my\\040dir ro,relatime shared:5 master:1 - ext4 /dev/vda rw\n"
            "50 74 0:44 /null /proc/keys rw,nosuid - tmpfs tmpfs rw,size=65536k\n")
    root, bind, masked = ex.parse_mountinfo(text)
    assert root == {"target": "/", "root": "/", "options": "rw,relatime", "fstype": "overlay",
                    "source": "overlay", "super": "rw,lowerdir=l/A:l/B,upperdir=/u,workdir=/w"}
    assert bind["target"] == "/mnt/my dir" and bind["root"] == "/data/my dir" and bind["fstype"] == "ext4"
    assert ex.read_only(bind) and not ex.read_only(root)
    assert masked["root"] == "/null"


def test_proc_cgroup_lines():
    text = "9:name=systemd:/kobako/abc\n4:memory:/kobako/abc\n1:cpu,cpuacct:/kobako/abc\n0::/\n"
    assert ex.parse_cgroup(text) == {"name=systemd": "/kobako/abc", "memory": "/kobako/abc",
                                     "cpu,cpuacct": "/kobako/abc", "": "/"}


def test_nft_elements_on_one_line_and_on_many():
    text = """table inet kobako {
\tset bridges {
\t\ttype ifname
\t\telements = { "kobako0", "kb-04ccbeeba678" }
\t}
\tset subnets {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.88.0.0/16 }
\t}
\tset internal {
\t\ttype ifname
\t}
\tmap dnat_ip {
\t\ttype ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
\t\telements = { 127.0.0.1 . tcp . 8080 : 10.88.0.2 . 80,
\t\t\t     127.0.0.1 . udp . 5353 : 10.88.0.3 . 53 }
\t}
\tchain publish {
\t\tdnat ip to ip daddr . meta l4proto . th dport map @dnat_ip
\t}
}
"""
    got = ex.parse_nft_elements(text)
    assert got["bridges"] == ['"kobako0"', '"kb-04ccbeeba678"']
    assert got["subnets"] == ["10.88.0.0/16"]
    assert got["internal"] == []
    assert got["dnat_ip"] == ["127.0.0.1 . tcp . 8080 : 10.88.0.2 . 80",
                              "127.0.0.1 . udp . 5353 : 10.88.0.3 . 53"]


def _doc(problems: list[str]) -> dict:
    return {"id": "ab" * 32, "name": "web", "image": "busybox", "state": "running", "pid": 4242, "objects": [
        ex.obj("namespace", "net", "4026532174  its own", facts={"enter": "nsenter -t 4242 -n"},
               read=[("/proc/4242/ns/net", "net:[4026532174]")],
               checks=[("lsns -p 4242 -t net", "4026532174"), ("ip netns list", "kobako-abab")]),
        ex.obj("network", "bridge", "veth kb-1 (host, on bridge kobako0) <-> eth0 10.88.0.2/16",
               checks=[("ip -o link show kb-1", "master kobako0")], problems=problems)]}


def test_the_text_names_each_object_with_its_commands():
    text = render(_doc([]))
    assert text.splitlines()[0] == "web (abababababab), image busybox: running, init PID 4242"
    assert "Namespaces" in text and "\nNetwork\n" in text
    # a namespace's commands on one line, with how to enter it
    assert "      $ lsns -p 4242 -t net   $ ip netns list   (enter: nsenter -t 4242 -n)" in text
    assert "      $ ip -o link show kb-1\n" in text
    assert "read /proc/4242/ns/net" not in text
    assert "      read /proc/4242/ns/net: net:[4026532174]" in render(_doc([]), verbose=True)
    assert text.rstrip().endswith("just now.")


def test_the_text_marks_what_the_kernel_contradicts():
    text = render(_doc(["veth kb-1 does not exist on the host"]))
    assert "      ! veth kb-1 does not exist on the host\n" in text
    assert "1 problem(s)" in text


def test_a_stopped_container_says_why_it_has_no_kernel_objects():
    doc = {"id": "cd" * 32, "name": "idle", "image": "busybox", "state": "exited", "pid": None,
           "note": "its namespaces ... exist only while it runs", "objects": [
               ex.obj("kernel", "objects", "none: it is not running")]}
    text = render(doc)
    assert "exited" in text.splitlines()[0] and "init PID" not in text
    assert "Not running: its namespaces ... exist only while it runs." in text
    assert "Kernel objects\n  objects    none: it is not running" in text


def test_ids_seen_from_the_host_map_back_into_the_container():
    userns = ["0 1073741824 65536"]
    assert ex.inside_id("1073741824", userns) == "0"
    assert ex.inside_id("1073742824", userns) == "1000"
    assert ex.inside_id("0", userns) == "0 (unmapped)"
    assert ex.inside_id("1000", ["0 0 4294967295"]) == "1000"

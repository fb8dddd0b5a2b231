"""Kubernetes' node interface: containerd's CRI plugin with a `kobako` runtime handler (the runc v2
shim with BinaryName = kobako-runtime), driven over gRPC the way kubelet drives it: a pod
sandbox from a locally built pause image, a container in it with CPU/memory limits and a
security context, ExecSync, ContainerStatus, the CRI log file, stop and removal.

The client is grpcio with the CRI messages this test needs (cri_v1.proto beside this file,
compiled here with grpcio-tools). containerd runs privately: root, state, socket, CNI
configuration and IPAM data under a scratch directory, network namespaces under its state
directory, a CNI bridge of its own without a gateway address or masquerading (so nothing in
the host's firewall or forwarding changes), deleted at the end with the cgroups the pod made.
The runtime is this checkout's kobako-runtime (KOBAKO_TEST_RUNTIME=runc runs runc instead)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import support
from engine_support import Kobako

pytestmark = pytest.mark.root
CONTAINERD = Path("/opt/kobako/test-tools/containerd/usr/bin")
CNI_BIN = Path("/usr/lib/cni")
REPO = Path(__file__).resolve().parents[2]
IMAGE = "docker.io/kbt/cri:1"        # busybox; CMD sleeps: the sandbox's pause process
HANDLER = "kobako"


def _grpc_modules(out: Path):
    """Compile cri_v1.proto into out and import the message and stub modules."""
    grpc = pytest.importorskip("grpc", reason="grpcio is not installed (pip install .[test])")
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is not installed")
    here = Path(__file__).parent
    rc = protoc.main(["protoc", f"-I{here}", f"--python_out={out}", f"--grpc_python_out={out}",
                      str(here / "cri_v1.proto")])
    assert rc == 0, "protoc failed on cri_v1.proto"
    sys.path.insert(0, str(out))
    try:
        return grpc, importlib.import_module("cri_v1_pb2"), importlib.import_module("cri_v1_pb2_grpc")
    finally:
        sys.path.remove(str(out))


def _runtime_binary(d: Path) -> str:
    """This checkout's kobako-runtime (a launcher like .kobako-dev), or KOBAKO_TEST_RUNTIME's."""
    if not support.is_kobako():
        return shutil.which(support.runtime_binary()) or support.runtime_binary()
    launcher = d / "kobako-runtime"
    launcher.write_text(f"#!{sys.executable} -I\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                        "from kobako.runtime.main import entry\nentry()\n")
    launcher.chmod(0o755)
    return str(launcher)


def _containerd_config(d: Path, runtime: str, bridge: str, subnet: str) -> None:
    (d / "cni").mkdir()
    (d / "cni" / "10-kbt.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": bridge,
        "plugins": [{"type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False,
                     "ipam": {"type": "host-local", "subnet": subnet, "dataDir": str(d / "ipam")}}],
    }))
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    (d / "config.toml").write_text(f"""version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[{cri}]
  sandbox_image = "{IMAGE}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "{HANDLER}"
[{cri}.containerd.runtimes.{HANDLER}]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.{HANDLER}.options]
  BinaryName = "{runtime}"
  Root = "{d}/runc"
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{d}/cni"
""")


def _kill_leftover_tasks(d: Path) -> None:
    """Tasks a failed run left (their shims outlive containerd): the init, then the shim, from
    the pid files in each task's bundle."""
    for bundle in (d / "state" / "io.containerd.runtime.v2.task").glob("*/*"):
        for name in ("init.pid", "shim.pid"):
            try:
                pid = int((bundle / name).read_text())
                os.kill(pid, 9)
                for _ in range(100):
                    if not os.path.exists(f"/proc/{pid}"):
                        break
                    time.sleep(0.05)
            except (OSError, ValueError):
                pass


def _cgroup_dirs(parent: str) -> list[Path]:
    """The pod's parent cgroup in each hierarchy (v1 controllers, or the unified tree)."""
    root = Path(support.CGROUP_ROOT)
    if (root / "cgroup.controllers").exists():
        return [root / parent.lstrip("/")]
    return [root / h / parent.lstrip("/") for h in os.listdir(root)
            if (root / h / parent.lstrip("/")).is_dir()]


def _remove_cgroups(parent: str) -> None:
    for top in _cgroup_dirs(parent):
        for sub in sorted(top.glob("**/"), key=lambda p: len(p.parts), reverse=True):
            try:
                sub.rmdir()
            except OSError:
                pass


def _cgroup_value(parent: str, cid: str, v1: tuple[str, str], v2: str) -> str:
    root = Path(support.CGROUP_ROOT)
    if (root / "cgroup.controllers").exists():
        return (root / parent.lstrip("/") / cid / v2).read_text().strip()
    return (root / v1[0] / parent.lstrip("/") / cid / v1[1]).read_text().strip()


def test_kubelet_style_pod_lifecycle_through_cri(session_base: Path, busybox_rootfs: Path):
    if not (CONTAINERD / "containerd").exists():
        pytest.skip("containerd's binaries are not unpacked (scripts/test.sh does it)")
    if not (CNI_BIN / "bridge").exists():
        pytest.skip("the CNI plugins are not installed (apt-get install containernetworking-plugins)")
    d = Path(f"/var/tmp/kbt-cri-{os.getpid()}")
    d.mkdir(mode=0o755)
    grpc, pb, pb_grpc = _grpc_modules(d)
    bridge = f"kbcri{os.getpid() % 100000}"
    subnet = f"10.233.{os.getpid() % 250}.0/24"
    parent = f"/kbt-cri-{os.getpid()}"
    _containerd_config(d, _runtime_binary(d), bridge, subnet)

    k = Kobako(session_base / "cri")
    k("import", "--change", 'CMD ["sleep", "86400"]', "--change", "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin",
      str(busybox_rootfs), "kbt/cri:1")  # runc needs the PATH an image sets; kobako-runtime has a default
    k("save", "-o", str(d / "image.tar"), "kbt/cri:1")

    env = {**os.environ, "PATH": f"{CONTAINERD}:{os.environ['PATH']}"}  # its shim is found on PATH
    had_run_dir = os.path.exists("/run/containerd")  # the shim puts its sockets there
    log = open(d / "containerd.log", "w")
    daemon = subprocess.Popen([str(CONTAINERD / "containerd"), "--config", str(d / "config.toml")], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    channel = None
    pod_id = ""
    try:
        for _ in range(200):
            if (d / "c.sock").exists():
                break
            time.sleep(0.05)
        # the CRI plugin's images live in containerd's k8s.io namespace
        cp = subprocess.run([str(CONTAINERD / "ctr"), "--address", str(d / "c.sock"), "-n", "k8s.io",
                             "images", "import", str(d / "image.tar")],
                            capture_output=True, text=True, timeout=120)
        assert cp.returncode == 0, cp.stderr
        channel = grpc.insecure_channel(f"unix://{d}/c.sock")
        rt = pb_grpc.RuntimeServiceStub(channel)
        v = rt.Version(pb.VersionRequest(version="v1"), timeout=30)
        assert (v.runtime_name, v.runtime_api_version) == ("containerd", "v1")

        pod_cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name="web", uid=f"uid-{os.getpid()}", namespace="kbt", attempt=0),
            hostname="kbt-pod", log_directory=str(d / "pods" / "web"), labels={"app": "kbt"},
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=parent))
        pod_id = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg, runtime_handler=HANDLER),
                                  timeout=120).pod_sandbox_id
        st = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id), timeout=30).status
        assert st.state == pb.SANDBOX_READY and st.runtime_handler == HANDLER
        assert st.network.ip.startswith(subnet.rsplit(".", 1)[0] + "."), st.network  # CNI gave it an address

        script = ("echo started; echo to-stderr >&2; trap 'echo got-term; exit 7' TERM; "
                  "while :; do sleep 1; done")
        ctr_cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="app"), image=pb.ImageSpec(image=IMAGE),
            command=["sh", "-c", script], envs=[pb.KeyValue(key="GREETING", value="hi")],
            log_path="app/0.log",
            linux=pb.LinuxContainerConfig(
                resources=pb.LinuxContainerResources(cpu_period=100000, cpu_quota=50000, cpu_shares=512,
                                                     memory_limit_in_bytes=64 << 20),
                security_context=pb.LinuxContainerSecurityContext(
                    run_as_user=pb.Int64Value(value=1000), readonly_rootfs=True,
                    capabilities=pb.Capability(drop_capabilities=["ALL"],
                                               add_capabilities=["NET_BIND_SERVICE"]))))
        cid = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=ctr_cfg,
                                                           sandbox_config=pod_cfg), timeout=120).container_id
        cs = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid), timeout=30).status
        assert cs.state == pb.CONTAINER_CREATED
        rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=120)
        cs = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid), timeout=30).status
        assert cs.state == pb.CONTAINER_RUNNING and cs.started_at > 0

        def exec_sync(*cmd: str) -> tuple[int, str, str]:
            r = rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=30), timeout=60)
            return r.exit_code, r.stdout.decode(), r.stderr.decode()

        assert exec_sync("sh", "-c", "echo $GREETING; exit 3") == (3, "hi\n", "")
        assert exec_sync("id", "-u")[1] == "1000\n"                          # run_as_user
        rc, _, err = exec_sync("touch", "/made-here")                        # readonly_rootfs
        assert rc != 0 and "Read-only file system" in err
        status = exec_sync("cat", "/proc/self/status")[1]
        capbnd = next(x.split()[1] for x in status.splitlines() if x.startswith("CapBnd:"))
        assert int(capbnd, 16) == 1 << 10                                     # only NET_BIND_SERVICE is left
        assert exec_sync("hostname")[1] == "kbt-pod\n"                        # the sandbox's UTS namespace
        # the limits as the runtime wrote them into the container's cgroup
        assert _cgroup_value(parent, cid, ("memory", "memory.limit_in_bytes"), "memory.max") == str(64 << 20)
        cpu_v1 = "cpu,cpuacct" if (Path(support.CGROUP_ROOT) / "cpu,cpuacct").is_dir() else "cpu"
        if (Path(support.CGROUP_ROOT) / "cgroup.controllers").exists():
            assert _cgroup_value(parent, cid, ("", ""), "cpu.max") == "50000 100000"
        else:
            assert _cgroup_value(parent, cid, (cpu_v1, "cpu.cfs_quota_us"), "") == "50000"
            assert _cgroup_value(parent, cid, (cpu_v1, "cpu.cfs_period_us"), "") == "100000"
            assert _cgroup_value(parent, cid, (cpu_v1, "cpu.shares"), "") == "512"

        rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10), timeout=60)
        cs = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid), timeout=30).status
        assert (cs.state, cs.exit_code) == (pb.CONTAINER_EXITED, 7), cs   # SIGTERM reached the trap
        assert cs.log_path == str(d / "pods" / "web" / "app" / "0.log")
        # the CRI log format: TIMESTAMP STREAM TAG(F = full line) TEXT
        entries = [line.split(" ", 3) for line in Path(cs.log_path).read_text().splitlines()]
        # (two pipes: the streams' lines interleave in any order, each stream's keep theirs)
        assert [(s, t, x) for _, s, t, x in entries if s == "stdout"] == [
            ("stdout", "F", "started"), ("stdout", "F", "got-term")]
        assert [(s, t, x) for _, s, t, x in entries if s == "stderr"] == [("stderr", "F", "to-stderr")]
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)

        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        st = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id), timeout=30).status
        assert st.state == pb.SANDBOX_NOTREADY
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        pod_id = ""
        with pytest.raises(grpc.RpcError) as e:
            rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=st.id), timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert not list((d / "runc").rglob("state.json"))  # the runtime's state went with the containers
    finally:
        if channel is not None:
            if pod_id:  # a failed run: take the pod down as kubelet would
                rt = pb_grpc.RuntimeServiceStub(channel)
                for call, req in ((rt.StopPodSandbox, pb.StopPodSandboxRequest(pod_sandbox_id=pod_id)),
                                  (rt.RemovePodSandbox, pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))):
                    try:
                        call(req, timeout=60)
                    except grpc.RpcError:
                        pass
            channel.close()
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
        _kill_leftover_tasks(d)
        _remove_cgroups(parent)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        tail = (d / "containerd.log").read_text().splitlines()[-30:]
        print("containerd's log, last lines:\n" + "\n".join(tail))  # shown when the test fails
        support.unmount_and_remove(d)
        if not had_run_dir:
            support.remove_containerd_run_dirs()

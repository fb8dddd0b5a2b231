"""Creating, running and removing containers: the engine's side of the lifecycle.

The runtime is called in-process (kobako.runtime as a library, no second
interpreter); its state lives under <run root>/runtime. The root filesystem is an
overlay the storage layer describes and the runtime mounts inside the container's
mount namespace, so it disappears with the container's last process.
"""

from __future__ import annotations

import os
import time

from kobako import errors, paths, steps
from kobako.engine import ocispec
from kobako.engine.records import (
    OWNED,
    ContainerConflict,
    ContainerError,
    ContainerNotFound,
    ContainerStore,
    owner_gone,
    this_process,
)
from kobako.engine.spec import ContainerSpec
from kobako.image.store import ImageStore, now_iso
from kobako.storage.snapshots import Snapshots


class StartError(errors.CannotStart):
    """The runtime could not start the program: exit 127 not found, 126 not executable."""


class _Tee:
    """fds 1 and 2 become pipes while the runtime runs (its init inherits them); a forked
    copier sends what arrives to the original stdout/stderr and into the log. (A process,
    not a thread: `threading` alone costs ~2 ms of `kobako run`'s start-up.)"""

    def __init__(self, log) -> None:
        self.log = log
        self.saved: list[int] = []
        self.pid = 0

    def start(self) -> None:
        import sys
        sys.stdout.flush()
        sys.stderr.flush()
        reads: dict[int, tuple[int, str]] = {}
        for fd, stream in ((1, "stdout"), (2, "stderr")):
            orig = os.dup(fd)
            os.set_inheritable(orig, False)
            r, w = os.pipe2(os.O_CLOEXEC)
            os.dup2(w, fd)  # an inheritable copy at 1/2, for the container
            os.close(w)
            self.saved.append(orig)
            reads[r] = (orig, stream)
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(1)
                os.close(2)  # the write ends: only the container may keep the pipes open
                self._copy(reads)
            finally:
                os._exit(0)
        for r in reads:
            os.close(r)

    def _copy(self, live: dict[int, tuple[int, str]]) -> None:
        import select
        while live:
            ready, _, _ = select.select(list(live), [], [])
            for r in ready:
                data = os.read(r, 65536)
                orig, stream = live[r]
                if not data:
                    del live[r]
                    continue
                try:
                    os.write(orig, data)
                except OSError:
                    pass  # our reader went away (a closed pipe): the log still gets it
                self.log.write(stream, data)
        self.log.close()

    def stop(self) -> None:
        """The container exited: give 1/2 back (the pipes' last write ends close), then wait
        for the copier to drain them."""
        for fd, orig in zip((1, 2), self.saved, strict=True):
            os.dup2(orig, fd)
        for orig in self.saved:
            os.close(orig)
        if self.pid:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
        os.close(self.log.fd)


RUNTIME_LOCK = None  # set by the API server (api/server.py): one runtime call at a time


class Engine:
    def __init__(self, root: str | None = None, run: str | None = None) -> None:
        self.root = root or paths.data_root()
        self.run_dir = run or paths.run_root()
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        self.images = ImageStore(self.root)
        self.snapshots = Snapshots(self.root)
        self.containers = ContainerStore(self.root)
        self.runtime_root = os.path.join(self.run_dir, "runtime")
        self.firewall_back()

    def firewall_back(self) -> bool:
        """kobako's nft table again when someone's `nft flush ruleset` (or a firewall's reload)
        took it away while containers have endpoints: every command checks, so none needs the
        user to. Costs a directory listing when no container has a network of kobako's, one
        netlink query (~0.05 ms) when some do; re-applying from state, ~30 ms, only after a
        flush. True when it re-applied the table."""
        try:
            with os.scandir(os.path.join(self.run_dir, "network", "endpoints")) as it:
                if not any(e.name.endswith(".json") for e in it):
                    return False
        except OSError:
            return False
        from kobako.linux.namespaces import in_user_namespace
        if in_user_namespace():
            # rootless: the table is in the user's own network namespace, where nobody else
            # flushes it; what can go is slirp4netns, and its host forwards with it
            from kobako.network import rootlessns
            if rootlessns.uplink_alive(self.run_dir):
                return False
            from kobako.network.endpoints import Endpoints
            try:
                Endpoints(self.root, self.run_dir).reload()  # (a new slirp4netns, the forwards again)
            except (errors.KobakoError, OSError):
                return False
            return True
        from kobako.network import nftables
        from kobako.network.networks import table_name
        try:
            if nftables.present(table_name(self.run_dir)):
                return False
            from kobako.network.endpoints import Endpoints
            return Endpoints(self.root, self.run_dir).restore_table()
        except (errors.KobakoError, OSError):
            return False  # no nftables here, or not allowed: `kobako network reload` says why

    def event(self, rec: dict, action: str, **attrs: object) -> None:
        from kobako.engine.events import emit
        emit(self.root, "container", action, rec["id"],
             {"name": rec.get("name", ""), "image": rec.get("imageName", ""), **attrs})

    # -- runtime calls --------------------------------------------------------
    def runtime(self, argv: list[str], log=None):
        if RUNTIME_LOCK is not None:  # the API server's threads share the runtime's module state
            with RUNTIME_LOCK:
                return self._runtime(argv, log)
        return self._runtime(argv, log)

    def _runtime(self, argv: list[str], log=None):
        from kobako.runtime import main as rt
        from kobako.runtime import state
        from kobako.runtime.log import Log

        cmd, args = rt.parse(["--root", self.runtime_root, *argv])
        mod = __import__(f"kobako.runtime.commands.{rt.COMMANDS[cmd][0]}", fromlist=["run"])
        try:
            return mod.run(args, log or Log(None))
        finally:
            state.release_all()  # the command's state lock: one-shot runtimes drop it by exiting

    def runtime_state(self, cid: str) -> str | None:
        from kobako.runtime import state
        c = state.Container(self.runtime_root, cid)
        if not os.path.isdir(c.dir):
            return None
        try:
            c.load()
            return c.status()
        except Exception:
            return "stopped"

    # -- create ----------------------------------------------------------------
    def create_container(self, spec: ContainerSpec, image: dict, image_name: str,
                         starting: bool = False) -> dict:
        """Create a container: the image's config merged under the spec (as dockerd stores
        it), the spec planned against the engine's state, then made."""
        from kobako.engine import spec as specs
        img_cfg = self.image_config(image)
        specs.merge_image(spec.config, img_cfg)
        spec.config["Image"] = image_name
        opts = specs.plan(self, spec)
        return self.create(image, image_name, opts, spec, starting, img_cfg)

    @staticmethod
    def emulate(arch: str | None) -> str:
        """The foreign architecture a container's binaries run under QEMU for ('' when the
        host runs them itself), its binfmt handler made sure of (engine/emulation.py)."""
        from kobako.image.manifest import host_platform
        if not arch or arch == host_platform()["architecture"]:
            return ""
        from kobako.engine import emulation  # only for foreign images: off a native run's path
        return emulation.ensure_for(arch)

    def image_config(self, image: dict) -> dict:
        return self.image_config_doc(image).get("config") or {}

    def image_config_doc(self, image: dict) -> dict:
        """The image's whole config document (architecture, os, variant, config, rootfs...)."""
        from kobako.runtime import jsonfast
        return jsonfast.loads(self.images.content.read(image["id"]))

    def create(self, image: dict, image_name: str, opts: ocispec.RunOptions, spec: ContainerSpec,
               starting: bool = False, img_cfg: dict | None = None) -> dict:
        """A container from its spec (engine/spec.py) and the run options planned from it.
        `starting`: `run` in the foreground starts it at once; the record says so from the
        start, which saves a rewrite on the start-up path."""
        c, h = spec.config, spec.host
        remove = h["AutoRemove"]
        if img_cfg is None:
            img_cfg = self.image_config(image)
        ocispec.command_of(img_cfg, opts)  # fail before anything is made
        emulated = self.emulate(image.get("architecture"))  # QEMU's handler, or why not: before too
        vols: list[dict] = []
        first = {
            "image": image["id"], "imageName": image_name, "created": now_iso(),
            "status": "running" if starting else "created", "chainIds": image["chainIds"], "volumes": vols,
            **({"started": now_iso(), "owner": this_process("run")} if starting else {}),
            "options": {"command": opts.command, "entrypoint": opts.entrypoint, "tty": opts.tty,
                        "autoRemove": remove, "interactive": c["OpenStdin"]},
            **spec.record(),
        }
        rp = h["RestartPolicy"]
        if rp["Name"] not in ("", "no"):
            first["restartPolicy"] = rp
        if c["StopSignal"]:
            first["stopSignal"] = c["StopSignal"]
        if c["StopTimeout"] is not None:
            first["stopTimeout"] = c["StopTimeout"]
        if c["Labels"]:
            first["labels"] = c["Labels"]
        log = h["LogConfig"]
        if log["Config"] or log["Type"] != "json-file":
            first["logOptions"] = {"driver": log["Type"], **{
                k: ocispec.parse_size(v) if k == "max-size" else int(v) if k == "max-file" else v
                for k, v in log["Config"].items() if k in ("max-size", "max-file", "compress")}}
        if opts.join_ids:
            first["joinNamespaces"] = dict(opts.join_ids)
        if emulated:
            first["emulated"] = emulated
        # Each step registers its undo before the next one runs; a failure (a name taken, no
        # user-namespace range left, a bad bind) undoes all of them, anonymous volumes included.
        record = steps.Record("engine")
        try:
            rec = self._make(record, image, opts, spec, first, img_cfg, vols)
        except BaseException as e:
            record.unwind(e)
            raise
        self.event(rec, "create")
        return rec

    def _make(self, record: steps.Record, image: dict, opts: ocispec.RunOptions, spec: ContainerSpec,
              first: dict, img_cfg: dict, vols: list[dict]) -> dict:
        """The steps of create: volumes, record, directories, bundle."""
        vstore = None
        if opts.volumes:
            from kobako.storage.volumes import VolumeStore
            vstore = VolumeStore(self.root)
        for vname, dest, ro in opts.volumes:  # recorded before use: rm/prune see the user
            v = vstore.create(vname)
            vols.append({"name": v["Name"], "destination": dest, "readOnly": ro, "anonymous": vname is None})
            if vname is None:  # made for this container only: it goes with it
                record.made("volume", "mkdir(2)", f"anonymous volume {v['Name']} for {dest}",
                            lambda n=v["Name"]: vstore.remove(n, []), f"anonymous volume {v['Name']} removed")
            else:
                record.made("volume", "mkdir(2)", f"volume {v['Name']} for {dest} (kept: it has a name)")
        if opts.userns is None:
            rec = self.containers.create(first, spec.name)
        else:  # the range is taken and recorded under one lock: no two containers share one
            from kobako.engine import userns
            with paths.FileLock(os.path.join(self.containers.dir, "userns.lock")):
                userns.allocate(opts.userns, self.containers.all())
                rec = self.containers.create({**first, "userns": opts.userns.record()}, spec.name)
        cid = rec["id"]
        record.made("record", "write", f"container record {self.containers.path(cid)} (name {rec['name']})",
                    lambda: self.containers.remove_dir(cid), f"container directory {cid[:12]} removed")
        upper, work = self.containers.path(cid, "upper"), self.containers.path(cid, "work")
        bundle = self.containers.path(cid, "bundle")
        for d in (upper, work, os.path.join(bundle, "rootfs")):
            os.makedirs(d, mode=0o755)
        record.made("dirs", "mkdir(2)", f"upper, work and bundle/rootfs under {self.containers.path(cid)}")
        mount = self.snapshots.mount_for(image["chainIds"], upper, work,
                                         volatile=first["options"]["autoRemove"])
        record.made("overlay", "overlay mount described", f"{mount.type} {','.join(mount.options)} "
                    "(the runtime mounts it in the container's mount namespace)")
        user = self.resolve_user(image["chainIds"], opts.user or (opts.userns.user if opts.userns else "")
                                 or img_cfg.get("User") or "")
        if opts.group_add:
            user = (user[0], user[1], user[2] + [self.resolve_group(image["chainIds"], g)
                                                 for g in opts.group_add])
        if opts.links:
            self._links(rec, opts)
        for host, _, _ in opts.binds:
            if not os.path.exists(host):
                os.makedirs(host, 0o755)  # docker -v creates a missing host directory
                record.made("bind-source", "mkdir(2)", f"missing bind source {host} (kept, as docker does)")
        opts.etc_files = self._etc_files(cid, opts)
        record.made("etc", "write", "/etc/hostname, /etc/hosts, /etc/resolv.conf for bind mounts: "
                    + ", ".join(opts.etc_files.values()))
        if opts.userns is not None:  # the container's root may edit them, as Docker's can
            from kobako.engine import userns
            userns.chown_for(opts.userns, list(opts.etc_files.values()))
        net = self._net_record(opts, img_cfg, cid)
        lowers = [self.snapshots.fs(c) for c in reversed(image["chainIds"])]
        for v in vols:  # an empty volume starts with the image's files at its destination
            vstore.seed(v["name"], lowers, v["destination"])
            opts.binds.append((vstore.mountpoint(v["name"]), v["destination"], v["readOnly"]))
            opts.idmapped.add(v["destination"])  # stored unshifted, like the layers
        config = ocispec.build(img_cfg, opts, cid, user, mount.to_json())
        from kobako.runtime import jsonfast
        with open(os.path.join(bundle, "config.json"), "w") as f:
            f.write(jsonfast.dumps(config))
        record.made("bundle", "write", f"OCI bundle {bundle}/config.json")
        rec["bundle"] = bundle
        if net is not None:
            rec["net"] = net
        self.containers.save(rec)
        record.forget()  # the container owns what was made: rm removes it
        return rec

    @staticmethod
    def _net_record(opts: ocispec.RunOptions, img_cfg: dict, cid: str) -> dict | None:
        """What the container's network is to be, for network/endpoints.py at each start."""
        net = dict(opts.net)
        if net.get("mode") != "bridge":
            return net if net.get("mode") not in (None, "none") else None
        if net.pop("publishAll", False):
            from kobako.network import ports
            have = {(p["containerPort"], p["proto"]) for p in net.get("ports") or []}
            more = ports.exposed(img_cfg, net.get("expose") or [])
            net["ports"] = (net.get("ports") or []) + [
                p for p in more if (p["containerPort"], p["proto"]) not in have]
        net["hostsFile"] = opts.etc_files.get("/etc/hosts")
        net["resolvFile"] = opts.etc_files.get("/etc/resolv.conf")  # names a user network's DNS server
        if opts.dns:
            net["dns"] = list(opts.dns)  # where that server forwards this container's other names
        net["hostname"] = opts.hostname or cid[:12]
        return net

    def _etc_files(self, cid: str, opts: ocispec.RunOptions) -> dict[str, str]:
        """/etc/hostname, /etc/hosts and /etc/resolv.conf of the container, as Docker writes
        them: files in the container's directory, bind-mounted over the image's."""
        out: dict[str, str] = {}
        if opts.network == "host":
            hostname = os.uname().nodename
        else:
            hostname = opts.hostname or cid[:12]
        files = {
            "/etc/hostname": hostname + "\n",
            "/etc/hosts": ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                           "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
                           "ff02::2\tip6-allrouters\n" + f"127.0.1.1\t{hostname}\n"
                           + "".join(f"{ip}\t{name}\n" for name, ip in opts.extra_hosts)),  # --add-host
        }
        try:
            with open("/etc/resolv.conf") as f:
                resolv = f.read()
        except OSError:
            resolv = ""
        if opts.network != "host":  # the host's loopback resolvers are not reachable from the container
            resolv = container_resolv(resolv)
        if opts.dns or opts.dns_search or opts.dns_options:  # --dns, --dns-search, --dns-option
            keep = [ln for ln in resolv.splitlines()
                    if not ((opts.dns and ln.startswith("nameserver")) or
                            (opts.dns_search and ln.startswith(("search", "domain"))) or
                            (opts.dns_options and ln.startswith("options")))]
            keep += [f"nameserver {d}" for d in opts.dns]
            if opts.dns_search:
                keep.append("search " + " ".join(opts.dns_search))
            if opts.dns_options:
                keep.append("options " + " ".join(opts.dns_options))
            resolv = "\n".join(keep) + "\n"
        files["/etc/resolv.conf"] = resolv
        for dest, content in files.items():
            p = self.containers.path(cid, os.path.basename(dest))
            with open(p, "w") as f:
                f.write(content)
            out[dest] = p
        return out

    def resolve_user(self, chains: list[str], user: str) -> tuple[int, int, list[int]]:
        """user, uid, user:group or uid:gid, names looked up in the image's /etc/passwd and /etc/group."""
        if not user:
            return 0, 0, []
        u, _, g = user.partition(":")

        def lookup(fname: str, key: str) -> tuple[int, int] | None:
            text = self.image_file(chains, fname)
            for line in (text or "").splitlines():
                f = line.split(":")
                if len(f) >= 4 and f[0] == key:
                    return int(f[2]), int(f[3])
            return None

        if u.isdigit():
            uid, gid = int(u), 0
            hit = None
            text = self.image_file(chains, "etc/passwd") or ""
            for line in text.splitlines():
                f = line.split(":")
                if len(f) >= 4 and f[2] == u and f[3].isdigit():
                    hit = int(f[3])
                    break
            gid = hit if hit is not None else 0
        else:
            r = lookup("etc/passwd", u)
            if r is None:
                raise ContainerError(f"unable to find user {u}: no matching entries in passwd file")
            uid, gid = r
        if g:
            if g.isdigit():
                gid = int(g)
            else:
                r = lookup("etc/group", g)
                if r is None:
                    raise ContainerError(f"unable to find group {g}: no matching entries in group file")
                gid = r[0]
        return uid, gid, []

    def remove_link(self, rec: dict, alias: str) -> None:
        """A legacy link goes from the container's spec (its variables stay in a running
        process, as with Docker)."""
        links = list((rec.get("hostConfig") or {}).get("Links") or [])
        keep = [x for x in links if (x.partition(":")[2] or x.partition(":")[0]).rsplit("/", 1)[-1] != alias]
        if keep == links:
            raise ContainerNotFound(f"no such link: /{rec['name']}/{alias}")
        self.containers.update(rec["id"], hostConfig={**rec["hostConfig"], "Links": keep or None})

    def resolve_group(self, chains: list[str], group: str) -> int:
        """--group-add: a number, or a name in the image's /etc/group."""
        if group.isdigit():
            return int(group)
        for line in (self.image_file(chains, "etc/group") or "").splitlines():
            f = line.split(":")
            if len(f) >= 3 and f[0] == group and f[2].isdigit():
                return int(f[2])
        raise ContainerError(f"unable to find group {group}: no matching entries in group file")

    def _links(self, rec: dict, opts: ocispec.RunOptions) -> None:
        """Legacy --link: each linked container's address under its alias and name in
        /etc/hosts, and Docker's variables (ALIAS_NAME, ALIAS_ENV_*, ALIAS_PORT_*)."""
        from kobako.network.endpoints import Endpoints
        eps = Endpoints(self.root, self.run_dir)
        for link in opts.links:
            other = self.containers.get(link["id"]) or {}
            st = eps.state(link["id"]) or {}
            ip = next((n["ip"] for n in (st.get("networks") or {}).values() if n.get("ip")), "")
            alias, prefix = link["alias"], link["alias"].upper().replace("-", "_")
            if ip:
                opts.extra_hosts.append((f"{alias} {other.get('name', '')} {link['id'][:12]}", ip))
            env = [f"{prefix}_NAME=/{rec['name']}/{alias}"]
            skip = ("HOME=", "PATH=", "HOSTNAME=")
            for v in (other.get("config") or {}).get("Env") or []:
                if "=" in v and not v.startswith(skip):
                    env.append(f"{prefix}_ENV_{v}")
            exposed = sorted((other.get("config") or {}).get("ExposedPorts") or {},
                             key=lambda p: (int(p.partition("/")[0].split("-")[0]), p))
            for i, port in enumerate(exposed):
                num, _, proto = port.partition("/")
                proto = proto or "tcp"
                url = f"{proto}://{ip}:{num}"
                if i == 0:
                    env.append(f"{prefix}_PORT={url}")
                key = f"{prefix}_PORT_{num}_{proto.upper()}"
                env += [f"{key}={url}", f"{key}_ADDR={ip}", f"{key}_PORT={num}", f"{key}_PROTO={proto}"]
            opts.link_env += env

    def image_file(self, chains: list[str], rel: str) -> str | None:
        """A small file as the container would see it: the topmost layer that has it wins."""
        for c in reversed(chains):
            p = os.path.join(self.snapshots.fs(c), rel)
            try:
                with open(p, errors="replace") as f:
                    return f.read(1 << 20)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                pass
            except OSError:
                return None
        return None

    # -- run (foreground) -------------------------------------------------------
    def _tee_output(self, rec: dict):
        """A foreground container's stdout/stderr through pipes: to our own stdout/stderr and
        into its json-file log, as a detached one's (so `logs` works for both)."""
        from kobako.engine.jsonlog import JsonLog
        return _Tee(JsonLog.of_container(self.containers.path(rec["id"]), rec))

    def _pty_log(self, rec: dict):
        """The json-file log of a foreground `run -t`, fed by the runtime's pty copy loop."""
        from kobako.engine.jsonlog import JsonLog
        from kobako.runtime import console
        log = JsonLog.of_container(self.containers.path(rec["id"]), rec)
        console.OUTPUT_TEE = lambda data: log.write("stdout", data)
        return log

    def run_foreground(self, rec: dict, remove: bool, sig_proxy: bool = True) -> int:
        """`sig_proxy` false (docker's --sig-proxy=false, without a tty): the signals this
        process gets are not passed to the container (kobako/runtime/commands/run.PROXY)."""
        cid = rec["id"]
        if rec.get("status") != "running":  # not marked so at create (see create's `starting`)
            rec.update(status="running", started=now_iso(), owner=this_process("run"))
            # field by field, not save(): a concurrent rename or update of the record must survive
            self.containers.update(cid, status="running", started=rec["started"], owner=rec["owner"])
        self.event(rec, "start")
        code = 125
        from kobako.runtime.errors import RuntimeFailure
        steps.fault("run:before-runtime")
        if steps.armed("run:container-running"):
            self._kill_self_when_running(cid)
        # Logged like a detached container, except with --rm: that log is deleted at exit, and
        # its copier would cost ~5 ms of start-up. With a pty the runtime's own copy loop logs.
        tty = bool((rec.get("options") or {}).get("tty"))
        tee = None if tty or remove else self._tee_output(rec)
        pty_log = self._pty_log(rec) if tty and not remove else None
        bridged = (rec.get("net") or {}).get("mode") == "bridge"
        try:
            if bridged:
                self._attach(rec)
            if tee is not None:
                tee.start()
            from kobako.runtime.commands import run as rt_run
            rt_run.PROXY = sig_proxy or tty  # docker proxies only without a tty: with one, as ever
            try:
                code = self.runtime(["run", "--bundle", rec["bundle"], cid])
            finally:
                rt_run.PROXY = True
                if tee is not None:
                    tee.stop()
                if pty_log is not None:
                    from kobako.runtime import console
                    console.OUTPUT_TEE = None
                    pty_log.close()
        except RuntimeFailure as e:  # the program did not start: docker's 126/127
            from kobako.engine import hostcheck
            hostcheck.hint_start_failure(e)  # or the host lacks something: its check says what
            rec["error"] = str(e)
            err = StartError(str(e))
            code = err.exit_code
            raise err from None
        finally:
            if bridged:
                self.detach_network(rec["id"], os.getpid(), sync=False)
            rec.update(status="exited", exitCode=code, finished=now_iso())
            self.event(rec, "die", exitCode=str(code))
            if remove:
                self.remove(rec, force=True)
            else:
                try:
                    self.containers.update(cid, status="exited", exitCode=code, finished=rec["finished"],
                                           **({"error": rec["error"]} if rec.get("error") else {}))
                except (ContainerError, ContainerNotFound):
                    pass  # removed meanwhile (rm -f)
        return code

    def _attach(self, rec: dict) -> None:
        """The foreground container's network. A port or address another container holds may
        belong to one whose owner was killed: those are settled, and the attach tried again."""
        from kobako.network.endpoints import Endpoints
        from kobako.network.networks import NetworkError
        from kobako.network.ports import PortError
        try:
            try:
                Endpoints(self.root, self.run_dir).attach(rec, os.getpid())
            except (NetworkError, PortError):
                if not self.recover_orphans():
                    raise
                Endpoints(self.root, self.run_dir).attach(rec, os.getpid())
        except NetworkError as e:  # no nftables, the default subnet taken...: the host says which
            from kobako.engine import hostcheck
            hostcheck.hint(e, "network")
            raise

    def detach_network(self, cid: str, gen: int | None = None, sync: bool = True) -> None:
        from kobako.network.endpoints import Endpoints
        Endpoints(self.root, self.run_dir).detach(cid, gen, sync)

    def sweep_networks(self) -> list[str]:
        """What containers that are not running left of their networks (kill -9 midway)."""
        if not os.path.isdir(os.path.join(self.run_dir, "network")):
            return []
        from kobako.network.endpoints import Endpoints
        running = {c for c in self.containers.ids()
                   if self.runtime_state(c) in ("running", "paused", "created")}
        return Endpoints(self.root, self.run_dir).sweep(running)

    # -- detached: through the monitor ---------------------------------------------
    def listed(self) -> list[tuple[dict, str]]:
        """Every container with its state, as `ps` and GET /containers/json list them: a --rm
        container whose owner was killed is removed by this very look at it, not listed."""
        return [(rec, st) for rec in self.containers.all() if (st := self.state(rec)) != "removing"]

    def state(self, rec: dict) -> str:
        """Docker's status words: created, running, paused, restarting, exited. A container
        whose owner was killed (records.py) and whose init has ended is settled on the way:
        `rec` then says exited, with why; one with --rm is removed ("removing")."""
        st = self.runtime_state(rec["id"])
        if st in ("running", "paused"):
            return st
        if rec.get("status") in OWNED:
            why = owner_gone(rec, ran=st is not None)
            if why is not None and not self._recover(rec, st, why):
                return "removing"
        if rec.get("status") == "restarting":
            return "restarting"
        if rec.get("status") in ("exited", "running") or st == "stopped":
            return "exited"
        return "created"

    def _recover(self, rec: dict, st: str | None, why: str) -> bool:
        """Settle a container whose owner is gone: exited with exit code 255 (unknown, as
        containerd reports a task whose dead shim gave no status) and `why` in State.Error, then what it left
        torn down: runtime state and cgroup, network namespace, veth, nft elements, address.
        `rec` is updated in place; False when it was removed (--rm). The container's
        init has ended (or never ran the program: a `created` init waits for a start that
        will not come), so nothing here stops a container that still runs."""
        cid = rec["id"]
        ep = None
        if (rec.get("net") or {}).get("mode") == "bridge":
            from kobako.network.endpoints import Endpoints
            ep = Endpoints(self.root, self.run_dir).state(cid)
        mine: list[bool] = []

        def exited(old: object) -> object:  # under the record's lock: one command settles it
            if old in OWNED:
                mine.append(True)
                return "exited"
            return old
        try:  # the keys are applied in this order: `mine` is known for the ones after status
            fresh = self.containers.update(cid, status=exited, exitCode=lambda o: 255 if mine else o,
                                           error=lambda o: why if mine else o,
                                           finished=lambda o: now_iso() if mine else o,
                                           pid=lambda o: 0 if mine else o)
        except ContainerNotFound:
            return False
        rec.update(fresh)
        if not mine:
            return True  # another command settled it meanwhile
        self.event(rec, "die", exitCode="255")
        if (rec.get("options") or {}).get("autoRemove"):
            self.remove(rec, force=True)
            return False
        from kobako.runtime.errors import RuntimeFailure
        if st is not None:
            try:  # --force only for an init that waits: a stopped one needs none
                self.runtime(["delete", *(["--force"] if st in ("created", "creating") else []), cid])
            except RuntimeFailure:
                pass  # started again meanwhile, or gone already
        if ep is not None:  # only that start's network: a newer start's stays
            self.detach_network(cid, ep.get("gen"))
        return True

    def recover_orphans(self) -> list[str]:
        """Settle every container whose owner is gone and whose init has ended: their IDs."""
        out = []
        for rec in self.containers.all():
            if rec.get("status") in OWNED:
                if self.state(rec) == "removing" or rec.get("status") not in OWNED:
                    out.append(rec["id"])
        return out

    def start(self, rec: dict, attach: bool = False, stdin: bool = False, again: bool = True):
        """Start a created or exited container under the monitor; returns the init's PID, or
        with `attach`, (reply, connection): the connection then carries the container's stdio.
        A start that fails while containers whose owner was killed hold ports or addresses is
        tried `again` once they are settled."""
        from kobako.engine import monitor
        st = self.state(rec)
        if st in ("running", "paused"):
            return rec.get("pid", 0)
        if rec.get("emulated"):  # the handler made at create may be gone (a reboot)
            self.emulate(rec["emulated"])
        if self.runtime_state(rec["id"]) is not None:  # a stopped runtime container: clear it first
            self.runtime(["delete", "--force", rec["id"]])
        # owned by this command until the monitor, taking the request, names itself
        self.containers.update(rec["id"], status="starting", error=None, stoppedByUser=False,
                               owner=this_process("start"))
        req = {"op": "start", "id": rec["id"], "attach": attach, "stdin": stdin}
        for attempt in range(2):
            s = monitor.connect(self.root, self.run_dir)
            try:
                r = monitor.request(s, req, timeout=120, fd=steps.trace_fd())  # start --trace
                break
            except TimeoutError:
                s.close()
                raise
            except OSError:
                # the monitor was going away, idle, as we connected: a new one takes the request
                s.close()
                if attempt:
                    raise
                time.sleep(0.1)
            except BaseException:
                s.close()
                raise
        if not r.get("ok"):
            s.close()
            if again and self.recover_orphans():
                return self.start(self.containers.get(rec["id"]) or rec, attach, stdin, again=False)
            raise StartError(r.get("error") or "the container did not start")
        if attach:
            return r, s
        s.close()
        return int(r["pid"])

    def wait(self, rec: dict, timeout: float | None = None) -> int:
        """Block until the container exits; its exit code."""
        from kobako.engine import monitor
        if self.state(rec) not in ("running", "paused", "restarting"):
            return int((self.containers.get(rec["id"]) or rec).get("exitCode", 0))
        try:
            s = monitor.connect(self.root, self.run_dir, spawn=False)
        except OSError:
            s = None
        if s is not None:
            try:
                r = monitor.request(s, {"op": "wait", "id": rec["id"]}, timeout=timeout)
                if r.get("ok"):
                    return int(r.get("exitCode", 0))
                # "unknown": the monitor does not hold it (a foreground run): watch the runtime
            except TimeoutError:
                raise
            except (OSError, ValueError):
                pass
            finally:
                s.close()
        # no monitor (it was killed): poll the runtime's view; the exit code is lost, and the
        # exit is recorded here if the container's owner is gone (state() settles it)
        end = None if timeout is None else time.monotonic() + timeout
        while self.runtime_state(rec["id"]) in ("running", "paused"):
            if end is not None and time.monotonic() > end:
                raise TimeoutError
            time.sleep(0.05)
        now = self.containers.get(rec["id"]) or rec
        if self.state(now) != "removing" and now.get("status") in OWNED:
            self.settle(rec["id"])  # its owner lives and is about to record the exit
            now = self.containers.get(rec["id"]) or now
        return int(now.get("exitCode", 137))

    def _kill_self_when_running(self, cid: str) -> None:
        """Fault injection: SIGKILL this CLI once the runtime reports the container running."""
        import signal
        import threading

        def watch() -> None:
            while self.runtime_state(cid) != "running":
                time.sleep(0.005)
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Thread(target=watch, daemon=True).start()

    def _tell_monitor(self, cid: str, op: str) -> None:
        from kobako.engine import monitor
        try:
            s = monitor.connect(self.root, self.run_dir, spawn=False)
        except OSError:
            return
        try:
            monitor.request(s, {"op": op, "id": cid}, timeout=5)
        except (OSError, ValueError):
            pass
        finally:
            s.close()

    def kill(self, rec: dict, sig: str = "KILL", user_stop: bool = True) -> None:
        """Send `sig` (a name, with or without SIG, or a number) to the container's init. A
        SIGKILL returns once the container is down and its record says so, as dockerd's."""
        from kobako.runtime.container import signal_number
        from kobako.runtime.errors import RuntimeFailure
        try:
            signum = signal_number(str(sig))
        except RuntimeFailure:
            raise errors.InvalidArgument(f"Invalid signal: {sig}") from None
        st = self.state(rec)
        if st not in ("running", "paused"):
            raise ContainerConflict(f"Cannot kill container: {rec['name']}: Container {rec['id']} "
                                    "is not running")
        if user_stop:
            self._tell_monitor(rec["id"], "stopping")  # a stopped container is not restarted
            self.containers.update(rec["id"], stoppedByUser=True)  # unless-stopped stays down
            if rec.get("status") == "restarting":
                self.containers.update(rec["id"], status="exited")
        self.event(rec, "kill", signal=str(signum))
        try:
            if st == "paused":
                self.runtime(["resume", rec["id"]])
            self.runtime(["kill", rec["id"], str(signum)])
        except RuntimeFailure:
            if self.state(rec) in ("running", "paused"):
                raise
            raise ContainerConflict(f"Cannot kill container: {rec['name']}: Container {rec['id']} "
                                    "is not running") from None
        if signum == 9:
            try:
                self.wait(rec, timeout=10)
            except TimeoutError:
                pass
            self.settle(rec["id"])

    def settle(self, cid: str, timeout: float = 5.0) -> None:
        """Wait until a container whose init has gone is recorded as exited: the monitor (or the
        foreground `run`) writes the record just after it reaps the init, and a client that
        reads the state right after a stop or kill must not see it running."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rec = self.containers.get(cid)
            if rec is None or rec.get("status") not in ("running", "starting") or \
                    self.runtime_state(cid) in ("running", "paused"):
                return
            time.sleep(0.02)

    def freezable(self, rec: dict) -> bool:
        """Whether the container's cgroup has a freezer (`pause` works)."""
        from kobako.runtime import state
        from kobako.runtime.cgroups import manager_for
        c = state.Container(self.runtime_root, rec["id"])
        try:
            c.load()
        except Exception:  # noqa: BLE001 - gone meanwhile
            return False
        return manager_for(c.data).has_freezer()

    def pause(self, rec: dict) -> None:
        st = self.state(rec)
        if st == "paused":
            raise ContainerConflict(f"Container {rec['id']} is already paused")
        if st != "running":
            raise ContainerConflict(f"Container {rec['id']} is not running")
        self.runtime(["pause", rec["id"]])
        self.event(rec, "pause")

    def unpause(self, rec: dict) -> None:
        if self.state(rec) != "paused":
            raise ContainerConflict(f"Container {rec['id']} is not paused")
        self.runtime(["resume", rec["id"]])
        self.event(rec, "unpause")

    def stop(self, rec: dict, timeout: float | None = None) -> None:
        """The stop signal, then SIGKILL after `timeout` seconds (the container's stop timeout,
        10 by default); returns once the container is down and recorded so."""
        # First: it may have just exited on its own, the monitor not yet told; it would then
        # restart it after this returned (restart policies end at a user's stop)
        if (rec.get("restartPolicy") or {}).get("Name", "no") != "no":
            self._tell_monitor(rec["id"], "stopping")
        if rec.get("status") == "restarting":
            self.containers.update(rec["id"], status="exited")
        if self.state(rec) not in ("running", "paused"):
            return
        t = timeout if timeout is not None else float(rec.get("stopTimeout", 10))
        sig = rec.get("stopSignal") or "TERM"
        try:
            self.kill(rec, sig)
            self.wait(rec, timeout=t)
        except TimeoutError:
            pass
        except ContainerConflict:
            pass  # it exited meanwhile
        if self.state(rec) in ("running", "paused"):
            try:
                self.kill(rec, "KILL")
            except ContainerConflict:
                pass
        self.settle(rec["id"])

    def restart(self, rec: dict, timeout: float | None = None) -> None:
        self.stop(rec, timeout)
        self.start(self.containers.get(rec["id"]) or rec)

    def rename(self, rec: dict, new: str) -> None:
        """A new name, unique among containers (a leading / is Docker's and dropped)."""
        from kobako.engine.records import valid_name
        new = new.removeprefix("/")
        if not new:
            raise errors.InvalidArgument("Neither old nor new names may be empty")
        if not valid_name(new):
            raise errors.InvalidArgument(f"Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                                         "are allowed")
        if new == rec["name"]:
            raise errors.InvalidArgument("Renaming a container with the same name as its current name")
        with self.containers.names_locked():
            for r in self.containers.all():
                if r["name"] == new:
                    raise ContainerConflict(f'Conflict. The container name "/{new}" is already in use by '
                                            f'container "{r["id"]}". You have to remove (or rename) that '
                                            "container to be able to reuse that name.")
            self.containers.update(rec["id"], name=new)
        self.event({**rec, "name": new}, "rename", oldName="/" + rec["name"])

    def prune(self, filters: dict[str, list[str]] | None = None) -> tuple[list[str], int]:
        """Remove every container that is not running (created or exited), as dockerd's prune:
        (their IDs, the bytes their changes took). Filters: until=TIME (created before it),
        label=KEY[=VALUE], label!=KEY[=VALUE]."""
        from kobako.engine import filters as flts
        from kobako.engine.logs import parse_time
        from kobako.paths import dir_size
        flt = filters or {}
        for k in flt:
            if k not in ("until", "label", "label!"):
                raise errors.InvalidArgument(f"Invalid filter '{k}'")
        until = flts.until(flt)
        removed, freed = self.remove_orphans(), 0
        for rec in self.containers.all():
            if self.state(rec) in ("running", "paused", "restarting"):
                continue
            if until is not None and parse_time(rec.get("created") or "1970-01-01T00:00:00Z") >= until:
                continue
            if not flts.labels_pass(rec.get("labels") or {}, flt):
                continue
            size = dir_size(self.containers.path(rec["id"], "upper"), allocated=True)
            try:
                self.remove(rec)
            except (ContainerConflict, ContainerNotFound):
                continue  # started or removed meanwhile
            removed.append(rec["id"])
            freed += size
        return removed, freed

    def remove_orphans(self) -> list[str]:
        """Container directories without a record: a create killed between mkdir and its first
        write. Under the names lock no create is half-way, so what is there is an orphan."""
        gone = []
        self.containers.sweep_trash()
        with self.containers.names_locked():
            for cid in self.containers.ids():
                if self.containers.get(cid) is None:
                    if self.runtime_state(cid) is not None:
                        self.runtime(["delete", "--force", cid])
                    self.containers.remove_dir(cid)
                    gone.append(cid)
        self.sweep_networks()
        return gone

    # -- remove ----------------------------------------------------------------
    def remove(self, rec: dict, force: bool = False, volumes: bool = False) -> None:
        cid = rec["id"]
        st = self.runtime_state(cid)
        if st in ("running", "paused", "created") and not force:
            raise ContainerConflict(f"cannot remove container {rec['name']}: it is {st}; stop it first or "
                                 "use rm -f")
        if force and st in ("running", "paused"):
            self._tell_monitor(cid, "stopping")
        if st is not None:
            from kobako.runtime.errors import RuntimeFailure
            try:
                self.runtime(["delete", "--force", cid])
            except RuntimeFailure:
                time.sleep(0.05)
                self.runtime(["delete", "--force", cid])
        steps.fault("rm:runtime-deleted")
        if (rec.get("net") or {}).get("mode") == "bridge":
            self.detach_network(cid)
        self.containers.remove_dir(cid)
        steps.show("engine", "undo: rm -r", f"container directory {cid[:12]} (record, upper, work, bundle) "
                   "removed")
        self.event(rec, "destroy")
        anon = [v["name"] for v in rec.get("volumes") or [] if v.get("anonymous")]
        if volumes and anon or (rec.get("options") or {}).get("autoRemove") and anon:
            from kobako.storage.volumes import VolumeError, VolumeStore
            vs, others = VolumeStore(self.root), self.containers.all()
            for name in anon:  # docker rm -v (and --rm): anonymous volumes go with their container
                try:
                    vs.remove(name, vs.users(others, name))
                    steps.show("engine", "undo: rm -r", f"anonymous volume {name} removed")
                except VolumeError:
                    pass


# Docker's fallback when the host has no nameserver a container can reach (libnetwork's resolvconf)
DEFAULT_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
SYSTEMD_RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"


def _loopback_nameserver(ln: str) -> bool:
    f = ln.split()
    return len(f) > 1 and f[0] == "nameserver" and f[1].startswith(("127.", "::1"))


def container_resolv(host_resolv: str, upstream_path: str = SYSTEMD_RESOLVED_UPSTREAM) -> str:
    """The host's resolv.conf as a container on its own network sees it, as dockerd writes it:
    loopback nameservers (unreachable from the container) dropped; systemd-resolved's stub
    (127.0.0.53) replaced by the upstream servers it forwards to; with none left, Google's."""
    if any(ln.split()[1:2] == ["127.0.0.53"] for ln in host_resolv.splitlines() if _loopback_nameserver(ln)):
        try:
            with open(upstream_path) as f:
                host_resolv = f.read()
        except OSError:
            pass
    lines = [ln for ln in host_resolv.splitlines() if not _loopback_nameserver(ln)]
    if not any(ln.split()[:1] == ["nameserver"] for ln in lines):
        lines += [f"nameserver {ip}" for ip in DEFAULT_NAMESERVERS]
    return "\n".join(lines) + "\n"


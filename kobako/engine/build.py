"""Building an image from a Dockerfile: Docker's legacy builder, on the engine's own
container model.

Each stage starts from its base (an image, `scratch`, or an earlier stage) and each
instruction is one step. A metadata step (ENV, LABEL, CMD...) changes the image config and
adds an empty-layer history entry. A RUN step is a container made from a ContainerSpec as
`run` makes one (same defaults, same armour), started under the monitor with its output
relayed; its upper directory, once it exits, becomes the step's layer (a tar blob, and the
very directory moved in as the snapshot: nothing is copied or unpacked again). A COPY/ADD
step writes into a fresh upper directory over the parent's layers, mounted in a private
mount namespace of a child process, so a build killed midway leaves no mount.

Every step has a cache key (image/buildcache.py): an unchanged step reuses its layer and
history entry without running, so an unchanged rebuild gives the same image ID.
`cache_from` images serve instead when given (their history must match step by step, as
dockerd's).

Errors a Dockerfile or a context can cause are raised before or at the failing step; a
failing RUN raises StepFailed with its exit code. Whatever a step made (container, upper
directory, temp snapshot) is removed on the way out.
"""

from __future__ import annotations

import copy
import json
import os
import posixpath
import shutil

from kobako import errors
from kobako.image import buildcache, dockerfile
from kobako.image.context import ContextError, Tree

PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
              "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
DEFAULT_SHELL = ["/bin/sh", "-c"]
MULTI = "When using COPY with more than one source file, the destination must be a directory and end with a /"


class BuildError(errors.InvalidArgument):
    pass


class StepFailed(errors.KobakoError):
    """A RUN step's command exited non-zero: docker's message and its exit code."""
    status = 500
    exit_code = 1

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Output:
    """Where a build reports, as dockerd's legacy builder: `stream` lines (steps, RUN's
    stdout), `stderr` (RUN's stderr), `aux` (the image ID). Front ends override these; a
    live view also overrides the step events (`step`, `cached`, `step_done`), whose defaults
    are the legacy builder's lines."""

    def stream(self, text: str) -> None:
        pass

    def stderr(self, text: str) -> None:
        self.stream(text)

    def aux(self, image_id: str) -> None:
        pass

    def step(self, number: int, total: int, instruction: str) -> None:
        """A step begins."""
        self.stream(f"Step {number}/{total} : {instruction}\n")

    def cached(self) -> None:
        """The step begun last is a cache hit."""
        self.stream(" ---> Using cache\n")

    def step_done(self) -> None:
        """The step begun last has ended (its layer or config is made)."""


class Options:
    """What a build is asked for (the CLI's flags, the API's query parameters)."""

    def __init__(self, **kw: object) -> None:
        self.tags: list[str] = []
        self.dockerfile = "Dockerfile"
        self.build_args: dict[str, str | None] = {}
        self.target: str | None = None
        self.no_cache = False
        self.pull = False
        self.labels: dict[str, str] = {}
        self.network = "default"
        self.extra_hosts: list[str] = []
        self.shm_size = 0
        self.ulimits: list[dict] = []
        self.limits: dict[str, object] = {}  # HostConfig fields for RUN steps: Memory, CpuShares...
        self.cache_from: list[str] | None = None
        self.platform: str | None = None
        self.squash = False
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError(f"unknown build option {k}")
            setattr(self, k, v)


class State:
    """A stage as built so far: the image config document, its layers (descriptors and
    chain IDs), the cache key of the last step, the ARGs in scope."""

    def __init__(self, doc: dict, layers: list[dict], chains: list[str], key: str,
                 parent: str = "") -> None:
        self.doc, self.layers, self.chains, self.key, self.parent = doc, layers, chains, key, parent
        self.doc.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        self.doc["rootfs"].setdefault("diff_ids", [])
        self.doc.setdefault("history", [])
        if not isinstance(self.doc.get("config"), dict):
            self.doc["config"] = {}
        self.args: dict[str, str] = {}
        self.cmd_set = False

    @property
    def config(self) -> dict:
        return self.doc["config"]

    def clone(self) -> State:
        st = State(copy.deepcopy(self.doc), list(self.layers), list(self.chains), self.key, self.parent)
        return st

    def env(self) -> dict[str, str]:
        """What variables substitute to: the stage's ARGs under its ENV."""
        out = dict(self.args)
        for e in self.config.get("Env") or []:
            k, _, v = e.partition("=")
            out[k] = v
        return out

    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)


def _set_env(cfg: dict, key: str, value: str) -> None:
    env = [e for e in cfg.get("Env") or [] if e.partition("=")[0] != key]
    cfg["Env"] = env + [f"{key}={value}"]


def _duration(ins: dockerfile.Instruction, flag: str) -> int:
    """--interval=30s and friends (Go durations) in nanoseconds."""
    from kobako.engine.health import duration_ns
    v = ins.flags.get(flag)
    if not v:
        return 0
    try:
        return duration_ns(v)
    except ValueError:
        raise ins.error(f"--{flag}: invalid duration {v!r}") from None


class Builder:
    def __init__(self, e, context: Tree, opts: Options, out: Output) -> None:
        self.e, self.ctx, self.opts, self.out = e, context, opts, out
        self.cache = buildcache.BuildCache(e.root)
        self.stages: list[tuple[dockerfile.Stage, State]] = []
        self.used_args: set[str] = set()
        self.step_no = 0
        self.total = 0
        self.escape = "\\"
        self.lexer = dockerfile.Lexer()
        self.cache_sources: list[tuple[dict, dict]] | None = None
        self.tmp = os.path.join(e.root, "builder", "tmp")

    # -- the whole build --
    def build(self, text: str) -> dict:
        from kobako.image import reference
        names = [str(reference.parse(t)) for t in self.opts.tags]  # a bad tag fails before any step
        df = dockerfile.parse(text)
        self.escape = df.escape
        self.lexer = dockerfile.Lexer(df.escape)
        meta, stages = dockerfile.stages(df)
        if self.opts.target:
            idx = next((s.index for s in stages if s.name == self.opts.target.lower()), None)
            if idx is None:
                raise BuildError(f"failed to reach build target {self.opts.target} in Dockerfile")
            stages = stages[:idx + 1]
        if self.opts.squash:
            raise errors.NotImplementedYet("squash is not supported: kobako's builder keeps one layer a "
                                           "step")
        self._check_platform(self.opts.platform)
        if self.opts.labels:  # dockerd adds them as a last LABEL of the target stage
            text = "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v)}"
                                       for k, v in self.opts.labels.items())
            stages[-1].instructions.append(dockerfile._instruction(text, stages[-1].start.line, "\\"))
        self.total = len(meta) + sum(1 + len(s.instructions) for s in stages)
        if self.opts.cache_from is not None and not self.opts.no_cache:
            self.cache_sources = self._cache_sources(self.opts.cache_from)
        self._sweep()
        os.makedirs(self.tmp, mode=0o700, exist_ok=True)
        meta_args = _platform_args()  # BuildKit's automatic args, for FROM --platform=$BUILDPLATFORM
        for ins in meta:
            self._step(ins)
            for name, default in dockerfile.arg_decls(ins, self.escape):
                v = self._arg_value(name, default, meta_args)
                if v is not None:
                    meta_args[name] = v
            self.out.step_done()
        self.meta_args = meta_args
        for stage in stages:
            st = self._from(stage)
            self.out.step_done()
            self.stages.append((stage, st))
            for ins in stage.instructions:
                self._dispatch(st, ins)
                self.out.step_done()
        final = self.stages[-1][1]
        unused = sorted(k for k in self.opts.build_args if k not in self.used_args and k not in PROXY_ARGS)
        if unused:
            self.out.stream(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n")
        return self._finish(final, names)

    def _step(self, ins: dockerfile.Instruction) -> None:
        self.step_no += 1
        self.out.step(self.step_no, self.total, ins.original)

    def _check_platform(self, platform: str | None) -> None:
        if not platform:
            return
        from kobako.image import manifest as mf
        want = mf.parse_platform(platform)
        host = mf.host_platform()
        if want.get("os") != host["os"] or want.get("architecture") != host["architecture"]:
            raise BuildError(f"platform {platform} is not this host's ({host['os']}/{host['architecture']}): "
                             "kobako builds for the host's platform only")

    def _arg_value(self, name: str, default: str | None, scope: dict[str, str]) -> str | None:
        self.used_args.add(name)
        if name in self.opts.build_args and self.opts.build_args[name] is not None:
            return self.opts.build_args[name]
        if default is not None:
            return self.lexer.word(default, scope)
        return None

    # -- FROM --
    def _from(self, stage: dockerfile.Stage) -> State:
        self._step(stage.start)
        base = self.lexer.word(stage.base, self.meta_args)
        if not base:
            raise stage.start.error(f"base name ({stage.base}) should not be blank")
        self._check_platform(stage.platform and self.lexer.word(stage.platform, self.meta_args))
        earlier = next((st for s, st in self.stages if s.name == base.lower()), None)
        if earlier is not None:
            st = earlier.clone()
        elif base.lower() == "scratch":
            from kobako.image.build import host_config
            st = State({**host_config(), "config": {}, "rootfs": {"type": "layers", "diff_ids": []},
                        "history": []}, [], [], "scratch")
        else:
            rec = self._image(base)
            doc = json.loads(self.e.images.content.read(rec["id"]))
            st = State(doc, list(rec.get("layers") or []), list(rec.get("chainIds") or []), rec["id"],
                       rec["id"])
        if earlier is None:
            st.doc.pop("container", None)
            st.doc.pop("container_config", None)
            st.doc.pop("docker_version", None)
        self.out.stream(f" ---> {self._short(st)}\n")
        triggers = list(st.config.get("OnBuild") or [])
        st.config["OnBuild"] = None
        if triggers:
            self.out.stream(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}\n")
            for t in triggers:
                ins = dockerfile._instruction(t, stage.start.line, self.escape)
                self._dispatch(st, ins, trigger=True)
        return st

    def _image(self, name: str) -> dict:
        from kobako.image.store import ImageNotFound
        if not self.opts.pull:
            try:
                return self.e.images.resolve(name)
            except ImageNotFound:
                pass
        from kobako.engine.images import pull
        self.out.stream(f"Pulling {name}\n")
        try:
            return pull(self.e, name)
        except errors.KobakoError as ex:
            if self.opts.pull:  # --pull with the image at hand: dockerd falls back to it
                try:
                    return self.e.images.resolve(name)
                except ImageNotFound:
                    pass
            raise BuildError(f"pull access denied or image not found for {name}: "
                             f"{errors.describe(ex)}") from None

    def _short(self, st: State) -> str:
        from kobako.image.build import config_id
        return config_id(st.doc).split(":", 1)[1][:12]

    # -- one instruction --
    def _dispatch(self, st: State, ins: dockerfile.Instruction, trigger: bool = False) -> None:
        if not trigger:
            self._step(ins)
        c = ins.cmd
        env = st.env()
        word = (lambda s: self.lexer.word(s, env)) if c in dockerfile.EXPANDS else (lambda s: s)
        cfg = st.config
        if c == "run":
            self._run(st, ins)
        elif c in ("copy", "add"):
            self._copy(st, ins, env)
        elif c == "env":
            pairs = [(word(k), word(v)) for k, v in dockerfile.key_values(ins, self.escape)]
            for k, v in pairs:
                _set_env(cfg, k, v)
            self._meta(st, "ENV " + " ".join(f"{k}={v}" for k, v in pairs), nop2=True)
        elif c == "label":
            pairs = [(word(k), word(v)) for k, v in dockerfile.key_values(ins, self.escape)]
            cfg["Labels"] = {**(cfg.get("Labels") or {}), **dict(pairs)}
            self._meta(st, "LABEL " + " ".join(f"{k}={v}" for k, v in pairs), nop2=True)
        elif c == "arg":
            decls = dockerfile.arg_decls(ins, self.escape)
            for name, default in decls:
                v = self._arg_value(name, default, env)
                if v is None and default is None and name in self.meta_args:
                    v = self.meta_args[name]
                if v is not None:
                    st.args[name] = v
                env = st.env()
            self._meta(st, "ARG " + " ".join(n + (f"={d}" if d is not None else "") for n, d in decls),
                       nop2=True)
        elif c == "workdir":
            path = word(ins.rest)
            if not path.startswith("/"):
                path = posixpath.join(cfg.get("WorkingDir") or "/", path)
            cfg["WorkingDir"] = posixpath.normpath(path)
            self._meta(st, "WORKDIR " + cfg["WorkingDir"])
        elif c == "user":
            cfg["User"] = word(ins.rest)
            self._meta(st, "USER " + cfg["User"], nop2=True)
        elif c in ("cmd", "entrypoint"):
            args = ins.json if ins.json is not None else st.shell() + [ins.rest]
            if c == "cmd":
                cfg["Cmd"] = args
                st.cmd_set = True
            else:
                cfg["Entrypoint"] = args
                if not st.cmd_set:  # a CMD from the base image goes with a new ENTRYPOINT
                    cfg["Cmd"] = None
            self._meta(st, f"{c.upper()} {json.dumps(args)}", nop2=True)
        elif c == "expose":
            ports = dict(cfg.get("ExposedPorts") or {})
            shown = []
            for p in self.lexer.words(ins.rest, env):
                port, _, proto = p.partition("/")
                proto = proto.lower() or "tcp"
                lo, _, hi = port.partition("-")
                if not lo.isdigit() or (hi and not hi.isdigit()) or proto not in ("tcp", "udp", "sctp"):
                    raise ins.error(f"invalid containerPort: {p}")
                for n in range(int(lo), int(hi or lo) + 1):
                    ports[f"{n}/{proto}"] = {}
                    shown.append(f"{n}/{proto}")
            cfg["ExposedPorts"] = ports
            self._meta(st, "EXPOSE " + " ".join(shown), nop2=True)
        elif c == "volume":
            vols = dict(cfg.get("Volumes") or {})
            paths = [word(v) for v in ins.json] if ins.json is not None else self.lexer.words(ins.rest, env)
            for v in paths:
                if not v.strip():
                    raise ins.error("VOLUME specified can not be an empty string")
                vols[v] = {}
            cfg["Volumes"] = vols
            self._meta(st, f"VOLUME {json.dumps(paths)}", nop2=True)
        elif c == "stopsignal":
            from kobako.engine.spec import signal_number
            sig = word(ins.rest)
            signal_number(sig)
            cfg["StopSignal"] = sig
            self._meta(st, "STOPSIGNAL " + sig, nop2=True)
        elif c == "healthcheck":
            cfg["Healthcheck"] = self._healthcheck(st, ins)
            self._meta(st, f"HEALTHCHECK &{json.dumps(cfg['Healthcheck'])}", nop2=True)
        elif c == "shell":
            cfg["Shell"] = list(ins.json or [])
            self._meta(st, f"SHELL {json.dumps(cfg['Shell'])}", nop2=True)
        elif c == "onbuild":
            word0, _, rest = ins.rest.partition(" ")
            trig = f"{word0.upper()} {rest.strip()}".strip()
            cfg["OnBuild"] = list(cfg.get("OnBuild") or []) + [trig]
            self._meta(st, f"ONBUILD {trig}", nop2=True)
        elif c == "maintainer":
            st.doc["author"] = ins.rest
            self._meta(st, "MAINTAINER " + ins.rest, nop2=True)
        elif c == "from":
            raise ins.error("FROM is not allowed here")
        else:  # pragma: no cover - the parser refuses unknown instructions
            raise ins.error("unknown instruction")

    def _healthcheck(self, st: State, ins: dockerfile.Instruction) -> dict:
        word0, _, rest = ins.rest.partition(" ")
        kind = word0.upper()
        if kind == "NONE":
            if rest.strip():
                raise ins.error("HEALTHCHECK NONE takes no arguments")
            return {"Test": ["NONE"]}
        if kind != "CMD":
            raise ins.error(f"unknown type {word0!r}: CMD or NONE")
        rest = rest.strip()
        if not rest:
            raise ins.error("missing command after HEALTHCHECK CMD")
        test = None
        if rest.startswith("["):
            try:
                v = json.loads(rest)
                if isinstance(v, list) and all(isinstance(x, str) for x in v):
                    test = ["CMD"] + v
            except ValueError:
                pass
        hc: dict = {"Test": test or ["CMD-SHELL", rest]}
        for flag, field in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                            ("start-interval", "StartInterval")):
            n = _duration(ins, flag)
            if n:
                if n < 10**6:
                    raise ins.error(f"--{flag} cannot be less than 1ms")
                hc[field] = n
        if "retries" in ins.flags:
            r = ins.flags["retries"]
            if not r.isdigit() or int(r) < 1:
                raise ins.error(f"--retries: {r!r} is not a positive number")
            hc["Retries"] = int(r)
        return hc

    # -- committing steps --
    def _meta(self, st: State, comment: str, nop2: bool = False) -> None:
        """A step that changes the config only: an empty-layer history entry."""
        sh = " ".join(DEFAULT_SHELL)
        created_by = f"{sh} #(nop) {' ' if nop2 else ''}{comment}"
        self._commit(st, created_by, "", lambda: {"history": {"created": _now(), "created_by": created_by,
                                                              "empty_layer": True}})

    def _commit(self, st: State, created_by: str, extra: str, produce) -> None:
        k = buildcache.key(st.key, created_by, extra)
        entry = self._cached(st, k, created_by)
        if entry is not None:
            self.out.cached()
        else:
            entry = produce()
            self.cache.put(k, entry)
        self._apply(st, entry, k)
        self.out.stream(f" ---> {self._short(st)}\n")

    def _apply(self, st: State, entry: dict, k: str) -> None:
        st.doc["history"].append(entry["history"])
        st.doc["created"] = entry["history"].get("created") or _now()
        if entry.get("layer"):
            st.layers.append(entry["layer"])
            st.doc["rootfs"]["diff_ids"].append(entry["diffId"])
            st.chains.append(entry["chainId"])
        st.key = k

    def _cached(self, st: State, k: str, created_by: str) -> dict | None:
        if self.opts.no_cache:
            return None
        if self.cache_sources is not None:
            return self._from_sources(st, created_by)
        entry = self.cache.get(k)
        if entry is None:
            return None
        if entry.get("layer"):  # its layer must still be here (a cache older than a manual cleanup)
            if not (self.e.snapshots.exists(entry["chainId"])
                    and self.e.images.content.has(entry["layer"]["digest"])):
                return None
        self.cache.touch(k)
        return entry

    def _cache_sources(self, names: list[str]) -> list[tuple[dict, dict]]:
        from kobako.image.store import ImageNotFound
        out = []
        for n in names:
            try:
                rec = self.e.images.resolve(n)
            except (ImageNotFound, errors.InvalidArgument):
                self.out.stream(f"[Warning] cache source {n} not found: skipped\n")
                continue
            out.append((json.loads(self.e.images.content.read(rec["id"])), rec))
        return out

    def _from_sources(self, st: State, created_by: str) -> dict | None:
        """A cache hit from a --cache-from image whose history and layers so far are this
        stage's, and whose next history entry is this step (dockerd's ImageCache)."""
        n, diffs = len(st.doc["history"]), st.doc["rootfs"]["diff_ids"]
        for doc, rec in self.cache_sources or []:
            hist, sdiffs = doc.get("history") or [], (doc.get("rootfs") or {}).get("diff_ids") or []
            if len(hist) <= n or hist[:n] != st.doc["history"] or sdiffs[:len(diffs)] != diffs:
                continue
            nxt = hist[n]
            if nxt.get("created_by") != created_by:
                continue
            if nxt.get("empty_layer"):
                return {"history": nxt}
            d = len(diffs)
            if len(sdiffs) <= d:
                continue
            return {"history": nxt, "layer": rec["layers"][d], "diffId": sdiffs[d],
                    "chainId": rec["chainIds"][d]}
        return None

    def _layer(self, st: State, upper: str, created_by: str) -> dict:
        """The cache entry of a step whose changes are the directory `upper`: a layer blob,
        and `upper` itself moved in as the snapshot (empty: an empty-layer entry)."""
        hist = {"created": _now(), "created_by": created_by}
        if not os.listdir(upper):
            return {"history": {**hist, "empty_layer": True}}
        from kobako.image.build import layer_from_dir
        from kobako.storage.snapshots import chain_ids
        desc, diff_id = layer_from_dir(self.e.images.content, upper, diff=True)
        chain = chain_ids(st.doc["rootfs"]["diff_ids"] + [diff_id])[-1]
        snaps = self.e.snapshots
        if not snaps.exists(chain):
            tmp = snaps.begin()
            try:
                os.rmdir(os.path.join(tmp, "fs"))
                os.rename(upper, os.path.join(tmp, "fs"))
                snaps.commit(tmp, chain, diff_id, desc.size)
            except BaseException:
                snaps.abort(tmp)
                raise
        return {"history": hist, "layer": desc.to_json(), "diffId": diff_id, "chainId": chain}

    # -- RUN --
    def _run(self, st: State, ins: dockerfile.Instruction) -> None:
        if "security" in ins.flags:
            raise errors.NotImplementedYet(f"Dockerfile line {ins.line}: RUN --security is not supported by "
                                           "kobako's builder")
        if "mount" in ins.flags:
            raise errors.NotImplementedYet(f"Dockerfile line {ins.line}: RUN --mount is not supported by "
                                           "kobako's builder yet")
        net = ins.flags.get("network") or self.opts.network
        cmd = list(ins.json) if ins.json is not None else st.shell() + [ins.rest]
        env_names = {e.partition("=")[0] for e in st.config.get("Env") or []}
        args = sorted(f"{k}={v}" for k, v in st.args.items() if k not in env_names)
        created_by = (f"|{len(args)} {' '.join(args)} " if args else "") + " ".join(cmd)
        proxies = [f"{k}={v}" for k, v in self.opts.build_args.items()
                   if k in PROXY_ARGS and v is not None and k not in st.args and k not in env_names]
        self._commit(st, created_by, "", lambda: self._execute(st, cmd, args + proxies, net, created_by))

    def _execute(self, st: State, cmd: list[str], env: list[str], net: str, created_by: str) -> dict:
        from kobako.engine import spec as specs
        from kobako.engine.spec import ContainerSpec
        from kobako.image.build import config_id
        if not st.chains:
            raise BuildError("cannot RUN in an empty filesystem (FROM scratch with nothing in it yet): no "
                             f"{cmd[0]} to run")
        img_id = config_id(st.doc)
        img_cfg = {k: v for k, v in st.config.items()
                   if k not in ("Healthcheck", "Entrypoint", "Cmd", "OnBuild")}
        host: dict = {"NetworkMode": "default" if net in ("", "default") else net,
                      "ExtraHosts": list(self.opts.extra_hosts) or None,
                      "Ulimits": list(self.opts.ulimits) or None}
        if self.opts.shm_size:
            host["ShmSize"] = self.opts.shm_size
        host.update(self.opts.limits)
        body = {"Image": img_id, "Cmd": cmd, "Entrypoint": [], "Env": env,
                "User": st.config.get("User") or "",
                "WorkingDir": st.config.get("WorkingDir") or "", "HostConfig": host}
        builder = {"pid": os.getpid(), "start": _start_time()}  # a build killed midway: swept later
        spec = ContainerSpec.from_docker(body, extra={"Builder": builder})
        specs.merge_image(spec.config, img_cfg)
        image = {"id": img_id, "chainIds": list(st.chains)}
        opts = specs.plan(self.e, spec)
        rec = self.e.create(image, img_id.split(":", 1)[1][:12], opts, spec, img_cfg=img_cfg)
        try:
            self.out.stream(f" ---> Running in {rec['id'][:12]}\n")
            code = self._attach(rec)
            if code != 0:
                raise StepFailed(f"The command '{' '.join(cmd)}' returned a non-zero code: {code}", code)
            upper = self.e.containers.path(rec["id"], "upper")
            _drop_mountpoints(rec, upper, [self.e.snapshots.fs(c) for c in st.chains])
            return self._layer(st, upper, created_by)
        finally:
            self._remove(rec)

    def _attach(self, rec: dict) -> int:
        """Start the step's container with its output relayed; its exit code."""
        from kobako.engine.stdio import STDERR, split_frames
        r, s = self.e.start(rec, attach=True)
        try:
            buf = r.get("_rest", b"")
            s.settimeout(None)
            while True:
                frames, buf = split_frames(buf)
                for stream, data in frames:
                    (self.out.stderr if stream == STDERR else self.out.stream)(data.decode(errors="replace"))
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        finally:
            s.close()
        return self.e.wait(self.e.containers.get(rec["id"]) or rec)

    def _remove(self, rec: dict) -> None:
        self.out.stream(f"Removing intermediate container {rec['id'][:12]}\n")
        try:
            self.e.remove(self.e.containers.get(rec["id"]) or rec, force=True, volumes=True)
        except errors.NotFound:
            pass

    def _sweep(self) -> None:
        """What builds killed midway left (their builder is gone): step containers, temp
        directories (contexts, copies, downloads)."""
        try:
            names = os.listdir(self.tmp)
        except FileNotFoundError:
            names = []
        for n in names:
            parts = n.split("-")
            if len(parts) >= 3 and parts[1].isdigit() and parts[2].isdigit() \
                    and not _alive(int(parts[1]), int(parts[2])):
                shutil.rmtree(os.path.join(self.tmp, n), ignore_errors=True)
        for c in self.e.containers.all():
            b = (c.get("kobako") or {}).get("Builder")
            if b and not _alive(b.get("pid", 0), b.get("start")):
                try:
                    self.e.remove(c, force=True, volumes=True)
                except errors.KobakoError:
                    pass

    # -- COPY / ADD --
    def _copy(self, st: State, ins: dockerfile.Instruction, env: dict[str, str]) -> None:
        c = ins.cmd
        for flag in ("checksum", "keep-git-dir"):
            if flag in ins.flags:
                raise errors.NotImplementedYet(f"Dockerfile line {ins.line}: ADD --{flag} is not supported "
                                               "by kobako's builder yet")
        words = [self.lexer.word(w, env) for w in ins.json] if ins.json is not None \
            else self.lexer.words(ins.rest, env)
        if len(words) < 2:
            raise ins.error("requires at least two arguments")
        srcs, dest = words[:-1], words[-1]
        chown = self.lexer.word(ins.flags["chown"], env) if ins.flags.get("chown") else None
        chmod = None
        if ins.flags.get("chmod"):
            try:
                chmod = int(ins.flags["chmod"], 8)
                if chmod > 0o7777:
                    raise ValueError
            except ValueError:
                raise ins.error(f"invalid --chmod {ins.flags['chmod']!r}: an octal mode") from None
        wd = st.config.get("WorkingDir") or "/"
        into = dest.endswith("/") or dest in (".", "..") or dest.endswith("/.")
        dest_abs = posixpath.normpath(dest if dest.startswith("/") else posixpath.join(wd, dest))
        if into and not dest_abs.endswith("/"):
            dest_abs += "/"
        src_from = ins.flags.get("from")
        tree: Tree | None = None
        fetched = None
        try:
            if src_from:
                if c == "add":
                    raise ins.error("--from is not allowed with ADD")
                tree_chains, src_key = self._source_stage(self.lexer.word(src_from, env), ins)
                digest = buildcache.key(src_key, *srcs)
                kind = "multi" if len(srcs) > 1 else "from"
                resolved = None
            else:
                urls = [s for s in srcs if s.startswith(("http://", "https://"))]
                if urls and c == "copy":
                    raise ins.error("source can't be a URL for COPY")
                if urls:
                    if len(srcs) > 1:
                        raise ins.error("ADD of a URL takes it as its only source")
                    fetched = self._fetch(urls[0])
                    tree = Tree(fetched, what="download")
                    resolved = [tree.lookup(os.listdir(fetched)[0])]
                    base = posixpath.basename(urls[0].split("?", 1)[0].rstrip("/"))
                    resolved[0].name = base or "index.html"
                else:
                    tree = self.ctx
                    resolved = []
                    for s in srcs:
                        resolved += tree.sources(s)
                digest = tree.digest(resolved)
                kind = "multi" if len(resolved) > 1 else ("dir" if resolved[0].is_dir else "file")
                tree_chains = None
                if len(resolved) > 1 and not into:
                    raise ins.error(MULTI)
        except (ContextError, errors.NotFound) as ex:
            if fetched:
                shutil.rmtree(fetched, ignore_errors=True)
            raise BuildError(f"{c.upper()} failed: {errors.describe(ex)}") from None
        sh = " ".join(DEFAULT_SHELL)
        created_by = f"{sh} #(nop) {c.upper()} {kind}:{digest} in {dest_abs} "
        extra = f"chown={chown} chmod={chmod}"
        try:
            self._commit(st, created_by, extra, lambda: self._do_copy(
                st, c, tree, resolved, tree_chains, srcs, dest_abs, into, chown, chmod, created_by))
        finally:
            if fetched:
                if tree is not None:
                    tree.close()
                shutil.rmtree(fetched, ignore_errors=True)

    def _source_stage(self, name: str, ins: dockerfile.Instruction) -> tuple[list[str], str]:
        """COPY --from: an earlier stage by name or number, or an image."""
        for s, st in self.stages:
            if s.name == name.lower() or name == str(s.index):
                return list(st.chains), st.key
        if name.isdigit():
            raise ins.error(f"invalid from flag value {name}: stage {name} is not an earlier stage")
        rec = self._image(name)
        return list(rec.get("chainIds") or []), rec["id"]

    def _fetch(self, url: str) -> str:
        """ADD of a URL: downloaded to a temp directory (the network must reach it)."""
        import tempfile
        import urllib.error
        import urllib.request
        d = tempfile.mkdtemp(prefix=_owned("add"), dir=self.tmp)
        try:
            with urllib.request.urlopen(url, timeout=30) as r, open(os.path.join(d, "download"), "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
            os.chmod(os.path.join(d, "download"), 0o600)
        except (urllib.error.URLError, OSError, ValueError) as ex:
            shutil.rmtree(d, ignore_errors=True)
            reason = getattr(ex, "reason", None) or ex
            raise BuildError(f"ADD failed: cannot download {url}: {reason} (ADD of a URL needs the network; "
                             "download the file into the build context and COPY it instead)") from None
        return d

    def _do_copy(self, st: State, c: str, tree: Tree | None, resolved, tree_chains: list[str] | None,
                 srcs: list[str], dest: str, into: bool, chown: str | None, chmod: int | None,
                 created_by: str) -> dict:
        import tempfile

        from kobako.storage.mounts import in_child, merged_view
        work_dir = tempfile.mkdtemp(prefix=_owned("step"), dir=self.tmp)
        upper, work = os.path.join(work_dir, "upper"), os.path.join(work_dir, "work")
        os.mkdir(upper, 0o755)
        os.mkdir(work, 0o700)
        unpack = c == "add"
        src_lowers = [self.e.snapshots.fs(ch) for ch in tree_chains] if tree_chains is not None else None
        lower_opt = self.e.snapshots.lowerdir(tree_chains) if tree_chains and len(tree_chains) > 1 else None
        sroot = self.e.snapshots.root

        def body(root: str) -> None:
            src_tree = tree
            if src_lowers is not None:
                src_tree = Tree(_source_root(src_lowers, lower_opt, sroot), what="source stage")
                found = []
                for s in srcs:
                    found += src_tree.sources(s)
                if len(found) > 1 and not into:
                    raise BuildError(MULTI)
                items = found
            else:
                items = resolved
            _copy_into(root, src_tree, items, dest, into, chown, chmod, unpack)

        # modules the child uses, imported before the fork (a threaded API server's import lock)
        from kobako.image import context  # noqa: F401
        from kobako.linux import fs, mount, namespaces  # noqa: F401
        from kobako.storage import layer  # noqa: F401
        try:
            try:
                if st.chains:
                    m = self.e.snapshots.mount_for(st.chains, upper, work)
                    merged_view(m, body)
                else:
                    err = in_child(lambda: body(upper))
                    if err:
                        raise BuildError(err)
            except errors.KobakoError as ex:
                raise BuildError(f"{c.upper()} failed: {errors.describe(ex)}") from None
            except OSError as ex:
                msg = str(ex).removeprefix("cannot read the container's filesystem: ")
                raise BuildError(f"{c.upper()} failed: {msg}") from None
            return self._layer(st, upper, created_by)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)

    # -- the image --
    def _finish(self, st: State, names: list[str]) -> dict:
        from kobako.image.build import assemble
        from kobako.image.gc import undo_on_failure
        doc = st.doc
        doc.setdefault("created", _now())
        if not doc["config"].get("OnBuild"):
            doc["config"]["OnBuild"] = None
        with undo_on_failure(self.e):
            img = assemble(self.e.images, self.e.snapshots, doc, list(st.layers), names)
        if st.parent:
            img = self.e.images.add({"id": img["id"], "parent": st.parent}, [])
        short = img["id"].split(":", 1)[1][:12]
        self.out.aux(img["id"])
        self.out.stream(f"Successfully built {short}\n")
        from kobako.engine.events import emit
        from kobako.image.reference import familiar
        for n in names:
            emit(self.e.root, "image", "tag", img["id"], {"name": n})
            self.out.stream(f"Successfully tagged {familiar(n)}\n")
        return img


def _platform_args() -> dict[str, str]:
    from kobako.image import manifest as mf
    p = mf.host_platform()
    plat = "/".join(x for x in (p["os"], p["architecture"], p.get("variant") or "") if x)
    out = {}
    for who in ("BUILD", "TARGET"):
        out.update({f"{who}PLATFORM": plat, f"{who}OS": p["os"], f"{who}ARCH": p["architecture"],
                    f"{who}VARIANT": p.get("variant") or ""})
    return out


def _now() -> str:
    from kobako.image.store import now_iso
    return now_iso()


def _start_time(pid: int | None = None) -> int:
    """A process's start time (clock ticks since boot): with the PID, it names one process."""
    try:
        with open(f"/proc/{pid or os.getpid()}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def _owned(kind: str) -> str:
    """A temp directory's name prefix that says whose it is (see Builder._sweep)."""
    return f"{kind}-{os.getpid()}-{_start_time()}-"


def _alive(pid: int, start: int | None) -> bool:
    return bool(pid) and os.path.exists(f"/proc/{pid}") and (not start or _start_time(pid) == start)


def _drop_mountpoints(rec: dict, upper: str, lowers: list[str]) -> None:
    """The files and directories the runtime made in the upper directory only to mount on
    (/etc/hosts, /proc... when the image lacks them) are not the step's changes."""
    import stat

    from kobako.linux import fs
    try:
        with open(os.path.join(rec["bundle"], "config.json")) as f:
            dests = [m.get("destination") or "" for m in json.load(f).get("mounts") or []]
    except (OSError, ValueError, KeyError):
        return
    lower_fds = []
    try:
        for low in lowers:
            try:
                lower_fds.append(os.open(low, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            except OSError:
                pass

        def in_lowers(path: str) -> bool:
            for fd in lower_fds:
                try:
                    os.close(fs.open_in_root(fd, path, fs.O_PATH | os.O_NOFOLLOW))
                    return True
                except OSError:
                    continue
            return False

        root = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for dest in sorted((d for d in dests if d.startswith("/")), key=lambda d: -d.count("/")):
                parts = [p for p in dest.split("/") if p]
                while parts:
                    path = "/".join(parts)
                    try:
                        pfd = fs.openat2(root, "/".join(parts[:-1]) or ".", os.O_RDONLY | os.O_DIRECTORY,
                                         fs.RESOLVE_IN_ROOT | fs.RESOLVE_NO_SYMLINKS)
                    except OSError:
                        break
                    try:
                        st = os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False)
                        if in_lowers(path):
                            break
                        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                            os.unlink(parts[-1], dir_fd=pfd)
                        elif stat.S_ISDIR(st.st_mode):
                            os.rmdir(parts[-1], dir_fd=pfd)  # only when empty
                        else:
                            break
                    except OSError:
                        break
                    finally:
                        os.close(pfd)
                    parts.pop()
        finally:
            os.close(root)
    finally:
        for fd in lower_fds:
            os.close(fd)


def _source_root(lowers: list[str], lowerdir: str | None, root: str) -> str | None:
    """(In the copy's child, in its own mount namespace.) The root of a COPY --from source:
    its one layer as is, or its layers' overlay mounted read-only."""
    if not lowers:
        return None
    if lowerdir is None:
        return lowers[0]
    import tempfile

    from kobako.linux import mount as m
    target = tempfile.mkdtemp(prefix="kobako-src-")
    os.chdir(root)  # lowerdirs are relative to the data root (Snapshots.lowerdir)
    m.mount("overlay", target, "overlay", m.MS_RDONLY, f"lowerdir={lowerdir}")
    return target


def _copy_into(root: str, tree: Tree | None, items, dest: str, into: bool, chown: str | None,
               chmod: int | None, unpack: bool) -> None:
    """(In the copy's child.) The sources into the image root at `root`."""
    from kobako.image.context import Copier, is_archive, lookup_ids
    from kobako.linux import fs
    from kobako.storage import layer
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ids = lookup_ids(rootfd, chown) if chown else (0, 0)
        cp = Copier(rootfd, ids, chmod)
        dest_dir = into or cp.is_dir(dest)
        for src in items:
            if tree is None:
                continue
            if unpack and not src.is_dir:
                sdfd = tree.open_dir(posixpath.dirname(src.rel))
                try:
                    f = os.open(posixpath.basename(src.rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=sdfd)
                finally:
                    os.close(sdfd)
                with os.fdopen(f, "rb") as fh:
                    head = os.pread(f, 512, 0)
                    if is_archive(head):
                        pfd = cp._parent(dest)
                        try:
                            r = layer.open_decompressed(fh) if head[:2] == b"\x1f\x8b" or \
                                head[:4] == b"\x28\xb5\x2f\xfd" else _other_decompressed(fh, head)
                            try:
                                layer.extract(r, fs.proc_fd(pfd), layer.COPY_IN)
                            finally:
                                if r is not fh:
                                    r.close()
                        finally:
                            os.close(pfd)
                        continue
            cp.copy(tree, src, dest, dest_dir)
    finally:
        os.close(rootfd)


def _other_decompressed(fh, head: bytes):
    if head[:3] == b"BZh":
        import bz2
        return bz2.BZ2File(fh)
    if head[:6] == b"\xfd7zXZ\x00":
        import lzma
        return lzma.LZMAFile(fh)
    return fh


def build(e, context: Tree, dockerfile_text: str, opts: Options, out: Output) -> dict:
    """Build `dockerfile_text` with `context`; the image record. The GC shield is held
    throughout: a layer is written before the cache entry that keeps it is."""
    from kobako.image.unpack import gc_shield
    with gc_shield(e.root):
        return Builder(e, context, opts, out).build(dockerfile_text)


def prune(e, all_cache: bool = True) -> int:
    """`builder prune`: the cache entries go, then what no image uses; bytes freed."""
    from kobako.image import gc
    buildcache.BuildCache(e.root).clear()
    return gc.collect(e, wait=True)


# -- contexts --------------------------------------------------------------------------------------

def context_dir(path: str | None, e=None) -> Tree:
    """A directory (or no context at all) with its .dockerignore. With the engine `e`, the
    digests of its files are remembered between builds (a user's directory, not a context
    unpacked for one build)."""
    from kobako.image.context import Ignore, read_in
    if path is None:
        return Tree(None)
    tree = Tree(path)
    if e is not None:
        tree.remember_digests(buildcache.digests_dir(e.root))
    try:
        text = read_in(tree, ".dockerignore").decode(errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        text = ""
    except (OSError, ContextError) as ex:
        tree.close()
        raise BuildError(f"cannot read .dockerignore: {errors.describe(ex)}") from None
    tree.ignore = Ignore.read(text)
    return tree


def unpack_context(e, stream) -> str:
    """A context tar (plain, gzip, zstd, bzip2, xz), as the API body or `build -`, unpacked
    into a private temp directory; the caller removes it (shutil.rmtree)."""
    import tempfile

    from kobako.storage import layer
    tmp = os.path.join(e.root, "builder", "tmp")
    os.makedirs(tmp, mode=0o700, exist_ok=True)
    d = tempfile.mkdtemp(prefix=_owned("ctx"), dir=tmp)
    try:
        head = b""
        while len(head) < 6 and (more := stream.read(6 - len(head))):
            head += more
        whole = layer._Prefixed(head, stream)
        src = layer.open_decompressed(whole) if not (head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00") \
            else _other_decompressed(whole, head)
        try:
            layer.extract(src, d, layer.COPY_IN)
        finally:
            src.close()
    except BaseException as ex:
        shutil.rmtree(d, ignore_errors=True)
        if isinstance(ex, errors.KobakoError):
            raise BuildError(f"the build context is not a valid archive: {errors.describe(ex)}") from None
        raise
    return d


def read_dockerfile(tree: Tree, name: str) -> str:
    """The Dockerfile named `name` in the context (Dockerfile, else dockerfile)."""
    from kobako.image.context import read_in
    if tree.fd < 0:
        raise BuildError(f"Cannot locate specified Dockerfile: {name}")
    rel = posixpath.normpath("/" + name).lstrip("/")
    for cand in (rel, rel.lower()) if rel == "Dockerfile" else (rel,):
        try:
            data = read_in(tree, cand)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, ContextError) as ex:
            raise BuildError(f"cannot read the Dockerfile {name}: {errors.describe(ex)}") from None
        if not data.strip():
            raise BuildError(f"the Dockerfile ({name}) cannot be empty")
        return data.decode(errors="replace")
    raise BuildError(f"Cannot locate specified Dockerfile: {name}")

"""Building an image from a Dockerfile: Docker's legacy builder, on the engine's own
container model.

Each stage starts from its base (an image, `scratch`, or an earlier stage) and each
instruction is one step. A metadata step (ENV, LABEL, CMD...) changes the image config and
adds an empty-layer history entry. A RUN step is a container made from a ContainerSpec as
`run` makes one (same defaults, same armour), started under the monitor with its output
relayed; its upper directory, once it exits, becomes the step's layer (a tar blob, and the
very directory moved in as the snapshot: nothing is copied or unpacked again); its
--mounts (bind, cache, tmpfs, secret: _StepMounts) are entries of the container's
config.json, made by the runtime in the container's own mount namespace. A COPY/ADD
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
import re
import shutil

from kobako import errors
from kobako.image import buildcache, dockerfile
from kobako.image.context import ContextError, Source, Tree

PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
              "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
DEFAULT_SHELL = ["/bin/sh", "-c"]
SCRIPT = "/dev/pipes/script"  # where a `RUN <<EOF` script with #! is run from (as BuildKit's /dev/pipes/)
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
        # Docker's --rm (remove a step's container once it succeeded) and --force-rm (also when
        # it failed); kobako removes a failed one unless --rm=false: a step container is kept
        # only with rm=False and force_rm=False
        self.rm = True
        self.force_rm = False
        # X-Registry-Config: registry -> {"username", "password"} or {"auth"}, for pulling bases
        self.auth_configs: dict[str, dict] = {}
        # RUN --mount=type=secret values by id (kobako build --secret); None: the front end
        # cannot carry secrets (POST /build: dockerd's legacy builder has no session)
        self.secrets: dict[str, bytes] | None = None
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError(f"unknown build option {k}")
            setattr(self, k, v)


class State:
    """A stage as built so far: the image config document, its layers (descriptors and
    chain IDs), the cache key of the last step, the ARGs in scope."""

    def __init__(self, doc: dict, layers: list[dict], chains: list[str], key: str,
                 parent: str = "", platform: dict | None = None) -> None:
        self.doc, self.layers, self.chains, self.key, self.parent = doc, layers, chains, key, parent
        # what the stage's RUN steps run as (normalised): its FROM --platform, the build's
        # --platform, or its base image's own; an earlier stage's, for FROM <stage>
        self.platform = platform or _host()
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
        st = State(copy.deepcopy(self.doc), list(self.layers), list(self.chains), self.key, self.parent,
                   dict(self.platform))
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
        # the platform the image is built for (--platform; the host's by default), and whether
        # it was asked for: then FROM images must be of it, and the image is labelled with it
        self.target = _host()
        self.explicit = False

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
        if self.opts.platform:  # before any step: one that does not parse, several, another OS
            self.target, self.explicit = target_platform(self.opts.platform), True
        if self.opts.labels:  # dockerd adds them as a last LABEL of the target stage
            text = "LABEL " + " ".join(f"{json.dumps(k)}={json.dumps(v)}"
                                       for k, v in self.opts.labels.items())
            stages[-1].instructions.append(dockerfile._instruction(text, stages[-1].start.line, "\\"))
        self.total = len(meta) + sum(1 + len(s.instructions) for s in stages)
        if self.opts.cache_from is not None and not self.opts.no_cache:
            self.cache_sources = self._cache_sources(self.opts.cache_from)
        self._sweep()
        os.makedirs(self.tmp, mode=0o700, exist_ok=True)
        # BuildKit's automatic args: in scope for FROM lines; in a stage once an ARG declares them
        meta_args = platform_args(_host(), self.target, self.opts.build_args)
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

    def _emulation(self, platform: dict, stage: dockerfile.Stage) -> None:
        """A stage of another architecture whose RUN steps need QEMU: refused before its base is
        pulled when none is installed (the step's container would be refused at create, with the
        same message). A stage without RUN needs no emulator (FROM scratch + COPY)."""
        from kobako.engine import emulation
        if emulation.needs_emulation(platform["architecture"]) and \
                any(ins.cmd == "run" for ins in stage.instructions):
            emulation.check_requested(platform)

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
        plat = None
        if stage.platform:  # FROM --platform=$BUILDPLATFORM: the meta ARGs substitute
            word = self.lexer.word(stage.platform, self.meta_args)
            try:
                plat = target_platform(word)
            except errors.KobakoError as ex:
                raise stage.start.error(errors.describe(ex)) from None
        want = plat or (self.target if self.explicit else None)
        earlier = next((st for s, st in self.stages if s.name == base.lower()), None)
        if earlier is not None:  # an earlier stage keeps its platform (BuildKit's d.base.platform)
            st = earlier.clone()
        elif base.lower() == "scratch":
            p = want or self.target
            st = State({**_platform_doc(p), "config": {}, "rootfs": {"type": "layers", "diff_ids": []},
                        "history": []}, [], [], "scratch", platform=p)
        else:
            if want is not None:
                self._emulation(want, stage)
            rec = self._image(base, want)
            doc = json.loads(self.e.images.content.read(rec["id"]))
            from kobako.engine.emulation import image_platform
            st = State(doc, list(rec.get("layers") or []), list(rec.get("chainIds") or []), rec["id"],
                       rec["id"], platform=want or image_platform(rec, doc))
        self._emulation(st.platform, stage)
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

    def _image(self, name: str, want: dict | None = None) -> dict:
        """Image `name` from the store, else pulled; for platform `want` when one is asked for
        (FROM --platform, build --platform): pulled for it, and one here of another platform is
        refused as `run --platform` refuses it."""
        from kobako.image import manifest as mf
        if not self.opts.pull:
            rec = self._local(name, want)
            if rec is not None:
                return rec
        from kobako.engine.images import pull
        self.out.stream(f"Pulling {name}\n")
        try:
            return pull(self.e, name, platform=mf.platform_string(want) if want else None,
                        credentials=self._credentials)
        except errors.KobakoError as ex:
            if self.opts.pull:  # --pull with the image at hand: dockerd falls back to it
                rec = self._local(name, want)
                if rec is not None:
                    return rec
            raise BuildError(f"pull access denied or image not found for {name}: "
                             f"{errors.describe(ex)}") from None

    def _local(self, name: str, want: dict | None) -> dict | None:
        from kobako.image.store import ImageNotFound
        try:
            rec = self.e.images.resolve(name, want)  # a multi-platform index: its image for want
        except ImageNotFound:
            return None
        if want is not None:
            from kobako.engine.emulation import check_image
            check_image(self.e, rec, name, want)  # another platform's: refused, not pulled over
        return rec

    def _credentials(self, ref) -> tuple[str, str] | None:
        """The build's own credentials for the registry of `ref` (X-Registry-Config), or
        None: the stored logins."""
        if not self.opts.auth_configs:
            return None
        from kobako.image import auth
        return auth.find(self.opts.auth_configs, ref.domain)

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

    def _commit(self, st: State, created_by: str, extra: str, produce, history_match: bool = True) -> None:
        """`history_match`: whether a --cache-from image may serve the step by its history
        entry (not when what decides the step is not in `created_by`, as a RUN's mounts)."""
        from kobako.image.manifest import platform_string
        # the platform is in every key: an arm64 step never reuses an amd64 one's layer, even
        # when both start from the same key (FROM scratch)
        k = buildcache.key(st.key, created_by, extra, platform_string(st.platform))
        entry = self._cached(st, k, created_by, history_match)
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

    def _cached(self, st: State, k: str, created_by: str, history_match: bool = True) -> dict | None:
        if self.opts.no_cache:
            return None
        if self.cache_sources is not None:
            return self._from_sources(st, created_by) if history_match else None
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
        from kobako.engine.emulation import image_platform
        from kobako.image.manifest import platform_matches
        n, diffs = len(st.doc["history"]), st.doc["rootfs"]["diff_ids"]
        for doc, rec in self.cache_sources or []:
            if not platform_matches(image_platform(rec, doc), st.platform):
                continue  # another platform's steps are not this one's, even with the same history
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

    def _layer(self, st: State, upper: str, created_by: str, take: bool = True) -> dict:
        """The cache entry of a step whose changes are the directory `upper`: a layer blob,
        and `upper` itself moved in as the snapshot (empty: an empty-layer entry). With
        take=False (a kept step container's upper) the snapshot is unpacked from the blob."""
        hist = {"created": _now(), "created_by": created_by}
        if not os.listdir(upper):
            return {"history": {**hist, "empty_layer": True}}
        from kobako.image.build import layer_from_dir
        from kobako.storage.snapshots import chain_ids
        desc, diff_id = layer_from_dir(self.e.images.content, upper, diff=True)
        chain = chain_ids(st.doc["rootfs"]["diff_ids"] + [diff_id])[-1]
        snaps = self.e.snapshots
        if not snaps.exists(chain) and not take:
            from kobako.image.unpack import unpack_blob
            unpack_blob(self.e.images.content, snaps, desc.digest, diff_id, chain)
        elif not snaps.exists(chain):
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
        net = ins.flags.get("network") or self.opts.network
        script = dockerfile.run_script(ins)
        cmd = [SCRIPT] if script is not None else \
            list(ins.json) if ins.json is not None else st.shell() + [ins.rest]
        env_names = {e.partition("=")[0] for e in st.config.get("Env") or []}
        args = sorted(f"{k}={v}" for k, v in st.args.items() if k not in env_names)
        created_by = (f"|{len(args)} {' '.join(args)} " if args else "") + (script or " ".join(cmd))
        proxies = [f"{k}={v}" for k, v in self.opts.build_args.items()
                   if k in PROXY_ARGS and v is not None and k not in st.args and k not in env_names]
        env = st.env()
        mounts = [self._plan_mount(st, ins, dockerfile.parse_mount(
                      spec, ins, lambda v: self.lexer.word(v, env)))
                  for spec in ins.flag_list("mount")]
        extra = "\n".join(key for _, key in mounts)  # what the mounts are, and a bind's content
        self._commit(st, created_by, extra, lambda: self._execute(
            st, cmd, args + proxies, net, created_by, [m for m, _ in mounts], script),
            history_match=not mounts)

    def _plan_mount(self, st: State, ins: dockerfile.Instruction, m: dockerfile.Mount) -> tuple[dict, str]:
        """A --mount checked against the build (its source found), before the cache is asked:
        (what _execute needs, its part of the step's cache key)."""
        if m.target:
            wd = st.config.get("WorkingDir") or "/"
            m.target = posixpath.normpath(posixpath.join(wd, m.target))
        plan: dict = {"mount": m}
        key = m.key()
        if m.type == "bind" and m.from_:
            chains, src_key = self._source_stage(m.from_, ins)
            plan["chains"] = chains
            key += f"\0{src_key}"
        elif m.type == "bind":
            rel = posixpath.normpath("/" + m.source).lstrip("/")
            if self.ctx.fd < 0 and not rel:
                plan["source"] = None  # no context: an empty directory
            else:
                try:
                    src = self.ctx.lookup(rel, m.source or ".")
                    key += "\0" + self.ctx.digest([src])
                except (ContextError, errors.NotFound) as ex:
                    raise BuildError(f"Dockerfile line {ins.line}: RUN --mount: "
                                     f"{errors.describe(ex)}") from None
                plan["source"] = src
        elif m.type == "cache" and (m.from_ or m.source):
            raise errors.NotImplementedYet(f"Dockerfile line {ins.line}: RUN --mount=type=cache with from= "
                                           "or source= is not supported by kobako's builder: a cache mount "
                                           "starts empty")
        return plan, key

    def _execute(self, st: State, cmd: list[str], env: list[str], net: str, created_by: str,
                 mounts: list[dict] | None = None, script: str | None = None) -> dict:
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
        # its architecture: Engine.create registers QEMU's handler for a foreign one
        image = {"id": img_id, "chainIds": list(st.chains), "architecture": st.platform["architecture"]}
        opts = specs.plan(self.e, spec)
        with _StepMounts(self) as held:
            # the mounts, and a secret's variables: in the container's config.json only (not in
            # its record, so not in `inspect`), removed with it
            opts.mounts, secret_env = held.make(mounts or [], script)
            opts.env = opts.env + secret_env
            rec = self.e.create(image, img_id.split(":", 1)[1][:12], opts, spec, img_cfg=img_cfg)
            # a step with mounts or a script is never kept: its config.json names the build's
            # temporary directories, and may hold a secret
            keep = not self.opts.rm and not self.opts.force_rm and not mounts and not script
            ran = False  # the command ran to its end (exit 0 or not): only then may --rm=false keep it
            try:
                self.out.stream(f" ---> Running in {rec['id'][:12]}\n")
                code = self._attach(rec)
                ran = True
                if code != 0:
                    raise StepFailed(f"The command '{' '.join(cmd)}' returned a non-zero code: {code}", code)
                upper = self.e.containers.path(rec["id"], "upper")
                _drop_mountpoints(rec, upper, [self.e.snapshots.fs(c) for c in st.chains])
                return self._layer(st, upper, created_by, take=not keep)
            finally:
                if keep and ran:
                    self._keep(rec)
                else:
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

    def _keep(self, rec: dict) -> None:
        """--rm=false: the step's container stays, stopped, an ordinary container from now on
        (ps -a, logs, inspect, rm): it loses its builder mark, so no later build sweeps it.
        Its layers are snapshots its record names (GC keeps them); its image is the step's
        config, which no image record holds."""
        def unmark(extra: dict | None) -> dict:
            return {k: v for k, v in (extra or {}).items() if k != "Builder"}
        try:
            self.e.containers.update(rec["id"], kobako=unmark)
        except errors.NotFound:
            pass

    def _remove(self, rec: dict) -> None:
        self.out.stream(f"Removing intermediate container {rec['id'][:12]}\n")
        try:
            self.e.remove(self.e.containers.get(rec["id"]) or rec, force=True, volumes=True)
        except errors.NotFound:
            pass

    def _sweep(self) -> None:
        """What builds killed midway left (their builder is gone): step containers, temp
        directories (contexts, copies, downloads, RUN mounts' sources, secrets in the run
        root)."""
        try:
            names = os.listdir(self.tmp)
        except FileNotFoundError:
            names = []
        secrets = os.path.join(self.e.run_dir, "builder")
        try:
            names += [os.path.join(secrets, n) for n in os.listdir(secrets)]
        except FileNotFoundError:
            pass
        for n in names:
            parts = os.path.basename(n).split("-")
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
        words = self._copy_words(ins, env)
        if len(words) < 2:
            raise ins.error("requires at least two arguments")
        srcs, dest = words[:-1], words[-1]
        if not isinstance(dest, str):
            raise ins.error("a heredoc cannot be the destination")
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
        checksum = self.lexer.word(ins.flags["checksum"], env) if "checksum" in ins.flags else None
        keep_git = _bool_flag(ins, "keep-git-dir")
        if checksum is not None:  # BuildKit's rules
            if len(srcs) != 1:
                raise ins.error("checksum can't be specified for multiple sources")
            if not isinstance(srcs[0], str) or not (_is_url(srcs[0]) or git_source(srcs[0])):
                raise ins.error("checksum requires HTTP(S) or Git sources")
        src_from = ins.flags.get("from")
        sources = _Sources()
        items: list[tuple[Tree, Source, bool]] | None = []
        try:
            if src_from:
                if c == "add":
                    raise ins.error("--from is not allowed with ADD")
                if ins.heredocs:
                    raise errors.NotImplementedYet(f"Dockerfile line {ins.line}: COPY --from with a heredoc "
                                                   "source is not supported by kobako's builder")
                tree_chains, src_key = self._source_stage(self.lexer.word(src_from, env), ins)
                digest = buildcache.key(src_key, *srcs)
                kind = "multi" if len(srcs) > 1 else "from"
                items = None
            else:
                tree_chains = None
                parts = [self._source(ins, s, env, sources, checksum, keep_git) for s in srcs]
                # a download with a checksum has no items yet: it is fetched only if the step runs
                pending = any(got is None for got, _ in parts)
                items = None if pending else [it for got, _ in parts for it in got or []]
                if items is not None and all(key is None for _, key in parts):
                    digest = self.ctx.digest([src for _, src, _ in items])  # context paths: as it always was
                else:
                    digest = buildcache.key(*(
                        key or "context:" + self.ctx.digest([src for _, src, _ in got or []])
                        for got, key in parts))
                n = len(items) if items is not None else 1
                kind = "multi" if n > 1 else ("dir" if items and items[0][1].is_dir else "file")
                if n > 1 and not into:
                    raise ins.error(MULTI)
        except (ContextError, errors.NotFound) as ex:
            sources.close()
            raise BuildError(f"{c.upper()} failed: {errors.describe(ex)}") from None
        except BaseException:
            sources.close()
            raise
        sh = " ".join(DEFAULT_SHELL)
        created_by = f"{sh} #(nop) {c.upper()} {kind}:{digest} in {dest_abs} "
        extra = f"chown={chown} chmod={chmod}"

        def produce() -> dict:
            its = items if items is not None or tree_chains is not None else \
                self._download(str(srcs[0]), sources, checksum)
            return self._do_copy(st, c, its, tree_chains, [str(s) for s in srcs], dest_abs, into, chown,
                                 chmod, created_by)
        try:
            self._commit(st, created_by, extra, produce)
        finally:
            sources.close()

    def _copy_words(self, ins: dockerfile.Instruction, env: dict[str, str]) -> list:
        """The sources and destination, variables substituted; a heredoc source is its
        dockerfile.Heredoc."""
        if ins.json is not None:
            return [self.lexer.word(w, env) for w in ins.json]
        if not ins.heredocs:
            return self.lexer.words(ins.rest, env)
        docs = iter(ins.heredocs)
        out: list = []
        for w in dockerfile.split_words(ins.rest, self.escape):
            out += [next(docs)] if dockerfile.heredoc_word(w) else self.lexer.words(w, env)
        return out

    def _source(self, ins: dockerfile.Instruction, s, env: dict[str, str], sources: _Sources,
                checksum: str | None, keep_git: bool | None) -> tuple[list | None, str | None]:
        """One source of a COPY/ADD: its items (tree, source, unpack) and its part of the
        step's cache key (None for a context path: the caller digests the context's sources
        together). Heredocs, git repositories and URLs are made into temp directories
        (`sources` removes them)."""
        c = ins.cmd
        if isinstance(s, dockerfile.Heredoc):
            tree = sources.heredocs(self.tmp)
            body = s.body
            if s.expand:
                try:
                    body = dockerfile.Lexer("\\", quotes=False).word(body, env)
                except dockerfile.DockerfileError as ex:
                    raise ins.error(f"heredoc {s.name}: {ex}") from None
            _write_file(tree.path, s.name, body.encode(), 0o644)  # BuildKit's mode for an inline file
            src = tree.lookup(s.name)
            return [(tree, src, False)], "heredoc:" + tree.digest([src])
        git = git_source(s)
        if git is not None:
            if c == "copy":
                raise ins.error("source can't be a git ref for COPY")
            try:
                git.check()
            except ValueError as ex:
                raise ins.error(f"invalid git reference {s!r}: {ex}") from None
            if keep_git is not None and git.keep is not None and keep_git != git.keep:
                raise ins.error("inconsistent keep-git-dir configuration")
            keep = bool(git.keep if git.keep is not None else keep_git)
            want = git.checksum or checksum
            if git.checksum and checksum and git.checksum != checksum:
                raise ins.error(f"checksum mismatch {checksum!r} != {git.checksum!r}")
            if want and not re.fullmatch(r"[0-9a-fA-F]{4,64}", want):
                raise ins.error(f"invalid checksum {want} for Git URL, expected hex commit hash")
            d, commit = self._clone(git, keep, want)
            sources.dirs.append(d)
            tree = sources.tree(d, f"git repository {_shown(git.remote)}")
            src = tree.lookup(git.subdir or ".", git.subdir or ".")
            if not src.is_dir:
                raise BuildError(f"ADD failed: {git.subdir} in git repository {_shown(git.remote)} is not a "
                                 "directory")
            return [(tree, src, False)], buildcache.key("git", commit, git.subdir, str(keep))
        if _is_url(s):
            if c == "copy":
                raise ins.error("source can't be a URL for COPY")
            name = _url_name(s)
            if checksum is not None:
                _checksum(ins, checksum)
                return None, buildcache.key("url", checksum, name)
            its = self._download(s, sources, None)
            return its, buildcache.key("url", its[0][0].digest([its[0][1]]), name)
        return [(self.ctx, f, c == "add") for f in self.ctx.sources(s)], None

    def _download(self, url: str, sources: _Sources, checksum: str | None) -> list:
        d = self._fetch(url, checksum)
        sources.dirs.append(d)
        tree = sources.tree(d, "download")
        src = tree.lookup("download")
        src.name = _url_name(url)
        return [(tree, src, False)]  # a remote archive is not unpacked, as Docker's ADD

    def _source_stage(self, name: str, ins: dockerfile.Instruction) -> tuple[list[str], str]:
        """COPY --from: an earlier stage by name or number, or an image."""
        for s, st in self.stages:
            if s.name == name.lower() or name == str(s.index):
                return list(st.chains), st.key
        if name.isdigit():
            raise ins.error(f"invalid from flag value {name}: stage {name} is not an earlier stage")
        rec = self._image(name, self.target if self.explicit else None)
        return list(rec.get("chainIds") or []), rec["id"]

    def _fetch(self, url: str, checksum: str | None = None) -> str:
        """ADD of a URL: downloaded to a temp directory (the network must reach it), and
        checked against `checksum` (algorithm:hex) when one is given."""
        import hashlib
        import tempfile
        import urllib.error
        import urllib.request
        h = hashlib.new(checksum.partition(":")[0]) if checksum else None
        d = tempfile.mkdtemp(prefix=_owned("add"), dir=self.tmp)
        try:
            try:
                with urllib.request.urlopen(url, timeout=30) as r, \
                        open(os.path.join(d, "download"), "wb") as f:
                    while chunk := r.read(1 << 20):
                        f.write(chunk)
                        if h is not None:
                            h.update(chunk)
                os.chmod(os.path.join(d, "download"), 0o600)
            except (urllib.error.URLError, OSError, ValueError) as ex:
                reason = getattr(ex, "reason", None) or ex
                raise BuildError(f"ADD failed: cannot download {_shown(url)}: {reason} (ADD of a URL needs "
                                 "the network; download the file into the build context and COPY it "
                                 "instead)") from None
            if h is not None and checksum and f"{h.name}:{h.hexdigest()}" != checksum.lower():
                raise BuildError(f"ADD failed: digest mismatch for {_shown(url)}: {h.name}:{h.hexdigest()} "
                                 f"(expected: {checksum})")
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        return d

    def _clone(self, g: GitSource, keep: bool, checksum: str | None) -> tuple[str, str]:
        """ADD of a git repository: its ref fetched (shallow where the server can) into a
        temp directory and checked out with the `git` program; (the directory, the commit)."""
        import subprocess
        import tempfile
        shown = _shown(g.remote)
        exe = shutil.which("git")
        if exe is None:
            raise errors.Unavailable(f"ADD failed: cannot fetch {shown}: the git program is not installed "
                                     "(apt-get install git)")
        d = tempfile.mkdtemp(prefix=_owned("git"), dir=self.tmp)
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": "http:https:git:ssh",
               "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND") or "ssh -o BatchMode=yes -o "
                                  "ConnectTimeout=30",
               "LC_ALL": "C"}
        cfg = ["-c", "http.lowSpeedLimit=1", "-c", "http.lowSpeedTime=60", "-c", "advice.detachedHead=false"]

        def git(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([exe, *cfg, *args], cwd=d, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True)
        ref = g.ref or "HEAD"
        try:
            git("init", "-q")
            for depth in (["--depth", "1"], []):  # git's dumb HTTP protocol cannot fetch shallow
                cp = git("fetch", "-q", "--no-tags", *depth, "--", g.remote, ref)
                if cp.returncode == 0:
                    break
            if cp.returncode != 0:
                why = [ln.strip() for ln in cp.stderr.splitlines() if ln.strip()]
                raise BuildError(f"ADD failed: cannot fetch {ref!r} from git repository {shown}: "
                                 f"{why[-1] if why else f'git fetch exited {cp.returncode}'}")
            commit = git("rev-parse", "FETCH_HEAD^{commit}").stdout.strip()
            fetched = git("rev-parse", "FETCH_HEAD").stdout.strip()  # an annotated tag's own object
            if checksum and not (commit.startswith(checksum.lower()) or fetched.startswith(checksum.lower())):
                raise BuildError(f"ADD failed: expected checksum to match {checksum}, got {commit}")
            cp = git("checkout", "-q", "--detach", commit) if commit else cp
            if cp.returncode != 0 or not commit:
                raise BuildError(f"ADD failed: cannot check out {ref!r} of {shown}: {cp.stderr.strip()}")
            if not keep:
                shutil.rmtree(os.path.join(d, ".git"))
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        return d, commit

    def _do_copy(self, st: State, c: str, items: list | None, tree_chains: list[str] | None,
                 srcs: list[str], dest: str, into: bool, chown: str | None, chmod: int | None,
                 created_by: str) -> dict:
        import tempfile

        from kobako.storage.mounts import in_child, merged_view
        work_dir = tempfile.mkdtemp(prefix=_owned("step"), dir=self.tmp)
        upper, work = os.path.join(work_dir, "upper"), os.path.join(work_dir, "work")
        os.mkdir(upper, 0o755)
        os.mkdir(work, 0o700)
        src_lowers = [self.e.snapshots.fs(ch) for ch in tree_chains] if tree_chains is not None else None
        lower_opt = self.e.snapshots.lowerdir(tree_chains) if tree_chains and len(tree_chains) > 1 else None
        sroot = self.e.snapshots.root

        def body(root: str) -> None:
            its = items or []
            if src_lowers is not None:
                src_tree = Tree(_source_root(src_lowers, lower_opt, sroot), what="source stage")
                found = []
                for s in srcs:
                    found += src_tree.sources(s)
                if len(found) > 1 and not into:
                    raise BuildError(MULTI)
                its = [(src_tree, f, False) for f in found]
            _copy_into(root, its, dest, into, chown, chmod)

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
        if self.explicit:  # BuildKit labels the image with the asked-for platform, whatever its last stage's
            doc.pop("variant", None)
            doc.update(_platform_doc(self.target))
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


def _host() -> dict:
    from kobako.image import manifest as mf
    return mf.normalize(mf.host_platform())


def _platform_doc(p: dict) -> dict:
    """An image config's platform fields."""
    return {"architecture": p["architecture"], "os": p["os"], **({"variant": p["variant"]} if p.get("variant")
                                                                 else {})}


def target_platform(s: str) -> dict:
    """A build's --platform (or a FROM's), normalised: one platform, of an OS this host runs.
    Several (`linux/amd64,linux/arm64`, a multi-platform build) are refused: one build makes
    one image."""
    from kobako.image import manifest as mf
    if "," in s:
        raise BuildError(f"multiple platforms ({s}) are not supported: kobako builds one platform per "
                         "build (run one build for each)")
    p = mf.parse_platform(s)
    if p["os"] != _host()["os"]:
        raise BuildError(f"platform {mf.platform_string(p)} is not supported: this host builds "
                         f"{_host()['os']} images only")
    return p


def platform_args(build: dict, target: dict,
                  overrides: dict[str, str | None] | None = None) -> dict[str, str]:
    """BuildKit's automatic platform ARGs (dockerfile2llb defaultArgs): BUILDPLATFORM,
    BUILDOS, BUILDARCH, BUILDVARIANT for the host, TARGET* for what is built; a --build-arg of
    the same name replaces its value."""
    from kobako.image.manifest import platform_string
    out = {}
    for who, p in (("BUILD", build), ("TARGET", target)):
        out.update({f"{who}PLATFORM": platform_string(p), f"{who}OS": p["os"],
                    f"{who}ARCH": p["architecture"], f"{who}VARIANT": p.get("variant") or ""})
    for k, v in (overrides or {}).items():
        if k in out and v is not None:
            out[k] = v
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


class _StepMounts:
    """What a RUN step's --mounts need on the host while it runs, and their OCI mounts (the
    runtime makes them in the container's own mount namespace: nothing is mounted on the
    host, so a build killed midway leaves no mount). Sources it copies or writes (a bind
    from the context, a secret, a #! script, a rw bind's upper directory) are in temp
    directories named for this build (swept by the next build if it is killed); cache
    mounts are held by a flock. All of it goes when the step ends."""

    def __init__(self, b: Builder) -> None:
        self.b = b
        self.dirs: list[str] = []
        self.locks: list[int] = []
        self.tmp = ""

    def __enter__(self) -> _StepMounts:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.locks:
            os.close(fd)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    def _dir(self, name: str) -> str:
        """A fresh directory for one mount's source, in the build's temp directory."""
        import tempfile
        if not self.tmp:
            self.tmp = tempfile.mkdtemp(prefix=_owned("mnt"), dir=self.b.tmp)
            self.dirs.append(self.tmp)
        d = os.path.join(self.tmp, name)
        os.mkdir(d, 0o755)
        return d

    def make(self, plans: list[dict], script: str | None) -> tuple[list[dict], list[str]]:
        """(the OCI mounts, parents before children; the secrets' environment variables)."""
        out: list[tuple[str, dict]] = []
        env: list[str] = []
        for i, plan in enumerate(plans):
            m: dockerfile.Mount = plan["mount"]
            if m.type == "bind" and "chains" in plan:
                out.append((m.target, self._stage(plan["chains"], m, str(i))))
            elif m.type == "bind":
                out.append((m.target, self._context(plan["source"], m, str(i))))
            elif m.type == "cache":
                path, fd = buildcache.CacheMounts(self.b.e.root).acquire(
                    m.id or m.target, m.sharing, 0o755 if m.mode is None else m.mode, m.uid or 0, m.gid or 0)
                self.locks.append(fd)
                out.append((m.target, _bind(path, m.target, m.readonly)))
            elif m.type == "tmpfs":
                o = ["nosuid", "nodev", "mode=1777"] + ([f"size={m.size}"] if m.size else [])
                out.append((m.target, {"destination": m.target, "type": "tmpfs", "source": "tmpfs",
                                       "options": o}))
            elif m.type == "secret":
                value = (self.b.opts.secrets or {}).get(m.id)
                if value is None:
                    if m.required:
                        hint = " (POST /build carries no secrets: build with kobako build --secret)" \
                            if self.b.opts.secrets is None else f" (pass it with --secret id={m.id},src=FILE)"
                        raise BuildError(f"secret {m.id}: not found{hint}")
                    continue  # as BuildKit: a missing secret that is not required is left out
                if m.env:
                    env.append(f"{m.env}={value.decode(errors='replace')}")
                if m.target:
                    path = self._secret(value, m, str(i))
                    out.append((m.target, _bind(path, m.target, True)))
        if script is not None:
            path = os.path.join(self._dir("script"), "script")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o755)
            with os.fdopen(fd, "w") as f:
                f.write(script)
            os.chmod(path, 0o755)
            out.append((SCRIPT, _bind(path, SCRIPT, True)))
        out.sort(key=lambda t: t[0].rstrip("/").count("/"))  # a mount inside another comes after it
        return [mnt for _, mnt in out], env

    def _context(self, src, m: dockerfile.Mount, name: str) -> dict:
        """A bind from the build context: a copy of what the source holds that .dockerignore
        keeps (the context itself would show excluded files, and a rw mount would write
        into it); symlinks are copied as links, and so resolve inside the container."""
        from kobako.image.context import Copier
        d = self._dir(name)
        if src is not None:
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                Copier(fd, (0, 0), None).copy(self.b.ctx, src, "/", True)
            finally:
                os.close(fd)
            if not src.is_dir:
                d = os.path.join(d, src.name)
        return _bind(d, m.target, m.readonly)

    def _stage(self, chains: list[str], m: dockerfile.Mount, name: str) -> dict:
        """A bind from a stage or an image: its source resolved in its layers (as their overlay
        shows it), then one layer's directory bound, or the overlay of several mounted; a rw
        one gets an upper directory of its own, thrown away after the step."""
        from kobako.image.context import SourceNotFound
        snaps = self.b.e.snapshots
        layers = [os.path.join(snaps.root, "l", snaps.short(c)) for c in reversed(chains)]
        try:
            is_dir, paths = _layer_lookup(layers, m.source)
        except SourceNotFound:
            raise BuildError(f"RUN --mount from {m.from_}: {m.source or '/'} not found in it") from None
        if not is_dir:
            if m.readonly:
                return _bind(paths[0], m.target, True)
            d = self._dir(name)
            shutil.copy2(paths[0], os.path.join(d, "file"))
            return _bind(os.path.join(d, "file"), m.target, False)
        if len(paths) == 1 and m.readonly:
            return _bind(paths[0], m.target, True)
        if any(c in p for p in paths for c in ",:\\"):
            raise BuildError(f"RUN --mount from {m.from_}: cannot mount {m.source}: its path holds ',' ':' "
                             "or '\\' (not allowed in an overlay's options)")
        o = [f"lowerdir={':'.join(paths)}"]
        if m.readonly:
            o.append("ro")
        else:
            d = self._dir(name)
            os.mkdir(os.path.join(d, "upper"), 0o755)
            os.mkdir(os.path.join(d, "work"), 0o700)
            o += [f"upperdir={d}/upper", f"workdir={d}/work"]
        if len(",".join(o)) >= 4000:
            raise BuildError(f"RUN --mount from {m.from_}: too many layers for one overlay mount")
        return {"destination": m.target, "type": "overlay", "source": "overlay", "options": o}

    def _secret(self, value: bytes, m: dockerfile.Mount, name: str) -> str:
        """The secret as a file (its mode, owner) in a directory of the run root (a tmpfs on most
        systems: the value is never written to the data root's disk)."""
        import tempfile
        run = os.path.join(self.b.e.run_dir, "builder")
        os.makedirs(run, mode=0o700, exist_ok=True)
        d = tempfile.mkdtemp(prefix=_owned("secrets"), dir=run)
        self.dirs.append(d)
        path = os.path.join(d, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(value)
            while view:
                view = view[os.write(fd, view):]
            os.fchown(fd, m.uid or 0, m.gid or 0)
            os.fchmod(fd, 0o400 if m.mode is None else m.mode)
        finally:
            os.close(fd)
        return path


def _bind(source: str, target: str, readonly: bool) -> dict:
    return {"destination": target, "type": "bind", "source": source,
            "options": ["rbind", "ro" if readonly else "rw", "nosuid", "nodev"]}


def _layer_lookup(layers: list[str], path: str) -> tuple[bool, list[str]]:
    """`path` in a stack of overlay layer directories (top first) as their overlay shows it:
    (True, the layer directories that merge into it) or (False, [the file]). Symlinks
    resolve inside the stack, a whiteout or an opaque directory hides what is below, as
    overlayfs does; everything is read through fds, never following a link on the host."""
    from kobako.image.context import ContextError, SourceNotFound
    parts: list[str] = []
    todo = [p for p in path.split("/") if p and p != "."]
    hops = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            if parts:
                parts.pop()
            continue
        kind, found = _layer_entry(layers, parts + [name])
        if kind is None:
            raise SourceNotFound(path)
        if kind == "link":
            hops += 1
            if hops > 40:
                raise ContextError(f"{path}: too many levels of symbolic links")
            if found[0].startswith("/"):
                parts = []
            todo = [p for p in found[0].split("/") if p and p != "."] + todo
            continue
        if kind == "file" and todo:
            raise SourceNotFound(path)
        parts.append(name)
    if not parts:
        return True, list(layers)
    kind, found = _layer_entry(layers, parts)
    return kind == "dir", found


def _layer_entry(layers: list[str], parts: list[str]) -> tuple[str | None, list[str]]:
    """What the overlay of `layers` (top first) has at `parts` (no symlinks in its parents):
    ("dir", its layer directories), ("file", [path]), ("link", [target]) or (None, [])."""
    import stat

    from kobako.storage.layer import OPAQUE_XATTRS
    dirs: list[str] = []
    for layer in layers:
        fd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        ok, stop = True, False
        try:
            for i, name in enumerate(parts):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    ok = False
                    break
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout: deleted here
                    ok, stop = False, True
                    break
                if not stat.S_ISDIR(st.st_mode):
                    if i == len(parts) - 1 and not dirs:
                        if stat.S_ISLNK(st.st_mode):
                            return "link", [os.readlink(name, dir_fd=fd)]
                        return "file", [os.path.join(layer, *parts)]
                    ok, stop = False, True  # a non-directory under a directory above: hidden
                    break
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = nfd
                for x in OPAQUE_XATTRS:
                    try:
                        if os.getxattr(fd, x) == b"y":
                            stop = True  # the layers below do not show through here
                    except OSError:
                        pass
        finally:
            os.close(fd)
        if ok:
            dirs.append(os.path.join(layer, *parts))
        if stop:
            break
    return ("dir", dirs) if dirs else (None, [])


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


class _Sources:
    """The temp directories and trees a COPY/ADD's sources were made into (heredocs,
    downloads, clones); close() removes them."""

    def __init__(self) -> None:
        self.dirs: list[str] = []
        self.trees: list[Tree] = []
        self._heredocs: Tree | None = None

    def tree(self, path: str, what: str) -> Tree:
        t = Tree(path, what=what)
        self.trees.append(t)
        return t

    def heredocs(self, tmp: str) -> Tree:
        """The directory the step's heredocs are written into, made at the first."""
        if self._heredocs is None:
            import tempfile
            d = tempfile.mkdtemp(prefix=_owned("heredoc"), dir=tmp)
            self.dirs.append(d)
            self._heredocs = self.tree(d, "heredoc")
        return self._heredocs

    def close(self) -> None:
        for t in self.trees:
            t.close()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.trees, self.dirs = [], []


def _write_file(d: str, name: str, data: bytes, mode: int) -> None:
    fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)  # not narrowed by the umask
    finally:
        os.close(fd)


def _shown(url: str) -> str:
    """A URL as messages show it: a password in it masked."""
    import urllib.parse
    try:
        u = urllib.parse.urlsplit(url)
        if u.password is None:
            return url
        host = u.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit(u._replace(netloc=f"{u.username}:xxxxx@{host}"))
    except ValueError:
        return url


def _is_url(src: str) -> bool:
    return src.startswith(("http://", "https://"))


def _url_name(url: str) -> str:
    """The file name a download takes in a destination directory: the URL path's last part."""
    import urllib.parse
    base = posixpath.basename(urllib.parse.urlsplit(url).path.rstrip("/"))
    return base if base not in ("", ".", "..") else "index.html"


_CHECKSUM_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}


def _checksum(ins: dockerfile.Instruction, value: str) -> None:
    """ADD --checksum of a URL: algorithm:hex, as an OCI digest."""
    algo, _, hexpart = value.partition(":")
    if _CHECKSUM_LEN.get(algo) != len(hexpart) or not re.fullmatch(r"[0-9a-fA-F]+", hexpart):
        raise ins.error(f"invalid checksum {value!r}: expected sha256:<64 hex digits> (or sha384:, sha512:)")


def _bool_flag(ins: dockerfile.Instruction, name: str) -> bool | None:
    v = ins.flags.get(name)
    if v is None:
        return None
    if v.lower() not in ("true", "false", "1", "0"):
        raise ins.error(f"invalid --{name} value {v!r}: true or false")
    return v.lower() in ("true", "1")


class GitSource:
    """A git reference as BuildKit's ADD takes it: `https://host/repo.git#ref:subdir`
    (HTTP(S) only when the path ends in .git), `git://`, `ssh://`, or `user@host:repo.git`;
    the query form (`?ref=`, `?tag=`, `?branch=`, `?subdir=`, `?checksum=`, `?keep-git-dir=`)
    too. `remote` is what git fetches from."""

    def __init__(self, remote: str, fragment: str, query: str) -> None:
        import urllib.parse
        self.remote = remote
        ref, _, subdir = fragment.partition(":")
        self.ref = ref
        self.subdir = posixpath.normpath("/" + subdir).lstrip("/") if subdir else ""
        self.checksum = ""
        self.keep: bool | None = None
        self.problem = ""
        try:
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            pairs, self.problem = [], f"bad query {query!r}"
        for k, v in pairs:
            if k in ("ref", "tag", "branch"):
                full = {"tag": "refs/tags/", "branch": "refs/heads/"}.get(k, "")
                v = v if not full or v.startswith(full) else full + v
                if self.ref and self.ref != v:
                    self.problem = f"ref conflicts: {self.ref!r} vs {v!r}"
                self.ref = v
            elif k == "subdir":
                self.subdir = posixpath.normpath("/" + v).lstrip("/")
            elif k in ("checksum", "commit"):
                self.checksum = v
            elif k == "keep-git-dir":
                self.keep = v.lower() in ("", "1", "true")
            else:
                self.problem = f"unexpected query {k!r}"

    def check(self) -> None:
        if self.problem:
            raise ValueError(self.problem)
        if self.ref.startswith("-") or any(ch.isspace() or ord(ch) < 32 for ch in self.ref):
            raise ValueError(f"bad ref {self.ref!r}")


_GIT_SCP = re.compile(r"^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?$")


def git_source(src: str) -> GitSource | None:
    """The git reference an ADD source names, or None (a URL or a path)."""
    import urllib.parse
    m = re.match(r"([a-zA-Z0-9]+)://", src)
    if m:
        if m.group(1).lower() not in ("http", "https", "git", "ssh"):
            return None
        u = urllib.parse.urlsplit(src)
        if u.scheme.lower() in ("http", "https") and not u.path.endswith(".git"):
            return None
        return GitSource(urllib.parse.urlunsplit((u.scheme, u.netloc, u.path, "", "")), u.fragment, u.query)
    m = _GIT_SCP.match(src)
    if m:
        return GitSource(f"{m.group(1)}@{m.group(2)}:{m.group(3)}", m.group(5) or "", m.group(4) or "")
    return None


def _copy_into(root: str, items: list, dest: str, into: bool, chown: str | None, chmod: int | None) -> None:
    """(In the copy's child.) The sources, (tree, source, unpack) each, into the image root at
    `root`; `unpack`: ADD of a local tar archive unpacks it."""
    from kobako.image.context import Copier, is_archive, lookup_ids
    from kobako.linux import fs
    from kobako.storage import layer
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ids = lookup_ids(rootfd, chown) if chown else (0, 0)
        cp = Copier(rootfd, ids, chmod)
        dest_dir = into or cp.is_dir(dest)
        for tree, src, unpack in items:
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
    """`builder prune`: the cache entries and the cache mounts no build is using go, then
    what no image uses; bytes freed."""
    from kobako.image import gc
    buildcache.BuildCache(e.root).clear()
    freed = buildcache.CacheMounts(e.root).clear()
    return freed + gc.collect(e, wait=True)


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

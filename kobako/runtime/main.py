"""kobako-runtime: a runc-compatible command line over the OCI runtime.

podman (`--runtime`) and containerd (`BinaryName`) call runc with global flags
first, then the verb and its flags: `runc --root R --log L --log-format json
create --bundle B --pid-file P ID`. The parser below accepts that shape, urfave/cli's
`-flag`, `--flag value` and `--flag=value` forms, and says what is wrong in one line.
argparse is not used: with gettext and re it costs more than runc's whole budget.
"""

from __future__ import annotations

import os
import sys

from kobako.runtime.errors import RuntimeFailure

VERSION = "0.1.0"
SPEC_VERSION = "1.2.0"

# flag tuple: (names, dest, kind, default, help); kind: bool | str | int | list
Flag = tuple[tuple[str, ...], str, str, object, str]
GLOBAL: list[Flag] = [
    (("--root",), "root", "str", "/run/kobako-runtime", "directory for container state"),
    (("--log",), "log", "str", None, "log file (errors always; the step trace with --debug)"),
    (("--log-format",), "log_format", "str", "text", "log format: text or json"),
    (("--debug",), "debug", "bool", False, "log each step: which primitive made what"),
    (("--systemd-cgroup",), "systemd_cgroup", "bool", False, "use systemd for cgroups (refused)"),
    (("--rootless",), "rootless", "str", "auto", "ignored: kobako-runtime detects it"),
    (("--criu",), "criu", "str", None, "ignored: checkpoint is not supported"),
    (("-h", "--help"), "help", "bool", False, "show help"),
    (("-v", "--version"), "version", "bool", False, "print the version"),
]
_CREATE: list[Flag] = [
    (("-b", "--bundle"), "bundle", "str", ".", "path to the bundle (config.json + rootfs)"),
    (("--console-socket",), "console_socket", "str", None, "unix socket that receives the pty master"),
    (("--pid-file",), "pid_file", "str", None, "write the container's host PID here"),
    (("--no-pivot",), "no_pivot", "bool", False, "chroot instead of pivot_root (ramfs roots only)"),
    (("--no-new-keyring",), "no_new_keyring", "bool", False, "keep the caller's session keyring"),
    (("--preserve-fds",), "preserve_fds", "int", 0, "pass N extra fds (3..3+N-1) to the container"),
]
_EXEC: list[Flag] = [
    (("-p", "--process"), "process", "str", None, "process.json to run (instead of args)"),
    (("-d", "--detach"), "detach", "bool", False, "do not wait for the process"),
    (("-t", "--tty"), "tty", "bool", False, "allocate a pty (needs --console-socket)"),
    (("--console-socket",), "console_socket", "str", None, "unix socket that receives the pty master"),
    (("--pid-file",), "pid_file", "str", None, "write the process's host PID here"),
    (("--cwd",), "cwd", "str", None, "working directory inside the container"),
    (("-e", "--env"), "env", "list", None, "set an environment variable (repeatable)"),
    (("-u", "--user"), "user", "str", None, "uid[:gid] to run as"),
    (("-g", "--additional-gids"), "additional_gids", "list", None, "extra group id (repeatable)"),
    (("-c", "--cap"), "cap", "list", None, "add a capability (repeatable)"),
    (("--no-new-privs",), "no_new_privs", "bool", False, "set no_new_privs"),
    (("--preserve-fds",), "preserve_fds", "int", 0, "pass N extra fds to the process"),
    (("--process-label",), "process_label", "str", None, "ignored: no SELinux here"),
    (("--apparmor",), "apparmor", "str", None, "ignored: no AppArmor here"),
    (("--ignore-paused",), "ignore_paused", "bool", False, "exec even if the container is paused"),
]
# verb -> (module under kobako.runtime.commands, positional names, flags, help)
COMMANDS: dict[str, tuple[str, list[str], list[Flag], str]] = {
    "create": ("create", ["id"], _CREATE, "create a container (its process waits for `start`)"),
    "start": ("start", ["id"], [], "start the user program of a created container"),
    "run": ("run", ["id"], _CREATE + [
        (("-d", "--detach"), "detach", "bool", False, "detach from the container's process"),
        (("--keep",), "keep", "bool", False, "do not delete the container after it exits"),
    ], "create and start a container, wait for it, delete it"),
    "state": ("state", ["id"], [], "print the container's state as JSON"),
    "kill": ("kill", ["id", "signal?"], [
        (("-a", "--all"), "all", "bool", False, "signal every process of the container"),
    ], "send a signal (default SIGTERM) to the container's init"),
    "delete": ("delete", ["id"], [
        (("-f", "--force"), "force", "bool", False, "kill a running container first"),
    ], "delete a container and everything it holds"),
    "list": ("list", [], [
        (("-f", "--format"), "format", "str", "table", "table or json"),
        (("-q", "--quiet"), "quiet", "bool", False, "print only ids"),
    ], "list containers under --root"),
    "exec": ("exec", ["id", "args*"], _EXEC, "run another process inside a container"),
    "ps": ("ps", ["id", "ps_args*"], [
        (("-f", "--format"), "format", "str", "table", "table or json"),
    ], "show the container's processes"),
    "pause": ("pause", ["id"], [], "freeze every process of the container"),
    "resume": ("resume", ["id"], [], "thaw a paused container"),
    "spec": ("spec", [], [
        (("-b", "--bundle"), "bundle", "str", ".", "where to write config.json"),
        (("--rootless",), "rootless", "bool", False, "a config for an unprivileged user"),
    ], "write a default config.json"),
    "features": ("features", [], [], "print what this runtime supports, as JSON"),
    "events": ("events", ["id"], [
        (("--stats",), "stats", "bool", False, "print the statistics once and exit"),
        (("--interval",), "interval", "str", "5s", "how often to print statistics (5s, 500ms)"),
    ], "cgroup statistics and OOM kills, as JSON lines"),
    "update": ("update", ["id"], [
        (("-r", "--resources"), "resources", "str", None, "linux.resources JSON file ('-': stdin)"),
        (("--memory",), "memory", "str", None, "memory limit (512m, 1g; -1 lifts it)"),
        (("--memory-reservation",), "memory_reservation", "str", None, "memory soft limit"),
        (("--memory-swap",), "memory_swap", "str", None, "memory+swap limit (-1 lifts it)"),
        (("--cpu-quota",), "cpu_quota", "int", None, "CFS quota in microseconds (-1 lifts it)"),
        (("--cpu-period",), "cpu_period", "int", None, "CFS period in microseconds"),
        (("--cpu-share", "--cpu-shares"), "cpu_shares", "int", None, "CPU shares (relative weight)"),
        (("--cpu-rt-period",), "cpu_rt_period", "int", None, "realtime period in microseconds"),
        (("--cpu-rt-runtime",), "cpu_rt_runtime", "int", None, "realtime runtime in microseconds"),
        (("--cpuset-cpus",), "cpuset_cpus", "str", None, "CPUs to run on (0-3, 0,1)"),
        (("--cpuset-mems",), "cpuset_mems", "str", None, "memory nodes to use"),
        (("--pids-limit",), "pids_limit", "int", None, "maximum number of tasks (-1 or 0 lifts it)"),
        (("--blkio-weight",), "blkio_weight", "int", None, "block IO weight, 10 to 1000"),
    ], "change the resource limits of a running container, or lift them"),
}


class Args:
    def __init__(self, **kw: object) -> None:
        self.__dict__.update(kw)

    def __getattr__(self, name: str) -> object:  # absent optional positionals
        return None


def _parse_flags(argv: list[str], flags: list[Flag], stop_at_positional: bool,
                 what: str) -> tuple[dict, list[str], bool]:
    """-> (values, positionals, whether a `--` ended the flags)."""
    by_name = {n: f for f in flags for n in f[0]}
    vals: dict = {f[1]: (list(f[3]) if isinstance(f[3], list) else f[3]) for f in flags}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return vals, rest + argv[i + 1:], True
        if a.startswith("-") and len(a) > 1:
            name, eq, value = a.partition("=")
            f = by_name.get(name) or (by_name.get("-" + name) if not name.startswith("--") else None)
            if f is None:
                raise RuntimeFailure(f"{what}: unknown flag {name}", "see --help")
            kind, dest = f[2], f[1]
            if kind == "bool":
                vals[dest] = value.lower() not in ("false", "0") if eq else True
            else:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise RuntimeFailure(f"{what}: flag {name} needs a value")
                    value = argv[i]
                if kind == "int":
                    try:
                        vals[dest] = int(value)
                    except ValueError:
                        raise RuntimeFailure(f"{what}: flag {name} needs a number, not {value!r}") from None
                elif kind == "list":
                    vals[dest] = (vals[dest] or []) + [value]
                else:
                    vals[dest] = value
        else:
            rest.append(a)
            if stop_at_positional:
                rest += argv[i + 1:]
                break
        i += 1
    return vals, rest, False


def _help(cmd: str | None = None) -> str:
    def fl(flags: list[Flag]) -> str:
        return "\n".join(f"   {', '.join(f[0]) + ('' if f[2] == 'bool' else ' value'):<28} {f[4]}"
                         for f in flags)
    if cmd:
        _, pos, flags, text = COMMANDS[cmd]
        args = " ".join(f"<{p.rstrip('?*')}>" + ("..." if p.endswith("*") else "") for p in pos)
        return f"kobako-runtime {cmd} [options] {args}\n\n{text}\n\nOPTIONS:\n{fl(flags)}\n"
    cmds = "\n".join(f"   {c:<10} {v[3]}" for c, v in COMMANDS.items())
    return ("kobako-runtime: an OCI runtime with runc's command line\n\n"
            "USAGE: kobako-runtime [global options] command [command options] [arguments...]\n\n"
            f"COMMANDS:\n{cmds}\n\nGLOBAL OPTIONS:\n{fl(GLOBAL)}\n")


def parse(argv: list[str]) -> tuple[str | None, Args]:
    g, rest, _ = _parse_flags(argv, GLOBAL, True, "global options")
    if not rest:
        return None, Args(**g)
    cmd = rest[0]
    if cmd == "help":
        return None, Args(**{**g, "help": True, "help_cmd": rest[1] if len(rest) > 1 else None})
    if cmd not in COMMANDS:
        raise RuntimeFailure(f"unknown command {cmd!r}", "run kobako-runtime --help")
    _, positional, flags, _ = COMMANDS[cmd]
    if cmd == "exec":  # flags stop at the program: its own argv is left untouched
        vals, pos = _parse_exec(rest[1:], flags)
    else:
        vals, pos, _ = _parse_flags(rest[1:], flags + [(("-h", "--help"), "cmd_help", "bool", False, "")],
                                    False, cmd)
    if vals.get("cmd_help"):
        return None, Args(**{**g, "help": True, "help_cmd": cmd})
    out = {**g, **vals}
    for p in positional:
        name = p.rstrip("?*")
        if p.endswith("*"):
            out[name] = pos
            pos = []
        elif pos:
            out[name] = pos.pop(0)
        elif not p.endswith("?"):
            raise RuntimeFailure(f"{cmd}: missing <{name}>",
                                 f"usage: {_help(cmd).splitlines()[0]}")
    if pos:
        raise RuntimeFailure(f"{cmd}: unexpected argument {pos[0]!r}")
    return cmd, Args(**out)


def _parse_exec(argv: list[str], flags: list[Flag]) -> tuple[dict, list[str]]:
    """exec: flags, then the id, then the program's own argv untouched.
    runc also takes its flags after the id, up to the program; `--` ends them."""
    flags = flags + [(("-h", "--help"), "cmd_help", "bool", False, "")]
    vals, rest, dashdash = _parse_flags(argv, flags, True, "exec")
    if not rest or dashdash:
        return vals, rest
    cid, tail = rest[0], rest[1:]
    more, prog, _ = _parse_flags(tail, flags, True, "exec")
    for k, v in more.items():
        default = next(f[3] for f in flags if f[1] == k)
        if v != default:
            vals[k] = v
    return vals, [cid, *prog]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    log = None
    try:
        cmd, args = parse(argv)
        if args.version:
            print(f"kobako-runtime version {VERSION}\nspec: {SPEC_VERSION}")
            return 0
        if args.help or cmd is None:
            sys.stdout.write(_help(args.help_cmd))
            return 0 if args.help else 1
        from kobako.runtime.log import Log

        if args.log_format not in ("text", "json"):
            raise RuntimeFailure(f"unknown --log-format {args.log_format!r}", "use text or json")
        log = Log(args.log, args.log_format, args.debug)
        if args.systemd_cgroup:
            raise RuntimeFailure("--systemd-cgroup is not supported",
                                 "kobako-runtime manages cgroupfs directly; drop the flag")
        mod = __import__(f"kobako.runtime.commands.{COMMANDS[cmd][0]}", fromlist=["run"])
        return mod.run(args, log) or 0
    except RuntimeFailure as e:
        _report(log, str(e))
        return e.code
    except OSError as e:
        from kobako.runtime.errors import describe_oserror

        _report(log, describe_oserror(e))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: one line unless --debug asks for the traceback
        if log is not None and log.debug_on:
            import traceback

            traceback.print_exc()
        _report(log, f"internal error: {type(e).__name__}: {e}")
        return 1


def _report(log, msg: str) -> None:
    if log is None:
        os.write(2, f"kobako-runtime: {msg}\n".encode())
    else:
        log.error(msg)


def entry() -> None:
    """Console-script entry: skip the interpreter's teardown (a few ms per call)."""
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        code = code or 1
    os._exit(code)


if __name__ == "__main__":
    entry()

"""kobako: the engine's command line (docker's verbs and flags).

Each command lives in a module by subject (images.py, containers.py, system.py) and
is imported only when called, so `kobako run` does not pay for `kobako push`.
Every error a user can cause ends in one line on stderr and exit 125, as docker does;
a container's own exit code passes through `run`.
"""

from __future__ import annotations

import os
import sys

from kobako import __version__

# command -> module under kobako.cli; aliases map docker's long forms onto the short ones
MODULES = {
    "pull": "images", "push": "images", "images": "images", "image inspect": "images", "tag": "images",
    "rmi": "images", "image prune": "images", "history": "images", "save": "images", "load": "images",
    "import": "images", "login": "images", "logout": "images",
    "build": "build", "builder prune": "build",
    "run": "containers", "rm": "containers", "ps": "containers", "commit": "containers",
    "diff": "containers", "export": "containers", "create": "containers", "start": "containers",
    "stop": "containers", "kill": "containers", "restart": "containers", "pause": "containers",
    "unpause": "containers", "wait": "containers", "logs": "containers", "exec": "containers",
    "top": "containers", "rename": "containers", "inspect": "containers",
    "container prune": "containers", "cp": "containers", "attach": "containers",
    "system df": "system", "system prune": "system", "system check": "system",
    "volume create": "volumes", "volume ls": "volumes", "volume inspect": "volumes",
    "volume rm": "volumes", "volume prune": "volumes",
    "stats": "host", "update": "host", "port": "host", "events": "host",
    "system events": "host", "version": "host", "system info": "host",
    "system restore": "host", "system service": "host",
    "network create": "networks", "network ls": "networks", "network inspect": "networks",
    "network rm": "networks", "network prune": "networks", "network connect": "networks",
    "network disconnect": "networks", "network reload": "networks", "network update": "networks",
    "explain": "explain", "completion": "reference",
}
ALIASES = {
    "image ls": "images", "image list": "images", "image rm": "rmi", "image remove": "rmi",
    "image pull": "pull", "image push": "push", "image tag": "tag", "image history": "history",
    "image save": "save", "image load": "load", "image import": "import", "image build": "build",
    "container run": "run", "container rm": "rm", "container ls": "ps", "container list": "ps",
    "container commit": "commit", "container diff": "diff", "container export": "export",
    "container create": "create", "container start": "start", "container stop": "stop",
    "container kill": "kill", "container restart": "restart", "container pause": "pause",
    "container unpause": "unpause", "container wait": "wait", "container logs": "logs",
    "container exec": "exec", "container top": "top", "container rename": "rename",
    "container inspect": "inspect", "container explain": "explain",
    "info": "system info", "container stats": "stats",
    "container cp": "cp", "container attach": "attach",
    "container update": "update", "container port": "port", "system version": "version",
    "volume list": "volume ls", "volume remove": "volume rm",
    "network list": "network ls", "network remove": "network rm",
}
GROUPS = ("image", "container", "system", "volume", "network", "builder")
# commands that must work where the engine cannot start, and make nothing: no Engine for them
NO_ENGINE = ("system check", "completion")

USAGE = f"""Usage:  kobako [OPTIONS] COMMAND

kobako {__version__}: a container engine built from Linux primitives, daemonless.

Options (before the command; each overrides its environment variable):
  --root DIR          Data root: images, layers, containers, volumes (KOBAKO_ROOT)
  --runroot DIR       Run root: state that a reboot clears (KOBAKO_RUN)
  --config DIR        Client config: auth.json written, Docker's config.json read (KOBAKO_CONFIG)
  -D, --debug         Debug output: where an internal error happened (KOBAKO_DEBUG=1)
  -l, --log-level L   debug (as -D), info, warn, error or fatal
  -v, --version       Print the version and quit

Images:
  pull        Download an image from a registry
  push        Upload an image to a registry
  images      List images (image ls)
  image inspect / history / tag / rmi / image prune
  save, load  Images to and from tar archives (docker-archive or OCI layout)
  import      Create an image from a tarball or a host directory
  build       Build an image from a Dockerfile (builder prune: clear the build cache)
  login, logout

Containers:
  run         Create and run a container (-d: in the background, under the monitor)
  ps          List containers
  rm          Remove containers
  commit      Create an image from a container's changes
  diff        Show a container's changes
  export      A container's filesystem as a tar archive

  create, start, stop, kill, restart, pause, unpause, wait, logs, exec, top, rename, inspect
  attach      Join a detached container's input and output
  cp          Copy files between a container and the host
  container prune  Remove all stopped containers
  explain     The kernel objects a container is made of, and a host command to check each

Volumes:
  volume create, ls, inspect, rm, prune

Networks:
  network create, ls, inspect, rm, prune, connect, disconnect, reload, update

  stats, update, port, events (system events)

System:
  system df, system prune, system info (info), system restore
  system check    What this host lacks for kobako, and the fix for each
  system service  Serve the Docker Engine API on a unix socket
  version     Show the version
  completion  Print a shell completion script (bash, zsh, fish)

Run 'kobako COMMAND --help' (or 'kobako help COMMAND') for more information on a command,
'kobako GROUP --help' for a group's commands (image, container, network, volume, system).
The OCI runtime is kobako-runtime (runc's command line).
"""


# global flag -> the environment variables it sets (read by kobako/paths.py, kobako/image/auth.py,
# and inherited by every process the command starts: monitor, rootless namespace, runtime)
GLOBAL_DIRS = {"--root": ("KOBAKO_ROOT",), "--runroot": ("KOBAKO_RUN",),
               "--config": ("KOBAKO_CONFIG", "DOCKER_CONFIG")}
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


def global_flags(argv: list[str]) -> list[str]:
    """Apply the options before the command (`kobako --root DIR ps`) to os.environ, as
    docker's and podman's global flags; returns the rest of argv, from the command on.
    Runs before anything reads a path (rootless.enter() decides the roots from these)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-h", "--help", "-v", "--version"):
        a = argv[i]
        name, eq, value = a.partition("=") if a.startswith("--") else (a[:2], "=" if len(a) > 2 else "",
                                                                       a[2:].removeprefix("="))
        if name in ("-D", "--debug"):
            if eq and value.lower() in ("false", "0", "no"):
                os.environ.pop("KOBAKO_DEBUG", None)
            else:
                os.environ["KOBAKO_DEBUG"] = "1"
            i += 1
            continue
        if name not in GLOBAL_DIRS and name not in ("-l", "--log-level"):
            raise GlobalUsageError(f"unknown flag: {name}" if a.startswith("--")
                                   else f"unknown shorthand flag: {a[1:2]!r} in {a}")
        if not eq:
            i += 1
            if i >= len(argv):
                raise GlobalUsageError(f"flag needs an argument: {name}")
            value = argv[i]
        if name in ("-l", "--log-level"):
            if value not in LOG_LEVELS:
                raise GlobalUsageError(f'invalid argument "{value}" for "{name}" flag: '
                                       f"not one of {', '.join(LOG_LEVELS)}")
            if value == "debug":
                os.environ["KOBAKO_DEBUG"] = "1"
            else:
                os.environ.pop("KOBAKO_DEBUG", None)
        else:
            if not value:
                raise GlobalUsageError(f"{name} needs a directory")
            for var in GLOBAL_DIRS[name]:  # absolute: the monitor and the runtime run elsewhere
                os.environ[var] = os.path.abspath(os.path.expanduser(value))
        i += 1
    return argv[i:]


class GlobalUsageError(ValueError):
    """A mistake in the options before the command (exit 125, as docker's)."""


def _lookup(argv: list[str]) -> tuple[str | None, list[str]]:
    if not argv:
        return None, []
    if argv[0] in GROUPS and len(argv) > 1:
        two = f"{argv[0]} {argv[1]}"
        two = ALIASES.get(two, two)
        if two in MODULES:
            return two, argv[2:]
        return f"{argv[0]} {argv[1]}", argv[2:]
    one = ALIASES.get(argv[0], argv[0])
    return one, argv[1:]


def group_help(group: str) -> str:
    """`kobako network --help`: the group's commands, each with its own one-line help."""
    by_target: dict[str, list[str]] = {}  # a command and its aliases on one line (ls, list)
    for n in sorted(MODULES) + sorted(ALIASES):
        if n.startswith(group + " "):
            by_target.setdefault(ALIASES.get(n, n), []).append(n.split(" ", 1)[1])
    lines = [f"Usage:  kobako {group} COMMAND", "", "Commands:"]
    for target, names in sorted(by_target.items(), key=lambda kv: kv[1][0]):
        mod = __import__(f"kobako.cli.{MODULES[target]}", fromlist=["COMMANDS"])
        lines.append(f"  {', '.join(dict.fromkeys(names)):<14} {mod.COMMANDS[target][0].help}")
    lines += ["", f"Run 'kobako {group} COMMAND --help' for more information on a command."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0].startswith("-"):
        try:
            argv = global_flags(argv)
        except GlobalUsageError as e:
            sys.stderr.write(f"kobako: {e}\nSee 'kobako --help'.\n")
            return 125
    if argv[:1] == ["help"] and len(argv) > 1:  # `kobako help run`: as `kobako run --help`
        argv = argv[1:] + ["--help"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    if argv[0] in GROUPS and (len(argv) == 1 or argv[1] in ("-h", "--help", "help")):
        sys.stdout.write(group_help(argv[0]))
        return 0
    if argv[0] in ("--version", "-v"):
        print(f"kobako version {__version__}")
        return 0
    name, rest = _lookup(argv)
    if name not in MODULES:
        sys.stderr.write(f"kobako: '{' '.join(argv[:2]) if argv[0] in GROUPS else argv[0]}' is not a "
                         "kobako command.\nSee 'kobako --help'.\n")
        return 125
    from kobako.cli import parser
    mod = __import__(f"kobako.cli.{MODULES[name]}", fromlist=["COMMANDS"])
    cmd, handler = mod.COMMANDS[name]
    try:
        args = parser.parse(cmd, rest)
        if args.help:
            sys.stdout.write(parser.help_text(cmd))
            return 0
        from kobako import config  # first: a bad file stops the command before anything is made
        config.apply_proxy(config.get())
        if os.geteuid() and name not in NO_ENGINE:  # a user: into the user's own namespace (rootless)
            from kobako.engine import rootless
            rootless.enter()
        from kobako.engine.lifecycle import Engine
        from kobako.steps import arm_from_environment
        arm_from_environment()
        if getattr(args, "trace", False):  # the step record, shown as it happens (kobako/steps.py)
            from kobako.steps import trace_to
            trace_to(os.dup(2))
        return handler(None if name in NO_ENGINE else Engine(), args)
    except parser.UsageError as e:
        sys.stderr.write(f"kobako {name}: {e}\nSee 'kobako {name} --help'.\n")
        return 125
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        from kobako.errors import KobakoError, describe
        if os.environ.get("KOBAKO_DEBUG"):
            import traceback
            traceback.print_exc()
        if isinstance(e, (KobakoError, OSError)):
            sys.stderr.write(f"Error: {describe(e)}\n")
            return getattr(e, "exit_code", 125)  # 126/127: the program could not start
        sys.stderr.write(f"Error: internal error: {type(e).__name__}: {e} "
                         "(kobako -D or KOBAKO_DEBUG=1 shows where)\n")
        return 125


def entry() -> None:
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    os._exit(code)


if __name__ == "__main__":
    entry()

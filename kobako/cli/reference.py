"""Man pages and shell completion, generated from the command tables (main.MODULES, ALIASES,
GROUPS and each module's COMMANDS), so neither can drift from what the parser accepts.

The man pages are written when kobako is installed (`python3 -m kobako.cli.reference man DIR`,
run by scripts/install.sh and scripts/build-deb.sh), never at start-up; `kobako completion
bash|zsh|fish` prints a completion script. Both import every command module, which is why
this module is loaded only for them.
"""

from __future__ import annotations

import os
import sys

from kobako import __version__
from kobako.cli import main
from kobako.cli.parser import Command, Opt, UsageError

SHELLS = ("bash", "zsh", "fish")
# the options before the command that take a directory (main.USAGE's "Options" describes them all)
GLOBAL_DIRS = tuple(main.GLOBAL_DIRS)
LOG_LEVELS = main.LOG_LEVELS
# a usage word -> what completes a positional argument in that place
SLOT_KINDS = {"IMAGE": "image", "SOURCE_IMAGE[:TAG]": "image", "NAME[:TAG]": "image",
              "CONTAINER": "container", "NAME|ID": "container", "NETWORK": "network", "VOLUME": "volume",
              "PATH": "file",
              "DIRECTORY": "file", "DEST_PATH": "file", "SRC_PATH": "file", "CONTAINER:SRC_PATH": "container"}
# a value option (by its long name) -> what completes its value: names kobako lists, files, or
# fixed words; the others complete nothing (bash falls back to file names)
VALUE_KINDS = {"--network": "network", "--net": "network", "--volumes-from": "container",
               "--link": "container", "--volume": "volume", "--file": "file", "--env-file": "file",
               "--output": "file",
               "--input": "file", "--iidfile": "file", "--cidfile": "file", "--label-file": "file",
               "--cache-from": "image", "--tlscacert": "file", "--tlscert": "file", "--tlskey": "file"}
FIXED = {"--log-driver": "json-file local none", "--restart": "no always unless-stopped on-failure",
         "--pull": "missing always never", "--userns": "host auto private keep-id",
         "--progress": "auto plain tty quiet", "--pid": "host", "--ipc": "host private shareable",
         "--uts": "host", "--format": "json table"}


def commands() -> dict[str, Command]:
    """Every command by its name (`run`, `network create`), from each module's table."""
    out = {}
    for name in sorted(main.MODULES):
        mod = __import__(f"kobako.cli.{main.MODULES[name]}", fromlist=["COMMANDS"])
        out[name] = mod.COMMANDS[name][0]
    return out


def aliases() -> dict[str, str]:
    """alias -> the command it names (`image ls` -> `images`)."""
    return {a: t for a, t in main.ALIASES.items() if t in main.MODULES}


def global_options() -> list[tuple[str, str]]:
    """(flags, help) of the options before the command, read from main.USAGE's Options section."""
    out, inside = [], False
    for line in main.USAGE.splitlines():
        if line.startswith("Options"):
            inside = True
        elif inside and not line.strip():
            break
        elif inside:
            flags, _, text = line.strip().partition("  ")
            out.append((flags, text.strip()))
    return out


def global_flags() -> list[str]:
    return [f.rstrip(",") for flags, _ in global_options() for f in flags.split() if f.startswith("-")]


def value_completion(o: Opt) -> str:
    """How an option's value completes: "fixed:WORD,WORD", a kind (file, container, ...) or ""."""
    for n in o.names:
        if n in FIXED:
            return "fixed:" + FIXED[n].replace(" ", ",")
        if n in VALUE_KINDS:
            return VALUE_KINDS[n]
    return ""


def page_name(command: str) -> str:
    return "kobako-" + command.replace(" ", "-")


def slots(cmd: Command) -> tuple[list[str], bool]:
    """What completes each positional argument (from the usage line), and whether the last repeats."""
    kinds, repeat = [], False
    for word in cmd.usage.split():
        if word == "|":  # `cp`: two forms; the first is enough to complete
            break
        if word.endswith("...]"):
            repeat = True
            continue
        bare = word.strip("[]")
        if bare == "OPTIONS":
            continue
        if bare.isalpha() is False and bare.replace("|", "").isalpha() and bare.islower():
            kinds.append("fixed:" + bare.replace("|", ","))  # `bash|zsh|fish`: the words themselves
        else:
            kinds.append(SLOT_KINDS.get(bare, "file" if bare == "file|URL|-|DIRECTORY" else "none"))
    return kinds, repeat


# ---------------------------------------------------------------- man pages (roff)


def _roff(text: str) -> str:
    """Text safe in a roff line: backslashes and hyphens escaped, no control character first."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def _flag_line(o: Opt) -> str:
    flags = ", ".join(f"\\fB{_roff(n)}\\fR" for n in o.names)
    value = {"bool": "", "list": " \\fIvalue\\fR (repeatable)", "str": " \\fIstring\\fR"}.get(
        o.kind, f" \\fI{o.kind}\\fR")
    return flags + value


def _header(name: str, summary: str) -> list[str]:
    return [f'.TH "{name.upper()}" "1" "" "kobako {__version__}" "kobako Manual"', ".nh", ".ad l", ".SH NAME",
            f"{_roff(name)} \\- {_roff(summary)}"]


def command_page(name: str, cmd: Command, other_names: list[str]) -> str:
    lines = _header(page_name(name), cmd.help)
    lines += [".SH SYNOPSIS", f".B kobako {_roff(name)}", _roff(cmd.usage) if cmd.usage else "",
              ".SH DESCRIPTION", _roff(cmd.help) + "."]
    if other_names:
        lines.append("Also: " + ", ".join(f"\\fBkobako {_roff(a)}\\fR" for a in other_names) + ".")
    lines += [".SH OPTIONS"]
    for o in cmd.opts:
        lines += [".TP", _flag_line(o), _roff(o.help or "")]
    lines += [".TP", "\\fB\\-\\-help\\fR", "Print usage."]
    lines += [".SH SEE ALSO", ".BR kobako (1)"]
    return "\n".join(line for line in lines if line != "") + "\n"


def group_page(group: str, cmds: dict[str, Command]) -> str:
    lines = _header(page_name(group), f"manage {group}s" if group != "system" else "manage kobako")
    lines += [".SH SYNOPSIS", f".B kobako {group}", "COMMAND", ".SH COMMANDS"]
    for name in sorted(n for n in cmds if n.startswith(group + " ")):
        lines += [".TP", f".BR {page_name(name)} (1)", _roff(cmds[name].help)]
    lines += [".SH SEE ALSO", ".BR kobako (1)"]
    return "\n".join(lines) + "\n"


def main_page(cmds: dict[str, Command]) -> str:
    lines = _header("kobako", "a container engine built from Linux primitives, daemonless")
    lines += [".SH SYNOPSIS", ".B kobako", "[OPTIONS] COMMAND [ARG...]", ".SH DESCRIPTION",
              "kobako runs containers with Docker's verbs and flags, without a daemon: each command "
              "does its work and exits; detached containers run under a small shared monitor. "
              "Errors a user can cause print one line starting with \\fBError:\\fR and exit 125.",
              ".SH OPTIONS", "Global options come before the command and override their environment "
              "variables."]
    for flags, text in global_options():
        lines += [".TP", "\\fB" + _roff(flags) + "\\fR", _roff(text)]
    lines += [".SH COMMANDS"]
    for name, cmd in cmds.items():
        lines += [".TP", f".BR {page_name(name)} (1)", _roff(cmd.help)]
    lines += [".SH ENVIRONMENT", ".TP", ".B KOBAKO_ROOT", "Data root (default /var/lib/kobako; "
              "a user's: ~/.local/share/kobako).", ".TP", ".B KOBAKO_RUN",
              "Run root (default /run/kobako).", ".TP", ".B KOBAKO_CONFIG",
              "Client configuration directory.", ".TP", ".B KOBAKO_DEBUG",
              "Set to 1: an internal error prints where it happened.",
              ".SH SEE ALSO", *[f".BR {page_name(g)} (1)" for g in main.GROUPS]]
    return "\n".join(lines) + "\n"


def man_pages() -> tuple[dict[str, str], dict[str, str]]:
    """Every page by file name (`kobako-run.1`), and the aliases' pages as links to them."""
    cmds = commands()
    alias_of = aliases()
    by_target: dict[str, list[str]] = {}
    for a, t in sorted(alias_of.items()):
        by_target.setdefault(t, []).append(a)
    pages = {"kobako.1": main_page(cmds)}
    for name, cmd in cmds.items():
        pages[page_name(name) + ".1"] = command_page(name, cmd, by_target.get(name, []))
    for g in main.GROUPS:
        pages.setdefault(page_name(g) + ".1", group_page(g, cmds))
    links = {page_name(a) + ".1": page_name(t) + ".1" for a, t in alias_of.items()
             if page_name(a) + ".1" not in pages}
    return pages, links


def write_man(outdir: str) -> int:
    os.makedirs(outdir, exist_ok=True)
    pages, links = man_pages()
    for fname, text in pages.items():
        with open(os.path.join(outdir, fname), "w") as f:
            f.write(text)
    for fname, target in links.items():
        path = os.path.join(outdir, fname)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(target, path)
    return len(pages) + len(links)


# ---------------------------------------------------------------- completion


def _tables() -> dict:
    cmds = commands()
    groups = {g: sorted({n.split(" ", 1)[1] for n in list(cmds) + list(aliases()) if n.startswith(g + " ")})
              for g in main.GROUPS}
    top = sorted({n for n in list(cmds) + list(aliases()) if " " not in n} | set(main.GROUPS) | {"help"})
    flags = {n: [f for o in c.opts for f in o.names] + ["--help"] for n, c in cmds.items()}
    vflags = {n: [f for o in c.opts if o.kind != "bool" for f in o.names] for n, c in cmds.items()}
    return {"cmds": cmds, "groups": groups, "top": top, "flags": flags, "vflags": vflags}


def _sq(s: str) -> str:
    """A single-quoted word for bash and zsh."""
    return "'" + s.replace("'", "'\\''") + "'"


def _help_of(t: dict, word: str) -> str:
    target = main.ALIASES.get(word, word)
    if target in t["cmds"]:
        return t["cmds"][target].help
    return f"manage {word}s" if word in main.GROUPS else "help on a command"


# shared by bash and zsh: the names a dynamic kind lists, from kobako itself (quiet on failure)
_NAMES_SH = """_kobako_names() {
  case $1 in
    container) "$_kobako_exe" ps -a --format '{{.Names}}' 2>/dev/null ;;
    image) "$_kobako_exe" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -v '<none>' ;;
    network) "$_kobako_exe" network ls --format '{{.Name}}' 2>/dev/null ;;
    volume) "$_kobako_exe" volume ls --format '{{.Name}}' 2>/dev/null ;;
  esac
}"""


def _sh_tables(t: dict, decl: str) -> list[str]:
    def arr(name: str, d: dict) -> list[str]:
        return [f"{decl} {name}=(", *[f"  [{_sq(k)}]={_sq(v)}" for k, v in d.items()], ")"]
    kinds = {n: " ".join(slots(c)[0]) + (" +" if slots(c)[1] else "") for n, c in t["cmds"].items()}
    return (arr("_kobako_sub", {g: " ".join(s) for g, s in t["groups"].items()})
            + arr("_kobako_alias", aliases())
            + arr("_kobako_flags", {n: " ".join(f) for n, f in t["flags"].items()})
            + arr("_kobako_vflags", {n: " ".join(f) for n, f in t["vflags"].items()})
            + arr("_kobako_slots", kinds)
            + arr("_kobako_vkind", {f"{n} {f}": value_completion(o) for n, c in t["cmds"].items()
                                    for o in c.opts if o.kind != "bool" and value_completion(o)
                                    for f in o.names}))


_BASH = r"""
_kobako_global='GLOBALS'
_kobako_top='TOP'

# which command the words name (groups and aliases resolved), and where its arguments start
_kobako_find() {  # sets cmd, i
  i=1
  while [ "$i" -lt "$COMP_CWORD" ]; do
    case ${COMP_WORDS[i]} in
      --root|--runroot|--config|-l|--log-level) i=$((i + 2)) ;;
      -*) i=$((i + 1)) ;;
      *) break ;;
    esac
  done
  cmd=""
  [ "$i" -lt "$COMP_CWORD" ] || return 0
  cmd=${COMP_WORDS[i]}; i=$((i + 1))
  if [ -n "${_kobako_sub[$cmd]+x}" ] && [ "$i" -lt "$COMP_CWORD" ]; then
    cmd="$cmd ${COMP_WORDS[i]}"; i=$((i + 1))
  fi
  cmd=${_kobako_alias[$cmd]:-$cmd}
}

_kobako_complete_kind() {  # kind word
  case $1 in
    fixed:*) local words=${1#fixed:}; COMPREPLY=($(compgen -W "${words//,/ }" -- "$2")) ;;
    file) COMPREPLY=($(compgen -f -- "$2")) ;;
    container|image|network|volume)
      local names; names=$(_kobako_names "$1")
      COMPREPLY=($(compgen -W "$names" -- "$2")) ;;
  esac
}

_kobako() {
  local _kobako_exe=${COMP_WORDS[0]} cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
  local cmd i n=0 w
  COMPREPLY=()
  _kobako_find
  if [ -z "$cmd" ]; then
    case $prev in
      --root|--runroot|--config) COMPREPLY=($(compgen -d -- "$cur")); return ;;
      -l|--log-level) COMPREPLY=($(compgen -W 'LEVELS' -- "$cur")); return ;;
    esac
    case $cur in
      -*) COMPREPLY=($(compgen -W "$_kobako_global" -- "$cur")) ;;
      *) COMPREPLY=($(compgen -W "$_kobako_top" -- "$cur")) ;;
    esac
    return
  fi
  if [ -n "${_kobako_sub[$cmd]+x}" ]; then  # a group and nothing more yet
    COMPREPLY=($(compgen -W "${_kobako_sub[$cmd]}" -- "$cur")); return
  fi
  if [ "$cmd" = help ]; then COMPREPLY=($(compgen -W "$_kobako_top" -- "$cur")); return; fi
  [ -n "${_kobako_flags[$cmd]+x}" ] || return
  case " ${_kobako_vflags[$cmd]} " in
    *" $prev "*) _kobako_complete_kind "${_kobako_vkind[$cmd $prev]}" "$cur"; return ;;
  esac
  while [ "$i" -lt "$COMP_CWORD" ]; do  # how many positionals come before this word
    w=${COMP_WORDS[i]}
    case " ${_kobako_vflags[$cmd]} " in
      *" $w "*) i=$((i + 2)); continue ;;
    esac
    case $w in -*) ;; *) n=$((n + 1)) ;; esac
    i=$((i + 1))
  done
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "${_kobako_flags[$cmd]}" -- "$cur")); return
  fi
  local -a kinds=(${_kobako_slots[$cmd]})
  [ ${#kinds[@]} -gt 0 ] || return
  local last=$((${#kinds[@]} - 1))
  if [ "${kinds[last]}" = + ]; then
    last=$((last - 1)); [ "$n" -le "$last" ] || n=$last
  fi
  [ "$n" -le "$last" ] && _kobako_complete_kind "${kinds[n]}" "$cur"
}
complete -o default -F _kobako kobako
"""


def bash_script() -> str:
    t = _tables()
    body = (_BASH.replace("GLOBALS", " ".join(global_flags())).replace("TOP", " ".join(t["top"]))
            .replace("LEVELS", " ".join(LOG_LEVELS)))
    return "\n".join(["# bash completion for kobako (kobako completion bash), generated from its tables",
                      *_sh_tables(t, "declare -gA"), _NAMES_SH]) + body


_ZSH = r"""
_kobako_kind() {  # kind
  case $1 in
    fixed:*) compadd ${(s:,:)${1#fixed:}} ;;
    file) _files ;;
    container|image|network|volume)
      local -a names; names=(${(f)"$(_kobako_names $1)"})
      compadd -a names ;;
  esac
}

_kobako() {
  local _kobako_exe=${words[1]} cur=${words[CURRENT]} prev=${words[CURRENT-1]}
  local cmd="" i=2 n=0 w
  while (( i < CURRENT )); do
    case ${words[i]} in
      --root|--runroot|--config|-l|--log-level) (( i += 2 )) ;;
      -*) (( i += 1 )) ;;
      *) break ;;
    esac
  done
  if (( i >= CURRENT )); then
    case $prev in
      --root|--runroot|--config) _files -/; return ;;
      -l|--log-level) compadd LEVELS; return ;;
    esac
    if [[ $cur == -* ]]; then _describe -t options option _kobako_global_desc
    else _describe -t commands command _kobako_top_desc; fi
    return
  fi
  cmd=${words[i]}; (( i += 1 ))
  if (( ${+_kobako_sub[$cmd]} )); then
    if (( i >= CURRENT )); then compadd ${=_kobako_sub[$cmd]}; return; fi
    cmd="$cmd ${words[i]}"; (( i += 1 ))
  fi
  (( ${+_kobako_alias[$cmd]} )) && cmd=${_kobako_alias[$cmd]}
  if [[ $cmd == help ]]; then _describe -t commands command _kobako_top_desc; return; fi
  (( ${+_kobako_flags[$cmd]} )) || return
  if [[ " ${_kobako_vflags[$cmd]} " == *" $prev "* ]]; then
    _kobako_kind "${_kobako_vkind[$cmd $prev]}"; return
  fi
  while (( i < CURRENT )); do
    w=${words[i]}
    if [[ " ${_kobako_vflags[$cmd]} " == *" $w "* ]]; then (( i += 2 )); continue; fi
    [[ $w == -* ]] || (( n += 1 ))
    (( i += 1 ))
  done
  if [[ $cur == -* ]]; then compadd -- ${=_kobako_flags[$cmd]}; return; fi
  local -a kinds; kinds=(${=_kobako_slots[$cmd]})
  local last=${#kinds}
  if [[ ${kinds[last]} == + ]]; then (( last -= 1 )); (( n < last )) || n=$(( last - 1 )); fi
  (( n < last )) && _kobako_kind ${kinds[n+1]}
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  _kobako "$@"
else
  compdef _kobako kobako
fi
"""


def zsh_script() -> str:
    t = _tables()
    top = [f"{w}:{_help_of(t, w)}" for w in t["top"]]
    glob = [f"{f.rstrip(',')}:{text}" for flags, text in global_options() for f in flags.split()
            if f.startswith("-")]
    lines = ["#compdef kobako", "# zsh completion for kobako (kobako completion zsh), generated from its "
             "command tables", *_sh_tables(t, "typeset -gA"),
             "typeset -ga _kobako_top_desc=(" + " ".join(_sq(x) for x in top) + ")",
             "typeset -ga _kobako_global_desc=(" + " ".join(_sq(x) for x in glob) + ")", _NAMES_SH]
    return "\n".join(lines) + _ZSH.replace("LEVELS", " ".join(LOG_LEVELS))


def _fq(s: str) -> str:
    """A single-quoted word for fish."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


_FISH = r"""
# the command the words so far name (groups and aliases resolved); a group alone is itself
function __kobako_cmd
    set -l words (commandline -opc)
    set -e words[1]
    while set -q words[1]
        switch $words[1]
            case --root --runroot --config -l --log-level
                set -e words[1]
                set -q words[1]; and set -e words[1]
            case '-*'
                set -e words[1]
            case '*'
                break
        end
    end
    set -q words[1]; or return 1
    set -l cmd $words[1]
    if contains -- $cmd GROUPS; and set -q words[2]
        set cmd "$cmd $words[2]"
    end
    switch $cmd
ALIASES
    end
    echo $cmd
end

function __kobako_is
    test (__kobako_cmd) = "$argv"
end

function __kobako_names
    set -l exe (commandline -opc)[1]
    switch $argv[1]
        case container
            $exe ps -a --format '{{.Names}}' 2>/dev/null
        case image
            $exe images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | string match -v '*<none>*'
        case network
            $exe network ls --format '{{.Name}}' 2>/dev/null
        case volume
            $exe volume ls --format '{{.Name}}' 2>/dev/null
    end
end

complete -c kobako -f
"""


def _fish_flag(name: str) -> str:
    return f"-l {name[2:]}" if name.startswith("--") else f"-s {name[1:]}"


def fish_script() -> str:
    t = _tables()
    alias_lines = "\n".join(f"        case {_fq(a)}\n            set cmd {_fq(tgt)}"
                            for a, tgt in aliases().items())
    no_cmd = "not __kobako_cmd >/dev/null"
    out = ["# fish completion for kobako (kobako completion fish), generated from its command tables",
           _FISH.replace("GROUPS", " ".join(main.GROUPS)).replace("ALIASES", alias_lines)]
    for flags, text in global_options():
        names = [f.rstrip(",") for f in flags.split() if f.startswith("-")]
        spec = " ".join(_fish_flag(n) for n in names)
        if "--log-level" in names:
            spec += " -x -a " + _fq(" ".join(LOG_LEVELS))
        elif any(n in GLOBAL_DIRS for n in names):
            spec += " -r -F"
        out.append(f"complete -c kobako -n {_fq(no_cmd)} {spec} -d {_fq(text)}")
    for w in t["top"]:
        out.append(f"complete -c kobako -n {_fq(no_cmd)} -a {_fq(w)} -d {_fq(_help_of(t, w))}")
    for g, subs in t["groups"].items():
        for s in subs:
            out.append(f"complete -c kobako -n {_fq('__kobako_is ' + g)} -a {_fq(s)} "
                       f"-d {_fq(_help_of(t, g + ' ' + s))}")
    for name, cmd in t["cmds"].items():
        cond = _fq(f"__kobako_is '{name}'" if " " in name else f"__kobako_is {name}")
        for o in cmd.opts:
            spec = " ".join(_fish_flag(n) for n in o.names)
            if o.kind != "bool":
                how = value_completion(o)
                # -x: these words and no file names; -r alone: any value, file names offered
                spec += (f" -x -a {_fq(how[6:].replace(',', ' '))}" if how.startswith("fixed:")
                         else " -r -F" if how == "file" else f" -x -a '(__kobako_names {how})'" if how
                         else " -r")
            out.append(f"complete -c kobako -n {cond} {spec} -d {_fq(o.help or '')}")
        out.append(f"complete -c kobako -n {cond} -l help -d 'Print usage'")
        kinds, _ = slots(cmd)
        first = kinds[0] if kinds else "none"
        if first in ("container", "image", "network", "volume"):
            out.append(f"complete -c kobako -n {cond} -a '(__kobako_names {first})'")
        elif first == "file":
            out.append(f"complete -c kobako -n {cond} -F")
        elif first.startswith("fixed:"):
            out.append(f"complete -c kobako -n {cond} -a {_fq(first[6:].replace(',', ' '))}")
    return "\n".join(out) + "\n"


def completion(_engine, args) -> int:
    shell = args.args[0]
    if shell not in SHELLS:
        raise UsageError(f'unsupported shell "{shell}": one of {", ".join(SHELLS)}')
    sys.stdout.write({"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[shell]())
    return 0


COMMANDS = {
    "completion": (Command("completion", "bash|zsh|fish",
                           "Print a shell completion script: source it, or install it where the shell "
                           "looks (install.sh does)", [], min_args=1, max_args=1), completion),
}


if __name__ == "__main__":  # `python3 -m kobako.cli.reference man DIR`: the man pages, at install time
    if sys.argv[1:2] != ["man"] or len(sys.argv) != 3:
        sys.exit("usage: python3 -m kobako.cli.reference man OUTDIR")
    print(f"{write_man(sys.argv[2])} man pages in {sys.argv[2]}")

"""Dockerfiles: the parser (directives, continuations, comments, JSON and shell forms,
flags), Docker's shell-word lexer for variable substitution (`$VAR`, `${VAR:-x}`,
`${VAR:+x}`, quotes, the escape character), and the stages of a multi-stage file.

What an instruction *does* is the builder's (engine/build.py); this module only says what
was written, checked. The rules are moby's (builder/dockerfile/parser and shell_lex.go)
and BuildKit's where the two agree; errors name the line, as docker's do.
"""

from __future__ import annotations

import csv
import json
import posixpath
import re

from kobako.errors import InvalidArgument, NotImplementedYet


class DockerfileError(InvalidArgument):
    pass


# instruction -> flags it takes (name -> takes a value); anything else is refused
COMMANDS: dict[str, tuple[str, ...]] = {
    "from": ("platform",), "run": ("mount", "network", "security"), "cmd": (), "entrypoint": (),
    "copy": ("from", "chown", "chmod", "link"), "add": ("chown", "chmod", "link", "checksum", "keep-git-dir"),
    "env": (), "arg": (), "label": (), "workdir": (), "user": (), "expose": (), "volume": (),
    "stopsignal": (), "healthcheck": ("interval", "timeout", "start-period", "start-interval", "retries"),
    "shell": (), "onbuild": (), "maintainer": (),
}
# flags that may be given more than once (BuildKit's string-list flags); any other refuses a repeat
REPEATABLE = {("run", "mount")}
# where Docker substitutes variables (the instruction's own words, before it runs)
EXPANDS = ("from", "copy", "add", "env", "arg", "label", "workdir", "user", "expose", "volume", "stopsignal")

_DIRECTIVE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")


class Heredoc:
    """A COPY/ADD source written inline (`COPY <<EOF /dest`): `word` (as written, `<<-"EOF"`),
    `name` (the file's name: the delimiter, quotes removed), `body` (its lines, each ending
    in a newline; `<<-` has stripped their leading tabs), `expand` (an unquoted delimiter:
    the builder substitutes the stage's variables in the body, as BuildKit does)."""

    __slots__ = ("word", "name", "body", "expand")

    def __init__(self, word: str, name: str, body: str, expand: bool) -> None:
        self.word, self.name, self.body, self.expand = word, name, body, expand

    def __repr__(self) -> str:
        return f"Heredoc({self.word!r}, {self.body!r})"


class Instruction:
    """One instruction as written: `cmd` (lower case), `flags` (--name=value; the last value
    of a repeated flag), `rest` (the text after the flags), `json` (the exec form's list, or
    None), `line` (its first line in the file), `original` (the whole instruction,
    continuations joined), `heredocs` (COPY/ADD: the inline files among its sources, in
    order). `flag_list(name)` has every value of a repeatable flag."""

    __slots__ = ("cmd", "flags", "rest", "json", "line", "original", "heredocs", "_lists")

    def __init__(self, cmd: str, flags: dict[str, str], rest: str, json_args: list[str] | None,
                 line: int, original: str, lists: dict[str, list[str]] | None = None) -> None:
        self.cmd, self.flags, self.rest, self.json = cmd, flags, rest, json_args
        self.line, self.original = line, original
        self.heredocs: list[Heredoc] = []
        self._lists = lists or {k: [v] for k, v in flags.items()}

    def flag_list(self, name: str) -> list[str]:
        """Every value given for --name, in order (RUN --mount may repeat)."""
        return list(self._lists.get(name) or [])

    def __repr__(self) -> str:
        return f"Instruction({self.original!r})"

    def error(self, msg: str) -> DockerfileError:
        return DockerfileError(f"Dockerfile line {self.line}: {self.cmd.upper()}: {msg}")


class Dockerfile:
    def __init__(self, instructions: list[Instruction], escape: str, syntax: str | None) -> None:
        self.instructions, self.escape, self.syntax = instructions, escape, syntax


def parse(text: str) -> Dockerfile:
    """The instructions of a Dockerfile; a parse error names its line."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.splitlines()
    escape, syntax = "\\", None
    i = 0
    seen: set[str] = set()
    while i < len(lines):  # parser directives: only at the very top, before anything else
        m = _DIRECTIVE.match(lines[i])
        if not m:
            break
        name, value = m.group(1).lower(), m.group(2)
        if name in seen:
            raise DockerfileError(f"Dockerfile line {i + 1}: only one {name} parser directive can be used")
        seen.add(name)
        if name == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(f"Dockerfile line {i + 1}: invalid escape token '{value}' does not "
                                      "match ` or \\")
            escape = value
        elif name == "syntax":
            syntax = value  # noted; kobako's own parser builds it (no frontend image is run)
        i += 1
    cont = re.compile(re.escape(escape) + r"[ \t]*$")
    out: list[Instruction] = []
    while i < len(lines):
        raw = lines[i]
        i += 1
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        start = i
        text_ = raw.lstrip()
        while cont.search(text_):
            text_ = cont.sub("", text_)
            # the next lines join on; comments and empty lines inside a continuation vanish
            while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                i += 1
            if i >= len(lines):
                break
            text_ += lines[i]
            i += 1
        text_, i = _heredocs(text_, lines, i, start)
        ins = _instruction(text_, start, escape)
        if ins.cmd in ("copy", "add") and ins.json is None and "<<" in ins.rest:
            i = _file_heredocs(ins, lines, i, escape)
        out.append(ins)
    return Dockerfile(out, escape, syntax)


_HEREDOC = re.compile(r"<<(-?)([\"']?)([A-Za-z_][A-Za-z0-9_]*)\2")
_FLAG = re.compile(r"(--\S+\s+)*")


def _heredocs(text: str, lines: list[str], i: int, line: int) -> tuple[str, int]:
    """RUN's heredocs (`RUN <<EOF`, `RUN cat <<-'EOF' > f`): the lines up to each delimiter
    join the instruction, so the shell reads them as it reads any heredoc. A RUN that is a
    heredoc alone runs its lines as the script. Other instructions are left as they are."""
    word, _, rest = text.strip().partition(" ")
    if word.lower() != "run":
        return text, i
    rest = rest.strip()
    cmd = rest[_FLAG.match(rest).end():]
    if cmd.startswith("[") or "<<" not in cmd:
        return text, i
    bodies = []
    for m in _HEREDOC.finditer(cmd):
        strip_tabs, delim = m.group(1) == "-", m.group(3)
        body = []
        while True:
            if i >= len(lines):
                raise DockerfileError(f"Dockerfile line {line}: RUN: the heredoc {delim} has no end line")
            ln = lines[i]
            i += 1
            if (ln.lstrip("\t") if strip_tabs else ln) == delim:
                break
            body.append(ln)
        bodies.append((m, body, delim))
    if len(bodies) == 1 and cmd.strip() == bodies[0][0].group(0):  # the whole command: its script
        m, body, _ = bodies[0]  # a script starting with #! runs as a program (run_script)
        flags = rest[:len(rest) - len(cmd)]
        script = "\n".join(x.lstrip("\t") if m.group(1) else x for x in body)
        return f"{word} {flags}{script}", i
    return text + "".join("\n" + "\n".join(b + [d]) for _, b, d in bodies), i


_FILE_HEREDOC = re.compile(r"^\d*<<(-?)([^<]+)$")


def heredoc_word(word: str) -> re.Match | None:
    """A COPY/ADD source word that is a heredoc (`<<EOF`, `<<-'EOF'`, `<<name.txt`): BuildKit's
    pattern, on the word as written (quotes in)."""
    return _FILE_HEREDOC.match(word)


def _file_heredocs(ins: Instruction, lines: list[str], i: int, escape: str) -> int:
    """COPY/ADD's heredocs: each source word `<<NAME` takes the lines after the instruction
    up to a line that is NAME (the next heredoc's lines follow), as BuildKit reads them;
    they become `ins.heredocs`. Returns the index of the line after the last one."""
    words = split_words(ins.rest, escape)
    if heredoc_word(words[-1]):
        raise ins.error("a heredoc cannot be the destination")
    for w in words[:-1]:
        m = heredoc_word(w)
        if not m:
            continue
        chomp, raw = m.group(1) == "-", m.group(2)
        name = Lexer("\\").word(raw, {})
        if not name or "/" in name or name in (".", "..") or any(c.isspace() for c in name):
            raise ins.error(f"invalid heredoc name {raw!r}: it names the file, so it must be a plain "
                            "file name")
        body = []
        while True:
            if i >= len(lines):
                raise ins.error(f"the heredoc {name} has no end line (unterminated heredoc)")
            ln = lines[i]
            i += 1
            if (ln.lstrip("\t") if chomp else ln) == name:
                break
            body.append((ln.lstrip("\t") if chomp else ln) + "\n")
        # a quote anywhere in the delimiter word turns expansion off, as in the shell
        ins.heredocs.append(Heredoc(w, name, "".join(body), expand="'" not in raw and '"' not in raw))
    return i


def _instruction(text: str, line: int, escape: str) -> Instruction:
    word, _, rest = text.strip().partition(" ") if " " in text.strip() else (text.strip(), "", "")
    if "\t" in word:
        word, _, more = word.partition("\t")
        rest = more + " " + rest
    cmd = word.lower()
    rest = rest.strip()
    if cmd not in COMMANDS:
        raise DockerfileError(f"Dockerfile parse error line {line}: unknown instruction: {word.upper()}")
    flags: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    while rest.startswith("--"):
        tok, _, after = rest.partition(" ")
        name, eq, value = tok[2:].partition("=")
        if not name:
            break
        if name not in COMMANDS[cmd]:
            raise DockerfileError(f"Dockerfile line {line}: unknown flag: --{name} for {cmd.upper()}")
        if name in flags and (cmd, name) not in REPEATABLE:
            raise DockerfileError(f"Dockerfile line {line}: {cmd.upper()}: duplicate flag specified: "
                                  f"--{name}")
        flags[name] = _unquote(value) if eq else "true"
        lists.setdefault(name, []).append(flags[name])
        rest = after.strip()
    json_args = None
    if cmd in ("run", "cmd", "entrypoint", "copy", "add", "volume", "shell") and rest.startswith("["):
        try:
            v = json.loads(rest)
        except ValueError:
            v = None
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            json_args = v
    ins = Instruction(cmd, flags, rest, json_args, line, text.strip(), lists)
    _check(ins)
    return ins


def _unquote(v: str) -> str:
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'" else v


def _check(ins: Instruction) -> None:
    """What each instruction needs in its arguments, checked at parse time as docker does."""
    c, rest = ins.cmd, ins.rest
    if not rest:
        raise ins.error("requires at least one argument")
    if c in ("copy", "add") and len(ins.json if ins.json is not None else rest.split()) < 2:
        raise ins.error("requires at least two arguments")
    if c == "shell" and ins.json is None:
        raise ins.error("requires the arguments to be in JSON form")
    if c == "from":
        w = rest.split()
        if len(w) not in (1, 3) or (len(w) == 3 and w[1].lower() != "as"):
            raise ins.error("expects one image name, optionally followed by 'AS name'")
    if c == "onbuild":
        trig = rest.split(None, 1)[0].lower()
        if trig in ("onbuild", "from", "maintainer"):
            raise ins.error(f"{trig.upper()} isn't allowed as an ONBUILD trigger")
        _instruction(rest, ins.line, "\\")  # the trigger must parse on its own
    for spec in ins.flag_list("mount"):  # checked as written; values are substituted when it runs
        parse_mount(spec, ins)


def run_script(ins: Instruction) -> str | None:
    """The script of a `RUN <<EOF` whose first line is `#!`: BuildKit writes it to a file and
    runs that file as the program (its interpreter need not be a shell). None otherwise."""
    if ins.cmd == "run" and ins.json is None and ins.rest.startswith("#!") and "\n" in ins.rest:
        return ins.rest + "\n"
    return None


# -- RUN --mount (BuildKit's commands_runmount.go) --------------------------------------------------

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_MOUNT_KEYS = {"type": "type", "from": "from", "source": "source", "src": "source", "target": "target",
               "dst": "target", "destination": "target", "readonly": "readonly", "ro": "readonly",
               "readwrite": "readwrite", "rw": "readwrite", "id": "id", "sharing": "sharing", "mode": "mode",
               "uid": "uid", "gid": "gid", "size": "size", "required": "required", "env": "env"}
_BOOLS = {"1": True, "t": True, "true": True, "TRUE": True, "True": True, "T": True,
          "0": False, "f": False, "false": False, "FALSE": False, "False": False, "F": False}  # Go ParseBool
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$", re.I)


class Mount:
    """One RUN --mount, as BuildKit reads it: `type` (bind, cache, tmpfs, secret), `target`,
    `source`, `from_`, `readonly`, `id`, `sharing`, `mode`/`uid`/`gid` (None: unset),
    `size` (bytes, tmpfs), `required` and `env` (secret)."""

    __slots__ = ("type", "target", "source", "from_", "readonly", "id", "sharing", "mode", "uid", "gid",
                 "size", "required", "env")

    def __init__(self) -> None:
        self.type = "bind"
        self.target = self.source = self.from_ = self.id = self.sharing = self.env = ""
        self.readonly = True
        self.mode: int | None = None
        self.uid: int | None = None
        self.gid: int | None = None
        self.size = 0
        self.required = False

    def key(self) -> str:
        """What the mount is, for the step's cache key (no content, no secret's value)."""
        return ",".join(f"{k}={getattr(self, k)}" for k in self.__slots__)


def parse_mount(spec: str, ins: Instruction, expand=None) -> Mount:
    """A --mount value (csv of key=value, or the words ro/rw/required) checked as BuildKit
    does. `expand` substitutes variables in each value (at the step); without it, a value
    with a variable is not checked yet. Errors name the instruction's line."""
    def bad(msg: str) -> DockerfileError:
        return ins.error(f"--mount={spec}: {msg}")

    try:
        fields = next(csv.reader([spec], strict=True), [])
    except csv.Error as ex:
        raise bad(f"failed to parse csv mounts: {ex}") from None
    m = Mount()
    ro_auto = True
    given: dict[str, str] = {}
    for field in fields:
        key, eq, value = field.partition("=")
        key = key.lower()
        if not eq:
            if key in ("readonly", "ro", "readwrite", "rw"):
                m.readonly, ro_auto = key in ("readonly", "ro"), False
                continue
            if key == "required":
                given["required"] = "true"
                continue
            raise bad(f"invalid field '{field}' must be a key=value pair")
        name = _MOUNT_KEYS.get(key)
        if name is None:
            raise bad(f"unexpected key '{key}' in '{field}' (type, from, source, target, readonly, rw, id, "
                      "sharing, mode, uid, gid, size, required, env)")
        if name == "from" and expand is None and re.search(r"\$.", value):
            raise bad("'from' doesn't support variable expansion, define alias stage instead")
        if expand is not None:
            value = expand(value)
        elif "$" in value:
            given.setdefault(name, "")  # known only when the step runs
            continue
        given[name] = value
    for name, value in given.items():
        if name in ("readonly", "readwrite", "required"):
            if value == "" and expand is None:
                continue
            if value not in _BOOLS:
                raise bad(f"invalid value for {name}: {value}")
            if name == "required":
                m.required = _BOOLS[value]
            else:
                m.readonly, ro_auto = _BOOLS[value] == (name == "readonly"), False
        elif name == "type":
            m.type = value.lower() if value else m.type
            if value and m.type not in MOUNT_TYPES:
                raise bad(f"unsupported mount type {value!r} (bind, cache, tmpfs, secret)")
        elif name in ("mode", "uid", "gid"):
            if value:
                try:
                    n = int(value, 8 if name == "mode" else 10)
                    if n < 0 or n >= 1 << 32:
                        raise ValueError
                except ValueError:
                    raise bad(f"invalid value {value} for {name}") from None
                setattr(m, name, n)
        elif name == "size":
            sm = _SIZE.match(value)
            if value and not sm:
                raise bad(f"invalid value for size: {value}")
            if sm:
                m.size = int(float(sm.group(1)) * 1024 ** "bkmgtp".index((sm.group(2) or "b").lower()))
        elif name == "sharing":
            m.sharing = value.lower()
            if value and m.sharing not in ("shared", "private", "locked"):
                raise bad(f"unsupported sharing value {value!r} (shared, private or locked)")
        else:
            setattr(m, "from_" if name == "from" else name, value)
    if given.get("type") == "" and expand is None:  # type=$VAR: the rest is checked when it runs
        return m
    t = m.type
    if t == "ssh":
        raise NotImplementedYet(f"Dockerfile line {ins.line}: RUN --mount=type=ssh is not supported: "
                                "kobako's builder forwards no SSH agent (use a secret mount for a key)")
    if "required" in given and t != "secret":
        raise bad(f"unexpected key 'required' for mount type '{t}'")
    if "size" in given and t != "tmpfs":
        raise bad(f"unexpected key 'size' for mount type '{t}'")
    if "env" in given and t != "secret":
        raise bad(f"unexpected key 'env' for mount type '{t}'")
    for name in ("mode", "uid", "gid"):
        if name in given and t not in ("secret", "cache"):
            raise bad(f"{name} not allowed for {t!r} type mounts")
    if ro_auto:
        m.readonly = t not in ("cache", "tmpfs")
    if m.sharing and t != "cache":
        raise bad(f"invalid cache sharing set for {t} mount")
    if t == "secret":
        if "from" in given:
            raise bad("secret mount should not have a from")
        if "source" in given and "id" in given:
            raise bad("both source and id can't be set")
        if not ("target" in given or "id" in given or "source" in given or "env" in given):
            raise bad("a secret mount needs an id or a target")
        m.id = m.id or m.source
        if expand is not None and not m.id:
            m.id = posixpath.basename(m.target.rstrip("/"))
        if expand is not None and not m.target and not m.env:
            m.target = f"/run/secrets/{m.id}"
    elif "target" not in given:
        raise bad("mount target is required: target=/path")
    if t == "tmpfs" and ("source" in given or "from" in given):
        raise bad("a tmpfs mount takes no source or from")
    if t == "cache":
        m.sharing = m.sharing or "shared"
    return m


# -- words and substitution (moby's shell_lex.go) -------------------------------------------------

def split_words(text: str, escape: str = "\\") -> list[str]:
    """Words on whitespace, quotes and escapes kept (ENV/LABEL/ARG key=value lists)."""
    words: list[str] = []
    cur = ""
    quote = ""
    in_word = False
    i = 0
    while i < len(text):
        ch = text[i]
        if not quote and ch in " \t":
            if in_word:
                words.append(cur)
                cur, in_word = "", False
            i += 1
            continue
        in_word = True
        if ch == escape and i + 1 < len(text) and quote != "'":
            cur += ch + text[i + 1]
            i += 2
            continue
        if quote and ch == quote:
            quote = ""
        elif not quote and ch in "\"'":
            quote = ch
        cur += ch
        i += 1
    if quote:
        raise DockerfileError(f"unmatched quote in {text!r}")
    if in_word:
        words.append(cur)
    return words


def key_values(ins: Instruction, escape: str) -> list[tuple[str, str]]:
    """ENV/LABEL pairs as written (quotes still in): `k=v k2=v2`, or the old `k v v...`."""
    words = split_words(ins.rest, escape)
    if words and "=" not in words[0]:
        if ins.cmd == "label" or ins.cmd == "env":
            k, _, v = ins.rest.partition(" ") if " " in ins.rest else ins.rest.partition("\t")
            if not v.strip():
                raise ins.error(f"{ins.cmd.upper()} must have two arguments")
            return [(k, v.strip())]
    out = []
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not k:
            raise ins.error(f"{w!r}: expected key=value")
        out.append((k, v))
    return out


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]")


class Lexer:
    """Docker's word processing: quotes removed, escapes applied, variables substituted from
    `env` (unset ones are empty). With `quotes=False` quotes are plain characters (BuildKit's
    expansion of a heredoc's body)."""

    def __init__(self, escape: str = "\\", quotes: bool = True) -> None:
        self.escape = escape
        self.quotes = quotes

    def word(self, text: str, env: dict[str, str]) -> str:
        out, _ = self._process(text, 0, env, stop="", split=False)
        return out[0] if out else ""

    def words(self, text: str, env: dict[str, str]) -> list[str]:
        """Expanded and split on unquoted whitespace (EXPOSE, VOLUME, COPY's shell form)."""
        out, _ = self._process(text, 0, env, stop="", split=True)
        return out

    def _process(self, s: str, i: int, env: dict[str, str], stop: str, split: bool) -> tuple[list[str], int]:
        words: list[str] = []
        cur: list[str] = []
        have = False
        esc = self.escape
        while i < len(s):
            ch = s[i]
            if stop and ch == stop:
                break
            if split and ch in " \t\n":
                if have:
                    words.append("".join(cur))
                    cur, have = [], False
                i += 1
                continue
            have = True
            if ch == esc:
                if i + 1 < len(s):
                    cur.append(s[i + 1])
                    i += 2
                else:
                    cur.append(ch)
                    i += 1
            elif ch == "'" and self.quotes:
                end = s.find("'", i + 1)
                if end < 0:
                    raise DockerfileError("unexpected end of statement while looking for matching "
                                          f"single-quote in {s!r}")
                cur.append(s[i + 1:end])
                i = end + 1
            elif ch == '"' and self.quotes:
                i += 1
                while True:
                    if i >= len(s):
                        raise DockerfileError(f"unexpected end of statement while looking for matching "
                                              f"double-quote in {s!r}")
                    c2 = s[i]
                    if c2 == '"':
                        i += 1
                        break
                    if c2 == esc and i + 1 < len(s) and s[i + 1] in ('"', "$", esc):
                        cur.append(s[i + 1])
                        i += 2
                    elif c2 == "$":
                        v, i = self._dollar(s, i, env)
                        cur.append(v)
                    else:
                        cur.append(c2)
                        i += 1
            elif ch == "$":
                v, i = self._dollar(s, i, env)
                if split and any(c in v for c in " \t\n"):  # an unquoted value splits into words
                    pieces = v.split()
                    if v[:1].isspace() and cur:
                        words.append("".join(cur))
                        cur = []
                    for n, piece in enumerate(pieces):
                        if n:
                            words.append("".join(cur))
                            cur = []
                        cur.append(piece)
                    if v[-1:].isspace() and cur:
                        words.append("".join(cur))
                        cur, have = [], False
                    continue
                cur.append(v)
            else:
                cur.append(ch)
                i += 1
        if have or not split:
            words.append("".join(cur))
        return words, i

    def _dollar(self, s: str, i: int, env: dict[str, str]) -> tuple[str, int]:
        """At s[i] == '$': the substitution and the index after it."""
        i += 1
        if i >= len(s):
            return "$", i
        if s[i] != "{":
            m = _NAME.match(s, i)
            if not m:
                return "$", i
            return env.get(m.group(0), ""), m.end()
        m = _NAME.match(s, i + 1)
        if not m:
            raise DockerfileError(f"bad substitution in {s!r}")
        name, j = m.group(0), m.end()
        if j >= len(s):
            raise DockerfileError(f"missing '}}' in {s!r}")
        if s[j] == "}":
            return env.get(name, ""), j + 1
        colon = s[j] == ":"
        if colon:
            j += 1
        op = s[j] if j < len(s) else ""
        if op not in "-+?" or not op:
            raise DockerfileError(f"unsupported modifier ({s[j - 1:j + 1]}) in substitution {s!r}")
        word_parts, j = self._process(s, j + 1, env, stop="}", split=False)
        if j >= len(s):
            raise DockerfileError(f"missing '}}' in {s!r}")
        word = word_parts[0] if word_parts else ""
        is_set = name in env and (not colon or env[name] != "")
        if op == "-":
            return (env[name] if is_set else word), j + 1
        if op == "+":
            return (word if is_set else ""), j + 1
        if not is_set:  # ?
            raise DockerfileError(f"{name}: {word or 'is not allowed to be unset'}")
        return env[name], j + 1


# -- stages -------------------------------------------------------------------------------------

class Stage:
    """One FROM and what follows it: `base` (as written, variables not yet substituted),
    `name` (AS name, lower case, or None), `platform` (--platform, or None)."""

    def __init__(self, index: int, start: Instruction) -> None:
        words = start.rest.split()
        self.index = index
        self.start = start
        self.base = words[0]
        self.name = words[2].lower() if len(words) == 3 else None
        self.platform = start.flags.get("platform")
        self.instructions: list[Instruction] = []


def stages(df: Dockerfile) -> tuple[list[Instruction], list[Stage]]:
    """The ARGs before the first FROM (the only instruction allowed there), and the stages."""
    meta: list[Instruction] = []
    out: list[Stage] = []
    for ins in df.instructions:
        if ins.cmd == "from":
            st = Stage(len(out), ins)
            if st.name is not None:
                if not re.fullmatch(r"[a-z][a-z0-9-_.]*", st.name):
                    raise ins.error(f"invalid name for build stage: {st.name!r}, name can't start with a "
                                    "number or contain symbols")
                if any(o.name == st.name for o in out):
                    raise ins.error(f"duplicate name {st.name!r}")
            out.append(st)
        elif not out:
            if ins.cmd != "arg":
                raise DockerfileError(f"Dockerfile line {ins.line}: no build stage in current context: "
                                      f"{ins.cmd.upper()} before the first FROM")
            meta.append(ins)
        else:
            out[-1].instructions.append(ins)
    if not out:
        raise DockerfileError("the Dockerfile has no FROM instruction (no build stage)")
    return meta, out


def arg_decls(ins: Instruction, escape: str) -> list[tuple[str, str | None]]:
    """ARG name[=default] ...: (name, default as written or None)."""
    out: list[tuple[str, str | None]] = []
    for w in split_words(ins.rest, escape):
        k, eq, v = w.partition("=")
        if not k or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise ins.error(f"invalid build argument name {k!r}")
        out.append((k, v if eq else None))
    return out


def shell_or_json(ins: Instruction) -> tuple[list[str] | None, str]:
    """(the exec form's list, or None; the shell form's text)."""
    return ins.json, ins.rest

"""Go's text/template, as the docker CLI uses it for `--format`: a lexer, a parser to a
small tree, and an evaluator over JSON-shaped data (dicts, lists, str, int, float, bool,
None), with Go's functions and docker's (json, join, split, upper, lower, title, pad,
truncate). Only imported when a --format is given.

Go's semantics kept: a missing map key prints "<no value>" (and is false); a map ranges
in sorted key order; %v prints lists as [a b] and maps as map[k:v]; `and`/`or` return an
operand and stop early; comparing different kinds is an error. Every error is a
TemplateError (a usage error) whose message is the line docker prints.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from kobako.errors import InvalidArgument


class TemplateError(InvalidArgument):
    """A template that does not parse or cannot execute on its data."""


class _Missing:
    """Go's invalid reflect.Value: what a missing map key evaluates to."""

    def __repr__(self) -> str:
        return "<no value>"


MISSING = _Missing()
_KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "define", "template", "block"}
_NUMBER = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|"
                     r"(\d[\d_]*)?\.?\d[\d_]*([eE][+-]?\d+)?|\d[\d_]*\.)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _ParseError(Exception):
    def __init__(self, pos: int, msg: str) -> None:
        super().__init__(msg)
        self.pos = pos


class _ExecError(Exception):
    pass


# ---- lexer ----------------------------------------------------------------------------

class _Tok:
    __slots__ = ("kind", "val", "pos", "end", "spaced")

    def __init__(self, kind: str, val, pos: int, end: int, spaced: bool = True) -> None:
        self.kind, self.val, self.pos, self.end, self.spaced = kind, val, pos, end, spaced

    def __repr__(self) -> str:
        return f"{self.kind}:{self.val!r}"


def _lex(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(src)
    trim_next = False
    while i < n:
        j = src.find("{{", i)
        text = src[i:] if j < 0 else src[i:j]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        trim_left = j >= 0 and src[j + 2:j + 3] == "-" and src[j + 3:j + 4] in (" ", "\t", "\r", "\n")
        if trim_left:
            text = text.rstrip(" \t\r\n")
        if text:
            toks.append(_Tok("text", text, i, j if j >= 0 else n))
        if j < 0:
            break
        start = j
        i = j + (4 if trim_left else 2)
        toks.append(_Tok("{{", "{{", start, i))
        if src.startswith("/*", i):  # a comment: {{/* ... */}}
            k = src.find("*/", i + 2)
            if k < 0:
                raise _ParseError(start, "unclosed comment")
            i = k + 2
            m = re.compile(r"( -)?}}").match(src, i)
            if not m:
                raise _ParseError(start, "comment ends before closing delimiter")
            trim_next = bool(m.group(1))
            i = m.end()
            toks.pop()
            continue
        i, trim_next = _lex_action(src, i, toks, start)
    toks.append(_Tok("eof", None, n, n))
    return toks


def _lex_action(src: str, i: int, toks: list[_Tok], start: int) -> tuple[int, bool]:
    n = len(src)
    spaced = True
    depth = 0
    while True:
        if i >= n:
            raise _ParseError(start, "unclosed action")
        c = src[i]
        if c in " \t\r\n":
            k = i
            while k < n and src[k] in " \t\r\n":
                k += 1
            if src.startswith("-}}", k):
                toks.append(_Tok("}}", "}}", k, k + 3))
                return k + 3, True
            i, spaced = k, True
            continue
        if src.startswith("}}", i):
            if depth:
                raise _ParseError(i, "unclosed left paren")
            toks.append(_Tok("}}", "}}", i, i + 2))
            return i + 2, False
        pos = i
        if c == "(":
            depth += 1
            toks.append(_Tok("(", c, i, i + 1, spaced))
            i += 1
        elif c == ")":
            if not depth:
                raise _ParseError(i, "unexpected right paren")
            depth -= 1
            toks.append(_Tok(")", c, i, i + 1, spaced))
            i += 1
        elif c == "|":
            toks.append(_Tok("|", c, i, i + 1, spaced))
            i += 1
        elif c == ",":
            toks.append(_Tok(",", c, i, i + 1, spaced))
            i += 1
        elif src.startswith(":=", i):
            toks.append(_Tok(":=", ":=", i, i + 2, spaced))
            i += 2
        elif c == "=":
            toks.append(_Tok("=", c, i, i + 1, spaced))
            i += 1
        elif c == '"':
            k = i + 1
            while k < n and src[k] != '"':
                if src[k] == "\\":
                    k += 1
                if k >= n or src[k] == "\n":
                    raise _ParseError(pos, "unterminated quoted string")
                k += 1
            if k >= n:
                raise _ParseError(pos, "unterminated quoted string")
            toks.append(_Tok("string", _unquote(src[i:k + 1], pos), i, k + 1, spaced))
            i = k + 1
        elif c == "`":
            k = src.find("`", i + 1)
            if k < 0:
                raise _ParseError(pos, "unterminated raw quoted string")
            toks.append(_Tok("string", src[i + 1:k], i, k + 1, spaced))
            i = k + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^'\\])'", src[i:])
            if not m:
                raise _ParseError(pos, "unterminated character constant")
            toks.append(_Tok("number", ord(_unquote('"' + m.group(1) + '"', pos)), i, i + m.end(), spaced))
            i += m.end()
        elif c == "." and not (i + 1 < n and src[i + 1].isdigit()):
            m = _IDENT.match(src, i + 1)
            if m:
                toks.append(_Tok("field", m.group(), i, m.end(), spaced))
                i = m.end()
            else:
                toks.append(_Tok("dot", ".", i, i + 1, spaced))
                i += 1
        elif c == "$":
            m = _IDENT.match(src, i + 1)
            name = "$" + (m.group() if m else "")
            toks.append(_Tok("var", name, i, i + len(name), spaced))
            i += len(name)
        elif c.isdigit() or (c in "+-." and i + 1 < n and (src[i + 1].isdigit() or src[i + 1] == ".")):
            m = _NUMBER.match(src, i)
            if not m or (m.end() < n and (src[m.end()].isalnum() or src[m.end()] == ".")):
                end = m.end() if m else i + 1
                while end < n and (src[end].isalnum() or src[end] in "._"):
                    end += 1
                raise _ParseError(pos, f"bad number syntax: {src[i:end]!r}".replace("'", '"'))
            toks.append(_Tok("number", _number(m.group(), pos), i, m.end(), spaced))
            i = m.end()
        elif _IDENT.match(c):
            m = _IDENT.match(src, i)
            word = m.group()
            kind = "keyword" if word in _KEYWORDS else "bool" if word in ("true", "false") else \
                "nil" if word == "nil" else "ident"
            toks.append(_Tok(kind, word, i, m.end(), spaced))
            i = m.end()
        else:
            raise _ParseError(pos, f"unrecognized character in action: U+{ord(c):04X} {c!r}")
        spaced = False


def _unquote(s: str, pos: int) -> str:
    try:
        return json.loads(re.sub(r"\\x([0-9a-fA-F]{2})", r"\\u00\1", s.replace("\\a", "\\u0007")
                                 .replace("\\v", "\\u000b").replace("\\'", "'")))
    except ValueError:
        raise _ParseError(pos, f"invalid syntax: {s}") from None


def _number(s: str, pos: int) -> int | float:
    t = s.replace("_", "")
    try:
        if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+|[+-]?0[bB][01]+|[+-]?0[oO][0-7]+", t):
            return int(t, 0)
        if re.fullmatch(r"[+-]?\d+", t):
            return int(t, 8) if len(t.lstrip("+-")) > 1 and t.lstrip("+-")[0] == "0" else int(t)
        return float(t)
    except ValueError:
        raise _ParseError(pos, f'bad number syntax: "{s}"') from None


# ---- parser ---------------------------------------------------------------------------
# Nodes are tuples, their first item the kind:
#   ("text", s)   ("action", pipe)   ("if"|"with"|"range", pos, pipe, body, else_body)
#   ("break", pos)   ("continue", pos)   ("template", pos, name, pipe|None)
#   pipe: ("pipe", decls, assign, cmds)   cmd: ("cmd", pos, end, args)
#   args: ("field", pos, end, names) ("var", pos, end, name, names) ("dot", pos, end)
#         ("ident", pos, end, name) ("lit", pos, end, value) ("nil", pos, end)
#         ("chain", pos, end, node, names) ("paren", pos, end, pipe)

class _Parser:
    def __init__(self, src: str, funcs: dict) -> None:
        self.src, self.funcs = src, funcs
        self.toks = _lex(src)
        self.i = 0
        self.vars: list[str] = ["$"]
        self.defines: dict[str, list] = {}
        self.in_range = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, kind: str, context: str) -> _Tok:
        t = self.next()
        if t.kind != kind:
            raise _ParseError(t.pos, f"unexpected {_desc(t)} in {context}")
        return t

    def parse(self) -> list:
        body, stop = self.list_until()
        if stop is not None:
            raise _ParseError(stop.pos, f"unexpected {{{{{stop.val}}}}}")
        return body

    def list_until(self) -> tuple[list, _Tok | None]:
        """Nodes up to {{end}} or {{else}} (returned, the {{ }} consumed except for else's
        tail) or the end of the input (None)."""
        out: list = []
        while True:
            t = self.next()
            if t.kind == "eof":
                return out, None
            if t.kind == "text":
                out.append(("text", t.val))
                continue
            k = self.peek()
            if k.kind == "keyword":
                self.next()
                if k.val == "end":
                    self.expect("}}", "end")
                    return out, k
                if k.val == "else":
                    return out, k
                out.append(self.control(k))
            else:
                pipe = self.pipeline("command", decl_ok=True)
                self.expect("}}", "command")
                out.append(("action", pipe))

    def control(self, k: _Tok) -> tuple:
        if k.val in ("break", "continue"):
            if not self.in_range:
                raise _ParseError(k.pos, f"{{{{{k.val}}}}} outside {{{{range}}}}")
            self.expect("}}", k.val)
            return (k.val, k.pos)
        if k.val in ("define", "block", "template"):
            name = self.expect("string", k.val).val
            pipe = None
            if k.val == "define":
                self.expect("}}", "define")
                saved, self.vars = self.vars, ["$"]
                body, stop = self.list_until()
                self.vars = saved
                if stop is None or stop.val != "end":
                    raise _ParseError(k.pos, "unexpected EOF")
                self.defines[name] = body
                return ("text", "")
            if self.peek().kind != "}}":
                pipe = self.pipeline(k.val)
            elif k.val == "block":
                raise _ParseError(k.pos, "missing value for block")
            self.expect("}}", k.val)
            if k.val == "block":
                saved, self.vars = self.vars, ["$"]
                body, stop = self.list_until()
                self.vars = saved
                if stop is None or stop.val != "end":
                    raise _ParseError(k.pos, "unexpected EOF")
                self.defines.setdefault(name, body)
            return ("template", k.pos, name, pipe)
        if k.val not in ("if", "with", "range"):
            raise _ParseError(k.pos, f"unexpected {{{{{k.val}}}}}")
        mark = len(self.vars)
        pipe = self.pipeline(k.val, decl_ok=True, two=k.val == "range")
        self.expect("}}", k.val)
        self.in_range += k.val == "range"
        body, stop = self.list_until()
        self.in_range -= k.val == "range"
        if stop is None:
            raise _ParseError(len(self.src), "unexpected EOF")
        else_body: list = []
        if stop.val == "else":
            nxt = self.peek()
            if nxt.kind == "keyword" and nxt.val in ("if", "with") and k.val != "range":
                self.next()  # {{else if ...}}: an if nested in the else, sharing our {{end}}
                else_body = [self.control(nxt)]
            else:
                self.expect("}}", "else")
                else_body, stop = self.list_until()
                if stop is None:
                    raise _ParseError(len(self.src), "unexpected EOF")
                if stop.val != "end":
                    raise _ParseError(stop.pos, "expected end; found {{else}}")
        del self.vars[mark:]
        return (k.val, k.pos, pipe, body, else_body)

    def pipeline(self, context: str, decl_ok: bool = False, two: bool = False) -> tuple:
        decls: list[str] = []
        assign = False
        start = self.i
        if decl_ok and self.peek().kind == "var":
            names = [self.next()]
            if two and self.peek().kind == ",":
                self.next()
                names.append(self.expect("var", "range declaration"))
            op = self.peek()
            if op.kind in (":=", "=") and not (op.kind == "=" and len(names) > 1):
                self.next()
                assign = op.kind == "="
                for t in names:
                    if assign and t.val not in self.vars:
                        raise _ParseError(t.pos, f"undefined variable \"{t.val}\"")
                decls = [t.val for t in names]
            elif len(names) > 1:
                raise _ParseError(op.pos, f"unexpected {_desc(op)} in range declaration")
            else:
                self.i = start
        cmds = []
        while True:
            cmds.append(self.command())
            t = self.peek()
            if t.kind != "|":
                break
            self.next()
        for n, c in enumerate(cmds):
            if not c[3]:
                msg = f"missing value for {context}" if n == 0 else "missing command"
                raise _ParseError(self.peek().pos, msg)
            if n and c[3][0][0] in ("lit", "nil", "dot"):
                raise _ParseError(c[1], f"non executable command in pipeline stage {n + 1}")
        if not assign:
            self.vars.extend(decls)
        return ("pipe", decls, assign, cmds)

    def command(self) -> tuple:
        args = []
        start = self.peek().pos
        while self.peek().kind not in ("}}", ")", "|", "eof"):
            args.append(self.operand())
        if self.peek().kind == "|" and not args:
            raise _ParseError(self.peek().pos, "missing value for command")
        end = self.toks[self.i - 1].end if args else start
        return ("cmd", start, end, args)

    def operand(self) -> tuple:
        t = self.next()
        if t.kind == "field":
            names = [t.val]
            node = None
        elif t.kind == "var":
            if t.val not in self.vars:
                raise _ParseError(t.pos, f"undefined variable \"{t.val}\"")
            node = ("var", t.pos, t.end, t.val, [])
            names = []
        elif t.kind == "dot":
            node, names = ("dot", t.pos, t.end), []
        elif t.kind == "ident":
            if t.val not in self.funcs:
                raise _ParseError(t.pos, f"function \"{t.val}\" not defined")
            return ("ident", t.pos, t.end, t.val)
        elif t.kind in ("string", "number"):
            node, names = ("lit", t.pos, t.end, t.val), []
        elif t.kind == "bool":
            node, names = ("lit", t.pos, t.end, t.val == "true"), []
        elif t.kind == "nil":
            node, names = ("nil", t.pos, t.end), []
        elif t.kind == "(":
            pipe = self.pipeline("parenthesized pipeline", decl_ok=True)
            close = self.expect(")", "parenthesized pipeline")
            node, names = ("paren", t.pos, close.end, pipe), []
        else:
            raise _ParseError(t.pos, f"unexpected {_desc(t)} in operand")
        end = t.end if node is None or node[0] != "paren" else node[2]
        while self.peek().kind == "field" and not self.peek().spaced:
            f = self.next()
            names.append(f.val)
            end = f.end
        if node is None:
            return ("field", t.pos, end, names)
        if node[0] == "var":
            return ("var", t.pos, end, node[3], names)
        if names:
            if node[0] in ("lit", "nil"):
                raise _ParseError(t.pos, f"unexpected . after term {self.src[node[1]:node[2]]!r}")
            return ("chain", t.pos, end, node, names)
        return node


def _desc(t: _Tok) -> str:
    if t.kind == "eof":
        return "EOF"
    if t.kind in ("}}", "{{"):
        return f'"{t.val}"'
    return f"<{t.val}>" if t.kind in ("string", "number", "keyword", "ident") else f'"{t.val}"'


# ---- values as Go prints them ---------------------------------------------------------

def go_type(v) -> str:
    if v is None or v is MISSING:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    if isinstance(v, dict):
        return "map[string]interface {}"
    return type(v).__name__


def go_float(f: float) -> str:
    """fmt's %v of a float64: the shortest digits, in exponent form when the exponent is
    below -4 or from 6 up (so 1e+06, as Go prints a million decoded from JSON)."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    mant = repr(f).partition("e")[0]
    digits = mant.replace("-", "").replace(".", "").lstrip("0") or "0"
    digits = digits.rstrip("0") or "0"
    e10 = int(f"{abs(f):e}".split("e")[1]) if f else 0
    if f and (e10 < -4 or e10 >= 6):
        m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{'-' if f < 0 else ''}{m}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"
    return f"{f:.{max(len(digits) - 1 - e10, 0)}f}"


def go_v(v, top: bool = False) -> str:
    """fmt's %v."""
    if v is MISSING or (v is None and top):
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_v(x) for x in v) + "]"
    if isinstance(v, dict):
        pairs = (f"{go_v(k)}:{go_v(v[k])}" for k in _sorted_keys(v) if not callable(v[k]))
        return "map[" + " ".join(pairs) + "]"
    return str(v)


def _sorted_keys(d: dict) -> list:
    try:
        return sorted(d)
    except TypeError:
        return list(d)


def go_json(v) -> str:
    """docker's `json` function: encoding/json, compact, no HTML escaping."""
    def clean(x):
        if x is MISSING:
            return None
        if isinstance(x, float) and x.is_integer() and abs(x) < 1e21:
            return int(x)
        if isinstance(x, dict):  # a method (a callable value) is no data
            return {k: clean(y) for k, y in x.items() if not callable(y)}
        if isinstance(x, (list, tuple)):
            return [clean(y) for y in x]
        return x
    s = json.dumps(clean(v), ensure_ascii=False, separators=(",", ":"))
    return s.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def go_quote(s: str) -> str:
    """strconv.Quote."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out) + '"'


def truth(v) -> bool:
    """Go's template truth: false, 0, "", nil and empty lists and maps are false."""
    if v is None or v is MISSING:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict)):
        return bool(v)
    return True


# ---- printf ---------------------------------------------------------------------------

_VERB = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(\*|\d*))?(.|$)", re.S)


def sprintf(fmt: str, args: list) -> str:
    out = []
    i = argi = 0
    while i < len(fmt):
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        m = _VERB.match(fmt, j)
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        i = m.end()
        if not verb:
            out.append("%!(NOVERB)")
            break
        if verb == "%":
            out.append("%")
            continue
        if width == "*" or prec == "*":  # taken from the arguments, as Go does
            if width == "*":
                width, argi = (str(args[argi]) if argi < len(args) else "0"), argi + 1
            if prec == "*":
                prec, argi = (str(args[argi]) if argi < len(args) else "0"), argi + 1
        if argi >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        a = args[argi]
        argi += 1
        out.append(_fmt_one(verb, flags, int(width) if width else None,
                            None if prec is None else int(prec or 0), a))
    if argi < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{go_type(a)}={go_v(a)}" if a is not None else "<nil>"
                                           for a in args[argi:]) + ")")
    return "".join(out)


def _bad(verb: str, a) -> str:
    return f"%!{verb}(<nil>)" if a is None or a is MISSING else f"%!{verb}({go_type(a)}={go_v(a)})"


def _fmt_one(verb: str, flags: str, width: int | None, prec: int | None, a) -> str:
    if isinstance(a, (list, tuple)) and verb != "T":
        return "[" + " ".join(_fmt_one(verb, flags, width, prec, x) for x in a) + "]"
    num = False
    if verb == "v":
        s = go_v(a)
        if prec is not None and isinstance(a, float):
            s = f"{a:.{prec}g}"
    elif verb == "T":
        s = go_type(a)
    elif verb == "s":
        if not isinstance(a, (str, dict)):
            return _bad(verb, a)
        s = go_v(a)
        if prec is not None:
            s = s[:prec]
    elif verb == "q":
        if isinstance(a, str):
            s = go_quote(a)
        elif isinstance(a, int) and not isinstance(a, bool):
            s = "'" + go_quote(chr(a))[1:-1].replace("\\\"", '"') + "'"
        else:
            return _bad(verb, a)
    elif verb == "t":
        if not isinstance(a, bool):
            return _bad(verb, a)
        s = "true" if a else "false"
    elif verb in "dboxXc":
        if isinstance(a, str) and verb in "xX":
            s = a.encode().hex()
            s = s.upper() if verb == "X" else s
        elif not isinstance(a, int) or isinstance(a, bool):
            return _bad(verb, a)
        elif verb == "c":
            s = chr(a)
        else:
            num = True
            body = format(abs(a), {"d": "d", "b": "b", "o": "o", "x": "x", "X": "X"}[verb])
            if prec is not None:
                body = body.zfill(prec)
            if "#" in flags and verb in "xXob":
                body = {"x": "0x", "X": "0X", "o": "0", "b": ""}[verb] + body
            sign = "-" if a < 0 else "+" if "+" in flags else " " if " " in flags else ""
            s = sign + body
    elif verb in "eEfFgG":
        if not isinstance(a, float):
            return _bad(verb, a)
        num = True
        if verb in "gG" and prec is None:
            s = go_float(a)
            s = s.upper() if verb == "G" else s
        else:
            s = format(a, f"{'+' if '+' in flags else ''}.{6 if prec is None else prec}{verb}")
    else:
        return _bad(verb, a)
    if width and len(s) < width:
        if "-" in flags:
            s = s.ljust(width)
        elif "0" in flags and num:
            sign = s[0] if s[:1] in "+- " else ""
            s = sign + s[len(sign):].rjust(width - len(sign), "0")
        else:
            s = s.rjust(width)
    return s


# ---- functions ------------------------------------------------------------------------

def _want(v, kind: type, what: str):
    if kind is int and isinstance(v, bool) or not isinstance(v, kind):
        raise _ExecError(f"wrong type for value; expected {what}; got {go_type(v)}")
    return v


def _index(item, *keys):
    for k in keys:
        if isinstance(item, (list, tuple, str)):
            if not isinstance(k, int) or isinstance(k, bool):
                raise _ExecError(f"cannot index slice/array with type {go_type(k)}")
            if not 0 <= k < len(item):
                raise _ExecError(f"index out of range: {k}")
            item = item[k] if not isinstance(item, str) else ord(item[k])
        elif isinstance(item, dict):
            item = item.get(k) if k in item else None
        elif item is None or item is MISSING:
            raise _ExecError("index of untyped nil")
        else:
            raise _ExecError(f"can't index item of type {go_type(item)}")
    return item


def _slice(item, *idx):
    if not isinstance(item, (list, tuple, str)):
        raise _ExecError(f"can't slice item of type {go_type(item)}")
    if len(idx) > 2:
        raise _ExecError("too many slice indexes: 3" if isinstance(item, str) else "3-index slice")
    for k in idx:
        _want(k, int, "int")
    lo = idx[0] if idx else 0
    hi = idx[1] if len(idx) > 1 else len(item)
    if not 0 <= lo <= hi <= len(item):
        raise _ExecError(f"index out of range: {hi if hi > len(item) else lo}")
    return item[lo:hi]


def _len(v):
    if isinstance(v, (str, list, tuple, dict)):
        return len(v)
    raise _ExecError(f"len of type {go_type(v)}")


def _kind(v) -> str:
    if v is None or v is MISSING:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return "other"


def _eq(a, *bs):
    if not bs:
        raise _ExecError("missing argument for comparison")
    ka = _kind(a)
    for b in bs:
        kb = _kind(b)
        if ka == "nil" or kb == "nil":
            if ka == kb:
                return True
            continue
        if ka == "other" or kb == "other":
            raise _ExecError("invalid type for comparison")
        if ka != kb:
            raise _ExecError("incompatible types for comparison")
        if a == b:
            return True
    return False


def _lt(a, b):
    ka, kb = _kind(a), _kind(b)
    if ka not in ("int", "float", "string") or kb not in ("int", "float", "string"):
        raise _ExecError("invalid type for comparison")
    if ka != kb:
        raise _ExecError("incompatible types for comparison")
    return a < b


def _print(*args) -> str:
    """fmt.Sprint: a space between operands when neither is a string."""
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_v(a))
    return "".join(out)


def _title(s: str) -> str:
    """strings.Title: upper-case each letter that follows a separator."""
    out, prev = [], " "
    for ch in _want(s, str, "string"):
        sep = not (prev.isalnum() or prev == "_") if ord(prev) < 0x80 else prev.isspace()
        out.append(ch.upper() if sep else ch)
        prev = ch
    return "".join(out)


def _split(s, sep):
    _want(s, str, "string")
    _want(sep, str, "string")
    return list(s) if sep == "" else s.split(sep)


def _join(items, sep):
    if not isinstance(items, (list, tuple)):
        raise _ExecError(f"wrong type for value; expected []string; got {go_type(items)}")
    return _want(sep, str, "string").join(x if isinstance(x, str) else go_v(x) for x in items)


def _truncate(s, n):
    _want(s, str, "string")
    return s if len(s) < _want(n, int, "int") else s[:n]


def _pad(s, prefix, suffix):
    _want(s, str, "string")
    return s if s == "" else " " * _want(prefix, int, "int") + s + " " * _want(suffix, int, "int")


def _html(*args) -> str:
    import html
    return html.escape(_print(*args), quote=True).replace("&#x27;", "&#39;")


def _urlquery(*args) -> str:
    from urllib.parse import quote_plus
    return quote_plus(_print(*args))


def _str1(f):
    return lambda s: f(_want(s, str, "string"))


# name -> (function, number of arguments or None when variadic)
FUNCS: dict[str, tuple] = {
    "json": (go_json, 1), "split": (_split, 2), "join": (_join, 2), "title": (_title, 1),
    "lower": (_str1(str.lower), 1), "upper": (_str1(str.upper), 1), "pad": (_pad, 3),
    "truncate": (_truncate, 2), "index": (_index, None), "slice": (_slice, None), "len": (_len, 1),
    "print": (_print, None), "println": (lambda *a: " ".join(go_v(x) for x in a) + "\n", None),
    "printf": (lambda f, *a: sprintf(_want(f, str, "string"), list(a)), None),
    "eq": (_eq, None), "ne": (lambda a, b: not _eq(a, b), 2), "lt": (_lt, 2),
    "le": (lambda a, b: _lt(a, b) or _eq(a, b), 2), "gt": (lambda a, b: not (_lt(a, b) or _eq(a, b)), 2),
    "ge": (lambda a, b: not _lt(a, b), 2), "not": (lambda a: not truth(a), 1),
    "and": (None, None), "or": (None, None), "html": (_html, None), "urlquery": (_urlquery, None),
}
# the header row of a table: docker's functions give back their first argument
_HEADER_FUNCS = {"json", "split", "join", "title", "lower", "upper", "pad", "truncate"}


# ---- evaluator ------------------------------------------------------------------------

class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Template:
    """A parsed template. `execute(data)` gives its text; errors are TemplateError with
    docker's message."""

    def __init__(self, src: str) -> None:
        self.src = src
        try:
            p = _Parser(src, FUNCS)
            self.body = p.parse()
            self.defines = p.defines
        except _ParseError as e:
            raise TemplateError(f"template parsing error: template: :{self._line(e.pos)}: {e}") from None
        except RecursionError:
            raise TemplateError("template parsing error: template: :1: nested too deeply") from None

    def _line(self, pos: int) -> int:
        return self.src.count("\n", 0, pos) + 1

    def execute(self, data, strict: bool = False, header: bool = False) -> str:
        """strict: a field the top-level object lacks is an error, as on docker's typed
        objects (ps, images, stats rows); else it is "<no value>", as on inspect's maps.
        header: render a table's header row (fields give their names, docker's functions
        give back their argument)."""
        st = _State(self, data, strict, header)
        try:
            st.walk(self.body, data)
        except _ExecError as e:
            pos, end = st.at
            col = pos - (self.src.rfind("\n", 0, pos) + 1)
            where = self.src[pos:end] if end > pos else "{{" + self.src[pos:self.src.find("}}", pos) + 2]
            raise TemplateError(f"template parsing error: template: :{self._line(pos)}:{col}: executing \"\" "
                                f"at <{where}>: {e}") from None
        return "".join(st.out)


class _State:
    def __init__(self, tmpl: Template, root, strict: bool, header: bool) -> None:
        self.tmpl, self.root, self.strict, self.header = tmpl, root, strict, header
        self.vars: list[tuple[str, object]] = [("$", root)]
        self.out: list[str] = []
        self.at = (0, 0)
        self.depth = 0

    def walk(self, nodes: list, dot) -> None:
        for n in nodes:
            kind = n[0]
            if kind == "text":
                self.out.append(n[1])
            elif kind == "action":
                v = self.pipe(n[1], dot)
                if not n[1][1]:
                    self.out.append(go_v(v, top=True))
            elif kind in ("if", "with"):
                mark = len(self.vars)
                v = self.pipe(n[2], dot)
                if truth(v):
                    self.walk(n[3], v if kind == "with" else dot)
                else:
                    self.walk(n[4], dot)
                del self.vars[mark:]
            elif kind == "range":
                self.range(n, dot)
            elif kind == "break":
                raise _Break()
            elif kind == "continue":
                raise _Continue()
            elif kind == "template":
                self.template(n, dot)

    def template(self, n: tuple, dot) -> None:
        _, pos, name, pipe = n
        body = self.tmpl.defines.get(name)
        if body is None:
            self.at = (pos, pos)
            raise _ExecError(f'template "{name}" not defined')
        self.depth += 1
        if self.depth > 1000:
            raise _ExecError("exceeded maximum template depth (1000)")
        value = self.pipe(pipe, dot) if pipe else None
        saved, self.vars = self.vars, [("$", value)]
        self.walk(body, value)
        self.vars = saved
        self.depth -= 1

    def range(self, n: tuple, dot) -> None:
        _, _, pipe, body, else_body = n
        mark = len(self.vars)
        decls = pipe[1]
        pipe = ("pipe", [], False, pipe[3])
        v = self.pipe(pipe, dot)
        if isinstance(v, dict):
            items = [(k, v[k]) for k in _sorted_keys(v)]
        elif isinstance(v, (list, tuple)):
            items = list(enumerate(v))
        elif isinstance(v, int) and not isinstance(v, bool):
            if decls and len(decls) > 1:
                raise _ExecError("can't use two variables to range over an integer")
            items = [(i, i) for i in range(v)]
        elif v is None or v is MISSING:
            items = []
        else:
            raise _ExecError(f"range can't iterate over {go_v(v)}")
        for k, x in items:
            if len(decls) == 1:
                self.vars.append((decls[0], x))
            elif len(decls) == 2:
                self.vars.append((decls[0], k))
                self.vars.append((decls[1], x))
            try:
                self.walk(body, x)
            except _Break:
                del self.vars[mark:]
                break
            except _Continue:
                pass
            del self.vars[mark:]
        if not items:
            self.walk(else_body, dot)
        del self.vars[mark:]

    def pipe(self, pipe: tuple, dot):
        _, decls, assign, cmds = pipe
        v = MISSING
        final = False
        for c in cmds:
            v = self.command(c, dot, v if final else _NOFINAL)
            final = True
        for name in decls:
            if assign:
                for i in range(len(self.vars) - 1, -1, -1):
                    if self.vars[i][0] == name:
                        self.vars[i] = (name, v)
                        break
            else:
                self.vars.append((name, v))
        return v

    def command(self, c: tuple, dot, final):
        args = c[3]
        first = args[0]
        kind = first[0]
        if kind == "ident":
            return self.call(first[3], c, args[1:], dot, final)
        if kind == "field":
            return self.fields(dot, first, first[3], args[1:], final, dot)
        if kind == "var":
            v = self.var(first[3])
            return self.fields(v, first, first[4], args[1:], final, dot) if first[4] else \
                self.no_args(first, args, final, v)
        if kind == "chain":
            inner = first[3]
            base = self.pipe(inner[3], dot) if inner[0] == "paren" else dot
            return self.fields(base, first, first[4], args[1:], final, dot)
        if kind == "paren":
            return self.no_args(first, args, final, self.pipe(first[3], dot))
        if kind == "dot":
            return self.no_args(first, args, final, dot)
        if kind == "nil":
            self.at = (first[1], first[2])
            raise _ExecError("nil is not a command")
        return self.no_args(first, args, final, first[3])

    def no_args(self, node: tuple, args: list, final, v):
        if len(args) > 1 or final is not _NOFINAL:
            self.at = (node[1], node[2])
            raise _ExecError(f"can't give argument to non-function {self.tmpl.src[node[1]:node[2]]}")
        return v

    def var(self, name: str):
        for n, v in reversed(self.vars):
            if n == name:
                return v
        raise _ExecError(f"undefined variable: {name}")

    def fields(self, recv, node: tuple, names: list, args: list, final, dot):
        """.A.B.C on recv; a callable value is a method (docker's {{.Label "key"}}) and gets
        the command's arguments."""
        has_args = bool(args) or final is not _NOFINAL
        for i, name in enumerate(names):
            self.at = (node[1], node[2])
            last = i == len(names) - 1
            if recv is MISSING:
                return MISSING
            if self.header and not isinstance(recv, dict):
                return recv
            if recv is None:
                raise _ExecError(f"nil pointer evaluating interface {{}}.{name}")
            if isinstance(recv, dict):
                if name in recv and callable(recv[name]):
                    vals = [self.arg(a, dot) for a in args] if last else []
                    if last and final is not _NOFINAL:
                        vals.append(None if final is MISSING else final)
                    self.at = (node[1], node[2])
                    try:
                        recv = recv[name](*vals)
                    except TypeError:
                        raise _ExecError(f"wrong number of args for {name}: got {len(vals)}") from None
                    continue
                if last and has_args and not self.header:
                    raise _ExecError(f"{name} is not a method but has arguments")
                if name in recv:
                    recv = recv[name]
                elif self.header:
                    return name.upper()
                elif self.strict and recv is self.root:
                    raise _ExecError(f"can't evaluate field {name} in type {self.context_type()}")
                else:
                    recv = MISSING
            else:
                raise _ExecError(f"can't evaluate field {name} in type {go_type(recv)}")
        return recv

    def context_type(self) -> str:
        return "*formatter.Context"

    def arg(self, node: tuple, dot):
        kind = node[0]
        if kind == "ident":
            return self.call(node[3], ("cmd", node[1], node[2], [node]), [], dot, _NOFINAL)
        if kind == "nil":
            return None
        v = self.command(("cmd", node[1], node[2], [node]), dot, _NOFINAL)
        return None if v is MISSING else v

    def call(self, name: str, c: tuple, args: list, dot, final):
        fn, nargs = FUNCS[name]
        given = len(args) + (final is not _NOFINAL)
        if name in ("and", "or"):
            if given < 1:
                self.at = (c[1], c[2])
                raise _ExecError(f"wrong number of args for {name}: want at least 1 got 0")
            v = None
            for a in args:
                v = self.arg(a, dot)
                if truth(v) == (name == "or"):
                    return v
            if final is not _NOFINAL:
                v = None if final is MISSING else final
            return v
        if self.header and name in _HEADER_FUNCS:
            vals = [self.arg(a, dot) for a in args] + ([final] if final is not _NOFINAL else [])
            return vals[0] if vals else ""
        vals = [self.arg(a, dot) for a in args]
        if final is not _NOFINAL:
            vals.append(None if final is MISSING else final)
        self.at = (c[1], c[2])
        if nargs is not None and given != nargs:
            raise _ExecError(f"wrong number of args for {name}: want {nargs} got {given}")
        if name in ("index", "slice", "printf", "eq") and not vals:
            raise _ExecError(f"wrong number of args for {name}: want at least 1 got 0")
        try:
            return fn(*vals)
        except (_ExecError, ValueError, TypeError, OverflowError) as e:
            raise _ExecError(f"error calling {name}: {e}") from None


_NOFINAL = object()


@lru_cache(maxsize=16)
def parse(src: str) -> Template:
    return Template(src)


def tabwrite(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Go's text/tabwriter as docker's tables use it (NewWriter(out, 10, 1, 3, ' ', 0)): each
    tab-terminated cell is padded to its column's width (widest cell + 3, at least 10) over
    each block of consecutive lines that have that column; a line's last cell is not aligned."""
    lines = [ln.split("\t") for ln in text.split("\n")]
    trailing_newline = text.endswith("\n")
    if trailing_newline:
        lines.pop()
    out: list[str] = []
    widths: list[int] = []

    def write(l0: int, l1: int) -> None:
        for ln in lines[l0:l1]:
            out.append("".join(c.ljust(widths[j]) if j < len(widths) else c for j, c in enumerate(ln)))

    def fmt(l0: int, l1: int) -> None:
        column = len(widths)
        this = l0
        while this < l1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write(l0, this)
            l0 = this
            width = minwidth
            while this < l1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            fmt(l0, this)
            widths.pop()
            l0 = this
        write(l0, l1)

    fmt(0, len(lines))
    return "\n".join(out) + ("\n" if trailing_newline else "")

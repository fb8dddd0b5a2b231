"""kobako/cli/template.py against what Go's text/template (with docker's functions) prints
for the same template and data, and the docker CLI's --format output (table, inspect)."""

import io
import json

import pytest

from kobako.cli import output
from kobako.cli.template import TemplateError, go_v, parse, sprintf, tabwrite

DOC = {"Id": "sha256:abc", "RepoTags": ["alpine:3.19", "alpine:latest"], "Empty": [], "Zero": 0,
       "State": {"Pid": 42, "Running": True, "Health": None, "ExitCode": 0},
       "Labels": {"zeta": "1", "alpha": "2"}, "Env": ["A=1", "B=2"], "Big": 1000000.0, "Half": 0.5,
       "Name": "/web", "Size": 7800000}


def run(tmpl, data=DOC, **kw):
    return parse(tmpl).execute(data, **kw)


@pytest.mark.parametrize("tmpl,want", [
    # fields, missing keys, printing of lists, maps, numbers, nil
    ("{{.Id}}", "sha256:abc"),
    ("{{.State.Pid}}", "42"),
    ("{{.Nope}}", "<no value>"),
    ("{{.Nope.Deeper}}", "<no value>"),
    ("{{.State.Health}}", "<no value>"),
    ("{{.RepoTags}}", "[alpine:3.19 alpine:latest]"),
    ("{{.Labels}}", "map[alpha:2 zeta:1]"),
    ("{{.State.Running}}", "true"),
    ("{{.Big}} {{.Half}}", "1e+06 0.5"),
    ("{{.}}", "map[Big:1e+06 Empty:[] Env:[A=1 B=2] Half:0.5 Id:sha256:abc Labels:map[alpha:2 zeta:1] "
              "Name:/web RepoTags:[alpine:3.19 alpine:latest] Size:7800000 State:map[ExitCode:0 Health:<nil> "
              "Pid:42 Running:true] Zero:0]"),
    ("{{$.Name}}", "/web"),
    # range: lists, maps in key order, else, variables, break/continue, over an int
    ("{{range .RepoTags}}{{.}} {{end}}", "alpine:3.19 alpine:latest "),
    ("{{range $i, $t := .RepoTags}}{{$i}}={{$t}};{{end}}", "0=alpine:3.19;1=alpine:latest;"),
    ("{{range $t := .RepoTags}}{{$t}},{{end}}", "alpine:3.19,alpine:latest,"),
    ("{{range $k, $v := .Labels}}{{$k}}:{{$v}} {{end}}", "alpha:2 zeta:1 "),
    ("{{range .Labels}}{{.}}{{end}}", "21"),
    ("{{range .Empty}}x{{else}}none{{end}}", "none"),
    ("{{range .Nope}}x{{else}}none{{end}}", "none"),
    ("{{range .RepoTags}}{{if eq . \"alpine:latest\"}}{{break}}{{end}}{{.}}{{end}}", "alpine:3.19"),
    ("{{range .Env}}{{if eq . \"A=1\"}}{{continue}}{{end}}{{.}}{{end}}", "B=2"),
    ("{{range 3}}{{.}}{{end}}", "012"),
    ("{{range .RepoTags}}{{$.Name}}{{end}}", "/web/web"),
    # if / else if / else with Go's truth; with
    ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
    ("{{if .Zero}}a{{else if .Empty}}b{{else if .Nope}}c{{else}}d{{end}}", "d"),
    ("{{if .Empty}}a{{else if .Env}}b{{end}}", "b"),
    ("{{if .State.Health}}h{{else}}no health{{end}}", "no health"),
    ("{{if \"\"}}a{{end}}{{if 0.0}}b{{end}}{{if .Labels}}c{{end}}", "c"),
    ("{{with .State}}{{.Pid}}{{end}}", "42"),
    ("{{with .Nope}}x{{else}}y{{end}}", "y"),
    ("{{with $x := .State.Pid}}{{$x}}{{end}}", "42"),
    # variables and assignment
    ("{{$n := 0}}{{range .Env}}{{$n = .}}{{end}}{{$n}}", "B=2"),
    ("{{$x := .Id}}{{$x}}", "sha256:abc"),
    # pipelines, parentheses
    ("{{.Id | upper}}", "SHA256:ABC"),
    ("{{.RepoTags | json}}", '["alpine:3.19","alpine:latest"]'),
    ("{{(index .RepoTags 1) | len}}", "13"),
    ("{{\"x\" | printf \"%s-%s\" \"a\"}}", "a-x"),
    ("{{(index .State \"Pid\")}}", "42"),
    # docker's functions
    ("{{json .}}", json.dumps(DOC, separators=(",", ":")).replace("1000000.0", "1000000")),
    ("{{json .Labels}}", '{"zeta":"1","alpha":"2"}'),
    ("{{json .Nope}}", "null"),
    ("{{json \"<a&b>\"}}", '"<a&b>"'),
    ("{{join .Env \",\"}}", "A=1,B=2"),
    ("{{split \"a:b:c\" \":\"}}", "[a b c]"),
    ("{{range split .Id \":\"}}[{{.}}]{{end}}", "[sha256][abc]"),
    ("{{upper .Name}} {{lower \"ABC\"}} {{title \"hello big-world\"}}", "/WEB abc Hello Big-World"),
    ("{{truncate .Id 6}}|{{truncate \"ab\" 6}}", "sha256|ab"),
    ("[{{pad .Name 2 1}}][{{pad \"\" 2 1}}]", "[  /web ][]"),
    # Go's functions
    ("{{index .RepoTags 0}} {{index .Labels \"alpha\"}} {{index .Labels \"no\"}}",
     "alpine:3.19 2 <no value>"),
    ("{{index . \"State\" \"Pid\"}}", "42"),
    ("{{len .RepoTags}} {{len .Labels}} {{len .Id}}", "2 2 10"),
    ("{{slice .Id 0 6}} {{slice .RepoTags 1}}", "sha256 [alpine:latest]"),
    ("{{print 1 2 \"a\" \"b\" 3}}", "1 2ab3"),
    ("{{println \"a\" 1}}", "a 1\n"),
    ("{{eq .State.Pid 42}} {{eq .Name \"x\" \"/web\"}} {{ne 1 2}} {{lt 1 2}} {{le 2 2}} {{gt \"b\" \"a\"}} "
     "{{ge 1 2}}", "true true true true true true false"),
    ("{{and 1 0 2}} {{and 1 2}} {{or 0 \"\" \"x\"}} {{or 0 \"\"}} {{not .Empty}} {{not 1}}",
     "0 2 x  true false"),
    ("{{if and .State.Running (gt .State.Pid 1)}}ok{{end}}", "ok"),
    ("{{if or .Nope .Zero}}y{{else}}n{{end}}", "n"),
    ("{{html \"<a>\"}} {{urlquery \"a b&c\"}}", "&lt;a&gt; a+b%26c"),
    # printf's verbs
    ("{{printf \"%s|%d|%v|%q|%t\" .Name .State.Pid .RepoTags \"x\\\"y\" true}}",
     "/web|42|[alpine:3.19 alpine:latest]|\"x\\\"y\"|true"),
    ("{{printf \"%5d|%-5d|%05d|%x|%X|%o|%b|%c|%+d\" 42 42 42 255 255 8 5 65 3}}",
     "   42|42   |00042|ff|FF|10|101|A|+3"),
    ("{{printf \"%.2f|%8.3f|%e|%g|%v\" 3.14159 2.5 1234.5678 0.000012 1.5}}",
     "3.14|   2.500|1.234568e+03|1.2e-05|1.5"),
    ("{{printf \"%10s|%-6s|%.3s|%%\" \"hi\" \"ab\" \"abcdef\"}}", "        hi|ab    |abc|%"),
    ("{{printf \"%d\" \"x\"}} {{printf \"%s\" 5}} {{printf \"%t\" 1}}",
     "%!d(string=x) %!s(int=5) %!t(int=1)"),
    ("{{printf \"%d %s\" 1}}", "1 %!s(MISSING)"),
    ("{{printf \"%d\" 1 2}}", "1%!(EXTRA int=2)"),
    ("{{printf \"%v\" .Nope}} {{print .Nope}}", "<nil> <nil>"),
    ("{{printf \"%T %T %T\" 1 \"s\" .Env}}", "int string []interface {}"),
    # literals: strings, raw strings, chars, numbers
    ("{{`raw\\n`}} {{\"tab\\tnl\"}} {{'a'}} {{0x10}} {{1e3}} {{-7}} {{true}}",
     "raw\\n tab\tnl 97 16 1000 -7 true"),
    # trim markers and comments
    ("a  {{- .Name -}}  b", "a/webb"),
    ("{{/* a comment */}}x{{- /* trimmed */ -}}  y", "xy"),
    ("{{- .Name}}\n", "/web\n"),
    # actions over several lines, as Go 1.16+
    ("{{if\n.State.Running}}up{{end}}", "up"),
    # define / template / block
    ("{{define \"t\"}}<{{.}}>{{end}}{{template \"t\" .Name}}", "</web>"),
    ("{{block \"b\" .Zero}}[{{.}}]{{end}}", "[0]"),
])
def test_as_go_prints_it(tmpl, want):
    assert run(tmpl) == want


@pytest.mark.parametrize("tmpl,msg", [
    ("{{.Id", "template: :1: unclosed action"),
    ("x\n{{.Id", "template: :2: unclosed action"),
    ("{{foo .Id}}", 'template: :1: function "foo" not defined'),
    ("{{if .Id}}x", "template: :1: unexpected EOF"),
    ("{{range .RepoTags}}x{{else}}", "template: :1: unexpected EOF"),
    ("{{end}}", "template: :1: unexpected {{end}}"),
    ("{{else}}", "template: :1: unexpected {{else}}"),
    ("{{}}", "template: :1: missing value for command"),
    ("{{if}}x{{end}}", "template: :1: missing value for if"),
    ("{{$x}}", 'template: :1: undefined variable "$x"'),
    ("{{break}}", "template: :1: {{break}} outside {{range}}"),
    ("{{.Id | \"x\"}}", "template: :1: non executable command in pipeline stage 2"),
    ("{{\"abc}}", "template: :1: unterminated quoted string"),
    ("{{.Id #}}", "template: :1: unrecognized character in action: U+0023 '#'"),
    ("{{(.Id}}", "template: :1: unclosed left paren"),
    ("{{/* x", "template: :1: unclosed comment"),
])
def test_parse_errors_are_docker_lines(tmpl, msg):
    with pytest.raises(TemplateError) as ei:
        parse(tmpl)
    assert str(ei.value) == "template parsing error: " + msg
    assert ei.value.status == 400  # a usage error: exit 125, never "internal error"


@pytest.mark.parametrize("tmpl,msg", [
    ("{{.Id.X}}", 'template: :1:2: executing "" at <.Id.X>: can\'t evaluate field X in type string'),
    ("{{.State.Health.Status}}",
     'template: :1:2: executing "" at <.State.Health.Status>: nil pointer evaluating interface {}.Status'),
    ("ab{{index .RepoTags 5}}",
     'template: :1:4: executing "" at <index .RepoTags 5>: error calling index: index out of range: 5'),
    ("{{eq 1 \"a\"}}",
     'template: :1:2: executing "" at <eq 1 "a">: error calling eq: incompatible types for comparison'),
    ("{{len 3}}", 'template: :1:2: executing "" at <len 3>: error calling len: len of type int'),
    ("{{upper 3}}", 'template: :1:2: executing "" at <upper 3>: error calling upper: wrong type for value; '
                    "expected string; got int"),
    ("{{join .Env}}",
     'template: :1:2: executing "" at <join .Env>: wrong number of args for join: want 2 got 1'),
    ("{{.Id 1}}", 'template: :1:2: executing "" at <.Id>: Id is not a method but has arguments'),
    ("{{range .Id}}{{end}}", 'template: :1:8: executing "" at <.Id>: range can\'t iterate over sha256:abc'),
    ("{{template \"no\"}}", 'template: :1:2: executing "" at <{{template "no"}}>: template "no" not defined'),
])
def test_execution_errors_are_docker_lines(tmpl, msg):
    with pytest.raises(TemplateError) as ei:
        run(tmpl)
    assert str(ei.value) == "template parsing error: " + msg


def test_deep_nesting_is_a_template_error():
    with pytest.raises(TemplateError, match="nested too deeply"):
        parse("{{" + "(" * 5000 + "1" + ")" * 5000 + "}}")


def test_strict_objects_reject_unknown_fields_as_docker_list_rows_do():
    row = {"ID": "abc", "Names": "web"}
    assert run("{{.Names}}", row, strict=True) == "web"
    with pytest.raises(TemplateError, match="can't evaluate field Nmes"):
        run("{{.Nmes}}", row, strict=True)
    assert run("{{.Nmes}}", row) == "<no value>"  # inspect's documents: a map


def test_callable_fields_are_methods():
    row = {"Label": lambda k: {"a": "1"}.get(k, "")}
    assert run('{{.Label "a"}}|{{.Label "b"}}|{{"a" | .Label}}', row) == "1||1"
    assert run("{{json .}} {{.}}", {**row, "A": 1}) == '{"A":1} map[A:1]'  # methods are not data


def test_go_values_and_printf_helpers():
    assert go_v(None) == "<nil>" and go_v(None, top=True) == "<no value>"
    assert go_v(1234567.0) == "1.234567e+06" and go_v(123456.0) == "123456" and go_v(1e-05) == "1e-05"
    assert go_v([1, "a", None, {"k": False}]) == "[1 a <nil> map[k:false]]"
    assert sprintf("%q", [["a", "b"]]) == '["a" "b"]'
    assert sprintf("%6.2f%%", [12.345]) == " 12.35%"


def test_tabwriter_as_docker_tables():
    # NewWriter(out, 10, 1, 3, ' ', 0): cells padded to widest + 3, at least 10; last cell not padded
    text = "REPOSITORY\tTAG\tIMAGE ID\nalpine\tlatest\tabc123def456\n"
    assert tabwrite(text) == ("REPOSITORY   TAG       IMAGE ID\n"
                              "alpine       latest    abc123def456\n")
    # a line without a tab ends the column block
    assert tabwrite("a\tb\nno tabs here at all\nccc\td\n") == \
        "a         b\nno tabs here at all\nccc       d\n"


def _capture(monkeypatch, fn, *a):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stdout", buf)
    fn(*a)
    return buf.getvalue()


def test_formatted_table_and_lines(monkeypatch):
    rows = [{"ID": "0123456789ab", "Names": "web", "Status": "Up 2 minutes"},
            {"ID": "ba9876543210", "Names": "db-long-name", "Status": "Exited (0)"}]
    heads = {"ID": "CONTAINER ID", "Names": "NAMES", "Status": "STATUS"}
    fmt = "table {{.ID}}\\t{{.Names | upper}}\\t{{.Status}}"
    out = _capture(monkeypatch, output.formatted, fmt, rows, heads)
    assert out == ("CONTAINER ID   NAMES          STATUS\n"
                   "0123456789ab   WEB            Up 2 minutes\n"
                   "ba9876543210   DB-LONG-NAME   Exited (0)\n")
    assert _capture(monkeypatch, output.formatted, "table", [], heads) == "CONTAINER ID   NAMES     STATUS\n"
    assert _capture(monkeypatch, output.formatted, 'table {{.Label "k"}}', [], heads) == "LABEL\n"
    assert _capture(monkeypatch, output.formatted, "{{.Names}}:{{.ID}}", rows, heads) == \
        "web:0123456789ab\ndb-long-name:ba9876543210\n"
    assert _capture(monkeypatch, output.formatted, "table {{json .Names}}", rows[:1], heads) == \
        'NAMES\n"web"\n'  # the header's json gives back the name
    with pytest.raises(TemplateError, match="can't evaluate field Nope"):
        _capture(monkeypatch, output.formatted, "{{.Nope}}", rows, heads)


def test_inspect_range_over_repo_tags(monkeypatch):
    # the reported bug: this ended in "internal error: ValueError"
    docs = [DOC, {"RepoTags": ["x:1"]}]
    out = _capture(monkeypatch, output.print_docs, docs, "{{range .RepoTags}}{{.}} {{end}}")
    assert out == "alpine:3.19 alpine:latest \nx:1 \n"
    assert _capture(monkeypatch, output.print_docs, [{"A": 1}], "{{.B}}") == "<no value>\n"
    assert json.loads(_capture(monkeypatch, output.print_docs, [{"A": 1}], "json")) == [{"A": 1}]


def test_version_document_has_dockers_shape():
    from kobako import __version__
    from kobako.api import API_VERSION
    from kobako.cli.host import _version_doc
    doc = _version_doc()
    assert run("{{.Client.Version}} {{.Server.ApiVersion}} {{.Client.Os}}", doc, strict=True) == \
        f"{__version__} {API_VERSION} linux"
    assert {"Version", "ApiVersion", "GoVersion", "Os", "Arch"} <= set(doc["Client"]) & set(doc["Server"])

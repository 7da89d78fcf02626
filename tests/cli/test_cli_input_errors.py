"""Input that must not pass as nothing, and the errors of `send` and `run` about their input, against the
real sandbox: unreadable input exits 3 before anything is sent, an empty input is a warning, Latin-1 and
semicolon CSVs are read when told (or detected), attachments outside the allowed directories say which are
allowed, and failed or partial records print who was refused and each hint once."""

from __future__ import annotations

import codecs
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_harness.runner import Result, cli
from conftest import received

from mailconnector.activities.files import iter_records
from mailconnector.connection import Connection
from mailconnector.errors import ConfigError
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox

PW_VAR = "MC_INPUT_ERRORS_PASSWORD"


@pytest.fixture
def project(sandbox: Sandbox, tmp_path: Path) -> Path:
    """``mail`` (alice on the sandbox), a file operation ``copy-outbox`` and its activities, in a project
    directory one level below tmp_path (so that tmp_path/outside is outside it)."""
    root = tmp_path / "project"
    root.mkdir()
    doc: dict[str, Any] = {
        "connections": {"mail": sandbox.connection_dict("alice", password=f"${{env:{PW_VAR}}}")},
        "activities": {
            "outbox": {"type": "file", "path": "outbox.jsonl"},
            "export": {"type": "file", "path": "export.csv"},
            "export-cp1252": {"type": "file", "path": "export.csv", "encoding": "cp1252", "delimiter": "semicolon"},
            "copy": {"type": "file", "path": "copy.jsonl"},
        },
        "operations": {
            "send-outbox": {"source": "outbox", "target": "copy"},
            "export": {"source": "export", "target": "copy"},
            "export-cp1252": {"source": "export-cp1252", "target": "copy"},
        },
    }
    (root / "mailconnector.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def run(sandbox: Sandbox, cwd: Path, *args: str) -> Result:
    return cli(args, cwd, {PW_VAR: sandbox.info.password("alice")}, columns=400)


def send(sandbox: Sandbox, cwd: Path, *args: str) -> Result:
    return run(sandbox, cwd, "send", "mail", *args)


def count_in(sandbox: Sandbox, user: str, tok: str) -> int:
    conn = Connection.from_dict(sandbox.connection_dict(user), name=f"input-errors-count-{user}")
    with ImapSession(conn) as imap:
        imap.select("INBOX", readonly=True)
        return len(imap.search(["SUBJECT", tok]))


# -- input that cannot be read as its format: exit 3, nothing sent, the reason in one message --------------
LATIN1_CSV = "to,subject,text\nbob@example.test,Grüße {tok},Hallo\n".encode("latin-1")

UNREADABLE: dict[str, tuple[str, bytes, list[str], list[str]]] = {
    # name: (file name, content, words in the message, words in the hint)
    "plain text": ("notjson.txt", b"this is not json {tok}\n",
                   ["notjson.txt (not JSON, so read as CSV)", "names no record field"], ["to, "]),
    "a header row and no records": ("header.csv", b"to,subject,text\n",
                                    ["a header row ('to,subject,text') and no records"], ["empty file"]),
    "a JSON number": ("scalar.json", b"42\n", ["a JSON number, not records"], ["array of objects"]),
    "a JSON string without a suffix": ("scalar", b'"send me {tok}"', ["a JSON string, not records"], []),
    "JSON null": ("null.json", b"null", ["a JSON null, not records"], []),
    "binary garbage": ("blob.bin", bytes(range(256)) * 8, ["is not utf-8 text"], ["binary file"]),
    "a NUL byte in a CSV": ("nul.csv", b"to,subject\nbob@example.test,a\0b {tok}\n",
                            ["contains a NUL character (line 2)"], ["binary"]),
    "Latin-1 CSV read as UTF-8": ("latin.csv", LATIN1_CSV, ["latin.csv is not utf-8 text", "line 2"],
                                  ["Latin-1/cp1252", "--encoding cp1252"]),
    "UTF-16 CSV": ("wide.csv", "to,subject\nbob@example.test,x {tok}\n".encode("utf-16"), ["is not utf-8 text"],
                   ["--encoding utf-16"]),
    "UTF-16 without a BOM": ("wide2.csv", "to,subject\nbob@example.test,x {tok}\n".encode("utf-16-le"),
                             ["contains a NUL character"], ["--encoding utf-16"]),
    "unknown columns": ("cols.csv", b"To,Subjekt,text\nbob@example.test,x {tok},y\n",
                        ["unknown column(s): 'To' (did you mean 'to'?), 'Subjekt' (did you mean 'subject'?)"],
                        ["schema send-request"]),
    "a column named twice": ("twice.csv", b"to,subject,to\nbob@example.test,x {tok},carol@example.test\n",
                             ["column(s) named twice in the header row: 'to'"], []),
    "semicolons in a comma header": ("mixed.csv", b"to;subject,text\nbob@example.test;x {tok},y\n",
                                     ["'to;subject'"], ["--delimiter ';'"]),
    "a JSON array in a .jsonl file": ("array.jsonl", b'[\n{"to": "bob@example.test", "subject": "{tok}"}\n]\n',
                                      ["line 1 is not JSON", "not JSON Lines"], ["belongs in a .json file"]),
    "JSON Lines in a .json file": ("lines.json", b'{"to": "bob@example.test"}\n{"to": "carol@example.test"}\n',
                                   ["invalid JSON at line 2", "Extra data"], ["--format jsonl"]),
    "JSON nested too deeply": ("deep.json", b"[" * 100_000 + b"]" * 100_000, ["nested too deeply"], []),
}


@pytest.mark.parametrize("case", list(UNREADABLE), ids=list(UNREADABLE))
def test_input_that_cannot_be_read_exits_3_and_sends_nothing(sandbox: Sandbox, project: Path, case: str) -> None:
    name, content, said, hinted = UNREADABLE[case]
    tok = uuid.uuid4().hex
    (project / name).write_bytes(content.replace(b"{tok}", tok.encode()))
    res = send(sandbox, project, "--input", name, "--output", "responses.jsonl")
    assert res.returncode == 3, (case, res.returncode, res.stderr)
    lines = res.stderr.splitlines()
    assert lines[0].startswith("error (ConfigError): --input: "), res.stderr
    for words in said:
        assert words in lines[0], (case, res.stderr)
    hint = next((ln for ln in lines if ln.startswith("hint: ")), "")
    for words in hinted:
        assert words in hint, (case, res.stderr)
    assert "record(s)" not in res.stderr and res.stdout == ""
    assert not (project / "responses.jsonl").exists() or (project / "responses.jsonl").read_text() == ""
    assert count_in(sandbox, "bob", tok) == 0


@pytest.mark.parametrize("content", [b"", b"  \n\n\t\n", b"\xef\xbb\xbf", b"[]"], ids=["0 bytes", "white space",
                                                                                     "a BOM only", "[]"])
def test_an_empty_input_is_a_warning_and_exit_0(sandbox: Sandbox, project: Path, content: bytes) -> None:
    (project / "empty.json").write_bytes(content)
    res = send(sandbox, project, "--input", "empty.json")
    assert res.returncode == 0, res.stderr
    assert "no records in empty.json" in res.stderr
    assert "0 record(s)" in res.stderr


def test_a_latin1_semicolon_csv_is_sent_with_encoding_and_a_detected_delimiter(sandbox: Sandbox,
                                                                               project: Path) -> None:
    tok = uuid.uuid4().hex
    (project / "excel.csv").write_bytes(
        f"to;subject;text\nbob@example.test;Grüße {tok};Schöne Grüße aus Köln\n".encode("cp1252"))
    res = send(sandbox, project, "--input", "excel.csv", "--encoding", "cp1252", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["counts"] == {"sent": 1}
    [msg] = received(sandbox, "bob", tok)
    assert msg["Subject"] == f"Grüße {tok}"
    assert msg.get_content().strip() == "Schöne Grüße aus Köln"


def test_an_explicit_delimiter_and_utf16_input(sandbox: Sandbox, project: Path) -> None:
    tok = uuid.uuid4().hex
    # Tab-separated, UTF-16 with a BOM (as some spreadsheet programs save "Unicode text"); a comma in a cell.
    (project / "export.txt").write_bytes(
        f"to\tsubject\ttext\ncarol@example.test\ttabs, {tok}\tone, two\n".encode("utf-16"))
    res = send(sandbox, project, "--input", "export.txt", "--format", "csv", "--encoding", "utf-16",
               "--delimiter", "tab", "--json")
    assert res.returncode == 0, res.stderr
    [msg] = received(sandbox, "carol", tok)
    assert msg["Subject"] == f"tabs, {tok}" and msg.get_content().strip() == "one, two"


# -- attachments outside the allowed directories ---------------------------------------------------------
def test_an_attachment_outside_names_the_allowed_directories_and_attachment_dir_allows_it(
        sandbox: Sandbox, project: Path) -> None:
    tok = uuid.uuid4().hex
    outside = project.parent / "outside"
    outside.mkdir()
    (outside / "a.txt").write_text("first file")
    (outside / "b.txt").write_text("second file")
    records = [{"to": "dave@example.test", "subject": f"att {tok} {n}", "text": "see attached",
                "attachments": [{"path": f"../outside/{n}.txt"}]} for n in ("a", "b")]
    (project / "outbox.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    res = send(sandbox, project, "--input", "outbox.jsonl")
    assert res.returncode == 7, res.stderr  # both failed as messages
    flat = " ".join(res.stderr.split())
    assert f"is outside the directories attachments and templates may be read from ({project.resolve()})" in flat
    hint = "hint: move the file into one of them, or allow its directory: attachment_dirs: [DIR] on the " \
           "send-email activity; or --attachment-dir DIR on the command line"  # the library's words, then the CLI's
    assert flat.count(hint) == 1, res.stderr  # two records, one hint
    assert flat.count("failed record") == 2
    assert count_in(sandbox, "dave", f"att {tok}") == 0

    again = send(sandbox, project, "--input", "outbox.jsonl", "--attachment-dir", str(outside), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["counts"] == {"sent": 2}
    for n, body in (("a", "first file"), ("b", "second file")):
        [msg] = received(sandbox, "dave", f"att {tok} {n}")
        [part] = list(msg.iter_attachments())
        assert part.get_filename() == f"{n}.txt" and part.get_content() == body


def test_attachment_dir_must_be_an_existing_directory(sandbox: Sandbox, project: Path) -> None:
    (project / "outbox.jsonl").write_text(json.dumps({"to": "bob@example.test", "text": "x"}) + "\n")
    for bad in ("no-such-dir", "outbox.jsonl"):
        res = send(sandbox, project, "--input", "outbox.jsonl", "--attachment-dir", bad)
        assert res.returncode == 2, res.stderr
        assert "--attachment-dir" in res.stderr


# -- failed and partial records on stderr ------------------------------------------------------------------
def test_partial_and_failed_records_say_who_was_refused(sandbox: Sandbox, project: Path) -> None:
    tok = uuid.uuid4().hex
    records = [
        {"to": ["erin@example.test", "nobody-here@example.test"], "subject": f"partial {tok}", "text": "x"},
        {"to": "nobody-either@example.test", "subject": f"refused {tok}", "text": "x"},
    ]
    (project / "outbox.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    res = send(sandbox, project, "--input", "outbox.jsonl", "--output", "out.jsonl")
    assert res.returncode == 1, res.stderr
    lines = res.stderr.splitlines()
    partial = next(i for i, ln in enumerate(lines) if ln.startswith("partial record 0 <"))
    assert re.match(r"  refused: nobody-here@example\.test \(5\d\d .+\)$", lines[partial + 1]), res.stderr
    failed = next(i for i, ln in enumerate(lines) if ln.startswith("failed record 1 <"))
    assert re.match(r"  refused: nobody-either@example\.test \(5\d\d .+\)$", lines[failed + 1]), res.stderr
    [msg] = received(sandbox, "erin", f"partial {tok}")
    assert "nobody-here@example.test" in msg["To"]


# -- run: the file source's errors name the activity and its path, and its settings ---------------------
def test_run_with_a_missing_file_names_the_activity_and_its_path(sandbox: Sandbox, project: Path) -> None:
    res = run(sandbox, project, "run", "send-outbox")
    assert res.returncode == 3, res.stderr
    first = res.stderr.splitlines()[0]
    line = 1 + next(i for i, text in enumerate((project / "mailconnector.yaml").read_text().splitlines())
                    if "outbox.jsonl" in text)
    assert first == (f"error (ConfigError): activity 'outbox': file outbox.jsonl does not exist "
                     f"(path: in {project / 'mailconnector.yaml'} line {line})"), res.stderr
    assert "--input" not in res.stderr
    assert f"hint: create {project / 'outbox.jsonl'}" in res.stderr


def test_run_reads_a_file_source_with_its_encoding_and_delimiter(sandbox: Sandbox, project: Path) -> None:
    (project / "export.csv").write_bytes("to;subject\nbob@example.test;Grüße\n".encode("cp1252"))
    plain = run(sandbox, project, "run", "export")
    assert plain.returncode == 3, plain.stderr
    assert plain.stderr.startswith("error (ConfigError): activity 'export': export.csv is not utf-8 text")
    assert "hint: it looks like Latin-1/cp1252 (Windows Western European): try `encoding: cp1252` on activity " \
           "'export'" in plain.stderr
    told = run(sandbox, project, "run", "export-cp1252")
    assert told.returncode == 0, told.stderr
    assert [json.loads(x) for x in (project / "copy.jsonl").read_text().splitlines()] == [
        {"to": "bob@example.test", "subject": "Grüße"}]


@pytest.mark.parametrize(("setting", "value", "said"), [
    ("encoding", "klingon", "unknown text encoding 'klingon'"),
    ("encoding", "base64", "unknown text encoding 'base64'"),
    ("delimiter", "ab", "'ab' cannot separate CSV columns"),
    ("delimiter", '"', "cannot separate CSV columns"),
])
def test_bad_file_settings_in_the_project_exit_3_with_the_line(sandbox: Sandbox, project: Path, setting: str,
                                                               value: str, said: str) -> None:
    path = project / "mailconnector.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["activities"]["export"][setting] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    (project / "export.csv").write_text("to,subject\nbob@example.test,x\n")
    res = run(sandbox, project, "run", "export")
    assert res.returncode == 3, res.stderr
    assert re.search(rf"mailconnector\.yaml: line \d+: activities\.export\.\S*{setting}: ", res.stderr), res.stderr
    assert said in res.stderr


# -- the reader itself, for inputs the command line cannot easily give ------------------------------------
def test_a_bom_is_dropped_and_a_utf8_header_with_one_column_is_read() -> None:
    data = codecs.BOM_UTF8 + b"to\nbob@example.test\n"
    assert list(iter_records(data, name="x.csv", fields={"to"})) == [{"to": "bob@example.test"}]


def test_later_bad_lines_still_fail_alone() -> None:
    data = b'{"to": "a@example.test"}\n{broken\n7\n'
    out = list(iter_records(data, name="in.jsonl"))
    assert out[0] == {"to": "a@example.test"}
    assert [str(e) for e in out[1:]] == ["record 1 (line 2): invalid JSON: Expecting property name enclosed in "
                                         "double quotes", "record 2 (line 3): must be a JSON object, not number"]


def test_an_oversized_csv_cell_is_an_error_not_a_crash() -> None:
    data = b'to,text\nbob@example.test,"' + b"x" * (64 * 1024 * 1024 + 1) + b'"\n'
    with pytest.raises(ConfigError, match="field larger than field limit"):
        list(iter_records(data, name="big.csv"))

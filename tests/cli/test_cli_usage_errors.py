"""Values typed on the command line that are not valid are usage errors (exit 2), in one line naming the valid
values, before anything is contacted; the same settings in a project file are configuration errors (exit 3)
with their line. `read --attachments` takes a directory only when it looks like one. Real sandbox."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_harness.runner import Result, cli

from mailconnector.activities._search import KNOWN_SEARCH_KEYS, search_problem
from mailconnector.connection import Connection
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox

USER = "erin"
PW_VAR = "MC_USAGE_ERRORS_PASSWORD"


@pytest.fixture
def box(sandbox: Sandbox, make_conn: Callable[..., Connection], fresh_folder: Callable[[str], str],
        tmp_path: Path) -> dict[str, Any]:
    """erin's fresh folder with one unread message that has an attachment, and a project pointing at it."""
    folder = fresh_folder(USER)
    raw = (f"From: ann@example.test\r\nTo: {USER}@example.test\r\nSubject: usage {uuid.uuid4().hex}\r\n"
           f"Message-ID: <{uuid.uuid4().hex}@example.test>\r\nMIME-Version: 1.0\r\n"
           'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n'
           "--b\r\nContent-Type: application/octet-stream\r\n"
           'Content-Disposition: attachment; filename="r.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
           + base64.b64encode(b"report").decode() + "\r\n--b--\r\n").encode()
    with ImapSession(make_conn(USER)) as imap:
        imap.append(folder, raw)
    doc = {"connections": {"box": sandbox.connection_dict(USER, password=f"${{env:{PW_VAR}}}")},
           "activities": {"inbox": {"type": "read-email", "connection": "box", "folder": folder,
                                    "criteria": "SUBJECT usage", "after_read": "keep_unread"},
                          "out": {"type": "file", "path": "out.jsonl"}},
           "operations": {"drain": {"source": "inbox", "target": "out"}}}
    (tmp_path / "mailconnector.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return {"dir": tmp_path, "folder": folder, "env": {PW_VAR: sandbox.info.password(USER)}}


def run(box: dict[str, Any], *args: str) -> Result:
    return cli(args, box["dir"], box["env"], columns=1000)  # wide: the error box keeps a message on one line


def usage_line(res: Result) -> str:
    """The one line of a usage error's message (inside typer's box), without the box."""
    found = [ln.strip(" │") for ln in res.stderr.splitlines() if "Invalid value" in ln]
    assert len(found) == 1, res.stderr
    return found[0].strip()


USAGE: dict[str, tuple[list[str], str, str]] = {
    # name: (arguments, the option named, words in the message)
    "--after-read archive": (["read", "box", "--after-read", "archive"], "--after-read",
                             "is not one of mark_read, keep_unread, delete, move:FOLDER; did you mean move:archive?"),
    "--after-read mark-read": (["read", "box", "--after-read", "mark-read"], "--after-read", "did you mean mark_read?"),
    "--after-read move:": (["read", "box", "--after-read", "move:"], "--after-read", "move: needs a folder name"),
    "--criteria FROMM": (["read", "box", "--criteria", "FROMM bob"], "--criteria",
                         "unknown search key FROMM at character 1 (did you mean FROM?); known keys: ALL, "),
    "--criteria bad date": (["read", "box", "--criteria", "SINCE 2026-01-01"], "--criteria",
                            "SINCE at character 1 needs a date like 1-Jan-2026, not 2026-01-01"),
    "--criteria open parenthesis": (["read", "box", "--criteria", 'FROM a (SUBJECT "x"'], "--criteria",
                                    "the parenthesis at character 8 is not closed"),
    "--criteria open quote": (["read", "box", "--criteria", 'SUBJECT "x'], "--criteria",
                              "the quoted string at character 9 is not closed"),
    "--criteria CRLF injection": (["read", "box", "--criteria", "ALL\r\nA1 DELETE INBOX"], "--criteria",
                                  "a control character (U+000D) at character 4"),
    "--attachments bogus": (["read", "box", "--attachments", "bogus"], "--attachments",
                            "write it as a path: ./bogus"),
    "--attachments inlin": (["read", "box", "--attachments", "inlin"], "--attachments", "did you mean inline?"),
    "--attachments a file": (["read", "box", "--attachments", "mailconnector.yaml"], "--attachments",
                             "is a file, not a directory"),
    "--folder with CR": (["read", "box", "--folder", "a\rb"], "", "--folder: "),
    "--batch-size too big": (["read", "box", "--batch-size", "100000"], "", "--batch-size: "),
    "--rate-limit 0": (["send", "box", "--to", "bob@example.test", "--rate-limit", "0"], "--rate-limit",
                       "above 0"),
    "--rate-limit nan": (["send", "box", "--to", "bob@example.test", "--rate-limit", "nan"], "--rate-limit",
                         "above 0"),
    "--rate-limit -1": (["send", "box", "--to", "bob@example.test", "--rate-limit", "-1"], "--rate-limit",
                        "above 0"),
    "--concurrency 0": (["send", "box", "--to", "bob@example.test", "--concurrency", "0"], "--concurrency", "1"),
    "--format xml": (["send", "box", "--input", "x.csv", "--format", "xml"], "--format",
                     "'xml' is not one of json, jsonl, csv"),
    "--encoding klingon": (["send", "box", "--input", "x.csv", "--encoding", "klingon"], "--encoding",
                           "unknown text encoding 'klingon' (e.g. utf-8, cp1252"),
    "--encoding zlib": (["send", "box", "--input", "x.csv", "--encoding", "zlib"], "--encoding",
                        "unknown text encoding 'zlib'"),
    "--delimiter ab": (["send", "box", "--input", "x.csv", "--delimiter", "ab"], "--delimiter",
                       "comma, semicolon, tab, pipe"),
    "--delimiter quote": (["send", "box", "--input", "x.csv", "--delimiter", '"'], "--delimiter",
                          "cannot separate CSV columns"),
    "--from not an address": (["send", "box", "--input", "x.csv", "--from", "not an address"], "", "--from: "),
    "--attach missing": (["send", "box", "--to", "bob@example.test", "--attach", "nope.pdf"], "--attach",
                         "nope.pdf is not a file"),
}


@pytest.mark.parametrize("case", list(USAGE), ids=list(USAGE))
def test_invalid_option_values_are_usage_errors_in_one_line(box: dict[str, Any], case: str) -> None:
    args, option, said = USAGE[case]
    (box["dir"] / "x.csv").write_text("to,subject\nbob@example.test,never sent\n")
    res = run(box, *args)
    assert res.returncode == 2, (case, res.returncode, res.stderr)
    line = usage_line(res)
    if option:
        assert line.startswith(f"Invalid value for '{option}': "), res.stderr
    assert said in line, res.stderr
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert not (box["dir"] / "bogus").exists() and not (box["dir"] / "inlin").exists()


def test_nothing_was_read_by_the_refused_commands(box: dict[str, Any], make_conn: Callable[..., Connection]) -> None:
    for case in ("--after-read archive", "--criteria FROMM", "--attachments bogus"):
        assert run(box, *USAGE[case][0], "--folder", box["folder"]).returncode == 2
    with ImapSession(make_conn(USER)) as imap:
        imap.select(box["folder"], readonly=True)
        assert len(imap.search(["UNSEEN"])) == 1


@pytest.mark.parametrize("value", ["./new-files", "out/files", "{existing}"])
def test_attachments_to_a_directory_written_as_a_path_or_existing(box: dict[str, Any], value: str) -> None:
    existing = box["dir"] / "existing"
    existing.mkdir()
    arg = value.replace("{existing}", "existing")
    res = run(box, "read", "box", "--folder", box["folder"], "--attachments", arg, "--after-read", "keep_unread")
    assert res.returncode == 0, res.stderr
    [record] = [json.loads(x) for x in res.stdout.splitlines()]
    [attachment] = record["attachments"]
    written = box["dir"] / attachment["path"]  # as given: relative to the command's directory
    assert (box["dir"] / arg).resolve() in written.resolve().parents
    assert written.read_bytes() == b"report"


def test_attachments_under_home_is_expanded_not_a_directory_named_tilde(box: dict[str, Any]) -> None:
    home = box["dir"] / "home"
    home.mkdir()
    res = cli(["read", "box", "--folder", box["folder"], "--attachments", "~/mail-files", "--after-read",
               "keep_unread"], box["dir"], {**box["env"], "HOME": str(home)}, columns=1000)
    assert res.returncode == 0, res.stderr
    assert (home / "mail-files").is_dir() and not (box["dir"] / "~").exists()


def test_bad_criteria_in_the_project_file_exit_3_in_one_line_with_the_line(box: dict[str, Any]) -> None:
    path = box["dir"] / "mailconnector.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["activities"]["inbox"]["criteria"] = "FROMM bob"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = run(box, "run", "drain")
    assert res.returncode == 3, res.stderr
    first = res.stderr.splitlines()[0]
    assert re.search(r"mailconnector\.yaml: line \d+: activities\.inbox\.criteria(\.raw)?: unknown search key "
                     r"FROMM at character 1 \(did you mean FROM\?\); known keys: ", first), res.stderr
    assert "hint:" in res.stderr.splitlines()[1]


def test_a_search_the_server_refuses_is_reported_in_one_line(box: dict[str, Any]) -> None:
    # Gmail's key passes the local check (it is a known extension); Dovecot answers BAD.
    res = run(box, "read", "box", "--folder", box["folder"], "--criteria", "X-GM-RAW invoices")
    assert res.returncode == 3, res.stderr
    lines = res.stderr.splitlines()
    assert lines[0].startswith("error (ConfigError): criteria: the server refused the search criteria: "), res.stderr
    assert lines[1].startswith("hint: ") and len(lines) == 2, res.stderr
    assert "readthedocs" not in res.stderr


@pytest.mark.parametrize("raw", ["ALL", 'FROM "alice@example.test" SINCE 1-Jan-2026', 'OR (FROM a TO b) NOT SEEN',
                                 "UID 1:*,7", '1:5 HEADER X-Tag "a b"', 'SUBJECT "Grüße"', "KEYWORD $Forwarded",
                                 "younger 3600", 'MODSEQ "/flags/\\\\seen" all 620162338', "X-GM-RAW has:attachment"])
def test_valid_searches_pass_the_check(raw: str) -> None:
    assert search_problem(raw) is None


@pytest.mark.parametrize("raw", ["FROMM bob", "OR FROM a", "NOT", ")", "()", "(" * 200 + "ALL" + ")" * 200,
                                 '"FROM" a', "LARGER big", "HEADER X-Tag", "UID x", "KEYWORD \\Seen", "ALL\0"])
def test_invalid_searches_are_one_line(raw: str) -> None:
    problem = search_problem(raw)
    assert problem is not None and "\n" not in problem and "\0" not in problem
    assert "character" in problem or "nested" in problem
    assert len(KNOWN_SEARCH_KEYS) > 40

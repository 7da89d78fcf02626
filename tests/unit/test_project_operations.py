"""Operations without a mail server: project-file errors (file, line, field), transformations (callable and
Jinja mapping), the error policy, chaining, operation-log retention, file endpoints, the lease check and the
published project schema."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailconnector.cli._exit_codes import exit_code_for
from mailconnector.errors import ConfigError, StateError
from mailconnector.operations import MAX_CHAIN_DEPTH, run_operation, watch_operation
from mailconnector.project import Project, project_schema

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

CONNECTION = {
    "auth": {"type": "basic", "username": "ops@example.test", "password": "${env:MC_OPS_PASSWORD}"},
    # Never contacted: these tests only build sources and targets, or write .eml files (dry run).
    "smtp": {"host": "127.0.0.1", "port": 9, "security": "none"},
    "imap": {"host": "127.0.0.1", "port": 9, "security": "none"},
    "from_address": "ops@example.test",
}


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MC_OPS_PASSWORD", "not-a-real-password")


def make_project(tmp_path: Path, activities: dict[str, Any], operations: dict[str, Any],
                 settings: dict[str, Any] | None = None, **files: Any) -> Project:
    doc: dict[str, Any] = {"connections": {"mb": CONNECTION}, "activities": activities, "operations": operations}
    if settings:
        doc["settings"] = settings
    path = tmp_path / "mailconnector.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    for name, content in files.items():
        target = tmp_path / name.replace("__", "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, list):
            content = "".join(json.dumps(r) + "\n" for r in content)
        target.write_text(textwrap.dedent(content) if isinstance(content, str) else content)
    return Project.load(path)


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def file_op(source: str = "in.jsonl", target: str = "out.jsonl", **op: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    activities = {"in": {"type": "file", "path": source}, "out": {"type": "file", "path": target}}
    return activities, {"op": {"source": "in", "target": "out", **op}}


# --------------------------------------------------------------------------------- project file errors
BASE = """\
connections:
  mb:
    auth: {type: basic, username: a@example.test, password: "${env:MC_OPS_PASSWORD}"}
    smtp: {host: 127.0.0.1, port: 10587, security: starttls}
    imap: {host: 127.0.0.1, port: 10993, security: ssl}
activities:
  in:
    type: file
    path: in.jsonl
  out:
    type: file
    path: out.jsonl
  send:
    type: send-email
    connection: mb
  inbox:
    type: read-email
    connection: mb
operations:
  op:
    source: in
    target: out
"""
# Line numbers in BASE: activities.in.type 8, activities.send.connection 15, operations.op 20, .source 21,
# .target 22; anything appended to the operation starts at line 23.


@pytest.mark.parametrize(("label", "edit", "line", "field", "words"), [
    ("bad YAML", ("    target: out\n", "    target: [out\n"), 23, None, "invalid YAML"),
    ("unknown activity type", ("    type: file\n    path: in.jsonl", "    type: ftp\n    path: in.jsonl"), 8,
     "activities.in.type", "unknown activity type 'ftp'"),
    ("missing connection", ("    connection: mb\n  inbox", "    connection: nope\n  inbox"), 15,
     "activities.send.connection", "no connection named 'nope'"),
    ("source is target-only", ("    source: in\n", "    source: send\n"), 21, "operations.op.source",
     "target-only activity"),
    ("target is source-only", ("    target: out\n", "    target: inbox\n"), 22, "operations.op.target",
     "source-only activity"),
    ("unknown operation in on_success", ("    target: out\n", "    target: out\n    on_success: nope\n"), 23,
     "operations.op.on_success", "no operation named 'nope'"),
    ("unknown operation in an on_failure list",
     ("    target: out\n", "    target: out\n    on_failure:\n      - op\n      - nope\n"), 25,
     "operations.op.on_failure", "no operation named 'nope'"),
    ("transformation not module:function", ("    target: out\n", "    target: out\n    transformation: justaname\n"),
     23, "operations.op.transformation", "is not module:function"),
    ("transformation with both kinds",
     ("    target: out\n", "    target: out\n    transformation: {callable: 'm:f', mapping: {a: b}}\n"), 23,
     "operations.op.transformation", "exactly one of callable or mapping"),
    ("bad Jinja in a mapping",
     ("    target: out\n", "    target: out\n    transformation:\n      mapping:\n        a: record.x\n"
      "        b: '{{ record.y'\n"), 26, "operations.op.transformation.mapping.b", "invalid Jinja expression"),
    ("bad error policy", ("    target: out\n", "    target: out\n    on_error: ignore\n"), 23,
     "operations.op.on_error", "'continue' or 'stop'"),
    ("bad Read Email setting", ("    connection: mb\noperations", "    connection: mb\n    after_read: burn\n"
                                "operations"), 19, "activities.inbox.after_read", "mark_read"),
    ("unknown Send Email setting", ("    connection: mb\n  inbox", "    connection: mb\n    concurency: 4\n  inbox"),
     16, "activities.send.concurency", "unknown field"),
])
def test_project_file_errors_name_file_line_and_field(tmp_path: Path, label: str, edit: tuple[str, str],
                                                       line: int, field: str | None, words: str) -> None:
    old, new = edit
    assert old in BASE, label
    path = tmp_path / "mailconnector.yaml"
    path.write_text(BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as ei:
        Project.load(path).validate_all()
    message = ei.value.message
    assert message.startswith(f"{path}: "), message
    assert re.search(rf"\bline {line}\b", message), message
    if field is not None:
        assert f"{field}: " in message, message
    assert words in message, message
    assert exit_code_for(ei.value) == 3


def test_the_base_project_is_valid(tmp_path: Path) -> None:
    """The project every case above edits: valid as it is, so each refusal comes from its one edit."""
    path = tmp_path / "mailconnector.yaml"
    path.write_text(BASE)
    project = Project.load(path)
    project.validate_all()
    assert project.connection_names == ["mb"]
    assert {name: type(project.activity(name)).__name__ for name in ("in", "out", "send", "inbox")} == {
        "in": "FileActivity", "out": "FileActivity", "send": "SendActivity", "inbox": "ReadActivity"}
    op = project.operation("op")
    assert (op.source, op.target, op.transformation) == ("in", "out", None)


def test_a_transformation_that_cannot_be_imported_names_the_line(tmp_path: Path) -> None:
    acts, ops = file_op(transformation="no_such_module_here:fn")
    project = make_project(tmp_path, acts, ops, **{"in.jsonl": [{"a": 1}]})
    with pytest.raises(ConfigError) as ei:
        run_operation(project, "op")
    assert "operations.op.transformation: cannot import no_such_module_here" in ei.value.message
    assert re.search(r"mailconnector\.yaml: line \d+: ", ei.value.message)
    assert not (tmp_path / "out.jsonl").exists()
    assert project.store().list_runs() == []  # nothing ran, so no log entry


# ------------------------------------------------------------------------------------- transformations
TRANSFORM = '''\
def split(record):
    """One record per recipient; none for an empty list; a crash on a poisoned record."""
    if record.get("poison"):
        raise RuntimeError("poisoned record " + str(record["n"]))
    return [{"n": record["n"], "to": to} for to in record.get("to", [])] or None


def bad_type(record):
    return "not a record"
'''


def test_callable_transformation_returns_none_one_or_many(tmp_path: Path) -> None:
    records = [{"n": 0, "to": ["a", "b", "c"]}, {"n": 1, "to": []}, {"n": 2, "poison": True},
               {"n": 3, "to": ["d"]}]
    acts, ops = file_op(transformation="tx_split:split")
    project = make_project(tmp_path, acts, ops, **{"in.jsonl": records, "tx_split.py": TRANSFORM})
    result = run_operation(project, "op")
    assert (result.read, result.written, result.failed) == (4, 4, 1)
    assert result.status == "partial"
    assert jsonl(tmp_path / "out.jsonl") == [{"n": 0, "to": "a"}, {"n": 0, "to": "b"}, {"n": 0, "to": "c"},
                                             {"n": 3, "to": "d"}]
    run = project.store().get_run(result.run_id)
    assert run is not None and run["status"] == "partial"
    assert run["errors"] == [{"record": "record 2", "error": {
        "type": "TransformationError", "stage": "transformation",
        "message": "RuntimeError: poisoned record 2", "record": {"n": 2, "poison": True}}}]


def test_a_transformation_returning_the_wrong_type_fails_each_record(tmp_path: Path) -> None:
    acts, ops = file_op(transformation="tx_bad:bad_type")
    project = make_project(tmp_path, acts, ops, **{"in.jsonl": [{"n": 0}, {"n": 1}], "tx_bad.py": TRANSFORM})
    result = run_operation(project, "op")
    assert (result.status, result.written, result.failed) == ("failed", 0, 2)
    errors = project.store().get_run(result.run_id)["errors"]  # type: ignore[index]
    assert "returned str; expected a dict, a list of dicts or None" in errors[0]["error"]["message"]


def test_mapping_transformation_with_jinja_expressions(tmp_path: Path) -> None:
    records = [
        {"from": {"name": "Ann", "address": "ann@example.test"}, "subject": "Hello", "n": 2, "d": 1,
         "attachments": [{"path": "a/1.pdf"}, {"path": "a/2.png"}], "tags": ["x", "y"]},
        {"from": None, "subject": "Zero", "n": 1, "d": 0, "attachments": [], "tags": []},
        {"from": None, "subject": "Third", "n": 9, "d": 3, "attachments": [], "tags": ["z"]},
    ]
    mapping = {
        "sender": "record['from']['address'] if record['from'] else None",
        "who": "(record['from'] or {}).get('name', 'nobody') | upper",
        "subject": "subject ~ ' (' ~ tags | join(',') ~ ')'",  # fields are variables too
        "files": "attachments | map(attribute='path') | list",
        "ratio": "n // d",  # fails for the second record alone
        "missing": "record.no_such_field",
    }
    acts, ops = file_op(transformation={"mapping": mapping})
    project = make_project(tmp_path, acts, ops, **{"in.jsonl": records})
    result = run_operation(project, "op")
    assert (result.read, result.written, result.failed) == (3, 2, 1)
    assert jsonl(tmp_path / "out.jsonl") == [
        {"sender": "ann@example.test", "who": "ANN", "subject": "Hello (x,y)", "files": ["a/1.pdf", "a/2.png"],
         "ratio": 2, "missing": None},
        {"sender": None, "who": "NOBODY", "subject": "Third (z)", "files": [], "ratio": 3, "missing": None},
    ]
    errors = project.store().get_run(result.run_id)["errors"]  # type: ignore[index]
    assert [e["record"] for e in errors] == ["record 1"]
    assert errors[0]["error"]["stage"] == "transformation"
    assert "ZeroDivisionError" in errors[0]["error"]["message"]


def test_mapping_with_keep_starts_from_the_source_record(tmp_path: Path) -> None:
    acts, ops = file_op(transformation={"mapping": {"subject": "subject | title", "record": "'shadowed'"},
                                        "keep": True})
    project = make_project(tmp_path, acts, ops, **{"in.jsonl": [{"subject": "hello world", "id": 7,
                                                                  "record": "a field named record"}]})
    assert run_operation(project, "op").ok
    assert jsonl(tmp_path / "out.jsonl") == [{"subject": "Hello World", "id": 7, "record": "shadowed"}]


def test_the_mapping_sandbox_refuses_unsafe_attribute_access(tmp_path: Path) -> None:
    acts, ops = file_op(transformation={"mapping": {"x": "record.__class__.__mro__"}})
    project = make_project(tmp_path, acts, ops, **{"in.jsonl": [{"a": 1}]})
    result = run_operation(project, "op")
    assert (result.status, result.failed) == ("failed", 1)
    errors = project.store().get_run(result.run_id)["errors"]  # type: ignore[index]
    assert errors[0]["error"]["message"].startswith("SecurityError: access to attribute '__class__'")


# ------------------------------------------------------------------------------------------ error policy
@pytest.mark.parametrize(("policy", "read", "written"), [("continue", 5, 4), ("stop", 3, 2)])
def test_error_policy(tmp_path: Path, policy: str, read: int, written: int) -> None:
    records = [{"n": i, "to": ["x"], **({"poison": True} if i == 2 else {})} for i in range(5)]
    acts, ops = file_op(transformation="tx_policy:split", on_error=policy)
    project = make_project(tmp_path, acts, ops, **{"in.jsonl": records, "tx_policy.py": TRANSFORM})
    result = run_operation(project, "op")
    assert (result.read, result.written, result.failed) == (read, written, 1)
    assert [r["n"] for r in jsonl(tmp_path / "out.jsonl")] == [i for i in range(read) if i != 2]


def test_a_source_line_that_is_not_json_fails_alone(tmp_path: Path) -> None:
    acts, ops = file_op()
    project = make_project(tmp_path, acts, ops, **{"in.jsonl": '{"a": 1}\n{not json}\n[1, 2]\n{"a": 4}\n'})
    result = run_operation(project, "op")
    assert (result.read, result.written, result.failed) == (4, 2, 2)
    errors = project.store().get_run(result.run_id)["errors"]  # type: ignore[index]
    assert [e["error"]["stage"] for e in errors] == ["source", "source"]
    assert "invalid JSON" in errors[0]["error"]["message"]


# ---------------------------------------------------------------------------------------------- chaining
def test_on_success_and_on_failure_chains(tmp_path: Path) -> None:
    activities = {
        "good": {"type": "file", "path": "good.jsonl"},
        "bad": {"type": "file", "path": "bad.jsonl"},
        "out": {"type": "file", "path": "out.jsonl"},
        "ok-log": {"type": "file", "path": "ok.jsonl"},
        "fail-log": {"type": "file", "path": "fail.jsonl"},
    }
    operations = {
        "first": {"source": "good", "target": "out", "on_success": ["second"], "on_failure": "alarm"},
        "second": {"source": "bad", "target": "out", "transformation": "tx_chain:split",
                   "on_success": "cheer", "on_failure": "alarm"},
        "cheer": {"source": "good", "target": "ok-log"},
        "alarm": {"source": "good", "target": "fail-log"},
    }
    project = make_project(tmp_path, activities, operations, **{
        "good.jsonl": [{"n": 1}], "bad.jsonl": [{"n": 2, "poison": True}], "tx_chain.py": TRANSFORM})
    result = run_operation(project, "first")
    assert result.status == "success"
    assert [c.operation for c in result.chained] == ["second"]
    second = result.chained[0]
    assert second.status == "failed"
    assert [(c.operation, c.status) for c in second.chained] == [("alarm", "success")]
    assert not result.ok  # a failure anywhere in the chain
    assert (tmp_path / "fail.jsonl").exists() and not (tmp_path / "ok.jsonl").exists()
    logged = [r["operation"] for r in project.store().list_runs()]
    assert sorted(logged) == ["alarm", "first", "second"]


def test_a_chained_operation_that_cannot_start_is_reported_not_raised(tmp_path: Path) -> None:
    activities = {"in": {"type": "file", "path": "in.jsonl"}, "out": {"type": "file", "path": "out.jsonl"}}
    operations = {"first": {"source": "in", "target": "out", "on_success": "broken"},
                  "broken": {"source": "in", "target": "out", "transformation": "missing_mod_xyz:f"}}
    project = make_project(tmp_path, activities, operations, **{"in.jsonl": [{"n": 1}]})
    result = run_operation(project, "first")
    assert result.status == "success"
    assert [(c.operation, c.status) for c in result.chained] == [("broken", "error")]
    assert "cannot import missing_mod_xyz" in (result.chained[0].error or "")


def test_a_chain_cycle_stops_at_the_depth_limit(tmp_path: Path) -> None:
    activities = {"in": {"type": "file", "path": "in.jsonl"}, "out": {"type": "file", "path": "out.jsonl"}}
    project = make_project(tmp_path, activities, {"loop": {"source": "in", "target": "out", "on_success": "loop"}},
                           **{"in.jsonl": [{"n": 1}]})
    result = run_operation(project, "loop")
    depth, node = 0, result
    while node.chained:
        node, depth = node.chained[0], depth + 1
    assert depth == MAX_CHAIN_DEPTH + 1
    assert node.status == "error" and "chain too deep" in (node.error or "")
    assert len(project.store().list_runs(limit=100)) == MAX_CHAIN_DEPTH + 1


# -------------------------------------------------------------------------------------- log retention
def test_log_retention_by_count(tmp_path: Path) -> None:
    acts, ops = file_op(transformation="tx_ret:split")
    project = make_project(tmp_path, acts, ops, settings={"log_retention_runs": 3},
                           **{"in.jsonl": [{"n": 0, "poison": True}], "tx_ret.py": TRANSFORM})
    ids = []
    for _ in range(5):
        ids.append(run_operation(project, "op").run_id)
        time.sleep(0.01)  # distinct start times
    kept = [r["run_id"] for r in project.store().list_runs()]
    assert kept == list(reversed(ids[-3:]))
    with sqlite3.connect(project.store().path) as db:
        errors = {r[0] for r in db.execute("SELECT DISTINCT run_id FROM run_errors")}
    assert errors == set(ids[-3:])  # the failed records of pruned runs went with them


def test_log_retention_by_age(tmp_path: Path) -> None:
    acts, ops = file_op()
    project = make_project(tmp_path, acts, ops, settings={"log_retention_days": 7}, **{"in.jsonl": [{"n": 0}]})
    old = run_operation(project, "op").run_id
    middle = run_operation(project, "op").run_id
    store = project.store()
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET started_at = ? WHERE run_id = ?", (time.time() - 8 * 86400, old))
        db.execute("UPDATE runs SET started_at = ? WHERE run_id = ?", (time.time() - 6 * 86400, middle))
    new = run_operation(project, "op").run_id
    assert {r["run_id"] for r in store.list_runs()} == {middle, new}
    assert store.get_run(old) is None


def test_log_retention_can_be_turned_off(tmp_path: Path) -> None:
    acts, ops = file_op()
    project = make_project(tmp_path, acts, ops, settings={"log_retention_days": None, "log_retention_runs": None},
                           **{"in.jsonl": [{"n": 0}]})
    first = run_operation(project, "op").run_id
    with sqlite3.connect(project.store().path) as db:
        db.execute("UPDATE runs SET started_at = 0 WHERE run_id = ?", (first,))
    run_operation(project, "op")
    assert len(project.store().list_runs()) == 2


# -------------------------------------------------------------------------------------- file endpoints
def test_json_csv_and_append_targets(tmp_path: Path) -> None:
    activities = {
        "in": {"type": "file", "path": "in.csv"},
        "json-out": {"type": "file", "path": "out/all.json", "append": True},
        "csv-out": {"type": "file", "path": "out/all.csv", "append": True},
    }
    operations = {"to-json": {"source": "in", "target": "json-out"}, "to-csv": {"source": "in", "target": "csv-out"}}
    project = make_project(tmp_path, activities, operations,
                           **{"in.csv": "to,subject\nann@example.test,Grüße\nbob@example.test,\"a, b\"\n"})
    for _ in range(2):
        assert run_operation(project, "to-json").ok
        assert run_operation(project, "to-csv").ok
    rows = [{"to": "ann@example.test", "subject": "Grüße"}, {"to": "bob@example.test", "subject": "a, b"}]
    assert json.loads((tmp_path / "out/all.json").read_text()) == rows * 2
    body = ["ann@example.test,Grüße", 'bob@example.test,"a, b"']
    assert (tmp_path / "out/all.csv").read_text().splitlines() == ["to,subject", *body, *body]  # one header


def test_a_csv_record_with_a_field_the_header_lacks_fails_instead_of_losing_it(tmp_path: Path) -> None:
    acts, ops = file_op(target="out.csv")
    records = [{"to": "a@example.test"}, {"to": "b@example.test", "cc": "c@example.test"},
               {"to": "d@example.test", "data": {"k": [1, 2]}}]
    project = make_project(tmp_path, acts, ops, **{"in.jsonl": records})
    result = run_operation(project, "op")
    assert (result.written, result.failed) == (1, 2)
    errors = project.store().get_run(result.run_id)["errors"]  # type: ignore[index]
    assert "have no place for: cc" in errors[0]["error"]["message"]
    assert errors[0]["error"]["stage"] == "target"


def test_eml_directory_source_to_eml_directory_target(tmp_path: Path) -> None:
    src = tmp_path / "mails"
    src.mkdir()
    for i in range(3):
        (src / f"m{i}.eml").write_bytes(
            f"From: a@example.test\r\nTo: b@example.test\r\nSubject: mail {i}\r\n"
            f"Message-ID: <m{i}@example.test>\r\n\r\nbody {i}\r\n".encode())
    activities = {"mails": {"type": "file", "path": "mails", "format": "eml"},
                  "copy": {"type": "file", "path": "copy", "format": "eml"},
                  "index": {"type": "file", "path": "index.jsonl"}}
    operations = {
        # Parsed records carry no raw message: an .eml target refuses them, record by record.
        "raw-less": {"source": "mails", "target": "copy"},
        "summary": {"source": "mails", "target": "index",
                    "transformation": {"mapping": {"subject": "subject", "id": "message_id"}}},
    }
    project = make_project(tmp_path, activities, operations)
    result = run_operation(project, "raw-less")
    assert (result.read, result.failed) == (3, 3)
    assert "needs records with raw_base64 or raw_path" in (project.store().get_run(result.run_id) or {})[
        "errors"][0]["error"]["message"]
    assert run_operation(project, "summary").ok
    assert jsonl(tmp_path / "index.jsonl") == [{"subject": f"mail {i}", "id": f"<m{i}@example.test>"}
                                               for i in range(3)]


def test_eml_target_names_never_collide(tmp_path: Path) -> None:
    import base64

    raws = [f"Subject: {i}\r\n\r\nx\r\n".encode() for i in range(4)]
    records = [{"raw_base64": base64.b64encode(r).decode()} for r in raws]
    acts, ops = file_op(target="emls")
    acts["out"]["format"] = "eml"
    project = make_project(tmp_path, acts, ops, **{"in.jsonl": records})
    assert run_operation(project, "op").ok
    written = sorted(p.read_bytes() for p in (tmp_path / "emls").glob("*.eml"))
    assert written == sorted(raws)


# ------------------------------------------------------------------------- send ledger keys (dry run)
def test_send_target_message_ids_are_stable_for_the_same_input(tmp_path: Path) -> None:
    activities = {"in": {"type": "file", "path": "in.jsonl"},
                  "mail": {"type": "send-email", "connection": "mb", "dry_run": "dry", "subject": "Default"}}
    records = [{"to": "x@example.test", "text": "one"}, {"to": "y@example.test", "text": "two"},
               {"id": "mine", "to": "z@example.test", "text": "three"}]
    project = make_project(tmp_path, activities, {"op": {"source": "in", "target": "mail"}},
                           **{"in.jsonl": records})

    def message_ids() -> list[str]:
        ids = []
        for path in sorted((tmp_path / "dry").glob("*.eml")):
            found = re.search(rb"^Message-ID: (<[^>]+>)", path.read_bytes(), re.M | re.I)
            assert found, path
            ids.append(found.group(1).decode())
        shutil.rmtree(tmp_path / "dry")
        return ids

    assert run_operation(project, "op").ok
    first = message_ids()
    assert len(set(first)) == 3
    assert run_operation(project, "op").ok
    assert message_ids() == first  # a rerun of the same input is recognised by the send ledger
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*records, {"to": "w@example.test"}]))
    assert run_operation(project, "op").ok
    changed = message_ids()
    # Each record keeps its Message-ID when another line changes (a fix-and-rerun sends only what is new).
    assert set(first) < set(changed) and len(set(changed)) == 4
    # An edited record is a new record; its neighbours are untouched.
    edited = [{**records[0], "text": "one, fixed"}, *records[1:]]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edited))
    assert run_operation(project, "op").ok
    after_edit = message_ids()
    assert set(after_edit) & set(first) == {first[1], first[2]}


def test_an_operation_key_gives_every_record_a_new_message_id(tmp_path: Path) -> None:
    activities = {"in": {"type": "file", "path": "in.jsonl"},
                  "mail": {"type": "send-email", "connection": "mb", "dry_run": "dry", "subject": "Default"}}
    records = [{"to": "x@example.test", "text": "one"}, {"to": "x@example.test", "text": "one"},
               {"id": "mine", "to": "z@example.test", "text": "three"}]
    ops = {"daily": {"source": "in", "target": "mail", "key": "statements-{date}"},
           "plain": {"source": "in", "target": "mail"}}
    project = make_project(tmp_path, activities, ops, **{"in.jsonl": records})

    def ids_of(operation: str, key: str | None = None) -> list[str]:
        assert run_operation(project, operation, batch_key=key).ok
        found = [re.search(rb"^Message-ID: (<[^>]+>)", p.read_bytes(), re.M | re.I)
                 for p in sorted((tmp_path / "dry").glob("*.eml"))]
        shutil.rmtree(tmp_path / "dry")
        return [m.group(1).decode() for m in found if m]

    plain = ids_of("plain")
    assert len(set(plain)) == 3  # two equal records are two messages (first and second occurrence)
    today = ids_of("daily")
    assert ids_of("daily") == today  # the same key, the same day: the same Message-IDs
    other = ids_of("daily", "statements-another-day")
    assert len(set(plain) | set(today) | set(other)) == 9  # each key re-keys every record, the id one too


# -------------------------------------------------------------------------------------- leases, watch
def read_project(tmp_path: Path, **settings: Any) -> Project:
    activities = {"inbox": {"type": "read-email", "connection": "mb", "folder": "INBOX"},
                  "out": {"type": "file", "path": "out.jsonl"}}
    return make_project(tmp_path, activities, {"op": {"source": "inbox", "target": "out"}}, settings=settings)


def folder_lease(project: Project, folder: str = "INBOX") -> str:
    """The lease a reader of ``folder`` of connection mb takes: named by the mailbox, not the connection."""
    from mailconnector.activities.read import ReadEmail

    return ReadEmail(project.connection("mb"), folder=folder).lease_name


def test_a_run_refuses_a_folder_another_consumer_holds(tmp_path: Path) -> None:
    project = read_project(tmp_path)
    lease = folder_lease(project, "inbox")  # INBOX in any case is one folder
    assert lease == folder_lease(project) and lease.endswith("/INBOX")
    assert project.store().acquire_lease(lease, ttl=60, holder="someone-else")
    with pytest.raises(StateError) as ei:
        run_operation(project, "op")  # refused before any connection is made (port 9 would fail)
    assert exit_code_for(ei.value) == 8
    assert f"{lease.split(':', 1)[1]} is being processed by another run" in ei.value.message
    # The library's hint names no command-line option: `read`, a worker and the console get it too.
    assert ei.value.hint == "only one consumer per mailbox folder at a time: wait for that run to finish"
    assert project.store().list_runs() == []


def test_a_watcher_waits_for_the_lease_and_gives_up_when_stopped(tmp_path: Path) -> None:
    project = read_project(tmp_path, lease_seconds=4)
    store = project.store()
    lease = folder_lease(project)
    assert store.acquire_lease(lease, ttl=60, holder="someone-else")
    with pytest.raises(StateError):
        watch_operation(project, "op", stop=threading.Event())
    stop = threading.Event()
    waiter = threading.Thread(target=watch_operation, args=(project, "op"),
                              kwargs={"stop": stop, "wait_for_lease": True})
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive()
    stop.set()
    waiter.join(5)
    assert not waiter.is_alive()
    info = store.lease_info(lease)
    assert info is not None and info.holder == "someone-else"


def test_a_lease_taken_over_by_another_consumer_is_noticed(tmp_path: Path) -> None:
    from mailconnector.state import LeaseKeeper

    project = read_project(tmp_path)
    store = project.store()
    lease = folder_lease(project)
    keeper = LeaseKeeper(store, lease, 1.0, holder="me")
    assert keeper.take()
    try:
        time.sleep(1.5)  # renewed meanwhile: still ours, although the first grant has run out
        keeper.check()
        info = store.lease_info(lease)
        assert info is not None and info.holder == "me"
        # This process "stalled": the lease ran out and another consumer took the folder.
        with sqlite3.connect(project.state_target()) as db:
            db.execute("UPDATE leases SET holder = 'other', token = token + 1, expires_at = expires_at + 60 "
                       "WHERE name = ?", (lease,))
        time.sleep(0.6)
        with pytest.raises(StateError, match="lost the lease"):
            keeper.check()
    finally:
        keeper.stop()
    info = store.lease_info(lease)
    assert info is not None and info.holder == "other"  # not released by us


def test_a_file_source_cannot_be_watched(tmp_path: Path) -> None:
    acts, ops = file_op()
    project = make_project(tmp_path, acts, ops, **{"in.jsonl": [{"n": 1}]})
    with pytest.raises(ConfigError, match="cannot be watched"):
        watch_operation(project, "op", stop=threading.Event())


# ---------------------------------------------------------------------------------------------- schema
def _check(schema: dict[str, Any], value: Any, root: dict[str, Any], path: str = "$") -> list[str]:
    """A small JSON Schema checker for the keywords pydantic emits (the jsonschema package is not a
    dependency): $ref, type, const, enum, properties, required, additionalProperties, items, anyOf, oneOf,
    minimum / maximum."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _check(root["$defs"][name], value, root, path)
    problems: list[str] = []
    for key in ("anyOf", "oneOf"):
        if key in schema:
            results = [_check(s, value, root, path) for s in schema[key]]
            passing = sum(1 for r in results if not r)
            if passing == 0 or (key == "oneOf" and passing > 1):
                problems.append(f"{path}: matches {passing} of the {key} choices")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    kind = schema.get("type")
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is not None:
        ok = isinstance(value, types[kind])
    else:
        ok = True
    if not ok:
        return [*problems, f"{path}: not of type {kind}"]
    if "const" in schema and value != schema["const"]:
        problems.append(f"{path}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: not one of {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{path}: below {schema['minimum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for req in schema.get("required", []):
            if req not in value:
                problems.append(f"{path}.{req}: required")
        for k, v in value.items():
            if k in props:
                problems += _check(props[k], v, root, f"{path}.{k}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += _check(schema["additionalProperties"], v, root, f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{path}.{k}: not allowed")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            problems += _check(schema["items"], v, root, f"{path}[{i}]")
    return problems


def example_project_document() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "operations.yaml").read_text())
    conn = {**CONNECTION, "tls": {"ca_file": "sandbox/ca.pem"}, "timeouts": {"connect": 5, "command": 30}}
    doc["connections"] = {"sandbox": conn, "sandbox-bob": conn}
    return doc


def test_schema_validates_the_example_project(tmp_path: Path) -> None:
    schema = project_schema()
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"connections", "activities", "operations", "settings"}
    doc = example_project_document()
    assert _check(schema, doc, schema) == []
    # ...and the example project loads and validates with the library as well.
    (tmp_path / "mailconnector.yaml").write_text(yaml.safe_dump(doc))
    Project.load(tmp_path / "mailconnector.yaml").validate_all()


@pytest.mark.parametrize(("edit", "where"), [
    (lambda d: d["activities"]["bob-inbox"].update(after_reed="mark_read"), "$.activities.bob-inbox"),
    (lambda d: d["activities"]["alice-mail"].update(concurrency="four"), "$.activities.alice-mail"),
    (lambda d: d["activities"]["outbox"].update(type="ftp"), "$.activities.outbox"),
    (lambda d: d["operations"]["acknowledge"].update(on_error="ignore"), "$.operations.acknowledge.on_error"),
    (lambda d: d["operations"]["acknowledge"].pop("source"), "$.operations.acknowledge.source"),
    (lambda d: d.update(schedules={}), "$.schedules"),
])
def test_schema_rejects_a_broken_project(edit: Any, where: str) -> None:
    schema = project_schema()
    doc = example_project_document()
    edit(doc)
    problems = _check(schema, doc, schema)
    assert any(p.startswith(where) for p in problems), problems


def test_file_targets_append_and_an_empty_run_leaves_an_empty_file_for_the_next_operation(tmp_path: Path) -> None:
    activities, ops = file_op(target="sub/out.jsonl", on_success="again")
    activities["out-csv"] = {"type": "file", "path": "out.csv"}
    ops["again"] = {"source": "out", "target": "out-csv"}
    project = make_project(tmp_path, activities, ops, **{"in.jsonl": ""})
    result = run_operation(project, "op")
    assert result.ok and [c.status for c in result.chained] == ["success"]  # it read the empty file
    assert (tmp_path / "sub" / "out.jsonl").read_text() == "" and (tmp_path / "out.csv").read_text() == ""

    (tmp_path / "in.jsonl").write_text('{"n": 1}\n{"n": 2}\n')
    (tmp_path / "sub" / "out.jsonl").write_text('{"n": 0}\n{"n": ')  # a killed run's unfinished line
    assert run_operation(project, "op").ok
    assert run_operation(project, "op").ok
    assert jsonl(tmp_path / "sub" / "out.jsonl") == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 1}, {"n": 2}]

"""What a record, a template, a mapping or a project file may make the process do: read only allowed files,
run no code, and leave state and token files readable by their owner only."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailconnector.activities.send import SendEmail
from mailconnector.connection import Connection
from mailconnector.errors import ConfigError, MessageError
from mailconnector.mime.compose import PathPolicy, compose
from mailconnector.operations import run_operation
from mailconnector.project import Project
from mailconnector.records.send import parse_send_request
from mailconnector.state import Store

MAILCONNECTOR = Path(sys.executable).with_name("mailconnector")


def dry_conn() -> Connection:
    return Connection.from_dict({
        "auth": {"type": "basic", "username": "alice@example.test", "password": "not-used-in-dry-run"},
        "smtp": {"host": "127.0.0.1", "port": 1, "security": "none"}, "from_address": "alice@example.test",
        "activities": "send"}, name="dry")


# --------------------------------------------------------------------------- which files a record may read


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    project = tmp_path / "project"
    (project / "files").mkdir(parents=True)
    (project / "files" / "ok.txt").write_text("inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("do not mail me")
    (project / "files" / "link.txt").symlink_to(outside / "secret.txt")
    (project / "linkdir").symlink_to(outside)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "brochure.pdf").write_bytes(b"%PDF-1.4 shared")
    return {"project": project, "outside": outside, "shared": shared}


@pytest.mark.parametrize(("record", "field"), [
    ({"attachments": [{"path": "/etc/passwd"}]}, "attachments[0].path"),
    ({"attachments": [{"path": "../outside/secret.txt"}]}, "attachments[0].path"),
    ({"attachments": [{"path": "files/../../outside/secret.txt"}]}, "attachments[0].path"),
    ({"attachments": [{"path": "files/link.txt"}]}, "attachments[0].path"),            # symlink out
    ({"attachments": [{"path": "linkdir/secret.txt"}]}, "attachments[0].path"),        # symlinked directory
    ({"attachments": [{"path": "/proc/self/environ"}]}, "attachments[0].path"),
    ({"attachments": [{"path": "files/ok.txt"}, {"path": "/etc/hostname"}]}, "attachments[1].path"),
    ({"template": {"text_file": "/etc/passwd"}}, "template.text_file"),
    ({"template": {"html_file": "../outside/secret.txt"}}, "template.html_file"),
])
def test_a_record_cannot_read_files_outside_the_allowed_directories(
        layout: dict[str, Path], record: dict[str, Any], field: str) -> None:
    activity = SendEmail(dry_conn(), dry_run=layout["project"] / "out", base_dir=layout["project"])
    full = {"to": "v@example.test", "subject": "s", "text": "t", **record}
    [r] = activity.send([full])
    assert r.status == "failed" and r.error is not None
    assert r.error.type == "MessageError" and r.error.field == field, r.error
    assert "outside the directories" in r.error.message
    assert not (layout["project"] / "out").exists() or not any((layout["project"] / "out").iterdir())


def test_files_inside_the_project_and_attachment_dirs_are_allowed(layout: dict[str, Path]) -> None:
    out = layout["project"] / "out"
    activity = SendEmail(dry_conn(), dry_run=out, base_dir=layout["project"], attachment_dirs=["../shared"])
    [r] = activity.send([{"to": "v@example.test", "text": "t", "attachments": [
        {"path": "files/ok.txt"}, {"path": str(layout["shared"] / "brochure.pdf")}]}])
    assert r.status == "dry_run", r.error
    raw = Path(str(r.eml_path)).read_bytes()
    assert b"ok.txt" in raw and b"brochure.pdf" in raw


def test_the_policy_is_checked_before_the_file_is_touched(tmp_path: Path) -> None:
    """A refused path gives the same answer whether the file exists or not: nothing is learnt by probing."""
    policy = PathPolicy.of([tmp_path])
    answers = []
    for path in ("/etc/passwd", "/etc/does-not-exist-here"):
        request = parse_send_request({"to": "v@example.test", "attachments": [{"path": path}]}, index=0)
        with pytest.raises(MessageError) as info:
            compose(request, default_from="a@example.test", base_dir=tmp_path, paths=policy)
        answers.append(info.value.message.replace(path, "PATH"))
    assert answers[0] == answers[1]


def test_files_named_on_the_command_line_are_allowed_wherever_they_are(layout: dict[str, Path]) -> None:
    project = layout["project"]
    (project / "mailconnector.yaml").write_text(yaml.safe_dump({"connections": {"c": {
        "auth": {"type": "basic", "username": "alice@example.test", "password": "${env:MC_UNUSED_PW}"},
        "smtp": {"host": "127.0.0.1", "port": 1, "security": "none"}, "activities": "send",
        "from_address": "alice@example.test"}}}))
    env = {**os.environ, "MC_UNUSED_PW": "unused-password"}
    res = subprocess.run([str(MAILCONNECTOR), "send", "c", "--to", "v@example.test", "--subject", "s", "--text",
                          "t", "--attach", str(layout["outside"] / "secret.txt"), "--dry-run", "out", "--json"],
                         cwd=project, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    [response] = json.loads(res.stdout)["responses"]
    assert response["status"] == "dry_run"
    assert b"secret.txt" in Path(project / response["eml_path"]).read_bytes()


# --------------------------------------------------------------------------- templates run in a sandbox


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}",
    "{{ self._TemplateReference__context }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ data.__class__ }}",
    "{{ range.__self__ }}",
    "{{ (1).__class__.__base__ }}",
])
@pytest.mark.parametrize("part", ["subject", "text", "html"])
def test_templates_cannot_reach_python_internals(tmp_path: Path, template: str, part: str) -> None:
    marker = tmp_path / "pwned"
    source = template.replace("{marker}", str(marker))
    with pytest.raises(MessageError) as info:
        request = parse_send_request({"to": "v@example.test", "template": {part: source}, "data": {"x": 1}},
                                     index=0)
        compose(request, default_from="a@example.test")
    assert info.value.field is not None and info.value.field.startswith("template")
    assert not marker.exists()


# --------------------------------------------------------------------------- transformations


def _project(tmp_path: Path, transformation: Any) -> Project:
    (tmp_path / "in.jsonl").write_text(json.dumps({"subject": "hi", "n": 1}) + "\n")
    data = {
        "activities": {"src": {"type": "file", "path": "in.jsonl"}, "dst": {"type": "file", "path": "out.jsonl"}},
        "operations": {"op": {"source": "src", "target": "dst", "transformation": transformation}},
    }
    path = tmp_path / "mailconnector.yaml"
    path.write_text(yaml.safe_dump(data))
    return Project.load(path)


@pytest.mark.parametrize("expression", [
    "record.__class__.__mro__[1].__subclasses__()",
    "lipsum.__globals__.os.system('touch {marker}')",
    "cycler.__init__.__globals__.os.popen('touch {marker}').read()",
    "namespace.__init__.__globals__",
    "record.items.__self__.__class__",
    "joiner.__init__.__globals__['__builtins__']['__import__']('os').system('touch {marker}')",
])
def test_a_mapping_expression_cannot_import_or_call_arbitrary_code(tmp_path: Path, expression: str) -> None:
    marker = tmp_path / "pwned"
    project = _project(tmp_path, {"mapping": {"out": expression.replace("{marker}", str(marker))}})
    result = run_operation(project, "op")
    assert not marker.exists()
    if result.failed:  # refused while evaluating: the record's error says why
        run = project.store().get_run(result.run_id)
        assert run is not None and "unsafe" in json.dumps(run["errors"])
    else:  # or the unsafe attribute read as undefined: nothing reached
        [line] = (tmp_path / "out.jsonl").read_text().splitlines()
        assert json.loads(line) == {"out": None}


@pytest.mark.parametrize("callable_text", [
    "__import__('os').system('touch {marker}')",
    "os.system('touch {marker}')",
    "os:system('x')",
    "lambda r: r",
])
def test_a_transformation_is_only_a_declared_module_function(tmp_path: Path, callable_text: str) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError):
        project = _project(tmp_path, callable_text.replace("{marker}", str(marker)))
        run_operation(project, "op")
    assert not marker.exists()


# --------------------------------------------------------------------------- file modes


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_database_and_its_journal_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = Store(tmp_path / ".mailconnector" / "state.db")
        store.put_token("k", "a-token-value", 1e12)
        store.claim("<a@b>", connection="c", holder="h", recipients=["x@example.test"])
        store.settle("<a@b>", holder="h", status="sent", accepted=[])
    finally:
        os.umask(old)
    files = sorted((tmp_path / ".mailconnector").iterdir())
    assert any(p.name.endswith("-wal") for p in files)
    for path in files:
        assert _mode(path) == 0o600, (path.name, oct(_mode(path)))


def test_an_existing_world_readable_store_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    Store(path)
    assert _mode(path) == 0o600


def test_the_refresh_token_file_is_private(tmp_path: Path) -> None:
    from mailconnector.cli.auth_cmd import _write_private

    old = os.umask(0o000)
    try:
        target = tmp_path / "tokens" / "refresh.token"
        _write_private(target, "refresh-token-value")
    finally:
        os.umask(old)
    assert _mode(target) == 0o600 and _mode(target.parent) == 0o700

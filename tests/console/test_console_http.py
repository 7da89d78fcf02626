"""The console's pages and JSON API over HTTP (Starlette's TestClient, the app in this process), against the real
sandbox: connections and their Test, operations and their runs, the operation log, the send ledger, the health
of the consumers, /metrics; hostile text shown as text; the password shown nowhere."""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from conftest import wait_for
from httpx2 import Response
from prometheus_client.parser import text_string_to_metric_families
from services.console import TOKEN, ConsoleProject, csrf_of
from starlette.testclient import TestClient

from mailconnector.connection import Connection
from mailconnector.imap import ImapSession
from mailconnector.project import Project
from mailconnector.sandbox import Sandbox
from mailconnector.state import LeaseKeeper, StateStore, account_key

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
HOSTILE_OP = "<script>alert(1)" + IMG  # no '/': an operation's name is one segment of /operations/NAME/runs
JOB = re.compile(r'hx-get="/jobs/([0-9a-f]+)"')
RUN_LINK = re.compile(r'<a href="/runs/([0-9]{8}-[0-9]{6}-[0-9a-f]{6})">')
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
HX = {"HX-Request": "true"}


# ----------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def store(console_project: ConsoleProject) -> Iterator[StateStore]:
    """The console project's state store, opened as another process would open it."""
    opened = Project.load(console_project.path).store()
    try:
        yield opened
    finally:
        opened.close()


def _connection(project: ConsoleProject) -> Connection:
    return Project.load(project.path).connection("sandbox")


def _append(project: ConsoleProject, subjects: list[str]) -> None:
    """New messages in the console project's folder, put there with IMAP APPEND (unread)."""
    with ImapSession(_connection(project)) as imap:
        for subject in subjects:
            msg = EmailMessage()
            msg["From"] = "someone@example.test"
            msg["To"] = "ivan@example.test"
            msg["Subject"] = subject
            msg["Message-ID"] = make_msgid(domain="console.example.test")
            msg.set_content(f"body of {subject}")
            imap.append(project.folder, msg.as_bytes())


def _unseen(project: ConsoleProject) -> int:
    with ImapSession(_connection(project)) as imap:
        imap.select(project.folder, readonly=True)
        return len(imap.search(["UNSEEN"]))


def _edit(project: ConsoleProject, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the project file (the console reads it again when it changed)."""
    doc = yaml.safe_load(project.path.read_text())
    change(doc)
    project.path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def _add_connection(project: ConsoleProject, sandbox: Sandbox, name: str, *, password: str,
                    **overrides: Any) -> None:
    def change(doc: dict[str, Any]) -> None:
        conn = sandbox.connection_dict("ivan", password=password)
        for key, value in overrides.items():
            conn[key] = {**conn[key], **value}
        doc["connections"][name] = conn

    _edit(project, change)


def _outbox(project: ConsoleProject, records: list[dict[str, Any]]) -> None:
    project.outbox.write_text("".join(json.dumps(r) + "\n" for r in records))


def _csrf(client: TestClient) -> dict[str, str]:
    """The headers htmx sends from a console page: the page's CSRF value, and HX-Request."""
    return {"X-CSRF-Token": csrf_of(client.get("/connections").text), **HX}


def _finished(client: TestClient, run_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        answer = client.get(f"/api/runs/{run_id}")
        assert answer.status_code == 200
        doc: dict[str, Any] = answer.json()
        return doc if doc["status"] != "running" else None

    result: dict[str, Any] = wait_for(done, timeout=30)
    return result


def _run(client: TestClient, operation: str) -> dict[str, Any]:
    """Start a run through the API (the client must be allowed to POST) and wait for it to end."""
    started = client.post(f"/api/operations/{quote(operation, safe='')}/runs")
    assert started.status_code == 202, started.text
    body = started.json()
    assert set(body) == {"run_id", "job", "operation", "distributed"} and body["operation"] == operation
    assert body["distributed"] is False  # no broker in this project: the console runs it itself
    return _finished(client, body["run_id"])


def _follow(client: TestClient, fragment: str, seen: list[str] | None = None) -> str:
    """Poll the job a fragment names (hx-get="/jobs/ID") as htmx does, until a fragment no longer asks to be
    polled; returns that last fragment (``seen`` gets every fragment)."""
    found = JOB.search(fragment)
    if found is None:
        return fragment
    job = found.group(1)

    def done() -> str | None:
        answer = client.get(f"/jobs/{job}", headers={**HX, **HTML})
        assert answer.status_code == 200
        if seen is not None:
            seen.append(answer.text)
        return answer.text if JOB.search(answer.text) is None else None

    last: str = wait_for(done, timeout=30)
    return last


class _Tags(HTMLParser):
    """The elements of a page that would run something."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[str | None] = []
        self.handlers: list[tuple[str, str]] = []
        self.images: int = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs).get("src"))
        if tag == "img":
            self.images += 1
        self.handlers += [(tag, name) for name, _ in attrs if name.lower().startswith("on")]


def _assert_inert(text: str, where: str) -> None:
    """No hostile markup survived: only the console's own script, no image, no event handler attribute."""
    assert "<script>alert(1)" not in text, where
    assert "<img src=x onerror" not in text, where
    tags = _Tags()
    tags.feed(text)
    assert set(tags.scripts) <= {"/static/htmx.min.js"}, (where, tags.scripts)
    assert tags.images == 0 and tags.handlers == [], (where, tags.handlers)


def _metrics(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _m(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


def _ledger_entry(store: StateStore, message_id: str, status: str, *, recipients: list[str],
                  holder: str = "elsewhere.example:1:0badc0de", note: str | None = None) -> None:
    assert store.claim(message_id, connection="sandbox", holder=holder, recipients=recipients).granted
    if status != "claimed":
        store.settle(message_id, holder=holder, status=status, accepted=recipients if status == "sent" else [],
                     note=note)


# ---------------------------------------------------------------------------------------- connections
def test_connections_page_shows_the_settings_and_never_the_password(
        browser_client: TestClient, console_project: ConsoleProject, sandbox: Sandbox) -> None:
    page = browser_client.get("/connections")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    smtp, imap = sandbox.info.ports["submission"], sandbox.info.ports["imaps"]
    assert "<h2>sandbox</h2>" in page.text
    assert f"127.0.0.1:{smtp} (starttls)" in page.text and f"127.0.0.1:{imap} (ssl)" in page.text
    assert "basic as ivan@example.test · password set" in page.text
    assert "certificate checked" in page.text
    assert 'hx-post="/connections/sandbox/test"' in page.text
    assert console_project.password not in page.text
    assert 'aria-current="page">Connections</a>' in page.text


def test_the_test_button_answers_a_fragment_that_is_polled_until_every_step_passed(
        browser_client: TestClient) -> None:
    answer = browser_client.post("/connections/sandbox/test", headers=_csrf(browser_client))
    assert answer.status_code == 200
    assert "<html" not in answer.text and answer.text.lstrip().startswith('<div class="steps"')
    # the Test takes tens of milliseconds: the first fragment is nearly always still running; either way it
    # ends the same
    assert JOB.search(answer.text) is not None or "every step passed" in answer.text
    final = _follow(browser_client, answer.text)
    assert "hx-get" not in final
    assert '<p class="verdict passed">every step passed</p>' in final
    for step in ("DNS", "TCP connect", "greeting", "authentication", "sender accepted", "folder can be selected"):
        assert f"<td>{step}</td>" in final
    assert 'class="step failed"' not in final and 'class="step running"' not in final
    assert final.count('<tr class="step passed">') == 14


def test_a_test_in_progress_is_polled_and_shows_the_steps_so_far(
        browser_client: TestClient, console_project: ConsoleProject, sandbox: Sandbox) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts the connection, never greets
    try:
        port = silent.getsockname()[1]
        _add_connection(console_project, sandbox, "silent", password="unused-password",
                        smtp={"port": port, "security": "none"}, timeouts={"connect": 20, "command": 20})
        answer = browser_client.post("/connections/silent/test", headers=_csrf(browser_client))
        assert answer.status_code == 200
        job = JOB.search(answer.text)
        assert job is not None, answer.text
        assert 'hx-trigger="load delay:300ms"' in answer.text and "testing…" in answer.text
        # while the server stays silent the Test waits for its greeting: the job keeps asking to be polled

        def at_greeting() -> str | None:
            text = browser_client.get(f"/jobs/{job.group(1)}", headers=HX).text
            return text if "<td>greeting</td>" in text else None

        waiting = wait_for(at_greeting)
        assert f'hx-get="/jobs/{job.group(1)}"' in waiting
        assert '<tr class="step running">' in waiting and '<tr class="step passed">' in waiting
        api_view = browser_client.get(f"/api/jobs/{job.group(1)}").json()
        assert api_view["done"] is False and api_view["ok"] is None
        assert [s["status"] for s in api_view["steps"]][-1] == "running"
    finally:
        silent.close()  # the pending connection is reset: the greeting step fails
    final = _follow(browser_client, answer.text)
    assert "hx-get" not in final
    assert '<p class="verdict failed">the Test failed: see the first failed step</p>' in final
    assert '<tr class="step failed">' in final
    done = browser_client.get(f"/api/jobs/{job.group(1)}").json()
    assert done["done"] is True and done["ok"] is False and done["connection"] == "silent"


def test_unknown_connections_and_jobs_are_404(browser_client: TestClient, api: TestClient) -> None:
    csrf = _csrf(browser_client)
    page = browser_client.post("/connections/nope/test", headers={**csrf, **HTML})
    assert page.status_code == 404 and "<html" not in page.text  # htmx: the error fragment
    assert 'class="error"' in page.text and "no connection named &#39;nope&#39;" in page.text
    for path in ("/jobs/0123456789abcdef", "/api/jobs/0123456789abcdef"):
        answer = api.get(path)
        assert answer.status_code == 404
        assert answer.json()["ok"] is False and answer.json()["error"]["type"] == "NotFound"
    shown = browser_client.get("/jobs/0123456789abcdef", headers=HTML)
    assert shown.status_code == 404 and "<h1>Error</h1>" in shown.text
    unknown = api.post("/api/connections/nope/test")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "NotFound" and unknown.json()["error"]["hint"]


def test_a_failing_htmx_button_gets_the_error_fragment(browser_client: TestClient) -> None:
    headers = _csrf(browser_client)  # X-CSRF-Token and HX-Request, and the Accept: */* of an htmx request
    for path, form in (("/connections/nope/test", None), ("/operations/nope/runs", None),
                       ("/ledger/resolve", {"message_id": "<nobody@console.example.test>", "outcome": "sent"})):
        answer = browser_client.post(path, data=form, headers=headers)
        assert answer.status_code in (404, 409), path
        assert answer.headers["content-type"].startswith("text/html"), (path, answer.text)
        assert 'class="error"' in answer.text and "<html" not in answer.text


def test_api_connections_lists_them_and_follows_the_project_file(
        api: TestClient, console_project: ConsoleProject, sandbox: Sandbox) -> None:
    first = api.get("/api/connections")
    assert first.status_code == 200 and first.headers["content-type"] == "application/json"
    [conn] = first.json()
    assert conn["name"] == "sandbox" and conn["error"] is None
    assert conn["auth"] == {"type": "basic", "username": "ivan@example.test", "password_set": True}
    assert conn["smtp"] == {"host": "127.0.0.1", "port": sandbox.info.ports["submission"], "security": "starttls"}
    assert conn["imap"] == {"host": "127.0.0.1", "port": sandbox.info.ports["imaps"], "security": "ssl"}
    assert conn["from_address"] == "ivan@example.test" and conn["tls"]["verify"] is True
    _add_connection(console_project, sandbox, "second", password="second-password")
    _edit(console_project, lambda doc: doc["connections"].update({"broken": {"auth": {"type": "basic"}}}))
    listed = {c["name"]: c for c in api.get("/api/connections").json()}
    assert set(listed) == {"sandbox", "second", "broken"}
    assert listed["second"]["error"] is None
    assert listed["broken"]["error"]["type"] == "ConfigError" and listed["broken"]["error"]["message"]
    page = api.get("/connections").text
    assert "<h2>broken</h2>" in page and 'class="error"' in page
    assert "second-password" not in json.dumps(listed) and "second-password" not in page


def test_api_test_is_the_document_of_the_test_command(api: TestClient, console_project: ConsoleProject) -> None:
    answer = api.post("/api/connections/sandbox/test")
    assert answer.status_code == 200
    doc = answer.json()
    assert set(doc) == {"connection", "ok", "steps"}
    assert doc["connection"] == "sandbox" and doc["ok"] is True
    cli = subprocess.run([sys.executable, "-m", "mailconnector", "test", "sandbox", "--json", "--project",
                          str(console_project.path)], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout)
    assert set(expected) == set(doc) and expected["ok"] is True

    def shape(d: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(s["server"], s["name"], s["status"], tuple(sorted(s))) for s in d["steps"]]

    assert shape(doc) == shape(expected)
    volatile = {"ms", "detail"}
    same = [{k: v for k, v in s.items() if k not in volatile} for s in doc["steps"]]
    assert same == [{k: v for k, v in s.items() if k not in volatile} for s in expected["steps"]]
    # a body may name the folder the Test selects
    other = api.post("/api/connections/sandbox/test", json={"folder": console_project.folder}).json()
    assert other["ok"] is True and console_project.folder in other["steps"][-1]["detail"]
    for bad in (b"not json", b"[1, 2]"):
        refused = api.post("/api/connections/sandbox/test", content=bad)
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "BadRequest"


def test_api_test_with_a_wrong_password_fails_at_authentication(
        api: TestClient, console_project: ConsoleProject, sandbox: Sandbox) -> None:
    _add_connection(console_project, sandbox, "wrong", password="not-ivans-password-4711")
    answer = api.post("/api/connections/wrong/test")
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["connection"] == "wrong" and doc["ok"] is False
    failed = [s for s in doc["steps"] if s["status"] == "failed"]
    assert [(s["server"], s["name"]) for s in failed] == [("smtp", "authentication"), ("imap", "authentication")]
    for step in failed:
        assert step["error_type"] == "AuthenticationError"
        assert "ivan@example.test" in step["error"] and "refused" in step["error"]
        assert step["hint"] == "check the username and password"
    after = {s["name"]: s["status"] for s in doc["steps"] if s["server"] == "smtp"}
    assert after["sender accepted"] == "skipped" and after["greeting"] == "passed"
    assert "not-ivans-password-4711" not in answer.text and console_project.password not in answer.text


# ----------------------------------------------------------------------------------- operations, runs
def test_operations_page_runs_an_operation_and_follows_its_progress(
        browser_client: TestClient, console_project: ConsoleProject, tmp_path: Path) -> None:
    subjects = [f"console page run {n}" for n in range(3)]
    _append(console_project, subjects)
    page = browser_client.get("/operations")
    assert page.status_code == 200
    assert "<h2>folder-to-jsonl</h2>" in page.text and "<h2>send-outbox</h2>" in page.text
    assert '<span class="box">ivan-folder</span> → <span class="box">folder-jsonl</span>' in page.text
    assert 'hx-post="/operations/folder-to-jsonl/runs"' in page.text and page.text.count(">never<") == 2
    started = browser_client.post("/operations/folder-to-jsonl/runs", headers=_csrf(browser_client))
    assert started.status_code == 200 and started.text.lstrip().startswith('<div class="progress"')
    link = RUN_LINK.search(started.text)
    assert link is not None, started.text
    run_id = link.group(1)
    final = _follow(browser_client, started.text)
    assert "hx-get" not in final and f'<a href="/runs/{run_id}">{run_id}</a>' in final
    assert '<span class="status success">success</span>: read 3, written 3, skipped 0, uncertain 0, failed 0' in final
    written = [json.loads(line) for line in (tmp_path / "read.jsonl").read_text().splitlines()]
    assert sorted(r["subject"] for r in written) == subjects
    assert _unseen(console_project) == 0  # after_read: mark_read
    again = browser_client.get("/operations").text
    assert f'<a href="/runs/{run_id}">{run_id}</a> success' in again and again.count(">never<") == 1
    unknown = browser_client.post("/operations/nope/runs", headers={**_csrf(browser_client), **HTML})
    assert unknown.status_code == 404 and "no operation named" in unknown.text


def test_api_runs_an_operation_over_the_messages_appended_to_its_folder(
        api: TestClient, console_project: ConsoleProject, tmp_path: Path) -> None:
    ops = {op["name"]: op for op in api.get("/api/operations").json()}
    assert set(ops) == {"folder-to-jsonl", "send-outbox"}
    assert ops["folder-to-jsonl"]["source"] == "ivan-folder" and ops["folder-to-jsonl"]["target"] == "folder-jsonl"
    assert ops["folder-to-jsonl"]["last_run"] is None and ops["folder-to-jsonl"]["error"] is None
    assert ops["folder-to-jsonl"]["trigger"].startswith("manual, or watch")
    assert ops["send-outbox"]["trigger"] == "manual"
    subjects = [f"console api run {n}" for n in range(4)]
    _append(console_project, subjects)
    started = api.post("/api/operations/folder-to-jsonl/runs")
    assert started.status_code == 202
    body = started.json()
    run = _finished(api, body["run_id"])
    assert run["run_id"] == body["run_id"] and run["operation"] == "folder-to-jsonl"
    assert run["status"] == "success" and run["error"] is None and run["errors"] == []
    assert (run["records_read"], run["records_written"], run["records_failed"]) == (4, 4, 0)
    assert run["records_settled_so_far"] is None
    assert run["settings"]["source"]["type"] == "read-email"
    assert run["settings"]["source"]["folder"] == console_project.folder
    job = wait_for(lambda: (j := api.get(f"/api/jobs/{body['job']}").json())["done"] and j)
    assert job["operation"] == "folder-to-jsonl" and job["run_id"] == body["run_id"] and job["records"] == 4
    assert job["result"]["status"] == "success" and job["result"]["written"] == 4 and job["error"] is None
    assert len((tmp_path / "read.jsonl").read_text().splitlines()) == 4
    last = {op["name"]: op for op in api.get("/api/operations").json()}["folder-to-jsonl"]["last_run"]
    assert last["run_id"] == body["run_id"] and last["status"] == "success" and last["records_written"] == 4
    # nothing new: the next run reads nothing
    assert _run(api, "folder-to-jsonl")["records_read"] == 0
    unknown = api.post("/api/operations/nope/runs")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "NotFound"
    assert api.get("/api/runs/20260101-000000-abcdef").status_code == 404


def test_a_run_while_another_process_holds_the_folder_is_409(
        api: TestClient, browser_client: TestClient, console_project: ConsoleProject, store: StateStore) -> None:
    _append(console_project, ["console lease busy"])
    conn = _connection(console_project)
    assert conn.imap is not None
    lease = f"read:{account_key(conn.imap.host, conn.imap.port, conn.auth.username)}/{console_project.folder}"
    keeper = LeaseKeeper(store, lease, 60.0)
    assert keeper.take()
    try:
        busy = api.post("/api/operations/folder-to-jsonl/runs")
        assert busy.status_code == 409
        error = busy.json()["error"]
        assert busy.json()["ok"] is False and error["type"] == "LeaseBusyError"
        assert console_project.folder in error["message"] and error["hint"]
        page = browser_client.post("/operations/folder-to-jsonl/runs", headers={**_csrf(browser_client), **HTML})
        assert page.status_code == 409 and "<html" not in page.text
        assert "LeaseBusyError" in page.text and "is being processed by another run" in page.text
        assert api.get("/api/runs").json() == []
        assert _unseen(console_project) == 1
    finally:
        keeper.stop()
    run = _run(api, "folder-to-jsonl")
    assert run["status"] == "success" and run["records_read"] == 1


def test_runs_page_and_api_filter_by_operation_status_and_age(
        api: TestClient, browser_client: TestClient, console_project: ConsoleProject) -> None:
    _outbox(console_project, [{"to": "not an address", "subject": "never sent", "text": "x"}])
    good = _run(api, "folder-to-jsonl")
    bad = _run(api, "send-outbox")
    assert good["status"] == "success" and bad["status"] == "failed" and bad["records_failed"] == 1

    def ids(query: str) -> list[str]:
        answer = api.get(f"/api/runs{query}")
        assert answer.status_code == 200, answer.text
        return [r["run_id"] for r in answer.json()]

    assert ids("") == [bad["run_id"], good["run_id"]]  # newest first
    assert ids("?operation=send-outbox") == [bad["run_id"]]
    assert ids("?status=success") == [good["run_id"]]
    assert ids("?status=failed&operation=folder-to-jsonl") == []
    assert ids("?since_hours=24") == [bad["run_id"], good["run_id"]]
    assert ids("?since_hours=0.0000001") == []
    assert ids("?limit=1") == [bad["run_id"]]
    page = browser_client.get("/runs?status=failed", headers=HTML)
    assert page.status_code == 200 and "<h1>Runs</h1>" in page.text
    assert f'<a href="/runs/{bad["run_id"]}">' in page.text and good["run_id"] not in page.text.split("<tbody>")[1]
    assert "<option selected>failed</option>" in page.text
    assert 'hx-get="/runs?status=failed"' in page.text
    table = browser_client.get("/runs?operation=folder-to-jsonl", headers=HX)
    assert table.text.lstrip().startswith('<table class="runs">') and "<html" not in table.text
    assert good["run_id"] in table.text and bad["run_id"] not in table.text
    empty = browser_client.get("/runs?since_hours=0.0000001").text
    assert "no runs match these filters" in empty
    for query, message in (("status=bogus", "unknown run status &#39;bogus&#39;"),
                           ("since_hours=yesterday", "since_hours must be a number of hours"),
                           ("since_hours=nan", "since_hours must be a number of hours"),
                           ("since_hours=-1", "since_hours must be a number of hours"),
                           ("since_hours=inf", "since_hours must be a number of hours"),
                           ("limit=0", "limit must be between 1 and 10000")):
        shown = browser_client.get(f"/runs?{query}", headers=HTML)
        assert shown.status_code == 400 and "<h1>Error</h1>" in shown.text and message in shown.text
        assert shown.headers["content-type"].startswith("text/html")
        fragment = browser_client.get(f"/runs?{query}", headers={**HTML, **HX})
        assert fragment.status_code == 400 and "<html" not in fragment.text and message in fragment.text
        answer = api.get(f"/api/runs?{query}")
        assert answer.status_code == 400 and answer.json()["error"]["type"] == "BadRequest"


def test_an_operation_whose_name_has_a_slash_and_a_question_mark_runs(
        api: TestClient, browser_client: TestClient, console_project: ConsoleProject) -> None:
    name = "nightly/folder?#1"  # operation names are free text; connection names hold no '/'

    def add_operation(doc: dict[str, Any]) -> None:
        doc["operations"][name] = dict(doc["operations"]["folder-to-jsonl"])

    _edit(console_project, add_operation)
    started = api.post(f"/api/operations/{quote(name, safe='/')}/runs")
    assert started.status_code == 202, started.text
    assert _finished(api, started.json()["run_id"])["operation"] == name
    page = browser_client.get("/operations", headers=HTML).text
    button = re.search(r'hx-post="([^"]*nightly[^"]*)"', page)
    assert button is not None
    pressed = browser_client.post(html.unescape(button.group(1)), headers={**_csrf(browser_client), **HX})
    assert pressed.status_code == 200 and "<html" not in pressed.text, pressed.text


def test_run_page_shows_the_counts_and_each_failed_record(
        api: TestClient, browser_client: TestClient, console_project: ConsoleProject) -> None:
    _outbox(console_project, [{"to": "not an address", "subject": "first", "text": "x"},
                              {"to": "also@@wrong", "subject": "second", "text": "x"}])
    run = _run(api, "send-outbox")
    assert run["status"] == "failed" and run["records_read"] == 2 and run["records_failed"] == 2
    errors = {e["record"]: e for e in run["errors"]}
    assert set(errors) == {"record 0", "record 1"}
    assert all(e["outcome"] == "failed" and e["stage"] == "target" for e in run["errors"])
    assert errors["record 0"]["data"]["subject"] == "first" and errors["record 1"]["data"]["to"] == "also@@wrong"
    page = browser_client.get(f"/runs/{run['run_id']}")
    assert page.status_code == 200
    assert f"<h1>Run {run['run_id']}</h1>" in page.text
    assert "<tr><th>operation</th><td>send-outbox</td></tr>" in page.text
    assert "read 2, written 0, skipped 0, uncertain 0, failed 2" in page.text
    assert page.text.count('<tr class="record-error failed">') == 2 and "MessageError" in page.text
    assert "not an address" in page.text
    missing = browser_client.get("/runs/20260101-000000-abcdef", headers=HTML)
    assert missing.status_code == 404 and "no run &#39;20260101-000000-abcdef&#39;" in missing.text
    assert browser_client.get("/runs/20260101-000000-abcdef").json()["error"]["type"] == "NotFound"


# ---------------------------------------------------------------------------------------------- ledger
def test_ledger_page_searches_filters_and_resolves_uncertain_sends(
        browser_client: TestClient, store: StateStore) -> None:
    _ledger_entry(store, "<u1@console.example.test>", "uncertain", recipients=["one@example.test"],
                  note="connection lost after the final dot")
    _ledger_entry(store, "<s1@console.example.test>", "sent", recipients=["two@example.test"])
    dead = "elsewhere.example:2:deadbeef"  # a claim whose sender has no lease: it died
    _ledger_entry(store, "<d1@console.example.test>", "claimed", recipients=["three@example.test"], holder=dead)
    page = browser_client.get("/ledger")
    assert page.status_code == 200
    uncertain, _, search = page.text.partition("<h2>Search</h2>")
    assert "&lt;u1@console.example.test&gt;" in uncertain and "&lt;d1@console.example.test&gt;" in uncertain
    assert "&lt;s1@console.example.test&gt;" not in uncertain
    vals = [json.loads(html.unescape(v)) for v in re.findall(r"hx-vals='([^']*)'", uncertain)]
    assert {(v["message_id"], v["outcome"]) for v in vals} == {
        (m, o) for m in ("<u1@console.example.test>", "<d1@console.example.test>") for o in ("sent", "not_sent")}
    assert uncertain.count('hx-post="/ledger/resolve"') == 4
    assert all(m in search for m in ("&lt;u1@", "&lt;s1@", "&lt;d1@"))
    entry = store.ledger_entry("<d1@console.example.test>")
    assert entry is not None and entry.status == "uncertain"  # shown, and recorded, uncertain
    found = browser_client.get("/ledger", params={"search": "two@example"}).text.partition("<h2>Search</h2>")[2]
    assert "&lt;s1@console.example.test&gt;" in found and "&lt;u1@" not in found
    assert 'value="two@example"' in browser_client.get("/ledger", params={"search": "two@example"}).text
    sent = browser_client.get("/ledger", params={"status": "sent"}).text.partition("<h2>Search</h2>")[2]
    assert "&lt;s1@" in sent and "&lt;u1@" not in sent and "<option selected>sent</option>" in sent
    nothing = browser_client.get("/ledger", params={"search": "nobody"}).text
    assert "no entries match" in nothing
    csrf = _csrf(browser_client)
    resolved = browser_client.post("/ledger/resolve", data={"message_id": "<u1@console.example.test>",
                                                            "outcome": "sent"}, headers=csrf)
    assert resolved.status_code == 200 and resolved.text.startswith('<tr class="resolved">')
    assert "recorded as sent; it is never sent again" in resolved.text
    after = store.ledger_entry("<u1@console.example.test>")
    assert after is not None and after.status == "sent" and after.note == "resolved in the console: sent"
    forgotten = browser_client.post("/ledger/resolve", data={"message_id": "d1@console.example.test",
                                                             "outcome": "not_sent"}, headers=csrf)
    assert forgotten.status_code == 200 and "forgotten; the next run sends it" in forgotten.text
    assert store.ledger_entry("<d1@console.example.test>") is None
    assert "<p>none</p>" in browser_client.get("/ledger").text
    for form, status in (({"message_id": "<s1@console.example.test>", "outcome": "maybe"}, 400),
                         ({"message_id": "<nobody@console.example.test>", "outcome": "sent"}, 404),
                         ({"message_id": "<s1@console.example.test>", "outcome": "not_sent"}, 409)):
        refused = browser_client.post("/ledger/resolve", data=form, headers={**csrf, **HTML})
        assert refused.status_code == status and 'class="error"' in refused.text and "<html" not in refused.text
    kept = store.ledger_entry("<s1@console.example.test>")
    assert kept is not None and kept.status == "sent"
    assert browser_client.get("/ledger?status=bogus", headers=HTML).status_code == 400


def test_api_ledger_searches_and_resolves(api: TestClient, store: StateStore) -> None:
    _ledger_entry(store, "<u1@console.example.test>", "uncertain", recipients=["one@example.test"])
    _ledger_entry(store, "<u2@console.example.test>", "uncertain", recipients=["two@example.test"])
    _ledger_entry(store, "<s1@console.example.test>", "sent", recipients=["three@example.test"])
    alive = "elsewhere.example:3:a11ve000"  # its sender's lease is live: the claim is in flight
    assert store.acquire_lease(f"sender:{alive}", ttl=300, holder=alive) is not None
    _ledger_entry(store, "<c1@console.example.test>", "claimed", recipients=["four@example.test"], holder=alive)
    everything = api.get("/api/ledger").json()
    assert {e["message_id"]: e["status"] for e in everything} == {
        "<u1@console.example.test>": "uncertain", "<u2@console.example.test>": "uncertain",
        "<s1@console.example.test>": "sent", "<c1@console.example.test>": "claimed"}
    first = next(e for e in everything if e["message_id"] == "<s1@console.example.test>")
    assert first["recipients"] == ["three@example.test"] and first["accepted"] == ["three@example.test"]
    assert first["connection"] == "sandbox" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}",
                                                             first["claimed_at"])
    assert [e["message_id"] for e in api.get("/api/ledger", params={"search": "two@"}).json()] == [
        "<u2@console.example.test>"]
    assert {e["message_id"] for e in api.get("/api/ledger", params={"status": "uncertain"}).json()} == {
        "<u1@console.example.test>", "<u2@console.example.test>"}
    assert [e["message_id"] for e in api.get("/api/ledger", params={"status": "claimed"}).json()] == [
        "<c1@console.example.test>"]
    assert len(api.get("/api/ledger", params={"limit": 1}).json()) == 1
    assert api.get("/api/ledger", params={"status": "bogus"}).status_code == 400
    assert api.get("/api/ledger", params={"limit": "many"}).status_code == 400

    sent = api.post("/api/ledger/resolve", json={"message_id": "<u1@console.example.test>", "sent": True})
    assert sent.status_code == 200 and sent.json() == {"message_id": "<u1@console.example.test>", "status": "sent"}
    not_sent = api.post("/api/ledger/resolve", json={"message_id": "u2@console.example.test", "sent": False})
    assert not_sent.json() == {"message_id": "<u2@console.example.test>", "status": "not_sent"}
    assert store.ledger_entry("<u2@console.example.test>") is None
    u1 = store.ledger_entry("<u1@console.example.test>")
    assert u1 is not None and u1.status == "sent"
    unknown = api.post("/api/ledger/resolve", json={"message_id": "<nobody@console.example.test>", "sent": True})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "NotFound"
    for message_id in ("<s1@console.example.test>", "<c1@console.example.test>"):
        conflict = api.post("/api/ledger/resolve", json={"message_id": message_id, "sent": False})
        assert conflict.status_code == 409 and conflict.json()["error"]["type"] == "Conflict"
    for body in (b"not json", b'["<s1@console.example.test>"]', b'{"message_id": "<u@x>"}',
                 b'{"message_id": "<u@x>", "sent": "yes"}', b'{"message_id": 7, "sent": true}', b""):
        bad = api.post("/api/ledger/resolve", content=body)
        assert bad.status_code == 400, body
        assert bad.json()["ok"] is False and bad.json()["error"]["type"] == "BadRequest"
    c1 = store.ledger_entry("<c1@console.example.test>")
    s1 = store.ledger_entry("<s1@console.example.test>")
    assert c1 is not None and c1.status == "claimed" and s1 is not None and s1.status == "sent"


# ------------------------------------------------------------------------------------ health, metrics
def test_health_flags_a_silent_and_a_stuck_consumer(
        api: TestClient, browser_client: TestClient, store: StateStore) -> None:
    names = {k: f"read:127.0.0.1:993/ivan@example.test/health-{k}" for k in ("ok", "silent", "stuck", "released")}
    ok = store.acquire_lease(names["ok"], ttl=300, holder="watcher.example:1:0000000a")
    assert ok is not None
    store.mark_polled(ok, next_within=60)
    assert store.acquire_lease(names["silent"], ttl=0.2, holder="watcher.example:2:0000000b") is not None
    stuck = store.acquire_lease(names["stuck"], ttl=300, holder="watcher.example:3:0000000c")
    assert stuck is not None
    store.mark_polled(stuck, next_within=-1000)  # it said it would look again 1000 s ago: past the grace
    released = store.acquire_lease(names["released"], ttl=300, holder="watcher.example:4:0000000d")
    assert released is not None
    store.release_lease(released)
    wait_for(lambda: store.lease_info(names["silent"]) is None, timeout=5)  # its holder never renewed it

    leases = {lease["name"]: lease for lease in api.get("/api/health").json()}
    assert set(leases) == {names["ok"], names["silent"], names["stuck"]}
    assert leases[names["ok"]]["flag"] is None and leases[names["ok"]]["state"] == "held"
    assert leases[names["ok"]]["kind"] == "reader" and leases[names["ok"]]["what"].endswith("/health-ok")
    assert leases[names["ok"]]["holder"] == "watcher.example:1:0000000a"
    assert 0 <= leases[names["ok"]]["seconds_since_poll"] < 60 and leases[names["ok"]]["last_poll"]
    assert leases[names["silent"]]["flag"].startswith("silent:") and leases[names["silent"]]["state"] == "ended"
    assert leases[names["silent"]]["expires_in"] <= 0 and leases[names["silent"]]["last_poll"] is None
    assert leases[names["stuck"]]["flag"].startswith("stuck:") and leases[names["stuck"]]["state"] == "held"
    for lease in leases.values():
        assert 0 <= lease["seconds_since_heartbeat"] < 60

    page = browser_client.get("/health")
    assert page.status_code == 200 and 'hx-get="/health" hx-trigger="every 10s"' in page.text
    rows = re.findall(r'<tr class="(flagged|ok)">(.*?)</tr>', page.text, flags=re.S)
    by_name = {next(k for k, n in names.items() if f"<td>{n.split(':', 1)[1]}</td>" in row): cls
               for cls, row in rows}
    assert by_name == {"ok": "ok", "silent": "flagged", "stuck": "flagged"}
    assert "silent: its holder stopped renewing" in page.text and "stuck: alive (heartbeat)" in page.text
    assert "health-released" not in page.text
    fragment = browser_client.get("/health", headers=HX)
    assert fragment.text.lstrip().startswith('<table class="health">') and "health-stuck" in fragment.text

    metrics = _metrics(api)
    assert _m(metrics, "mailconnector_lease_flagged", lease=names["ok"], kind="reader") == 0
    assert _m(metrics, "mailconnector_lease_flagged", lease=names["silent"], kind="reader") == 1
    assert _m(metrics, "mailconnector_lease_flagged", lease=names["stuck"], kind="reader") == 1
    assert 0 <= _m(metrics, "mailconnector_watcher_seconds_since_poll", lease=names["ok"]) < 60
    assert _m(metrics, "mailconnector_watcher_seconds_since_poll", lease=names["stuck"]) >= 0
    assert not any(names["released"] in dict(labels).get("lease", "") for _, labels in metrics)
    raw = api.get("/metrics").text
    assert f'mailconnector_lease_flagged{{kind="reader",lease="{names["stuck"]}"}} 1.0' in raw or \
        f'mailconnector_lease_flagged{{lease="{names["stuck"]}",kind="reader"}} 1.0' in raw


def test_metrics_count_the_runs_records_uncertain_sends_and_heartbeats(
        api: TestClient, console_project: ConsoleProject, store: StateStore) -> None:
    empty = _metrics(api)
    assert _m(empty, "mailconnector_uncertain_sends") == 0
    assert not any(name == "mailconnector_runs" for name, _ in empty)
    _append(console_project, ["metrics 1", "metrics 2", "metrics 3"])
    assert _run(api, "folder-to-jsonl")["status"] == "success"
    assert _run(api, "folder-to-jsonl")["records_read"] == 0  # a second, empty run: also a success
    _outbox(console_project, [{"to": "not an address", "subject": "x", "text": "x"}])
    assert _run(api, "send-outbox")["status"] == "failed"
    _ledger_entry(store, "<m1@console.example.test>", "uncertain", recipients=["one@example.test"])
    _ledger_entry(store, "<m2@console.example.test>", "uncertain", recipients=["two@example.test"])
    _ledger_entry(store, "<m3@console.example.test>", "sent", recipients=["three@example.test"])
    watcher = LeaseKeeper(store, "read:127.0.0.1:993/ivan@example.test/metrics", 60.0)
    assert watcher.take()
    try:
        watcher.polled(next_within=60)
        metrics = _metrics(api)
    finally:
        watcher.stop()
    assert _m(metrics, "mailconnector_runs", operation="folder-to-jsonl", status="success") == 2
    assert _m(metrics, "mailconnector_runs", operation="send-outbox", status="failed") == 1
    assert ("mailconnector_runs", (("operation", "send-outbox"), ("status", "success"))) not in metrics
    records = {o: _m(metrics, "mailconnector_records", operation="folder-to-jsonl", outcome=o)
               for o in ("read", "written", "skipped", "uncertain", "failed")}
    assert records == {"read": 3, "written": 3, "skipped": 0, "uncertain": 0, "failed": 0}
    assert _m(metrics, "mailconnector_records", operation="send-outbox", outcome="read") == 1
    assert _m(metrics, "mailconnector_records", operation="send-outbox", outcome="failed") == 1
    assert _m(metrics, "mailconnector_records", operation="send-outbox", outcome="written") == 0
    assert _m(metrics, "mailconnector_failed_runs", operation="send-outbox") == 1
    assert _m(metrics, "mailconnector_failed_runs", operation="folder-to-jsonl") == 0
    assert _m(metrics, "mailconnector_uncertain_sends") == 2
    lease = "read:127.0.0.1:993/ivan@example.test/metrics"
    assert 0 <= _m(metrics, "mailconnector_lease_seconds_since_heartbeat", lease=lease, kind="reader") < 30
    assert 0 <= _m(metrics, "mailconnector_watcher_seconds_since_poll", lease=lease) < 30
    assert _m(metrics, "mailconnector_lease_flagged", lease=lease, kind="reader") == 0
    # released: gone from the figures (and from the health page)
    assert not any(dict(labels).get("lease") == lease for _, labels in _metrics(api))
    assert api.get("/api/health").json() == []


# -------------------------------------------------------------------------------------- hostile text
def test_hostile_text_is_shown_as_text_on_every_page_and_as_plain_strings_in_the_api(
        browser_client: TestClient, console_project: ConsoleProject, sandbox: Sandbox, store: StateStore) -> None:
    _add_connection(console_project, sandbox, "hostile", password="hostile-wrong-password",
                    auth={"username": SCRIPT + IMG})
    _edit(console_project, lambda doc: doc["operations"].update({HOSTILE_OP: {"source": "outbox",
                                                                              "target": "ivan-mail"}}))
    _outbox(console_project, [{"to": SCRIPT, "subject": SCRIPT, "text": IMG},
                              {"to": IMG, "subject": IMG, "text": SCRIPT}])
    message_id = f"<{SCRIPT}{IMG}@evil.example>"
    _ledger_entry(store, message_id, "uncertain", recipients=[f"{SCRIPT}@evil.example", IMG], note=SCRIPT,
                  holder=f"evil.example:1:{IMG}")
    lease = f"read:{SCRIPT}/{IMG}"
    assert store.acquire_lease(lease, ttl=300, holder=IMG) is not None
    seen: list[str] = []

    csrf = _csrf(browser_client)
    started = browser_client.post(f"/operations/{quote(HOSTILE_OP, safe='')}/runs", headers=csrf)
    assert started.status_code == 200
    link = RUN_LINK.search(started.text)
    assert link is not None, started.text
    run_id = link.group(1)
    seen.append(started.text)
    progress = _follow(browser_client, started.text, seen)
    assert '<span class="status failed">failed</span>: read 2, written 0' in progress
    tested = browser_client.post("/connections/hostile/test", headers=csrf)
    seen.append(tested.text)
    verdict = _follow(browser_client, tested.text, seen)
    assert "the Test failed" in verdict and "&lt;script&gt;alert(1)&lt;/script&gt;" in verdict
    for n, fragment in enumerate(seen):
        _assert_inert(fragment, f"fragment {n}")

    escaped = "&lt;script&gt;alert(1)"
    pages = {
        "/connections": [escaped, "&lt;img src=x onerror=alert(1)&gt;"],
        "/operations": [escaped],
        "/runs": [escaped],
        f"/runs?operation={quote(HOSTILE_OP, safe='')}": [escaped, run_id],
        f"/runs/{run_id}": [escaped, "&lt;img src=x onerror=alert(1)&gt;"],
        "/ledger": [escaped, "&lt;img src=x onerror=alert(1)&gt;"],
        f"/ledger?search={quote(SCRIPT, safe='')}": [escaped],
        "/health": [escaped, "&lt;img src=x onerror=alert(1)&gt;"],
    }
    for path, expected in pages.items():
        for headers in ({}, HX):
            page = browser_client.get(path, headers=headers)
            assert page.status_code == 200, path
            _assert_inert(page.text, path)
            if not headers:
                for text in expected:
                    assert text in page.text, (path, text)

    # the records beside their errors, and the values of the resolve buttons, read back as the browser reads them
    shown = re.findall(r'<pre class="record">(.*?)</pre>', browser_client.get(f"/runs/{run_id}").text, flags=re.S)
    assert {json.loads(html.unescape(text))["subject"] for text in shown} == {SCRIPT, IMG}
    buttons = re.findall(r"hx-vals='([^']*)'", browser_client.get("/ledger").text)
    assert {json.loads(html.unescape(v))["message_id"] for v in buttons} == {message_id}

    run = browser_client.get(f"/api/runs/{run_id}").json()
    assert run["operation"] == HOSTILE_OP and run["status"] == "failed"
    errors = {e["data"]["subject"]: e for e in run["errors"]}
    assert set(errors) == {SCRIPT, IMG}
    assert SCRIPT in errors[SCRIPT]["message"] and "img src=x onerror=alert(1)" in errors[IMG]["message"]
    assert errors[IMG]["data"]["to"] == IMG and errors[SCRIPT]["data"]["text"] == IMG
    assert [r["run_id"] for r in browser_client.get("/api/runs", params={"operation": HOSTILE_OP}).json()] == [run_id]
    assert HOSTILE_OP in [op["name"] for op in browser_client.get("/api/operations").json()]
    [entry] = browser_client.get("/api/ledger", params={"status": "uncertain"}).json()
    assert entry["message_id"] == message_id and entry["recipients"] == [f"{SCRIPT}@evil.example", IMG]
    assert entry["note"] == SCRIPT
    [health] = browser_client.get("/api/health").json()
    assert health["name"] == lease and health["holder"] == IMG and health["what"] == f"{SCRIPT}/{IMG}"
    users = {c["name"]: c["auth"]["username"] for c in browser_client.get("/api/connections").json()}
    assert users["hostile"] == SCRIPT + IMG
    for path in ("/api/runs", "/api/ledger", "/api/health", "/api/operations", f"/api/runs/{run_id}"):
        assert browser_client.get(path).headers["content-type"] == "application/json"
    metrics = _metrics(browser_client)
    assert _m(metrics, "mailconnector_runs", operation=HOSTILE_OP, status="failed") == 1
    assert _m(metrics, "mailconnector_lease_flagged", lease=lease, kind="reader") == 0
    resolved = browser_client.post("/ledger/resolve", data={"message_id": message_id, "outcome": "sent"},
                                   headers=csrf)
    assert resolved.status_code == 200 and escaped in resolved.text
    _assert_inert(resolved.text, "/ledger/resolve")


# ----------------------------------------------------------------------------------------- no secret
def _secret_forms(password: str) -> list[str]:
    """The password as it could leak: raw, base64 (at each alignment, also inside SMTP AUTH PLAIN), hex,
    percent-encoded."""
    raw = password.encode()
    forms = {password, binascii.hexlify(raw).decode(), quote(password, safe=""), password[::-1]}
    for prefix in (b"", b"\0", b"\0\0"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(prefix + raw).decode()
            forms.add(text[4 if prefix else 0:-4])  # the characters that only the password decides
    forms.add(base64.b64encode(b"\0ivan@example.test\0" + raw).decode())
    return sorted(f for f in forms if len(f) >= 8)


def test_the_password_is_in_no_page_and_no_answer(
        api: TestClient, browser_client: TestClient, console_project: ConsoleProject, store: StateStore) -> None:
    forms = _secret_forms(console_project.password)
    answers: list[Response] = []
    _append(console_project, ["secret walk"])
    _outbox(console_project, [{"to": "not an address", "subject": "x", "text": "x"}])
    _ledger_entry(store, "<w1@console.example.test>", "uncertain", recipients=["one@example.test"])
    csrf = _csrf(browser_client)
    started = browser_client.post("/operations/folder-to-jsonl/runs", headers=csrf)
    answers.append(started)
    _follow(browser_client, started.text)
    tested = browser_client.post("/connections/sandbox/test", headers=csrf)
    answers.append(tested)
    assert "every step passed" in _follow(browser_client, tested.text)
    answers.append(api.post("/api/connections/sandbox/test"))
    launched = api.post("/api/operations/send-outbox/runs")
    answers.append(launched)
    _finished(api, launched.json()["run_id"])
    run_ids = [r["run_id"] for r in api.get("/api/runs").json()]
    assert len(run_ids) == 2
    job_ids = JOB.findall(started.text) + JOB.findall(tested.text) + [launched.json()["job"]]
    paths = ["/", "/connections", "/operations", "/runs", "/ledger", "/health", "/metrics", "/runs?status=failed",
             "/api/connections", "/api/operations", "/api/runs", "/api/ledger", "/api/health",
             "/runs/nope", "/api/runs/nope", "/jobs/nope",
             *[f"/runs/{r}" for r in run_ids], *[f"/api/runs/{r}" for r in run_ids]]
    for client in (browser_client, api):
        for path in paths:
            for headers in ({}, HTML, HX):
                answers.append(client.get(path, headers=headers))
    for job in job_ids:  # each job is known to the console (app) that started it
        for client in (browser_client, api):
            answers += [client.get(f"/jobs/{job}"), client.get(f"/api/jobs/{job}")]
    assert sum(a.status_code == 200 and "/jobs/" in a.request.url.path for a in answers) == 2 * len(job_ids)
    answers.append(browser_client.post("/ledger/resolve", data={"message_id": "<w1@console.example.test>",
                                                                "outcome": "sent"}, headers=csrf))
    assert len(answers) > 100
    for answer in answers:
        body = answer.content.decode("utf-8", "replace")
        headers = "\n".join(f"{k}: {v}" for k, v in answer.headers.items())
        for form in forms:
            assert form not in body, (answer.request.url, form)
            assert form not in headers, (answer.request.url, form)
        assert TOKEN not in body

"""Who may use the console, over HTTP: the token (URL, cookie, Bearer header), the CSRF value a page gives
htmx, the Origin check, and the headers every answer carries. The app runs in this process (Starlette's
TestClient) on the console project, against the real sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import wait_for
from httpx2 import Response
from services.console import TOKEN, ConsoleProject, csrf_of
from starlette.testclient import TestClient

from mailconnector.console import create_app
from mailconnector.project import Project
from mailconnector.state import StateStore

BASE = "http://127.0.0.1:8025"
COOKIE = "mailconnector_console"

# Every route of the console, with the method it answers (the names are those of the console project).
ROUTES: list[tuple[str, str]] = [
    ("GET", "/"),
    ("GET", "/connections"),
    ("POST", "/connections/sandbox/test"),
    ("GET", "/jobs/0123456789abcdef"),
    ("GET", "/operations"),
    ("POST", "/operations/folder-to-jsonl/runs"),
    ("GET", "/runs"),
    ("GET", "/runs/20260101-000000-abcdef"),
    ("GET", "/ledger"),
    ("POST", "/ledger/resolve"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/api/connections"),
    ("POST", "/api/connections/sandbox/test"),
    ("GET", "/api/operations"),
    ("POST", "/api/operations/folder-to-jsonl/runs"),
    ("GET", "/api/runs"),
    ("GET", "/api/runs/20260101-000000-abcdef"),
    ("GET", "/api/jobs/0123456789abcdef"),
    ("GET", "/api/ledger"),
    ("POST", "/api/ledger/resolve"),
    ("GET", "/api/health"),
    ("GET", "/static/htmx.min.js"),
    ("GET", "/static/console.css"),
]
PAGES = ["/connections", "/operations", "/runs", "/ledger", "/health"]
UNCERTAIN_ID = "<uncertain-1@console.example.test>"


@pytest.fixture
def anonymous(console_project: ConsoleProject) -> Iterator[TestClient]:
    """A client with no credentials at all."""
    with TestClient(create_app(console_project.path, token=TOKEN), base_url=BASE) as client:
        yield client


@pytest.fixture
def store(console_project: ConsoleProject) -> Iterator[StateStore]:
    """The console project's state store, opened as another process would open it."""
    opened = Project.load(console_project.path).store()
    try:
        yield opened
    finally:
        opened.close()


def _uncertain(store: StateStore, message_id: str = UNCERTAIN_ID) -> None:
    holder = "elsewhere.example:1:0badc0de"
    assert store.claim(message_id, connection="sandbox", holder=holder, recipients=["ivan@example.test"]).granted
    store.settle(message_id, holder=holder, status="uncertain", accepted=[], note="connection lost after the dot")


def _refused(answer: Response, status: int) -> None:
    """A refusal as the Guard sends it to a script: the status and the JSON error document."""
    assert answer.status_code == status, (answer.request.method, answer.request.url, answer.status_code)
    assert answer.headers["content-type"] == "application/json"
    doc = answer.json()
    assert doc["ok"] is False and doc["error"]["type"] == "AccessError"
    assert doc["error"]["message"] and doc["error"]["hint"]


# ---------------------------------------------------------------------------------------------- the token
def test_every_route_answers_401_without_credentials(anonymous: TestClient) -> None:
    for method, path in ROUTES:
        answer = anonymous.request(method, path, follow_redirects=False)
        _refused(answer, 401)
        assert "set-cookie" not in answer.headers


def test_every_route_answers_401_to_a_wrong_bearer_token(anonymous: TestClient) -> None:
    for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", TOKEN):
        for method, path in ROUTES:
            _refused(anonymous.request(method, path, headers={"Authorization": wrong}, follow_redirects=False), 401)


def test_every_route_answers_401_to_a_wrong_cookie(console_project: ConsoleProject) -> None:
    with TestClient(create_app(console_project.path, token=TOKEN), base_url=BASE) as right:
        right.get(f"/?token={TOKEN}", follow_redirects=False)
        good = right.cookies[COOKIE]
    for wrong in ("0" * len(good), good[:-1], TOKEN, ""):
        with TestClient(create_app(console_project.path, token=TOKEN), base_url=BASE,
                        cookies={COOKIE: wrong}) as client:
            for method, path in ROUTES:
                _refused(client.request(method, path, follow_redirects=False), 401)
    # a console started with another token does not take this one's cookie
    with TestClient(create_app(console_project.path, token=TOKEN + "-other"), base_url=BASE,
                    cookies={COOKIE: good}) as other:
        _refused(other.get("/api/connections"), 401)


def test_a_bearer_token_is_let_through_on_pages_and_api(api: TestClient) -> None:
    assert api.get("/api/connections").status_code == 200
    assert api.get("/connections").status_code == 200
    assert api.get("/static/htmx.min.js").status_code == 200
    lower = api.get("/api/health", headers={"Authorization": f"bearer   {TOKEN}  "})
    assert lower.status_code == 200 and lower.json() == []


def test_a_wrong_token_in_the_url_is_refused(anonymous: TestClient) -> None:
    for url in ("/?token=WRONG", f"/?token={TOKEN}x", "/?token=", "/runs?status=failed&token=WRONG",
                f"/?token=WRONG&other={TOKEN}"):
        answer = anonymous.get(url, follow_redirects=False)
        _refused(answer, 401)
        assert "set-cookie" not in answer.headers and "location" not in answer.headers
    assert COOKIE not in anonymous.cookies


def test_the_right_token_in_the_url_sets_the_cookie_and_drops_the_token(anonymous: TestClient) -> None:
    answer = anonymous.get(f"/?token={TOKEN}", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"]
    parts = [p.strip() for p in cookie.split(";")]
    name, _, value = parts[0].partition("=")
    assert name == COOKIE and value and TOKEN not in value
    assert "HttpOnly" in parts and "SameSite=Strict" in parts and "Path=/" in parts
    assert "Secure" not in parts  # plain http on loopback: a Secure cookie would never come back
    assert TOKEN not in answer.text
    # the cookie now opens every page, and the token is in none of them
    home = anonymous.get("/", follow_redirects=False)
    assert home.status_code == 303 and home.headers["location"] == "/connections"
    for page in PAGES:
        shown = anonymous.get(page, headers={"Accept": "text/html"})
        assert shown.status_code == 200 and shown.headers["content-type"].startswith("text/html")
        assert TOKEN not in shown.text


def test_the_redirect_keeps_the_other_query_parameters(anonymous: TestClient) -> None:
    cases = {
        f"/runs?token={TOKEN}&status=failed": "/runs?status=failed",
        f"/runs?status=failed&token={TOKEN}&operation=folder-to-jsonl":
            "/runs?status=failed&operation=folder-to-jsonl",
        f"/ledger?search=a+b%26c&token={TOKEN}": "/ledger?search=a+b%26c",
        f"/health?token={TOKEN}": "/health",
        f"/static/console.css?token={TOKEN}&v=2": "/static/console.css?v=2",
    }
    for url, location in cases.items():
        answer = anonymous.get(url, follow_redirects=False)
        assert answer.status_code == 303, url
        assert answer.headers["location"] == location
        assert "token" not in answer.headers["location"]
    followed = anonymous.get(f"/runs?token={TOKEN}&status=failed", headers={"Accept": "text/html"})
    assert followed.status_code == 200
    assert str(followed.url) == f"{BASE}/runs?status=failed"
    assert "<option selected>failed</option>" in followed.text


def test_the_api_and_metrics_refuse_the_token_in_the_url(anonymous: TestClient, api: TestClient) -> None:
    for url in (f"/api/runs?token={TOKEN}", f"/api/health?limit=5&token={TOKEN}", f"/metrics?token={TOKEN}",
                "/api/connections?token=WRONG"):
        answer = anonymous.get(url, follow_redirects=False)
        _refused(answer, 401)
        assert "set-cookie" not in answer.headers and "location" not in answer.headers
        assert "header" in answer.json()["error"]["message"]
        # even with the right Bearer header: the token must not travel in URLs at all
        _refused(api.get(url, follow_redirects=False), 401)
    assert COOKIE not in anonymous.cookies


def test_over_https_the_cookie_is_secure(console_project: ConsoleProject) -> None:
    with TestClient(create_app(console_project.path, token=TOKEN), base_url="https://127.0.0.1:8025") as client:
        answer = client.get(f"/?token={TOKEN}", follow_redirects=False)
    assert answer.status_code == 303
    assert "Secure" in [p.strip() for p in answer.headers["set-cookie"].split(";")]


def test_html_clients_get_an_html_401_page_and_others_json(anonymous: TestClient) -> None:
    html = anonymous.get("/runs", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert html.status_code == 401
    assert html.headers["content-type"].startswith("text/html")
    assert "<h1>401</h1>" in html.text and "token" in html.text
    wrong = anonymous.get("/runs?token=WRONG", headers={"Accept": "text/html"})
    assert wrong.status_code == 401 and wrong.headers["content-type"].startswith("text/html")
    assert "not this console" in wrong.text
    for accept in ("application/json", "*/*", None):
        headers = {"Accept": accept} if accept else {}
        answer = anonymous.get("/runs", headers=headers)
        _refused(answer, 401)
        assert json.loads(answer.content)["error"]["message"] == "this console needs its token"


def test_the_token_in_the_url_does_not_authorise_a_post(anonymous: TestClient, store: StateStore) -> None:
    _uncertain(store)
    answer = anonymous.post(f"/ledger/resolve?token={TOKEN}", data={"message_id": UNCERTAIN_ID, "outcome": "sent"})
    _refused(answer, 401)
    entry = store.ledger_entry(UNCERTAIN_ID)
    assert entry is not None and entry.status == "uncertain"


# ------------------------------------------------------------------------------------------------ CSRF
def _csrf(client: TestClient) -> str:
    value = csrf_of(client.get("/connections").text)
    assert len(value) == 64 and TOKEN not in value
    return value


def test_a_cookie_post_without_the_csrf_header_is_refused_and_changes_nothing(
        browser_client: TestClient, store: StateStore) -> None:
    _uncertain(store)
    for path, form in (("/ledger/resolve", {"message_id": UNCERTAIN_ID, "outcome": "sent"}),
                       ("/api/ledger/resolve", None)):
        if form is None:
            answer = browser_client.post(path, json={"message_id": UNCERTAIN_ID, "sent": True})
        else:
            answer = browser_client.post(path, data=form, headers={"HX-Request": "true"})
        _refused(answer, 403)
    entry = store.ledger_entry(UNCERTAIN_ID)
    assert entry is not None and entry.status == "uncertain"
    for path in ("/operations/folder-to-jsonl/runs", "/api/operations/folder-to-jsonl/runs",
                 "/operations/send-outbox/runs"):
        _refused(browser_client.post(path), 403)
    _refused(browser_client.post("/connections/sandbox/test", headers={"HX-Request": "true"}), 403)
    assert store.list_runs() == []
    assert browser_client.get("/api/runs").json() == []
    assert browser_client.get("/api/ledger", params={"status": "uncertain"}).json()[0]["message_id"] == UNCERTAIN_ID


def test_a_wrong_csrf_value_is_refused(browser_client: TestClient, store: StateStore) -> None:
    _uncertain(store)
    right = _csrf(browser_client)
    for wrong in (right[:-1] + ("0" if right[-1] != "0" else "1"), right.upper(), "", TOKEN, right + " "):
        answer = browser_client.post("/ledger/resolve", data={"message_id": UNCERTAIN_ID, "outcome": "not_sent"},
                                     headers={"X-CSRF-Token": wrong, "HX-Request": "true"})
        _refused(answer, 403)
        _refused(browser_client.post("/api/operations/folder-to-jsonl/runs", headers={"X-CSRF-Token": wrong}), 403)
    entry = store.ledger_entry(UNCERTAIN_ID)
    assert entry is not None and entry.status == "uncertain"
    assert store.list_runs() == []


def test_the_right_csrf_value_from_another_origin_is_refused(browser_client: TestClient, store: StateStore) -> None:
    _uncertain(store)
    csrf = _csrf(browser_client)
    for origin in ("http://evil.example", "http://127.0.0.1:8026", "http://127.0.0.1", "null",
                   "http://evil.example/127.0.0.1:8025"):
        headers = {"X-CSRF-Token": csrf, "Origin": origin, "HX-Request": "true"}
        _refused(browser_client.post("/ledger/resolve", data={"message_id": UNCERTAIN_ID, "outcome": "sent"},
                                     headers=headers), 403)
        _refused(browser_client.post("/operations/folder-to-jsonl/runs", headers=headers), 403)
    entry = store.ledger_entry(UNCERTAIN_ID)
    assert entry is not None and entry.status == "uncertain"
    assert store.list_runs() == []


def test_the_right_csrf_value_from_the_same_origin_works(browser_client: TestClient, store: StateStore) -> None:
    _uncertain(store)
    csrf = _csrf(browser_client)
    headers = {"X-CSRF-Token": csrf, "Origin": BASE, "HX-Request": "true"}
    answer = browser_client.post("/ledger/resolve", data={"message_id": UNCERTAIN_ID, "outcome": "sent"},
                                 headers=headers)
    assert answer.status_code == 200
    assert "recorded as sent" in answer.text
    entry = store.ledger_entry(UNCERTAIN_ID)
    assert entry is not None and entry.status == "sent"
    # without an Origin header (the CSRF value proves the page) it works too
    started = browser_client.post("/api/operations/folder-to-jsonl/runs", headers={"X-CSRF-Token": csrf})
    assert started.status_code == 202
    run_id = started.json()["run_id"]
    done = wait_for(lambda: (doc := browser_client.get(f"/api/runs/{run_id}").json())["status"] != "running"
                    and doc, timeout=30)
    assert done["status"] == "success" and done["records_read"] == 0


def test_a_bearer_post_needs_no_csrf_value(api: TestClient, store: StateStore) -> None:
    _uncertain(store)
    answer = api.post("/api/ledger/resolve", json={"message_id": UNCERTAIN_ID, "sent": False})
    assert answer.status_code == 200
    assert answer.json() == {"message_id": UNCERTAIN_ID, "status": "not_sent"}
    assert store.ledger_entry(UNCERTAIN_ID) is None
    # a page route too, and an Origin header does not matter to a script
    _uncertain(store, "<uncertain-2@console.example.test>")
    form = api.post("/ledger/resolve", data={"message_id": "uncertain-2@console.example.test", "outcome": "sent"},
                    headers={"Origin": "http://evil.example"})
    assert form.status_code == 200 and "recorded as sent" in form.text
    entry = store.ledger_entry("<uncertain-2@console.example.test>")
    assert entry is not None and entry.status == "sent"


def test_a_wrong_bearer_with_the_cookie_still_needs_the_csrf_value(browser_client: TestClient,
                                                                   store: StateStore) -> None:
    _uncertain(store)
    answer = browser_client.post("/api/ledger/resolve", json={"message_id": UNCERTAIN_ID, "sent": True},
                                 headers={"Authorization": "Bearer not-the-token"})
    _refused(answer, 403)
    entry = store.ledger_entry(UNCERTAIN_ID)
    assert entry is not None and entry.status == "uncertain"


def test_the_csrf_value_is_the_same_on_every_page_and_differs_per_token(browser_client: TestClient,
                                                                        console_project: ConsoleProject) -> None:
    values = {csrf_of(browser_client.get(page).text) for page in PAGES}
    assert len(values) == 1
    with TestClient(create_app(console_project.path, token=TOKEN + "-other"), base_url=BASE,
                    headers={"Authorization": f"Bearer {TOKEN}-other"}) as other:
        assert csrf_of(other.get("/connections").text) not in values


# ---------------------------------------------------------------------------------------------- headers
def _assert_security_headers(answer: Response) -> None:
    h = answer.headers
    where = str(answer.request.url)
    assert "content-security-policy" in h, where
    csp = {d.strip().split(" ", 1)[0]: d.strip() for d in h["content-security-policy"].split(";")}
    assert csp["default-src"] == "default-src 'self'", where
    assert csp["script-src"] == "script-src 'self'", where
    assert csp["frame-ancestors"] == "frame-ancestors 'none'", where
    assert "unsafe-inline" not in h["content-security-policy"] and "unsafe-eval" not in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY", where
    assert h["x-content-type-options"] == "nosniff", where
    assert h["cache-control"] == "no-store", where
    assert h["referrer-policy"] == "no-referrer", where


def test_pages_api_metrics_and_static_files_carry_the_security_headers(browser_client: TestClient) -> None:
    for path in [*PAGES, "/api/connections", "/api/runs", "/api/health", "/metrics", "/static/htmx.min.js",
                 "/static/console.css"]:
        answer = browser_client.get(path)
        assert answer.status_code == 200, path
        _assert_security_headers(answer)
    script = browser_client.get("/static/htmx.min.js")
    assert "javascript" in script.headers["content-type"] and script.text.startswith("var htmx=")
    for path in ("/runs/20260101-000000-abcdef", "/api/runs/20260101-000000-abcdef", "/nowhere"):
        missing = browser_client.get(path, headers={"Accept": "text/html"})
        assert missing.status_code == 404
        _assert_security_headers(missing)


def test_the_guards_own_answers_carry_the_security_headers(anonymous: TestClient) -> None:
    _assert_security_headers(anonymous.get("/connections", headers={"Accept": "text/html"}))
    _assert_security_headers(anonymous.get("/api/runs"))
    _assert_security_headers(anonymous.get(f"/?token={TOKEN}", follow_redirects=False))


def test_the_token_redirect_never_leaves_the_console(anonymous: TestClient) -> None:
    for path in ("//evil.example/", "/%2F/evil.example/", "/%2F%2Fevil.example/", "/\\evil.example/"):
        answer = anonymous.get(f"{BASE}{path}?token={TOKEN}", follow_redirects=False)
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert urlsplit(location).netloc == "", location
        assert not location.startswith(("//", "/\\")), location


def test_the_token_redirect_keeps_the_path_as_it_was_sent(anonymous: TestClient) -> None:
    answer = anonymous.get(f"/runs/a%3Fb?token={TOKEN}", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/runs/a%3Fb"


# ------------------------------------------------------------------------------ found by a review
def test_without_a_token_only_loopback_host_names_are_served(console_project: ConsoleProject) -> None:
    """Without a token only the loopback address guards the console: a site whose name was pointed at 127.0.0.1
    (DNS rebinding) must not read it nor start anything, even with the page's CSRF value and a matching Origin."""
    app = create_app(console_project.path, token=None)
    with TestClient(app, base_url=BASE) as client:
        page = client.get("/connections")
        assert page.status_code == 200
        csrf = csrf_of(page.text)
        for host in ("localhost:8025", "[::1]:8025", "127.0.0.2:8025", "app.localhost:8025"):
            assert client.get("/api/connections", headers={"Host": host}).status_code == 200, host
        for host in ("rebind.evil.example:8025", "127.0.0.1.evil.example", "10.0.0.1:8025", ""):
            got = client.get("/api/connections", headers={"Host": host})
            assert got.status_code == 403 and "loopback host name" in got.json()["error"]["message"], host
        evil = {"Host": "rebind.evil.example:8025", "Origin": "http://rebind.evil.example:8025",
                "X-CSRF-Token": csrf}
        started = client.post("/operations/folder-to-jsonl/runs", headers=evil)
        assert started.status_code == 403
        assert client.get("/api/runs").json() == []  # nothing was started
    with TestClient(create_app(console_project.path, token=TOKEN), base_url=BASE,
                    headers={"Authorization": f"Bearer {TOKEN}"}) as with_token:
        # With a token, the host name does not matter (a reverse proxy may give it another one).
        assert with_token.get("/api/connections", headers={"Host": "mail-console.example"}).status_code == 200


@pytest.mark.parametrize("path", ["/api/runs/%00", "/api/runs?operation=%00", "/api/ledger?search=a%00b",
                                  "/runs?status=%00", "/api/runs?x%00=1"])
def test_a_nul_character_in_the_request_is_a_bad_request(api: TestClient, path: str) -> None:
    got = api.get(path)
    assert got.status_code == 400 and "NUL" in got.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/api/connections/sandbox/test", "/api/ledger/resolve"])
def test_a_body_nested_deeper_than_the_parser_goes_is_a_bad_request(api: TestClient, path: str) -> None:
    got = api.post(path, content=b"[" * 100_000, headers={"Content-Type": "application/json"})
    assert got.status_code == 400 and got.json()["error"]["message"] == "the request body is not JSON"


def test_requests_at_once_on_a_fresh_console_share_one_store(console_project: ConsoleProject) -> None:
    """Request threads that all find the project not yet read open one store between them, not one each."""
    import threading

    from mailconnector.console._app import ConsoleState

    for _ in range(5):
        state = ConsoleState(console_project.path)
        barrier = threading.Barrier(12)
        stores: list[object] = []

        def ask(state: ConsoleState = state, barrier: threading.Barrier = barrier,
                stores: list[object] = stores) -> None:
            barrier.wait()
            stores.append(state.project().store())

        threads = [threading.Thread(target=ask) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(stores) == 12 and len({id(s) for s in stores}) == 1
        state.close()


def test_a_password_held_in_the_operation_log_is_hidden_on_the_first_page_asked(
        console_project: ConsoleProject, tmp_path: Path) -> None:
    """Secrets are hidden once known, and a connection is known once built: the console builds every one as
    it reads the project file, so the very first answer (here a run's page, before any connection page) hides
    a password that a stored error and record hold. The password is new to this test process."""
    import secrets as random

    import yaml

    password = "pw-" + random.token_hex(12)
    doc = yaml.safe_load(console_project.path.read_text())
    doc["connections"]["unused"] = {"smtp": {"host": "127.0.0.1", "port": 2525, "security": "none"},
                                    "auth": {"username": "someone@example.test", "password": password}}
    console_project.path.write_text(yaml.safe_dump(doc))
    store = Project.load(console_project.path).store()
    try:
        run_id = store.start_run("folder-to-jsonl", {})
        store.record_run_error(run_id, "record 0", {"message": f"login refused for password {password}",
                                                    "record": {"note": f"the password is {password}"}})
        store.finish_run(run_id, status="failed", read=1, written=0, failed=1)
    finally:
        store.close()
    with TestClient(create_app(console_project.path, token=TOKEN), base_url=BASE,
                    headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        first = client.get(f"/api/runs/{run_id}")
        page = client.get(f"/runs/{run_id}", headers={"Accept": "text/html"})
    assert first.status_code == 200 and "login refused for password" in first.text
    assert page.status_code == 200 and "login refused for password" in page.text
    assert password not in first.text and password not in page.text


def test_a_project_whose_store_moved_gives_oauth2_tokens_the_new_store(console_project: ConsoleProject,
                                                                         tmp_path: Path) -> None:
    """A reloaded project file may name another state store; the old one is closed. The OAuth2 token
    providers the console made before must not keep writing tokens to the closed store."""
    import os

    import yaml

    from mailconnector.auth.oauth2 import provider_for
    from mailconnector.console._app import ConsoleState

    doc = yaml.safe_load(console_project.path.read_text())
    doc["connections"]["m365"] = {
        "smtp": {"host": "127.0.0.1", "port": 2525, "security": "none"}, "activities": "send",
        "auth": {"type": "oauth2", "username": "someone@example.test",
                 "oauth2": {"provider": "microsoft365", "grant": "client_credentials", "tenant_id": "t",
                            "client_id": "c", "client_secret": "client-secret-for-the-store-test"}}}
    doc.setdefault("settings", {})["state"] = str(tmp_path / "first.db")
    console_project.path.write_text(yaml.safe_dump(doc))
    state = ConsoleState(console_project.path)
    try:
        first = state.project()
        assert provider_for(first.connection("m365")).store is first.store()
        doc["settings"]["state"] = str(tmp_path / "second.db")
        console_project.path.write_text(yaml.safe_dump(doc))
        stat = console_project.path.stat()
        os.utime(console_project.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # seen as edited
        second = state.project()
        assert second is not first and second.store() is not first.store()
        assert provider_for(second.connection("m365")).store is second.store()
    finally:
        state.close()

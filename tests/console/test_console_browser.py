"""The console in a real browser: Debian's Chromium driven by Playwright against `mailconnector console` in a
child process (the running_console fixture), so htmx, the cookie, the CSRF header and the Content-Security-Policy
are all exercised as a user meets them.

With MAILCONNECTOR_SCREENSHOTS=DIR the tests also save a PNG of each page in DIR (connections.png,
operations.png, runs.png, run.png, ledger.png, health.png) for the documentation.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    Playwright,
    expect,
    sync_playwright,
)
from services.console import TOKEN, USER, ConsoleProject, RunningConsole

from mailconnector.connection import Connection
from mailconnector.imap import ImapSession
from mailconnector.project import Project
from mailconnector.sandbox import Sandbox

CHROMIUM = Path("/usr/bin/chromium")
# Headless, as root, and without the background connections to Google's services (refused here, and noise).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
WAIT = 20_000  # ms: the longest any expect() waits (a Test or a run against the sandbox takes about a second)
SCREENSHOTS = "MAILCONNECTOR_SCREENSHOTS"
PAYLOAD = "<img src=x onerror=alert(1)>"


class Chromium:
    """One browser for the module, started by the first test that needs it (so that a missing binary fails
    that test instead of erroring in a fixture)."""

    def __init__(self) -> None:
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None

    def get(self) -> Browser:
        if self._browser is None:
            if not CHROMIUM.exists():
                pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium package, which "
                            "./dev setup installs", pytrace=False)
            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                             args=CHROMIUM_ARGS)
        return self._browser

    def close(self) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()


class ConsoleUI:
    """One browser tab on one console, with everything the page said that it should not have: console errors
    (a Content-Security-Policy violation is one), uncaught script errors, and dialogs (a script that ran)."""

    def __init__(self, chromium: Chromium, console: RunningConsole) -> None:
        self._chromium = chromium
        self._context: BrowserContext | None = None
        self._page: Page | None = None
        self.console = console
        self.url = console.url.rstrip("/")
        self.errors: list[str] = []
        self.dialogs: list[str] = []

    @property
    def page(self) -> Page:
        if self._page is None:
            self._context = self._chromium.get().new_context(viewport={"width": 1280, "height": 800})
            self._page = page = self._context.new_page()
            page.on("console", self._on_console)
            page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: uncaught {exc}"))
            page.on("dialog", self._on_dialog)
        return self._page

    def _on_console(self, msg: ConsoleMessage) -> None:
        source = msg.location.get("url") or ""
        if msg.type == "error":
            self.errors.append(f"{self.page.url}: {msg.text} ({source})")

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def log_in(self, path: str = "/") -> None:
        """Open the URL the console printed (with its token), then ``path`` if another one."""
        self.page.goto(f"{self.url}/?token={self.console.token}")
        expect(self.page).to_have_url(f"{self.url}/connections", timeout=WAIT)
        if path != "/":
            self.page.goto(self.url + path)

    def shot(self, name: str) -> None:
        """The page as a PNG in $MAILCONNECTOR_SCREENSHOTS, when it is set."""
        directory = os.environ.get(SCREENSHOTS)
        if directory:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)

    def assert_clean(self) -> None:
        assert self.errors == [], "the browser reported errors (a CSP violation is one):\n" + "\n".join(self.errors)
        assert self.dialogs == [], f"a script ran and opened a dialog: {self.dialogs}"

    def close(self) -> None:
        if self._context is not None:
            self._context.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    holder = Chromium()
    try:
        yield holder
    finally:
        holder.close()


@pytest.fixture
def ui(chromium: Chromium, running_console: RunningConsole) -> Iterator[ConsoleUI]:
    tab = ConsoleUI(chromium, running_console)
    try:
        yield tab
    finally:
        tab.close()


def _card(page: Page, heading: str) -> Locator:
    """The card (a connection's or an operation's) with this heading."""
    return page.locator("section.card").filter(has=page.get_by_role("heading", name=heading, exact=True))


def _put_messages(sandbox: Sandbox, folder: str, count: int) -> None:
    address = sandbox.user(USER).address
    with ImapSession(Connection.from_dict(sandbox.connection_dict(USER), name="x")) as imap:
        for i in range(count):
            msg = EmailMessage()
            msg["From"], msg["To"] = address, address
            msg["Subject"], msg["Message-ID"] = f"browser test {i + 1}", make_msgid(domain="example.test")
            msg.set_content(f"message {i + 1}\n")
            imap.client.append(folder, msg.as_bytes())


# ------------------------------------------------------------------------------------------------------ tests
def test_token_url_sets_the_cookie_and_leaves_the_address_bar_without_the_token(ui: ConsoleUI) -> None:
    ui.page.goto(f"{ui.url}/?token={TOKEN}")
    expect(ui.page).to_have_url(f"{ui.url}/connections", timeout=WAIT)
    assert "token" not in ui.page.url
    expect(ui.page.get_by_role("heading", name="Connections", level=1)).to_be_visible(timeout=WAIT)
    cookies = {c["name"]: c for c in ui.page.context.cookies()}
    assert cookies["mailconnector_console"]["httpOnly"] and cookies["mailconnector_console"]["sameSite"] == "Strict"
    assert TOKEN not in cookies["mailconnector_console"]["value"]
    assert "mailconnector_console" not in ui.page.evaluate("document.cookie")  # HttpOnly: no script reads it
    # a link to another page with the token keeps that page and its other parameters
    ui.page.goto(f"{ui.url}/runs?status=success&token={TOKEN}")
    expect(ui.page).to_have_url(f"{ui.url}/runs?status=success", timeout=WAIT)
    expect(ui.page.locator("select[name=status]")).to_have_value("success")
    ui.assert_clean()


def test_test_button_shows_each_step_as_it_passes(ui: ConsoleUI) -> None:
    ui.log_in()
    card = _card(ui.page, "sandbox")
    card.get_by_role("button", name="Test").click()
    expect(card.get_by_text("every step passed")).to_be_visible(timeout=WAIT)
    rows = card.locator("tr.step")
    expected = {"SMTP": ["DNS", "TCP connect", "greeting", "authentication", "sender accepted"],
                "IMAP": ["DNS", "TCP connect", "greeting", "authentication", "folder can be selected"]}
    for server, steps in expected.items():
        for step in steps:
            row = rows.filter(has=ui.page.locator("td", has_text=re.compile(f"^{server}$"))).filter(
                has=ui.page.locator("td", has_text=re.compile(f"^{re.escape(step)}$")))
            expect(row).to_have_count(1, timeout=WAIT)
            expect(row.locator("td.status")).to_have_text("passed")
    expect(card.locator("tr.step.failed")).to_have_count(0)
    expect(card.get_by_role("button", name="Test")).to_be_enabled(timeout=WAIT)
    ui.shot("connections")
    ui.assert_clean()


def test_run_button_reads_the_folder_and_the_run_is_listed_with_its_detail(
        ui: ConsoleUI, sandbox: Sandbox, console_project: ConsoleProject) -> None:
    _put_messages(sandbox, console_project.folder, 2)
    ui.log_in()
    ui.page.get_by_role("link", name="Operations").click()
    expect(ui.page).to_have_url(f"{ui.url}/operations", timeout=WAIT)
    card = _card(ui.page, "folder-to-jsonl")
    card.get_by_role("button", name="Run").click()
    progress = card.locator(".progress")
    expect(progress.locator(".status")).to_have_text("success", timeout=WAIT)
    expect(progress).to_contain_text("read 2, written 2, skipped 0, uncertain 0, failed 0")
    run_id = progress.locator("a").first.inner_text()
    assert run_id
    expect(card.get_by_role("button", name="Run")).to_be_enabled(timeout=WAIT)
    ui.shot("operations")

    ui.page.get_by_role("link", name="Runs", exact=True).click()
    expect(ui.page).to_have_url(f"{ui.url}/runs", timeout=WAIT)
    row = ui.page.locator("tr.run").filter(has=ui.page.get_by_role("link", name=run_id, exact=True))
    expect(row).to_have_count(1, timeout=WAIT)
    cells = row.locator("td")
    expect(cells.nth(1)).to_have_text("folder-to-jsonl")
    expect(cells.nth(5)).to_have_text("success")
    expect(cells.nth(6)).to_have_text("2")  # read
    expect(cells.nth(7)).to_have_text("2")  # written
    ui.shot("runs")

    row.get_by_role("link", name=run_id, exact=True).click()
    expect(ui.page).to_have_url(re.compile(re.escape(f"{ui.url}/runs/") + ".+"), timeout=WAIT)
    expect(ui.page.get_by_role("heading", level=1)).to_have_text(f"Run {run_id}", timeout=WAIT)
    fields = ui.page.locator("table.fields")
    for name, value in [("operation", "folder-to-jsonl"), ("status", "success"),
                        ("records", "read 2, written 2, skipped 0, uncertain 0, failed 0")]:
        expect(fields.locator("tr").filter(has=ui.page.locator("th", has_text=re.compile(f"^{name}$")))
               .locator("td")).to_have_text(value)
    expect(fields).to_contain_text(console_project.folder)  # the source's settings name the folder read
    expect(ui.page.locator("h2 + p")).to_have_text("none")  # no record failed
    expect(ui.page.locator("tr.record-error")).to_have_count(0)
    assert (console_project.path.parent / "read.jsonl").read_text().count("\n") == 2
    ui.assert_clean()


def test_a_failed_record_error_is_shown_as_text_and_runs_no_script(
        ui: ConsoleUI, sandbox: Sandbox, console_project: ConsoleProject) -> None:
    # One good record (so the ledger has a row) and one whose bad address fails it; the markup is in the
    # record's id, which the error names, and in its subject.
    good = {"to": sandbox.user(USER).address, "subject": "browser test send", "text": "hello"}
    bad = {"id": PAYLOAD, "to": "not an address", "subject": PAYLOAD, "text": "x"}
    console_project.outbox.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    ui.log_in("/operations")
    card = _card(ui.page, "send-outbox")
    card.get_by_role("button", name="Run").click()
    progress = card.locator(".progress")
    expect(progress.locator(".status")).to_have_text("partial", timeout=WAIT)
    expect(progress).to_contain_text("read 2, written 1, skipped 0, uncertain 0, failed 1")
    progress.locator("a").first.click()

    expect(ui.page).to_have_url(re.compile(re.escape(f"{ui.url}/runs/") + ".+"), timeout=WAIT)
    error_row = ui.page.locator("tr.record-error")
    expect(error_row).to_have_count(1, timeout=WAIT)
    expect(ui.page.locator("td.status")).to_have_text("partial")
    expect(error_row).to_contain_text("'not an address' is not a valid address")
    expect(error_row).to_contain_text(PAYLOAD)  # shown as text, so escaped
    expect(error_row.locator("pre")).to_contain_text("onerror=alert(1)")  # the record, its subject included
    expect(ui.page.locator("img")).to_have_count(0)
    assert ui.page.locator("img[src=x]").count() == 0
    ui.shot("run")

    ui.page.get_by_role("link", name="Ledger").click()
    expect(ui.page.locator("table.ledger tbody tr.sent")).to_have_count(1, timeout=WAIT)
    ui.page.get_by_role("link", name="Health").click()
    expect(ui.page.get_by_role("heading", name="Health", level=1)).to_be_visible(timeout=WAIT)
    expect(ui.page.locator("table.health")).to_be_visible()
    ui.shot("health")
    ui.page.get_by_role("link", name="Runs", exact=True).click()
    expect(ui.page.locator("tr.run")).to_have_count(1, timeout=WAIT)
    assert ui.page.locator("img[src=x]").count() == 0
    ui.assert_clean()


def test_the_failed_record_is_shown_as_written(ui: ConsoleUI, console_project: ConsoleProject) -> None:
    record = {"to": "not an address", "subject": "Grüße & <b>bold</b>", "text": "x"}
    console_project.outbox.write_text(json.dumps(record) + "\n")
    ui.log_in("/operations")
    card = _card(ui.page, "send-outbox")
    card.get_by_role("button", name="Run").click()
    progress = card.locator(".progress")
    expect(progress).to_contain_text("failed 1", timeout=WAIT)
    progress.locator("a").first.click()
    shown = ui.page.locator("tr.record-error pre")
    expect(shown).to_contain_text('"to": "not an address"', timeout=WAIT)
    text = shown.inner_text()
    assert '"subject": "Grüße & <b>bold</b>"' in text, text
    ui.assert_clean()


def test_uncertain_sends_are_resolved_with_their_buttons(ui: ConsoleUI, console_project: ConsoleProject) -> None:
    # Two claims whose sender is gone (a holder no lease names): the ledger page shows them uncertain. One
    # Message-ID holds quotes and markup, which the buttons carry in their hx-vals (JSON in an attribute).
    odd, plain = "<o'brien\"<b>x</b>@example.test>", "<plain-1@example.test>"
    store = Project.load(console_project.path).store()
    try:
        for message_id in (odd, plain):
            store.claim(message_id, connection="sandbox", holder="gone-host:1:x", recipients=["a@example.test"])
        ui.log_in("/ledger")
        uncertain = ui.page.locator("table.ledger.uncertain tbody tr")
        expect(uncertain).to_have_count(2, timeout=WAIT)
        ui.shot("ledger")
        row = uncertain.filter(has_text=odd)
        expect(row).to_have_count(1)
        row.get_by_role("button", name="It was sent").click()
        expect(ui.page.locator("tr.resolved").filter(has_text=odd)).to_contain_text("recorded as sent", timeout=WAIT)
        uncertain.filter(has_text=plain).get_by_role("button", name="It was not sent").click()
        expect(ui.page.locator("tr.resolved").filter(has_text=plain)).to_contain_text("the next run sends it",
                                                                                       timeout=WAIT)
        sent = store.ledger_entry(odd)
        assert sent is not None and sent.status == "sent"
        assert store.ledger_entry(plain) is None
    finally:
        store.close()
    ui.page.reload()
    expect(ui.page.locator("table.ledger.uncertain tbody tr")).to_have_count(0, timeout=WAIT)
    expect(ui.page.locator("table.ledger tbody tr.sent")).to_have_count(1)
    ui.assert_clean()


def test_the_error_collector_sees_a_csp_violation(ui: ConsoleUI) -> None:
    """The checks above assert that no error was seen: this one makes sure a CSP violation would be."""
    ui.log_in()
    with ui.page.expect_console_message(lambda m: "Content Security Policy" in m.text, timeout=WAIT):
        ui.page.evaluate("""() => { const s = document.createElement("script");
                                   s.textContent = "window.inlineRan = true"; document.body.append(s); }""")
    assert ui.page.evaluate("window.inlineRan") is None  # refused: the policy allows no inline script
    assert any("Content Security Policy" in e for e in ui.errors), ui.errors


def test_the_browser_finds_an_icon(ui: ConsoleUI) -> None:
    ui.log_in()
    if ui.page.locator('link[rel~="icon"]').count() == 0:  # no icon named: the browser asks for /favicon.ico
        answer = ui.page.request.get(f"{ui.url}/favicon.ico")
        assert answer.ok, f"GET /favicon.ico: {answer.status}"
    ui.assert_clean()

"""The console's test project and how to start the real `mailconnector console` in a child process (the
fixtures built on them are in tests/conftest.py: console_project, api, browser_client, running_console)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mailconnector.sandbox import Sandbox

__all__ = ["TOKEN", "USER", "ConsoleProject", "RunningConsole", "csrf_of", "start_console", "stop_console",
           "write_console_project"]

TOKEN = "console-test-token-0123456789abcdef"
USER = "ivan"  # the console tests' own mailbox (no other test uses it)


@dataclass
class ConsoleProject:
    path: Path
    folder: str  # ivan's folder the read operation reads (empty at first)
    outbox: Path  # the send operation's records (JSON lines), to ivan's own address
    password: str  # ivan's password: no page or answer may hold it


def write_console_project(directory: Path, sandbox: Sandbox, folder: str) -> ConsoleProject:
    """Connections `sandbox` (ivan, by password file), an operation reading ``folder`` into a JSON-lines file,
    and one sending the records of ``outbox.jsonl``."""
    secrets_dir = directory / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    password = sandbox.user(USER).password
    pw_file = secrets_dir / "ivan.password"
    pw_file.write_text(password)
    os.chmod(pw_file, 0o600)
    outbox = directory / "outbox.jsonl"
    outbox.write_text("")
    doc: dict[str, Any] = {
        "connections": {"sandbox": sandbox.connection_dict(USER, password=f"${{file:{pw_file}}}")},
        "activities": {
            "ivan-folder": {"type": "read-email", "connection": "sandbox", "folder": folder,
                            "after_read": "mark_read"},
            "folder-jsonl": {"type": "file", "path": "read.jsonl"},
            "outbox": {"type": "file", "path": "outbox.jsonl"},
            "ivan-mail": {"type": "send-email", "connection": "sandbox"},
        },
        "operations": {
            "folder-to-jsonl": {"source": "ivan-folder", "target": "folder-jsonl"},
            "send-outbox": {"source": "outbox", "target": "ivan-mail"},
        },
        "settings": {"state": str(directory / "state.db")},
    }
    path = directory / "mailconnector.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return ConsoleProject(path, folder, outbox, password)


def csrf_of(page_html: str) -> str:
    """The CSRF value a page gives htmx (the body's hx-headers)."""
    start = page_html.index("hx-headers='") + len("hx-headers='")
    return str(json.loads(page_html[start:page_html.index("'", start)])["X-CSRF-Token"])


@dataclass
class RunningConsole:
    url: str  # http://127.0.0.1:PORT/ (no token)
    token: str
    process: subprocess.Popen[str]


def start_console(project: Path, *args: str, token: str | None = TOKEN, timeout: float = 30.0) -> RunningConsole:
    """`mailconnector console --port 0` in a child process; returns once it printed the URL it serves."""
    argv = [sys.executable, "-m", "mailconnector", "console", "--port", "0", "--project", str(project), *args]
    if token is not None:
        argv += ["--token", token]
    env = {k: v for k, v in os.environ.items() if k != "MAILCONNECTOR_CONSOLE_TOKEN"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # the first line is the URL (the command prints nothing before it)
    if not line.startswith("http://"):
        proc.kill()
        _, err = proc.communicate(timeout=timeout)
        raise AssertionError(f"the console did not start: {line!r} {err}")
    base, _, given = line.partition("?token=")
    return RunningConsole(base, given, proc)


def stop_console(console: RunningConsole) -> tuple[int, str]:
    """SIGTERM, as a service manager stops it; returns its exit code and stderr."""
    console.process.send_signal(signal.SIGTERM)
    try:
        _, err = console.process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        console.process.kill()
        _, err = console.process.communicate()
    return console.process.returncode, err

"""The main job: start the sandbox mail server and run the example operation chain against it.

Run it with `./dev demo`. Each step is a `mailconnector` command, printed before it runs, so the output
reads like a session at a terminal:

1. the connection Test of alice's sandbox account;
2. `send-outbox`: examples/outbox.jsonl (text, HTML, attachments, an inline image, Unicode, a template)
   sent from alice to bob;
3. `inbox-to-jsonl`: bob's inbox read through a transformation into inbox.jsonl, attachments into
   attachments/, each email moved to Archive once its record is written; it chains to
4. `acknowledge`: a threaded reply (In-Reply-To) from bob to each sender;
5. alice reads the replies; the operation logs are printed.

The sandbox is stopped and its files removed at the end; the demo's own files stay in demo-out/.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from mailconnector import Connection, ImapSession, Sandbox

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent / "mailconnector"


def run(workdir: Path, *args: str) -> None:
    print(f"\n$ mailconnector {shlex.join(args)}", flush=True)
    env = dict(os.environ, MAILCONNECTOR_PROJECT=str(workdir / "mailconnector.yaml"))
    proc = subprocess.run([str(BIN), *args], cwd=workdir, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed with exit code {proc.returncode}: mailconnector {shlex.join(args)}")


def wait_for_mail(conn: Connection, count: int, timeout: float = 30.0) -> None:
    """Delivery through Postfix into Dovecot is asynchronous: wait until the mail is there."""
    deadline = time.monotonic() + timeout
    with ImapSession(conn) as imap:
        while True:
            imap.select("INBOX", readonly=True)
            if len(imap.search(["UNSEEN"])) >= count:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"expected {count} emails for {conn.auth.username} within {timeout:.0f} s")
            time.sleep(0.1)


def main() -> None:
    workdir = HERE.parent / "demo-out"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    for name in ("outbox.jsonl", "transform.py"):
        shutil.copy(HERE / name, workdir / name)
    shutil.copytree(HERE / "files", workdir / "files")
    outbox_size = sum(1 for line in (HERE / "outbox.jsonl").read_text().splitlines() if line.strip())

    print("Starting the sandbox mail server (Dovecot + Postfix on 127.0.0.1)...", flush=True)
    with Sandbox.start() as sandbox:
        try:
            project_file = workdir / "mailconnector.yaml"
            sandbox.write_project(project_file)
            project = yaml.safe_load(project_file.read_text())
            project.update(yaml.safe_load((HERE / "operations.yaml").read_text()))
            project_file.write_text(yaml.safe_dump(project, sort_keys=False, allow_unicode=True))
            connections = {name: Connection.from_dict(entry, name=name, base_dir=workdir)
                           for name, entry in project["connections"].items()}

            run(workdir, "test", "sandbox")
            run(workdir, "run", "send-outbox")
            wait_for_mail(connections["sandbox-bob"], outbox_size)
            run(workdir, "run", "inbox-to-jsonl")
            wait_for_mail(connections["sandbox"], outbox_size)
            run(workdir, "read", "sandbox", "--attachments", "none", "--output", "replies.jsonl")
            print("\nReplies alice received:")
            for line in (workdir / "replies.jsonl").read_text().splitlines():
                rec = json.loads(line)
                print(f"  {rec['subject']!r:50} in reply to {rec['in_reply_to']}")
            saved = sorted(p.relative_to(workdir) for p in (workdir / "attachments").rglob("*") if p.is_file())
            print(f"\nAttachments bob's inbox saved ({len(saved)}):")
            for p in saved:
                print(f"  {p}")
            run(workdir, "logs")
        finally:
            sandbox.remove()
    print(f"\nDemo finished; its files are in {workdir}")


if __name__ == "__main__":
    main()

"""``mailconnector ledger reconcile``: where the server files sent mail itself, an uncertain send found in
that folder by its Message-ID is resolved as sent; one not found stays uncertain; and where the server is
not known to file sent mail, nothing is guessed.

The sandbox's Postfix files nothing, so the test plays the server's part: it puts one of two uncertain
messages into the folder named as the connection's ``sent_folder`` (as Microsoft 365 or Gmail would have).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from _mail import append_all, make_message, message_id

from mailconnector.connection import Connection
from mailconnector.sandbox import Sandbox
from mailconnector.state import Store


def test_reconcile_resolves_what_the_sent_folder_holds_and_nothing_else(
        sandbox: Sandbox, make_conn: Callable[..., Connection], fresh_folder: Callable[[str], str],
        tmp_path: Path) -> None:
    folder = fresh_folder("gina")
    filed, missing = make_message("filed by the server"), make_message("never arrived")
    append_all(make_conn("gina"), folder, [filed])
    entry = {**sandbox.connection_dict("gina"), "server_files_sent": True, "sent_folder": folder}
    plain = sandbox.connection_dict("gina")
    (tmp_path / "mailconnector.yaml").write_text(yaml.safe_dump({"connections": {"office": entry, "plain": plain}}))
    store = Store(tmp_path / ".mailconnector" / "state.db")
    for raw in (filed, missing):
        mid = message_id(raw)
        store.claim(mid, connection="office", holder="h", recipients=["x@example.test"])
        store.settle(mid, holder="h", status="uncertain", accepted=[])

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailconnector", "ledger", *args], cwd=tmp_path,
                              env=dict(os.environ), capture_output=True, text=True, timeout=60)

    refused = cli("reconcile", "plain")  # Postfix files nothing: a missing copy would prove nothing
    assert refused.returncode == 3, refused.stderr
    assert "server_files_sent" in " ".join(refused.stderr.split())

    done = cli("reconcile", "office", "--json")
    assert done.returncode == 0, done.stderr
    result = yaml.safe_load(done.stdout)
    assert result == {"checked": 2, "resolved_sent": [message_id(filed)], "still_uncertain": [message_id(missing)]}
    sent, still = store.ledger_entry(message_id(filed)), store.ledger_entry(message_id(missing))
    assert sent is not None and sent.status == "sent" and folder in (sent.note or "")
    assert still is not None and still.status == "uncertain"
    again = cli("reconcile", "office", "--json")
    assert yaml.safe_load(again.stdout)["checked"] == 1  # only what is still uncertain is looked up

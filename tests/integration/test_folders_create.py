"""Folders that can be created: ``mailconnector folders --create``, ``create_missing`` on Read Email, and the
order and wording of the folder list — against the real sandbox's Dovecot (hierarchy delimiter ``/``).

Every folder a test creates has a unique name in carol's mailbox (no other test lists or reads carol's
folders by name) and is deleted afterwards, children first.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from _mail import append_all, make_message, message_id
from cli_harness.runner import Result, cli

from mailconnector.activities.read import ReadEmail
from mailconnector.connection import Connection
from mailconnector.errors import ConfigError
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox

USER = "carol"
PASSWORD_ENV = "MC_FOLDERS_CREATE_PASSWORD"

MakeConn = Callable[..., Connection]
FreshFolder = Callable[[str], str]


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def conn(make_conn: MakeConn) -> Connection:
    return make_conn(USER)


@pytest.fixture
def cleanup(conn: Connection) -> Iterator[list[str]]:
    """Names (parents included) to delete after the test, deepest first."""
    names: list[str] = []
    yield names
    with ImapSession(conn) as imap:
        for name in sorted(set(names), key=lambda n: n.count("/"), reverse=True):
            if imap.folder_exists(name):
                imap.delete_folder(name)


@pytest.fixture
def project(sandbox: Sandbox, tmp_path: Path) -> Path:
    entry = sandbox.connection_dict(USER, password=f"${{env:{PASSWORD_ENV}}}")
    (tmp_path / "mailconnector.yaml").write_text(yaml.safe_dump({"connections": {"box": entry}}))
    return tmp_path


def run(sandbox: Sandbox, project: Path, *args: str) -> Result:
    return cli(list(args), project, env={PASSWORD_ENV: sandbox.user(USER).password})


def listed(conn: Connection) -> dict[str, tuple[str, ...]]:
    with ImapSession(conn) as imap:
        return {f.name: f.flags for f in imap.list_folders()}


def subscribed(conn: Connection) -> set[str]:
    with ImapSession(conn) as imap:
        return {str(name) for _flags, _delim, name in imap.client.list_sub_folders()}


# ------------------------------------------------------------------------------------------ folders --create
def test_create_makes_and_subscribes_the_folder_and_a_second_run_says_it_exists(
        sandbox: Sandbox, project: Path, conn: Connection, cleanup: list[str]) -> None:
    name = unique()
    cleanup.append(name)
    first = run(sandbox, project, "folders", "box", "--create", name)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"created {name}"
    assert name in listed(conn) and name in subscribed(conn)
    with ImapSession(conn) as imap:
        assert imap.select(name).exists == 0  # a real, selectable folder

    again = run(sandbox, project, "folders", "box", "--create", name, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == [{"folder": name, "created": False, "created_parents": []}]
    inbox = run(sandbox, project, "folders", "box", "--create", "inbox")
    assert (inbox.returncode, inbox.stdout.strip()) == (0, "inbox already exists")


def test_a_nested_name_creates_its_missing_parents_first(sandbox: Sandbox, project: Path, conn: Connection,
                                                         cleanup: list[str]) -> None:
    parent = unique()
    child, sibling = f"{parent}/Processed/2026", f"{parent}/Other"
    cleanup.extend([parent, f"{parent}/Processed", child, sibling])
    res = run(sandbox, project, "folders", "box", "--create", child, "--create", sibling, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [
        {"folder": child, "created": True, "created_parents": [parent, f"{parent}/Processed"]},
        {"folder": sibling, "created": True, "created_parents": []},
    ]
    folders = listed(conn)
    for name in (parent, f"{parent}/Processed", child, sibling):
        assert name in folders and "\\Noselect" not in folders[name], (name, folders.get(name))
    assert {parent, f"{parent}/Processed", child, sibling} <= subscribed(conn)
    text = run(sandbox, project, "folders", "box", "--create", f"{parent}/Processed/2027")
    cleanup.append(f"{parent}/Processed/2027")
    assert text.stdout.strip() == f"created {parent}/Processed/2027"


def test_a_non_ascii_name_goes_over_the_wire_in_modified_utf7(sandbox: Sandbox, project: Path, conn: Connection,
                                                             cleanup: list[str]) -> None:
    parent = f"Réponses-{uuid.uuid4().hex[:8]}"
    name = f"{parent}/Été 日本"
    cleanup.extend([parent, name])
    res = run(sandbox, project, "folders", "box", "--create", name)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"created {name} (and {parent})"
    assert name in listed(conn)
    with ImapSession(conn) as imap:
        imap.client.folder_encode = False  # the names exactly as the server holds them
        raw = {n if isinstance(n, str) else n.decode() for _f, _d, n in imap.client.list_folders()}
    assert f"R&AOk-ponses-{parent[-8:]}/&AMk-t&AOk- &ZeVnLA-" in raw
    again = run(sandbox, project, "folders", "box", "--create", name)
    assert again.stdout.strip() == f"{name} already exists"


@pytest.mark.parametrize("bad", ["", "   ", "a\r\nb", "tab\there", "nul\0x", "wild*", "per%cent", "/lead",
                                 "trail/", "a//b"])
def test_hostile_names_are_refused_and_nothing_is_created(bad: str, sandbox: Sandbox, project: Path,
                                                          conn: Connection, cleanup: list[str]) -> None:
    good = unique()
    cleanup.append(good)
    before = set(listed(conn))
    # Names are checked before any is created, so the good one before the bad one is not made either
    # (only the delimiter checks need the server, and come before any CREATE of the bad name).
    res = run(sandbox, project, "folders", "box", "--create", bad, "--create", good)
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert "ConfigError" in res.stderr and "created" not in res.stdout
    assert set(listed(conn)) == before


def test_a_name_the_server_refuses_exits_6_with_its_words(sandbox: Sandbox, project: Path,
                                                          conn: Connection) -> None:
    too_long = "x" * 300  # longer than a file name may be: Dovecot's maildir cannot hold it
    res = run(sandbox, project, "folders", "box", "--create", too_long)
    assert res.returncode == 6, (res.stdout, res.stderr)
    assert "CREATE" in res.stderr_flat
    assert too_long not in listed(conn)


# ------------------------------------------------------------------------------------------ the folder list
def test_folders_lists_inbox_first_then_alphabetically_with_children_under_parents(
        sandbox: Sandbox, project: Path, conn: Connection, cleanup: list[str]) -> None:
    base = unique("m")
    names = [f"{base}-b", f"{base}/z", base, f"{base.upper()}-a", f"{base}/A"]
    cleanup.extend(names)
    with ImapSession(conn) as imap:
        for name in names:
            imap.ensure_folder(name)
    res = run(sandbox, project, "folders", "box", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    order = [r["name"] for r in rows]
    assert order[0] == "INBOX"
    ours = [n for n in order if n.lower().startswith(base)]
    assert ours == [base, f"{base}/A", f"{base}/z", f"{base.upper()}-a", f"{base}-b"]
    rest = order[1:]
    assert rest == sorted(rest, key=lambda n: [level.casefold() for level in n.split("/")])
    # One word, "unread", in the table and the JSON; "unseen" stays in the JSON for older scripts.
    for row in rows:
        assert row["unread"] == row["unseen"]
    table = run(sandbox, project, "folders", "box")
    header = next(line for line in table.stdout.splitlines() if "special use" in line)
    assert "unread" in header and "unseen" not in table.stdout
    assert table.stdout.index("INBOX") < table.stdout.index("Archive") < table.stdout.index("Sent")


def test_listing_is_ordered_in_the_library_too(conn: Connection) -> None:
    with ImapSession(conn) as imap:
        names = [f.name for f in imap.list_folders()]
    assert names[0] == "INBOX"
    assert names[1:] == sorted(names[1:], key=lambda n: [level.casefold() for level in n.split("/")])


def test_folder_exists_takes_the_name_literally(conn: Connection) -> None:
    with ImapSession(conn) as imap:
        assert imap.folder_exists("Archive") and imap.folder_exists("inbox")
        assert not imap.folder_exists("Arch*") and not imap.folder_exists("%")


# ------------------------------------------------------------------------------------------ create_missing
class CountingSession(ImapSession):
    """A real session that counts the folder checks and creations a reader makes."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection)
        self.checks = 0
        self.creates = 0

    def folder_exists(self, folder: str) -> bool:
        self.checks += 1
        return super().folder_exists(folder)

    def ensure_folder(self, folder: str, *, subscribe: bool = True) -> list[str]:
        self.creates += 1
        return super().ensure_folder(folder, subscribe=subscribe)


def test_create_missing_makes_the_move_target_once_at_the_start(conn: Connection, fresh_folder: FreshFolder,
                                                                cleanup: list[str]) -> None:
    source = fresh_folder(USER)
    parent = unique()
    target = f"{parent}/Processed"
    cleanup.extend([parent, target])
    raws = [make_message(f"m{i}") for i in range(3)]
    append_all(conn, source, raws)
    session = CountingSession(conn)
    with ReadEmail(conn, folder=source, after_read=f"move:{target}", create_missing=True, batch_size=1,
                   session=session) as reader:
        for item in reader:
            item.ack()
    assert (session.checks, session.creates) == (1, 1)
    with ImapSession(conn) as imap:
        imap.select(target, readonly=True)
        moved = {message_id(m.raw) for m in imap.fetch(imap.search(["ALL"]))}
        imap.select(source, readonly=True)
        assert imap.search(["ALL"]) == []
    assert moved == {message_id(r) for r in raws}
    assert {parent, target} <= subscribed(conn)

    # The next run finds it and creates nothing.
    append_all(conn, source, [make_message("later")])
    again = CountingSession(conn)
    with ReadEmail(conn, folder=source, after_read=f"move:{target}", create_missing=True, session=again) as reader:
        for item in reader:
            item.ack()
    assert reader.acked == 1
    assert (again.checks, again.creates) == (1, 0)


def test_without_create_missing_the_error_says_how_to_create_it(conn: Connection, fresh_folder: FreshFolder) -> None:
    source = fresh_folder(USER)
    missing = unique()
    with pytest.raises(ConfigError) as caught:
        ReadEmail(conn, folder=source, after_read=f"move:{missing}").open()
    assert "does not exist" in caught.value.message
    # The library's hint names the setting (a worker shows it too); the command line adds its options by topic.
    assert caught.value.topic == "folder-missing" and "create_missing: true" in (caught.value.hint or "")
    assert missing not in listed(conn)


def test_create_missing_needs_a_move_and_a_sane_name(conn: Connection, fresh_folder: FreshFolder) -> None:
    with pytest.raises(ConfigError, match="create_missing applies only to after_read: move:FOLDER"):
        ReadEmail(conn, folder="INBOX", after_read="mark_read", create_missing=True)
    source = fresh_folder(USER)
    before = set(listed(conn))
    for bad in ("move:wild*", "move:a//b", "move:x\x7f"):
        with pytest.raises(ConfigError) as caught:
            ReadEmail(conn, folder=source, after_read=bad, create_missing=True).open()
        assert caught.value.field == "after_read"
    assert set(listed(conn)) == before


def test_read_command_create_missing(sandbox: Sandbox, project: Path, conn: Connection, fresh_folder: FreshFolder,
                                     cleanup: list[str]) -> None:
    source = fresh_folder(USER)
    target = unique()
    cleanup.append(target)
    raw = make_message("for the cli")
    append_all(conn, source, [raw])
    refused = run(sandbox, project, "read", "box", "--folder", source, "--after-read", f"move:{target}")
    assert refused.returncode == 3 and "--create-missing" in refused.stderr_flat
    assert "mailconnector folders CONNECTION --create FOLDER" in refused.stderr_flat  # the command line's advice
    res = run(sandbox, project, "read", "box", "--folder", source, "--after-read", f"move:{target}",
              "--create-missing")
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["message_id"] for line in res.stdout.splitlines()] == [message_id(raw)]
    with ImapSession(conn) as imap:
        assert imap.select(target, readonly=True).exists == 1
    wrong = run(sandbox, project, "read", "box", "--folder", source, "--create-missing")
    assert wrong.returncode == 3 and "create_missing" in wrong.stderr_flat


def test_create_missing_on_a_project_activity(sandbox: Sandbox, tmp_path: Path, conn: Connection,
                                              fresh_folder: FreshFolder, cleanup: list[str]) -> None:
    source = fresh_folder(USER)
    target = f"{unique()}/Done"
    cleanup.extend([target.split("/")[0], target])
    append_all(conn, source, [make_message("op")])
    entry = sandbox.connection_dict(USER, password=f"${{env:{PASSWORD_ENV}}}")
    data = {
        "connections": {"box": entry},
        "activities": {
            "inbox": {"type": "read-email", "connection": "box", "folder": source,
                      "after_read": f"move:{target}", "create_missing": True},
            "wrong": {"type": "read-email", "connection": "box", "folder": source, "create_missing": True},
            "out": {"type": "file", "path": "out.jsonl"},
        },
        "operations": {"move-them": {"source": "inbox", "target": "out"},
                       "wrong-op": {"source": "wrong", "target": "out"}},
    }
    (tmp_path / "mailconnector.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    res = run(sandbox, tmp_path, "run", "move-them")
    assert res.returncode == 0, res.stderr
    with ImapSession(conn) as imap:
        assert imap.select(target, readonly=True).exists == 1
    wrong = run(sandbox, tmp_path, "run", "wrong-op")
    assert wrong.returncode == 3
    assert "activities.wrong.create_missing" in wrong.stderr_flat and "line" in wrong.stderr_flat

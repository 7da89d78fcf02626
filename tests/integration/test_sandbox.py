"""The sandbox itself: how fast it starts, that it stops completely, that it stays on loopback, and that the
project file it writes works and holds no password."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailconnector.connection import Connection
from mailconnector.diagnostics import diagnose
from mailconnector.project import Project
from mailconnector.sandbox import Sandbox

MAILCONNECTOR = Path(sys.executable).with_name("mailconnector")
START_BUDGET_S = 3.0


def group_members(pgids: set[int]) -> dict[int, str]:
    """Every live process whose process group is one of ``pgids`` (pid -> command name)."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp in pgids and state != "Z":
            found[int(entry)] = comm
    return found


def listening_addresses(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket held by one of ``pids``."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out: list[tuple[str, int]] = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            if v6:
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                addr = str(ipaddress.IPv6Address(raw))
            else:
                addr = str(ipaddress.IPv4Address(raw[::-1]))
            out.append((addr, int(hex_port, 16)))
    return out


@pytest.fixture(scope="module")
def own_sandbox() -> Iterator[tuple[Sandbox, float]]:
    """A sandbox of this module's own, to time its start and to stop it."""
    t0 = time.perf_counter()
    sbx = Sandbox.start(users=("alice",))
    elapsed = time.perf_counter() - t0
    try:
        yield sbx, elapsed
    finally:
        sbx.remove()


def test_the_sandbox_starts_quickly(own_sandbox: tuple[Sandbox, float]) -> None:
    sbx, elapsed = own_sandbox
    print(f"\nsandbox start: {elapsed:.2f} s")  # visible with -s
    assert elapsed < START_BUDGET_S
    assert sbx.running()
    assert diagnose(Connection.from_dict(sbx.connection_dict("alice"), name="own")).ok


def test_servers_listen_only_on_loopback(sandbox: Sandbox) -> None:
    pgids = set(sandbox.info.pids.values())
    members = group_members(pgids)
    assert members, "the sandbox's processes should be found by process group"
    listening = listening_addresses(set(members))
    ports = {port for _, port in listening}
    expected = {p for p in sandbox.info.ports.values() if p}
    assert expected <= ports, (expected, listening)
    assert {addr for addr, _ in listening} <= {"127.0.0.1", "127.0.0.2"}, listening
    r = Path(sandbox.info.rundir)
    assert "inet_interfaces = 127.0.0.1\n" in (r / "postfix" / "main.cf").read_text()
    for line in (r / "postfix" / "master.cf").read_text().splitlines():
        if " inet " in line:
            assert line.startswith("127.0.0.1:"), line
    dovecot = (r / "dovecot.conf").read_text()
    assert "listen = 127.0.0.1, 127.0.0.2\n" in dovecot or "listen = 127.0.0.1\n" in dovecot
    addresses = {line.split("=")[1].strip() for line in dovecot.splitlines() if line.strip().startswith("address")}
    assert addresses <= {"127.0.0.1", "127.0.0.2"}


def test_the_project_file_works_and_holds_no_password(sandbox: Sandbox, tmp_path: Path) -> None:
    path = sandbox.write_project(tmp_path / "mailconnector.yaml")
    text = path.read_text()
    for user in sandbox.info.users:
        assert user["password"] not in text
    assert "${file:" in text
    project = Project.load(path)
    assert set(project.connection_names) >= {"sandbox", "sandbox-bob"}
    pw = project.connection("sandbox").auth.password
    assert pw is not None and pw.get_secret_value() == sandbox.user("alice").password
    env = {k: v for k, v in os.environ.items() if k != "MAILCONNECTOR_PROJECT"}
    res = subprocess.run([str(MAILCONNECTOR), "test", "sandbox"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "every step passed" in res.stdout
    # The password files are the user's alone.
    for user in sandbox.info.users:
        pw_file = Path(sandbox.info.rundir) / "secrets" / f"{user['address'].split('@')[0]}.password"
        assert pw_file.stat().st_mode & 0o077 == 0


def test_stop_leaves_no_process_of_that_run(own_sandbox: tuple[Sandbox, float]) -> None:
    sbx, _ = own_sandbox
    pids = dict(sbx.info.pids)
    assert set(pids) == {"dovecot", "postfix"}
    before = group_members(set(pids.values()))
    names = set(before.values())
    assert "dovecot" in names and "master" in names, names
    assert len(before) > 2  # the masters and their children
    t0 = time.perf_counter()
    sbx.stop()
    stop_s = time.perf_counter() - t0
    print(f"\nsandbox stop: {stop_s:.3f} s")
    assert stop_s < 5
    for pid in before:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), (pid, before[pid])
    assert group_members(set(pids.values())) == {}
    assert not sbx.running()
    assert sbx.info.pids == {}


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"

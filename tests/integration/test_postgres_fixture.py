"""The PostgreSQL fixtures give a real server: a client can write and read, TCP logins check the
password, and a restart keeps the data (so restart tests built on it test something real)."""

from __future__ import annotations

import psycopg
import pytest

from mailconnector._cluster import PostgresServer


def test_table_round_trip(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE note (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO note VALUES (%s, %s)", (1, "héllo ✓"))
        conn.commit()
    with psycopg.connect(postgres_url, connect_timeout=5) as conn:
        row = conn.execute("SELECT id, body, current_user, inet_server_addr()::text FROM note").fetchone()
    assert row == (1, "héllo ✓", "mc", "127.0.0.1/32")


def test_each_test_gets_its_own_database(postgres_server: PostgresServer, postgres_url: str) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    assert name.startswith("mc_")
    assert postgres_server.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "1"
    with psycopg.connect(postgres_url, connect_timeout=5) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert tables == (0,)


def test_wrong_password_is_refused(postgres_server: PostgresServer, postgres_url: str) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_server.url(name, password="not-the-password"), connect_timeout=5)


def test_restart_keeps_data(postgres_server: PostgresServer, postgres_url: str) -> None:
    with psycopg.connect(postgres_url, connect_timeout=5, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('before restart')")
    port, directory = postgres_server.port, postgres_server.directory
    held = psycopg.connect(postgres_url, connect_timeout=5)
    try:
        postgres_server.restart()
        assert (postgres_server.port, postgres_server.directory) == (port, directory)
        with pytest.raises(psycopg.OperationalError):  # the old session did not survive the restart
            held.execute("SELECT 1")
    finally:
        held.close()
    with psycopg.connect(postgres_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT value FROM kept").fetchall() == [("before restart",)]

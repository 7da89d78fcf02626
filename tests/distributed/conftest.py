"""Fixtures of the distributed tests: a real Redis (Debian's redis-server, one per session, emptied before
each test), the session's PostgreSQL, the sandbox's mail servers; see services.cluster for the workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from services.cluster import PW_VAR, Cluster, flush, write_cluster_project
from services.redis import RedisNotInstalled, RedisServer

from mailconnector.sandbox import Sandbox


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
    except RedisNotInstalled as exc:
        if _in_ci():
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path, sandbox: Sandbox, postgres_url: str, redis_server: RedisServer) -> Iterator[Cluster]:
    flush(redis_server)
    write_cluster_project(tmp_path, sandbox, state=postgres_url, broker=redis_server.url)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAILCONNECTOR_PROJECT", "MAILCONNECTOR_STATE", "MAILCONNECTOR_BROKER")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", PW_VAR: sandbox.info.password("alice")})
    made = Cluster(tmp_path, env, postgres_url, redis_server.url)
    try:
        yield made
    finally:
        made.stop_workers()

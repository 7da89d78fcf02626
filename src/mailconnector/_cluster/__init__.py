"""Throwaway PostgreSQL and Redis servers on loopback, in a directory of their own: the shared state and the
broker that `mailconnector sandbox --with-cluster` starts beside the mail servers (and that the tests and
benchmarks start for themselves). Debian's binaries; nothing else is needed."""

from .postgres import PostgresError, PostgresNotInstalled, PostgresServer
from .redis import RedisNotInstalled, RedisServer

__all__ = ["PostgresError", "PostgresNotInstalled", "PostgresServer", "RedisNotInstalled", "RedisServer"]

"""What the console shows, as plain data: the pages render it and the JSON API returns it, so both say the same.

Nothing here may hold a secret: connections are described field by field (never dumped whole), and every
text that came from a server or a message goes through the redaction of the configured secrets.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ..errors import MailConnectorError
from ..secrets import redact

if TYPE_CHECKING:
    from ..connection import Connection, ServerSettings
    from ..project import OperationConfig, Project
    from ..state import LeaseInfo, StateStore

__all__ = [
    "RUN_STATUSES",
    "BadRequest",
    "Conflict",
    "NotFound",
    "connection_view",
    "connections",
    "error_view",
    "health",
    "ledger",
    "operations",
    "resolve_uncertain",
    "run_detail",
    "runs",
]

RUN_STATUSES = ("running", "success", "partial", "failed", "error", "interrupted")
LEDGER_STATUSES = ("claimed", "sent", "partial", "uncertain")
# A lease whose holder stopped renewing it stays on the health page this long, flagged.
ENDED_SHOWN_FOR = 7 * 86400.0
# A watcher is flagged when it has not looked for mail this long after the time it said it would.
POLL_GRACE = 120.0


class NotFound(MailConnectorError):
    """A name or id nothing knows (HTTP 404)."""


class Conflict(MailConnectorError):
    """Asked of something in the wrong state (HTTP 409): resolving a send that is not uncertain."""


class BadRequest(MailConnectorError):
    """A filter or a body the console cannot read (HTTP 400)."""


def error_view(exc: MailConnectorError) -> dict[str, Any]:
    return {"type": exc.kind, "message": redact(exc.message), "hint": redact(exc.hint) if exc.hint else None}


def _server(server: ServerSettings | None) -> dict[str, Any] | None:
    if server is None:
        return None
    return {"host": server.host, "port": server.port, "security": server.security,
            **({"username": server.username} if server.username else {})}


def connection_view(conn: Connection) -> dict[str, Any]:
    """A connection's settings for a page: every field a user would check, never a secret (only whether one
    is set)."""
    auth: dict[str, Any] = {"type": conn.auth.type, "username": conn.auth.username,
                            "password_set": conn.auth.password is not None}
    oauth = conn.auth.oauth2
    if oauth is not None:
        auth["oauth2"] = {"provider": oauth.provider, "grant": oauth.grant, "tenant_id": oauth.tenant_id,
                          "client_id": oauth.client_id, "client_secret_set": oauth.client_secret is not None,
                          "refresh_token_set": oauth.refresh_token is not None, "scopes": list(oauth.scopes)}
    return {"name": conn.name, "provider": conn.provider, "activities": conn.activities, "auth": auth,
            "smtp": _server(conn.smtp), "imap": _server(conn.imap), "from_address": conn.from_address,
            "tls": {"verify": conn.tls.verify, "ca_file": str(conn.tls.ca_file) if conn.tls.ca_file else None,
                    "client_cert": str(conn.tls.client_cert) if conn.tls.client_cert else None},
            "timeouts": {"connect": conn.timeouts.connect, "command": conn.timeouts.command}}


def connections(project: Project) -> list[dict[str, Any]]:
    """Every connection of the project; one whose settings are wrong is listed with its error, not dropped."""
    out: list[dict[str, Any]] = []
    for name in project.connection_names:
        try:
            out.append({**connection_view(project.connection(name)), "error": None})
        except MailConnectorError as exc:
            out.append({"name": name, "error": error_view(exc)})
    return out


def operations(project: Project) -> list[dict[str, Any]]:
    """Each operation as source → transformation → target, with its trigger and its last run."""
    names = list(project.doc.data.get("operations") or {})
    last: dict[str, dict[str, Any]] = {}
    for run in project.store().list_runs(limit=500):
        last.setdefault(run["operation"], run)
    out: list[dict[str, Any]] = []
    for name in names:
        entry: dict[str, Any] = {"name": name, "last_run": _run_summary(last[name]) if name in last else None}
        try:
            op = project.operation(name)
        except MailConnectorError as exc:
            out.append({**entry, "error": error_view(exc)})
            continue
        transformation = op.transformation.model_dump(exclude_none=True) if op.transformation else None
        from ..distributed._submit import can_distribute

        out.append({**entry, "error": None, "source": op.source, "target": op.target,
                    "runs_on": "workers" if can_distribute(project, name) else "console",
                    "transformation": transformation, "trigger": _trigger(project, op),
                    "on_error": op.on_error, "on_success": list(op.on_success), "on_failure": list(op.on_failure)})
    return out


def _trigger(project: Project, op: OperationConfig) -> str:
    """How the operation is started: by the workers (its ``trigger``), by hand (or a scheduler), or kept
    running with ``run --watch``."""
    from ..project import ReadActivity

    if op.trigger == "watch":
        return f"watch (IDLE, else every {op.interval:g} s), on the workers: one of them at a time"
    if op.trigger is not None:
        return f"every {op.trigger.every:g} s, on the workers: one of them at a time"
    try:
        activity = project.activity(op.source)
    except MailConnectorError:
        return "manual"
    if isinstance(activity, ReadActivity):
        return f"manual, or watch (IDLE, else every {op.interval:g} s) with: mailconnector run NAME --watch"
    return "manual"


def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("run_id", "operation", "status", "started_at", "ended_at", "records_read", "records_written",
            "records_skipped", "records_uncertain", "records_failed", "error")
    out = {k: run.get(k) for k in keys}
    out["duration_s"] = _duration(run.get("started_at"), run.get("ended_at"))
    if out["error"]:
        out["error"] = redact(str(out["error"]))
    return out


def _duration(started: str | None, ended: str | None) -> float | None:
    if not started or not ended:
        return None
    fmt = "%Y-%m-%dT%H:%M:%S%z"
    try:
        return max(0.0, time.mktime(time.strptime(ended, fmt)) - time.mktime(time.strptime(started, fmt)))
    except ValueError:
        return None


def runs(store: StateStore, *, operation: str | None = None, status: str | None = None,
         since_hours: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The operation log, newest first, filtered by operation, status and age."""
    if status is not None and status not in RUN_STATUSES:
        raise BadRequest(f"unknown run status {status!r}", hint=f"one of: {', '.join(RUN_STATUSES)}")
    since = time.time() - since_hours * 3600 if since_hours is not None else None
    return [_run_summary(r) for r in store.list_runs(limit=limit, operation=operation or None, status=status,
                                                     since=since)]


def run_detail(store: StateStore, run_id: str) -> dict[str, Any] | None:
    """One run with each failed (or uncertain) record's error, hint and the record (``data``: an excerpt, see
    records/excerpt.py; None for a message the source could not read)."""
    run = store.get_run(run_id)
    if run is None:
        return None
    errors = []
    for e in run["errors"]:
        err = e["error"]
        errors.append({"record": redact(str(e["record"])) if e["record"] is not None else None,
                       "outcome": err.get("outcome", "failed"), "type": err.get("type"),
                       "stage": err.get("stage"), "message": redact(str(err.get("message", ""))),
                       "hint": redact(str(err["hint"])) if err.get("hint") else None,
                       "data": _redacted(err.get("record")),
                       "details": _redacted({k: v for k, v in err.items()
                                             if k not in ("outcome", "type", "stage", "message", "hint", "record")})})
    # A distributed run (docs/scaling.md): how many chunks it was cut into, how many are recorded, and how
    # many records it queued; None for a run in one process.
    chunks = {k: run.get(k) for k in ("chunks", "chunks_done", "records_submitted")}
    return {**_run_summary(run), **chunks, "settings": run["settings"], "errors": errors}


def _redacted(value: Any) -> Any:
    """Every string of a JSON value through the redaction of the configured secrets."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def ledger(store: StateStore, *, search: str | None = None, status: str | None = None,
           limit: int = 100) -> list[dict[str, Any]]:
    """Ledger entries by Message-ID or recipient; a claim whose sender died is shown (and recorded) uncertain."""
    from ..state import holder_alive

    if status is not None and status not in LEDGER_STATUSES:
        raise BadRequest(f"unknown ledger status {status!r}", hint=f"one of: {', '.join(LEDGER_STATUSES)}")
    for entry in store.ledger_entries(status="claimed", limit=10000):
        if entry.holder and not holder_alive(store, entry.holder):
            store.abandon(entry.message_id, holder=entry.holder)
    out = []
    for e in store.ledger_entries(status=status, search=search or None, limit=limit):
        row = asdict(e)
        row["claimed_at"] = _when(e.claimed_at)
        row["settled_at"] = _when(e.settled_at) if e.settled_at is not None else None
        out.append(row)
    return out


def resolve_uncertain(store: StateStore, message_id: str, *, sent: bool) -> dict[str, Any]:
    """What ``mailconnector ledger resolve`` does, from a button."""
    mid = message_id.strip()
    if not mid.startswith("<"):
        mid = f"<{mid}>"
    before = store.ledger_entry(mid)
    if before is None:
        raise NotFound(f"{mid} is not in the send ledger", hint="search the ledger for it first")
    if before.status != "uncertain":
        raise Conflict(f"{mid} is {before.status}, not uncertain: only an uncertain send can be resolved",
                         hint="a claimed message is being sent right now; a sent one needs no resolving")
    after = store.resolve(mid, sent=sent, note="resolved in the console: " + ("sent" if sent else "not sent"))
    return {"message_id": mid, "status": after.status if after else "not_sent"}


def health(store: StateStore, *, now: float | None = None) -> list[dict[str, Any]]:
    """Each consumer's lease with its last heartbeat and last poll; ``flag`` says why one needs a look."""
    now = time.time() if now is None else now
    out = []
    for lease in store.leases(ended_within=ENDED_SHOWN_FOR):
        kind, _, what = lease.name.partition(":")
        if lease.released_at is not None or (kind == "sender" and lease.expires_in <= 0):
            continue  # stopped on purpose, or a finished send run (the ledger shows what it left uncertain)
        out.append(_lease_view(lease, kind, what, now))
    return out


def _lease_view(lease: LeaseInfo, kind: str, what: str, now: float) -> dict[str, Any]:
    flag = None
    if lease.expires_in <= 0:
        flag = "silent: its holder stopped renewing the lease without giving it back (killed, or the machine is " \
               "gone); another run can take it over now"
    elif lease.poll_due is not None and now > lease.poll_due + POLL_GRACE:
        flag = "stuck: alive (heartbeat) but it has not looked for new mail since " + _when(lease.polled_at or 0)
    return {"name": lease.name, "kind": {"read": "reader"}.get(kind, kind), "what": what or lease.name,
            "holder": lease.holder, "state": "ended" if lease.expires_in <= 0 else "held",
            "last_heartbeat": _when(lease.renewed_at), "seconds_since_heartbeat": round(now - lease.renewed_at, 1),
            "last_poll": _when(lease.polled_at) if lease.polled_at else None,
            "seconds_since_poll": round(now - lease.polled_at, 1) if lease.polled_at else None,
            "expires_in": round(lease.expires_in, 1), "flag": flag}


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(epoch))

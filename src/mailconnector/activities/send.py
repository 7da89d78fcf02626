"""Send Email: a target that takes records and sends each as one email over SMTP.

- At most ``concurrency`` SMTP connections, each reused for many messages (PIPELINING where offered; a
  reconnect when the server closed one). ``concurrency + 1`` worker threads share them, taking one only
  to talk to the server, so composing the next message overlaps with the server's work on the current
  one. An optional ``rate_limit`` and the connection's sending limits are shared by all, and by every other
  process sending as the same account (``_pace.py``).
- Temporary failures (421, 450, 451, 452, a drop before the data was accepted) are retried with
  exponential backoff and jitter (a connection kept from an earlier message that turns out closed is
  replaced at once, without a backoff); permanent ones are not. After a refused login no other login
  is tried: every remaining record fails with that error.
- Nothing is sent twice, across processes and kills: the Message-ID is claimed in the send ledger (one
  atomic, durable insert naming this sender) while the server answers MAIL, RCPT and DATA, before any of
  the data and its final dot go out. The server's answer settles the claim (``sent``/``partial``; a
  refusal releases it so that a rerun sends it); a drop after the final dot, or a claim left by a sender
  that died, is ``uncertain`` and is never sent again automatically (``mailconnector ledger`` resolves it).
  A record without ``message_id`` gets a deterministic Message-ID from its ``id``, or, when the caller
  gives a ``batch_key``, from its content and occurrence in the input (``_record_keys``); otherwise a
  random one. A new ``batch_key`` makes new Message-IDs: the way to send the same records again on purpose.
- A bad record fails alone, with an error naming the record and the field; the others are still sent.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._backoff import Backoff
from ..connection import Connection
from ..errors import (
    AuthenticationError,
    MailConnectorError,
    MessageError,
    RecipientsRefusedError,
    ServerResponseError,
    StateError,
    TransportError,
)
from ..logs import in_this_run
from ..mime.compose import ComposedMessage, PathPolicy, compose
from ..records.send import (
    ErrorInfo,
    RecipientResult,
    SendDefaults,
    SendRequest,
    SendResponse,
    apply_defaults,
    parse_send_request,
)
from ..smtp import MayHaveBeenDelivered, NotCommitted, SmtpSession, TransactionResult
from ..state import LedgerEntry, SenderIdentity, StateStore, holder_alive
from ._pace import Pace, throttled
from ._record_keys import RecordKeys
from ._send_pool import _finished, _Interrupted, _SessionPool, _Stopped, _Turn, _Turns, _wait_some
from ._sent_copy import SentCopies

__all__ = ["SendEmail", "SendSettings", "derive_message_id"]

log = logging.getLogger("mailconnector.send")

_TEMPORARY = {421, 450, 451, 452}
# A record: a mapping (validated here), a validated request, or an input error standing in its place.
Record = Mapping[str, Any] | SendRequest | MailConnectorError


class SendSettings(BaseModel):
    """The Send Email activity's settings (SPEC section 2)."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(4, ge=1, le=64, description="SMTP connections used in parallel")
    rate_limit: float | None = Field(None, gt=0, description="messages per second, across all connections")
    retries: int = Field(3, ge=0, le=20, description="extra attempts after a temporary failure")
    backoff: float = Field(1.0, ge=0, le=60, description="first retry delay in seconds; doubles, with jitter")
    max_backoff: float = Field(30.0, ge=0, le=600)
    dry_run: Path | None = Field(None, description="write each message as .eml here instead of sending")
    defaults: SendDefaults | None = Field(None, description="a default for any record field")
    attachment_dirs: list[Path] = Field(
        default_factory=list,
        description="directories besides the project directory that attachment and template files may be read "
                    "from (relative to the project directory); a record naming any other file fails")
    save_to_sent: bool = Field(
        False, description="after the server accepted a message, put a copy (flagged \\Seen) into the Sent folder "
                           "over IMAP (the connection's sent_folder, else the one marked \\Sent), for servers that "
                           "do not file submitted mail themselves; a failed copy is logged and never fails the send")


class SendEmail:
    """The Send Email activity. ``for response in SendEmail(conn).send(records): ...``.

    Responses come as the messages finish (not in input order; each carries its ``index``).
    """

    def __init__(self, connection: Connection, settings: SendSettings | None = None, *,
                 store: StateStore | None = None, base_dir: Path | None = None, allow_files: Iterable[Path] = (),
                 **overrides: Any) -> None:
        base = settings.model_dump() if settings else {}
        self.settings = SendSettings.model_validate({**base, **overrides})
        self.connection = connection
        self.store = store
        self.base_dir = base_dir
        # Files a record may read: inside the project directory (the current one without a project) or
        # attachment_dirs, plus ``allow_files`` (what a person named on the command line).
        root = base_dir if base_dir is not None else Path.cwd()
        self.paths = PathPolicy.of([root, *(root / d for d in self.settings.attachment_dirs)], allow_files)
        self._pool = _SessionPool(connection, self.settings.concurrency)
        self._claimed: set[str] = set()
        self._claim_lock = threading.Lock()
        # Who claims Message-IDs in the ledger: kept alive by a lease, so a claim it leaves when killed
        # is known to be abandoned.
        self._identity = SenderIdentity(store) if store is not None else None
        self._pace = Pace(connection, self.settings.rate_limit, store)
        self._stop = threading.Event()
        self._sent_copies = SentCopies(connection) if self.settings.save_to_sent else None

    # ------------------------------------------------------------------ API
    def send(self, records: Iterable[Record], *, batch_key: str | None = None, input_key: str | None = None,
             stop: threading.Event | None = None) -> Iterator[SendResponse]:
        """Send every record; yield one response per record as it finishes. Memory stays flat: at most
        ``2 × (concurrency + 1)`` records are in flight, ``concurrency + 1`` of them composed.

        ``batch_key`` (``""`` is a key too) asks for Message-IDs derived from each record's content, so a
        rerun of the same records sends none twice; a record's own ``message_id`` always wins.
        ``input_key`` is its former name.

        ``stop`` (set by a signal handler, say) ends the run within moments: no new record is started, a
        record waiting for a retry or for the rate limit is given up (no response: it was not sent), and
        the transactions under way finish, so every message a server accepted has its response."""
        # One thread more than connections: while every connection waits for the server, one message is
        # being composed, so a connection never waits for the CPU work of its next message.
        workers = self.settings.concurrency + 1
        in_flight: set[Future[SendResponse]] = set()
        turns = _Turns()
        batch = batch_key if batch_key is not None else input_key
        keys = RecordKeys() if batch is not None else None
        self._stop = stop or threading.Event()
        try:
            one = in_this_run(self._one)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mc-send") as pool:
                try:
                    for index, record in enumerate(records):
                        if self._stop.is_set():
                            break
                        key = None if keys is None else _Key(batch or "", "" if _named(record) else keys.key(record))
                        in_flight.add(pool.submit(one, index, record, key, turns.ticket(index)))
                        if len(in_flight) >= workers * 2:
                            done, in_flight = _wait_some(in_flight, self._stop)
                            yield from _finished(done)
                    while in_flight:
                        done, in_flight = _wait_some(in_flight, self._stop)
                        if self._stop.is_set():
                            turns.open()  # the order no longer matters: only finishing what is under way
                        yield from _finished(done)
                finally:
                    for f in in_flight:
                        f.cancel()
                    turns.open()  # a record waiting for a cancelled one's turn must not wait for ever
        finally:  # also when the consumer stops early: no connection is left open
            self.close()

    def send_one(self, record: Record) -> SendResponse:
        try:
            return self._one(0, record, None)
        finally:
            self.close()

    def close(self) -> None:
        self._pool.close()
        if self._sent_copies is not None:
            self._sent_copies.close()
        if self._identity is not None:
            self._identity.stop()

    # --------------------------------------------------------------- worker
    def _one(self, index: int, record: Record, key: _Key | None, turn: _Turn | None = None) -> SendResponse:
        started = time.perf_counter()
        try:
            return self._one_record(index, record, key, started, turn)
        except (StateError, _Interrupted):
            raise  # the send ledger is unusable: going on would risk sending twice; or the run was stopped
        except MailConnectorError as exc:  # e.g. a connection without smtp settings: every record says so
            return self._response(index, _record_id(record), "", "failed", started,
                                  error=_error_info(exc, index, _record_id(record)))
        except Exception as exc:  # a bug or an unforeseen error fails this record, not the whole run
            log.error("record %d: unexpected %s", index, type(exc).__name__, exc_info=True)
            error = ErrorInfo.from_exception(exc)
            error = error.model_copy(update={"message": f"record {index}: {error.message}"})
            return self._response(index, _record_id(record), "", "failed", started, error=error)
        finally:
            if turn is not None:
                turn.pass_()  # a record that never took a connection must not hold up the next ones

    def _one_record(self, index: int, record: Record, key: _Key | None, started: float,
                    turn: _Turn | None) -> SendResponse:
        rid: str | None = None
        message_id = ""
        try:
            if isinstance(record, MailConnectorError):  # a line of the input that could not be read
                raise record
            request = record if isinstance(record, SendRequest) else parse_send_request(record, index=index)
            rid = request.id
            request = apply_defaults(request, self.settings.defaults)
            if request.message_id is None:
                request = request.model_copy(update={"message_id": self._derived_id(request, key)})
            composed = compose(request, default_from=self.connection.from_address, base_dir=self.base_dir,
                               paths=self.paths)
            message_id = composed.message_id
        except MailConnectorError as exc:
            if isinstance(record, Mapping) and rid is None:
                raw_id = record.get("id")
                rid = str(raw_id) if raw_id is not None else None
            return self._response(index, rid, message_id, "failed", started, error=_error_info(exc, index, rid))
        if self.settings.dry_run is not None:
            return self._dry_run(index, rid, composed, started)
        refusal = self._precheck(message_id)
        if refusal is not None:
            return self._refused(index, rid, message_id, started, *refusal)
        return self._deliver(index, rid, composed, started, turn)

    def _derived_id(self, request: SendRequest, key: _Key | None) -> str | None:
        """A stable Message-ID for a rerun of the same record; None leaves generation to the composer. It
        depends on the sending account, not on the connection's name, so a rename does not send again."""
        account = self.connection.account
        batch = key.batch if key is not None else ""
        if request.id is not None:
            seed = f"id:{account}:{request.id}" if not batch else f"id:{account}:{batch}\0{request.id}"
        elif key is not None:
            seed = f"rec:{account}:{batch}\0{key.record}"
        else:
            return None
        return derive_message_id(seed, request.from_ or self.connection.from_address or account)

    # ------------------------------------------------------------------ ledger
    def _precheck(self, message_id: str) -> tuple[str, str, str | None] | None:
        """None when this run may go on to send ``message_id``; otherwise (status, why, hint). The claim
        itself is made later, as the transaction starts (``_commit``); this only spares a connection."""
        with self._claim_lock:
            if message_id in self._claimed:
                return "skipped_duplicate", "this message_id was already taken by an earlier record of this run", None
            self._claimed.add(message_id)
        if self.store is None:
            return None
        entry = self.store.ledger_entry(message_id)
        return None if entry is None else self._why_not(entry)

    def _why_not(self, entry: LedgerEntry) -> tuple[str, str, str | None] | None:
        """Why a Message-ID found in the ledger is not sent by this run (None: it vanished, send it)."""
        assert self.store is not None and self._identity is not None
        for _ in range(3):
            if entry.status in ("sent", "partial"):
                return "skipped_duplicate", f"this message_id was already sent (send ledger: {entry.status})", (
                    "give the record a new message_id (or id) to send it again")
            if entry.status == "uncertain":
                return "uncertain", _UNCERTAIN, _UNCERTAIN_HINT
            holder = entry.holder or ""
            if holder == self._identity.holder:
                return "skipped_duplicate", "this message_id was already taken by an earlier record of this run", None
            if holder_alive(self.store, holder):
                return "skipped_duplicate", f"another sender ({holder}) is sending this message_id right now", (
                    "if that sender fails to send it, it releases it and a rerun sends it")
            self.store.abandon(entry.message_id, holder=holder)  # its sender died holding it
            fresh = self.store.ledger_entry(entry.message_id)
            if fresh is None:
                return None
            entry = fresh
        return "uncertain", _UNCERTAIN, _UNCERTAIN_HINT

    def _commit(self, composed: ComposedMessage) -> bool:
        """As the transaction starts: claim the Message-ID (atomic, durable) or give the transaction up."""
        if self.store is None or self._identity is None:
            return True
        self._identity.ensure()
        claim = self.store.claim(composed.message_id, connection=self.connection.name,
                                 holder=self._identity.holder, recipients=list(composed.recipients))
        return claim.granted

    def _settle(self, message_id: str, status: Literal["sent", "partial", "uncertain"],
                accepted: list[str], note: str | None = None) -> None:
        if self.store is not None and self._identity is not None:
            self.store.settle(message_id, holder=self._identity.holder, status=status, accepted=accepted, note=note)

    def _release(self, message_id: str) -> None:
        if self.store is not None and self._identity is not None:
            self.store.release(message_id, holder=self._identity.holder)

    def _attempt(self, composed: ComposedMessage, data: bytes,
                 turn: _Turn | None) -> tuple[TransactionResult | None, MailConnectorError | None, bool]:
        """One transaction on a pooled connection: (result, or the error, and whether the connection had
        been used before). The connection goes back to the pool unless the error makes it unusable."""
        session: SmtpSession | None = None
        reused = keep = False
        try:
            session, reused = self._pool.acquire(turn)
            result = session.send(composed.envelope_from, composed.recipients, data,
                                  smtputf8=composed.needs_smtputf8, crlf=True,
                                  commit=lambda: self._commit(composed))
            keep = True
            return result, None, reused
        except ServerResponseError as exc:  # the transaction was reset; 421 means the server is closing
            keep = exc.code != 421
            return None, exc, reused
        except (AuthenticationError, TransportError) as exc:  # includes MayHaveBeenDelivered
            return None, exc, reused
        finally:
            if session is not None:
                self._pool.release(session, keep=keep)

    def _deliver(self, index: int, rid: str | None, composed: ComposedMessage, started: float,
                 turn: _Turn | None) -> SendResponse:
        data = composed.as_bytes()
        attempts = 0
        failures = 0
        stale_retried = False
        backoff = Backoff(self.settings.backoff, self.settings.max_backoff, jitter=True)
        try:
            self._pace.check_recipients(len(composed.recipients))
        except MailConnectorError as over:  # past the account's limits: not sent (nothing was claimed)
            return self._failed(index, rid, composed, started, over, attempts)
        while True:
            if self._pool.auth_failure is not None:
                return self._failed(index, rid, composed, started, self._pool.auth_failure, attempts)
            if self._stop.is_set():
                raise _Interrupted
            if self._pace.wait(self._stop):
                raise _Interrupted
            try:
                result, exc, reused = self._attempt(composed, data, turn)
            except _Stopped as stopped:  # another worker's login was refused meanwhile: no attempt made
                return self._failed(index, rid, composed, started, stopped.error, attempts)
            attempts += 1
            if isinstance(exc, NotCommitted):  # another sender claimed it after our look
                entry = self.store.ledger_entry(composed.message_id) if self.store is not None else None
                refusal = self._why_not(entry) if entry is not None else None
                if refusal is None:
                    continue
                return self._refused(index, rid, composed.message_id, started, *refusal)
            if isinstance(exc, MayHaveBeenDelivered):  # at most once: a rerun must not send it again
                self._settle(composed.message_id, "uncertain", [], note=exc.message)
                return self._failed(index, rid, composed, started, exc, attempts, status="uncertain")
            if exc is not None:
                self._release(composed.message_id)  # nothing was accepted: a retry or a rerun sends it
            if isinstance(exc, AuthenticationError):  # never retried; the pool stops every other login
                return self._failed(index, rid, composed, started, exc, attempts)
            if exc is not None:
                temporary = (isinstance(exc, TransportError) and exc.retryable) or (
                    isinstance(exc, ServerResponseError) and exc.code in _TEMPORARY)
                if temporary and reused and isinstance(exc, TransportError) and not stale_retried:
                    # A kept connection the server closed while it was idle: reconnect at once, without
                    # spending a retry or a backoff on it (nothing of this message had been accepted).
                    stale_retried = True
                    log.debug("record %d: kept connection was lost (%s); reconnecting", index, exc.message)
                    continue
                failures += 1
                if not temporary or failures > self.settings.retries:
                    refused = exc.refused if isinstance(exc, RecipientsRefusedError) else {}
                    return self._failed(index, rid, composed, started, exc, attempts, refused=refused)
                pause = backoff.next()
                if throttled(exc):  # the server asks this account to slow down: every sender of it waits
                    self._pace.slow_down(pause)
                log.info("record %d: temporary failure (%s); retry %d in %.2f s", index, exc.message, failures,
                         pause)
                if self._stop.wait(pause):  # holding no connection
                    raise _Interrupted
                continue
            assert result is not None
            status: Literal["sent", "partial"] = "partial" if result.refused else "sent"
            self._settle(composed.message_id, status, result.accepted)
            response = self._response(
                index, rid, composed.message_id, status, started, attempts=attempts, accepted=result.accepted,
                refused=[RecipientResult(address=a, code=c, text=t) for a, (c, t) in result.refused.items()],
            )
            if self._sent_copies is None:
                return response
            saved = self._sent_copies.save(data, composed.message_id)  # never raises: the message is sent
            return response.model_copy(update={"saved_to_sent": saved})

    def _failed(self, index: int, rid: str | None, composed: ComposedMessage, started: float,
                exc: MailConnectorError, attempts: int, *, status: str = "failed",
                refused: dict[str, tuple[int, str]] | None = None) -> SendResponse:
        return self._response(
            index, rid, composed.message_id, status, started, attempts=attempts,
            error=_error_info(exc, index, rid),
            refused=[RecipientResult(address=a, code=c, text=t) for a, (c, t) in (refused or {}).items()],
        )

    def _refused(self, index: int, rid: str | None, message_id: str, started: float, status: str, why: str,
                 hint: str | None) -> SendResponse:
        kind = "Uncertain" if status == "uncertain" else "Duplicate"
        return self._response(index, rid, message_id, status, started,
                              error=ErrorInfo(type=kind, retryable=False, message=why, hint=hint))

    def _dry_run(self, index: int, rid: str | None, composed: ComposedMessage, started: float) -> SendResponse:
        directory = self.settings.dry_run
        assert directory is not None
        directory.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", composed.message_id.strip("<>"))[:80]
        path = directory / f"{index:06d}-{stem}.eml"
        path.write_bytes(composed.as_bytes())
        return self._response(index, rid, composed.message_id, "dry_run", started, eml_path=str(path),
                              accepted=list(composed.recipients))

    @staticmethod
    def _response(index: int, rid: str | None, message_id: str, status: str, started: float, *,
                  attempts: int = 0, accepted: list[str] | None = None,
                  refused: list[RecipientResult] | None = None, error: ErrorInfo | None = None,
                  eml_path: str | None = None) -> SendResponse:
        return SendResponse.model_validate({
            "id": rid, "index": index, "message_id": message_id, "status": status,
            "accepted": accepted or [], "refused": refused or [], "error": error, "attempts": attempts,
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 2), "eml_path": eml_path,
        })


@dataclass(frozen=True)
class _Key:
    """What a derived Message-ID is made of: the caller's batch key and the record's identity."""

    batch: str
    record: str


def _named(record: Record) -> bool:
    """Whether a record names itself (``message_id`` or ``id``), so that its content need not be hashed. Equal
    records name themselves equally, so leaving these out changes no other record's occurrence count."""
    if isinstance(record, MailConnectorError):
        return True
    if isinstance(record, SendRequest):
        return record.message_id is not None or record.id is not None
    return any(record.get(k) not in (None, "") for k in ("message_id", "id"))


def _record_id(record: Record) -> str | None:
    if isinstance(record, SendRequest):
        return record.id
    if isinstance(record, Mapping) and record.get("id") is not None:
        return str(record.get("id"))
    return None


def _error_info(exc: MailConnectorError, index: int, rid: str | None) -> ErrorInfo:
    message = exc.message
    if isinstance(exc, MessageError) and not message.startswith("record "):
        message = f"record {rid!r}: {message}" if rid is not None else f"record {index}: {message}"
    return ErrorInfo(
        type=exc.kind, message=message, retryable=exc.retryable,
        code=getattr(exc, "code", None) or None, field=getattr(exc, "field", None), hint=exc.hint,
        topic=exc.topic,
    )


_UNCERTAIN = ("an earlier attempt may have delivered this message (the connection was lost, or its sender was "
              "stopped, after the message data was sent), so it is not sent again")
_UNCERTAIN_HINT = ("check the recipient's mailbox, then settle it in the send ledger (ledger resolve, or the "
                   "console's ledger page): if it did not arrive, the next run sends it")


def derive_message_id(seed: str, sender: str) -> str:
    """A Message-ID that is the same whenever ``seed`` is: the ledger's key for a rerun of the same input.
    Its domain is the sender's (IDNA, only the characters a Message-ID may hold) or ``localhost``."""
    digest = hashlib.sha256(seed.encode()).hexdigest()[:32]
    domain = sender.rsplit("@", 1)[-1].strip(" <>") if "@" in sender else ""
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if domain else ""
    except UnicodeError:  # not a valid IDN: the id only needs to be unique and well formed
        ascii_domain = ""
    return f"<{digest}@{re.sub(r'[^A-Za-z0-9.-]', '', ascii_domain).strip('.') or 'localhost'}>"

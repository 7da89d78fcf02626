"""Read Email: a source that yields unread email from one IMAP folder as records, each with an ack.

Nothing lost, nothing twice (the commit/ack protocol of DESIGN.md):
- messages are fetched with ``BODY.PEEK[]``, so reading marks nothing;
- only ``item.ack()`` acts: it first records the message as delivered in the store (account, folder,
  UIDVALIDITY, UID, Message-ID and the after-read action asked for; one write per ack), then, once per
  fetch batch and always before the activity closes, the checkpoint (UIDVALIDITY, last UID) moves — synced
  to disk, and every ack with it — and only then is the action (mark read, move, delete) applied on the
  server and recorded as done;
- a message that was recorded as delivered but whose action did not reach the server (a crash between the
  two) is not yielded again: the next run only completes *its* action (never its own action, so mail read
  with ``keep_unread`` is not marked or deleted by a later ``mark_read`` or ``delete`` run);
- state is keyed by the mailbox (IMAP host, port, user) and the folder, INBOX in any case being INBOX, and
  one consumer at a time holds the folder's lease; every ack, checkpoint and action is fenced by it, so a
  consumer that lost the lease (paused, cut off) acknowledges nothing more;
- ``keep_unread`` relies on the store alone; a changed UIDVALIDITY falls back to Message-IDs, so a
  recreated folder neither loses nor repeats a message that has one.

Speed and memory: one thread; the next batch is asked for before the current one is parsed, so the server
sends it meanwhile. A fetch batch holds at most ``batch_size`` messages and ``BATCH_BYTES`` (sizes are asked
first), so memory does not grow with the folder; a message is let go as soon as its record is made.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .._backoff import Backoff
from .._validation import config_error_from_validation
from ..connection import Connection
from ..errors import ConfigError, TransportError
from ..imap import FetchAhead, FetchedMessage, FolderState, ImapSession
from ..mime._parse_decode import Defects
from ..mime._parse_fields import parse_msg_id
from ..mime.parse import parse_message
from ..records.read import ParseOptions, ReadRecord
from ..state import (
    Fence,
    LeaseKeeper,
    StateStore,
    account_key,
    lease_busy_error,
    normalize_folder,
)
from ._read_settings import ReadSettings
from ._search import Criteria

__all__ = ["Criteria", "ReadEmail", "ReadItem", "ReadSettings", "record_json"]

log = logging.getLogger("mailconnector.read")

BATCH_BYTES = 16 * 1024 * 1024  # most bytes one fetch brings in (a single bigger message comes alone)


@dataclass
class ReadItem:
    """One email as a record, with the handle that makes it count as delivered."""

    record: ReadRecord
    uid: int
    _activity: ReadEmail = field(repr=False)
    acked: bool = False

    def ack(self) -> None:
        """The record was taken downstream: remember it, then mark/move/delete the email (batched)."""
        if not self.acked:
            self._activity._ack(self)
            self.acked = True


class ReadEmail:
    """The Read Email activity: ``with ReadEmail(conn, settings, store=store) as reader: for item in reader: ...``.

    Without a store (``store=None``) the activity keeps no checkpoint: only the server's flags protect
    against repeats, and ``keep_unread`` then repeats every message on every run.
    """

    def __init__(self, connection: Connection, settings: ReadSettings | None = None, *,
                 store: StateStore | None = None, session: ImapSession | None = None,
                 lease: LeaseKeeper | None = None, lease_seconds: float = 60.0, **overrides: Any) -> None:
        base = settings.model_dump(by_alias=True) if settings else {}
        try:
            self.settings = ReadSettings.model_validate({**base, **overrides})
        except ValidationError as exc:  # a caller's bad setting (a search that does not parse): the package's error
            raise config_error_from_validation(exc) from None
        self.settings.check()
        self.connection = connection
        self.store = None if self.settings.peek else store  # a peek records nothing
        self.folder = normalize_folder(self.settings.folder)
        # The folder's lease: held by the caller (an operation, a watch) or taken here when opened.
        self.lease = lease
        self.lease_seconds = lease_seconds
        self._own_lease: LeaseKeeper | None = None
        self._session = session
        self._state: FolderState | None = None
        self._pending: list[int] = []
        self._last_acked = self._checkpointed = 0
        self._existing: set[str] | None = None
        # A fetch asked for and not read yet; the connection is used by one thread at a time (reading, or
        # closing from another one).
        self._ahead: FetchAhead | None = None
        self._io = threading.Lock()
        self.total: int | None = None
        self.yielded = 0
        self.acked = 0
        # Emails the search found that an earlier run already delivered (skipped unless include_delivered),
        # and when the latest of them was delivered: what a user who sees "0 read" needs to know.
        self.skipped_delivered = 0
        self.last_delivered_at: float | None = None

    # ------------------------------------------------------------- lifecycle
    def open(self) -> ReadEmail:
        if self.store is not None and self.lease is None and self._own_lease is None:
            keeper = LeaseKeeper(self.store, self.lease_name, self.lease_seconds)
            if not keeper.take():
                raise lease_busy_error(self.store, self.lease_name)
            self._own_lease = self.lease = keeper
        try:
            if self._session is None:
                self._session = ImapSession(self.connection)
            if not self._session._client:
                self._session.connect()
            self._state = self._select()
        except BaseException:
            self._release_own_lease()  # a reader that never opened holds no folder
            raise
        return self

    def _select(self) -> FolderState:
        assert self._session is not None
        state = self._session.select(self.settings.folder, readonly=self.settings.peek)
        target = self.settings.move_to
        if target and not self._session.folder_exists(target):  # once per connection, not per message
            if not self.settings.create_missing:
                raise ConfigError(f"folder {target!r} for after_read does not exist", field="after_read",
                                  topic="folder-missing",
                                  hint="create it on the server, or set create_missing: true on the activity")
            try:
                made = self._session.ensure_folder(target)
            except ConfigError as exc:  # a name no server should be asked to create
                raise ConfigError(exc.message.split(": ", 1)[-1], field="after_read", hint=exc.hint) from None
            for name in made:
                log.info("created folder %r for after_read", name)
        return state

    def close(self) -> None:
        try:
            if self._session is not None and self._session._client is not None:
                self._forget()
                self.flush()
        finally:
            with self._io:  # not under a fetch still running for an abandoned iteration
                if self._session is not None:
                    self._session.close()
            self._release_own_lease()

    def _release_own_lease(self) -> None:
        if self._own_lease is not None:
            self._own_lease.stop()
            self._own_lease = self.lease = None

    def __enter__(self) -> ReadEmail:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def account(self) -> str:
        """The mailbox this reads (the store's key): not the connection's name, which may change."""
        imap = self.connection.imap
        if imap is None:
            return f"connection:{self.connection.name}"
        return account_key(imap.host, imap.port, self.connection.auth.username)

    @property
    def lease_name(self) -> str:
        return f"read:{self.account}/{self.folder}"

    @property
    def fence(self) -> Fence | None:
        return self.lease.fence if self.lease is not None else None

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    # -------------------------------------------------------------- iterate
    def __iter__(self) -> Iterator[ReadItem]:
        return self.items()

    def items(self) -> Iterator[ReadItem]:
        if self._session is None or self._state is None:
            self.open()
        uids = self._candidates()
        if self.settings.limit is not None:
            uids = uids[: self.settings.limit]
        self.total = len(uids)
        batches = self._batches(uids)
        if not batches:
            return
        # One thread. The next batch is asked for before this one is parsed, so the server sends it (into the
        # socket's buffers) while we parse, write and acknowledge: its work overlaps ours without a second
        # thread of ours, whose every hand-off of the interpreter lock cost more than it saved.
        self._ask(batches[0])
        try:
            for number, batch in enumerate(batches):
                messages = self._fetch_with_retry(batch)
                self.flush()  # every ack of the batch before is in: apply their after-read action
                if number + 1 < len(batches):
                    self._ask(batches[number + 1])
                messages.reverse()
                while messages:
                    msg = messages.pop()  # not held once parsed: the raw bytes go as soon as they can
                    self._check_lease()  # a consumer that lost the folder writes no more attachments
                    record = self._record(msg)
                    uid = msg.uid
                    del msg
                    self.yielded += 1
                    yield ReadItem(record, uid, self)
                    del record
            self.flush()
        finally:
            self._forget()  # abandoned with a batch on its way: read it, so the connection stays usable

    def records(self) -> Iterator[ReadRecord]:
        """Each record, acked as soon as the caller asks for the next one (for simple scripts)."""
        for item in self.items():
            yield item.record
            item.ack()

    def _batches(self, uids: list[int]) -> list[list[int]]:
        """At most ``batch_size`` messages and ``BATCH_BYTES`` per fetch (a bigger message goes alone), so
        that memory is bounded by the batch whatever the messages' sizes."""
        if not uids:
            return []
        assert self._session is not None
        sizes = self._session.fetch_sizes(uids)
        batches: list[list[int]] = []
        batch: list[int] = []
        total = 0
        for uid in uids:
            size = sizes.get(uid, 0)
            if batch and (len(batch) >= self.settings.batch_size or total + size > BATCH_BYTES):
                batches.append(batch)
                batch, total = [], 0
            batch.append(uid)
            total += size
        batches.append(batch)
        return batches

    def _candidates(self) -> list[int]:
        assert self._session is not None and self._state is not None
        s = self.settings
        search, charset = s.criteria.to_imap(unread=not s.include_read)
        uids = self._session.search(search, charset=charset)
        if self.store is None:
            return uids
        state = self._state
        cp = self.store.checkpoint(self.account, self.folder)
        if cp is None and self.store.adopt_account(f"connection:{self.connection.name}", s.folder,
                                                   self.account, self.folder):
            log.info("folder %s: adopted the read state a first-release store kept for connection %s",
                     s.folder, self.connection.name)
            cp = self.store.checkpoint(self.account, self.folder)
        if cp is None or cp.uidvalidity != state.uidvalidity:
            if cp is not None:
                log.warning("folder %s: UIDVALIDITY changed from %s to %s (the folder was recreated); matching "
                            "delivered messages by Message-ID", s.folder, cp.uidvalidity, state.uidvalidity)
            uids = self._match_earlier_deliveries(uids)
        delivered = self.store.delivered(self.account, self.folder, state.uidvalidity)
        if s.include_delivered:  # read them again: each is delivered anew, with this run's action
            return uids
        pending: dict[str, list[int]] = {}
        for uid in uids:
            entry = delivered.get(uid)
            if entry is not None and not entry.done:
                pending.setdefault(entry.action, []).append(uid)
        for action, redo in pending.items():
            # Delivered before, but the action asked for then never reached the server: finish that
            # action (not this run's), and do not deliver them again.
            log.info("completing the after-read action (%s) of %d message(s) delivered in an earlier run",
                     action, len(redo))
            self._apply(redo, action)
        earlier = [delivered[u] for u in uids if u in delivered]
        if earlier:
            self.skipped_delivered = len(earlier)
            self.last_delivered_at = max(d.delivered_at or 0.0 for d in earlier) or None
            log.info("%d message(s) matching the search were already delivered by an earlier run: not read again "
                     "(include_delivered reads them again)", len(earlier))
        return [u for u in uids if u not in delivered]

    def _match_earlier_deliveries(self, uids: list[int]) -> list[int]:
        """Set the checkpoint to the folder's UIDVALIDITY. When it changed (or a run that delivered
        messages died before the checkpoint was written), drop the messages delivered before, by
        Message-ID, recording them as delivered under the new UIDVALIDITY -- in one transaction."""
        assert self._session is not None and self.store is not None
        seen = self.store.delivered_message_ids(self.account, self.folder)
        keep: list[int] = []
        matches: list[tuple[int, str | None]] = []
        if seen and uids:
            fields = self._session.fetch_header(uids, "Message-ID")
            for uid in uids:
                mid = _message_id(fields.get(uid, b""))
                if mid is not None and mid in seen:
                    matches.append((uid, mid))
                else:
                    keep.append(uid)
        else:
            keep = uids
        self.store.adopt_delivered(self.account, self.folder, self._uidvalidity(), matches, self.fence)
        return keep

    def _uidvalidity(self) -> int:
        assert self._state is not None
        return self._state.uidvalidity

    def _ask(self, batch: Sequence[int]) -> None:
        """Ask for a batch ahead. If that fails, the fetch asks again, reconnecting."""
        assert self._session is not None
        with self._io:
            try:
                self._ahead = self._session.ask_fetch(batch)
            except TransportError as exc:
                log.warning("asking for the next messages failed (%s); will reconnect", exc.message)

    def _forget(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is None or self._session is None:
            return
        with self._io:
            try:
                self._session.forget_fetch(ahead)
            except TransportError as exc:  # the session is closed next anyway
                log.debug("dropping the answer to a fetch nobody took failed: %s", exc.message)

    def _fetch_with_retry(self, batch: Sequence[int]) -> list[FetchedMessage]:
        """The batch, from the fetch asked for ahead if there is one; reconnecting up to three times."""
        assert self._session is not None
        backoff = Backoff(0.5, 4.0)
        with self._io:
            ahead, self._ahead = self._ahead, None
            for attempt in range(1, 5):
                try:
                    return self._session.take_fetch(ahead or self._session.ask_fetch(batch))
                except TransportError as exc:
                    ahead = None
                    if attempt == 4:
                        raise
                    log.warning("fetch failed (%s); reconnecting (attempt %d of 3)", exc.message, attempt)
                    time.sleep(backoff.next())
                    self._reconnect()
        return []

    def _reconnect(self) -> None:
        assert self._session is not None
        self._session.close()
        self._session.connect()
        state = self._select()
        if state.uidvalidity != self._uidvalidity():  # the UIDs in hand now name other messages, or none
            raise TransportError("UIDVALIDITY changed while reading; run again to continue safely",
                                 hint="the folder was recreated during the run")
        self._state = state

    def _record(self, msg: FetchedMessage) -> ReadRecord:
        s = self.settings
        directory = raw_path = None
        if s.attachments == "directory" or (s.include_raw and s.directory is not None):
            assert s.directory is not None
            # A fresh sub-directory per message, made by the parser with the first attachment.
            directory = s.directory / f"{_slug(s.folder)}-{self._uidvalidity()}-{msg.uid}"
            if directory.name in self._earlier_directories():  # from an earlier delivery, never acked
                shutil.rmtree(directory, ignore_errors=True)
            if s.include_raw:  # written first, so that an attachment of the same name gets another one
                directory.mkdir(parents=True)
                raw_path = directory / "message.eml"
                raw_path.write_bytes(msg.raw)
        options = ParseOptions(attachments=s.attachments, directory=directory,
                               max_attachment_bytes=s.max_attachment_bytes,
                               include_raw=s.include_raw and directory is None)
        record = parse_message(msg.raw, options)
        record.uid = msg.uid
        record.uidvalidity = self._uidvalidity()
        record.folder = s.folder
        record.flags = list(msg.flags)
        record.size = msg.size
        record.received_at = msg.internal_date.isoformat() if msg.internal_date else None
        if raw_path is not None:
            record.raw_path = str(raw_path)
        return record

    def _earlier_directories(self) -> set[str]:
        """What the attachment directory held when this run began: listed once, so that a message costs
        no file system lookup (slow on some disks) to know whether an earlier delivery left files."""
        if self._existing is None:
            assert self.settings.directory is not None
            try:
                self._existing = {e.name for e in os.scandir(self.settings.directory) if e.is_dir()}
            except FileNotFoundError:
                self._existing = set()
        return self._existing

    # ------------------------------------------------------------------ ack
    def _ack(self, item: ReadItem) -> None:
        if self.store is not None:
            self.store.record_delivered(self.account, self.folder, self._uidvalidity(), item.uid,
                                        item.record.message_id, self.settings.after_read, self.fence)
        self.acked += 1
        self._last_acked = max(self._last_acked, item.uid)
        if self.settings.after_read != "keep_unread":
            self._pending.append(item.uid)

    def flush(self) -> None:
        """Apply the after-read action to every acknowledged message not yet acted on, and move the
        checkpoint (the delivered messages are already in the store: each ack wrote its own)."""
        if self.store is not None and self._state is not None and (
                self._last_acked > self._checkpointed or self._pending):
            # Durable, and with it every ack before it: no action reaches the server for an unrecorded ack.
            # Fenced too: a consumer that lost the folder stops here, leaving the actions to the new holder.
            self.store.move_checkpoint(self.account, self.folder, self._uidvalidity(), self._last_acked, self.fence)
            self._checkpointed = self._last_acked
        if not self._pending:
            return
        with self._io:
            uids, self._pending = self._pending, []
            try:
                try:
                    self._apply(uids, self.settings.after_read)
                except TransportError as exc:
                    log.warning("after-read action failed (%s); reconnecting once", exc.message)
                    self._reconnect()
                    self._apply(uids, self.settings.after_read)
            except TransportError:
                # With a store, the next run completes the action without delivering them again.
                log.warning("after-read action for %d message(s) not applied", len(uids))
                raise

    def _apply(self, uids: list[int], action: str) -> None:
        """Apply ``action`` to ``uids`` on the server, then record it as done (fenced by the lease)."""
        assert self._session is not None
        if action == "mark_read":
            self._session.add_flags(uids, ["\\Seen"])
        elif action == "delete":
            self._session.delete(uids)
        elif action.startswith("move:"):
            self._session.add_flags(uids, ["\\Seen"])  # read where it lands, as a mail client would
            self._session.move(uids, action[5:])
        if self.store is not None and action != "keep_unread":
            self.store.actions_done(self.account, self.folder, self._uidvalidity(), uids, self.fence)


def record_json(record: ReadRecord) -> bytes:
    """The record as one line of JSON, UTF-8 (what ``model_dump_json`` gives, without decoding it to text
    only for the output to encode it again: a record carries both bodies)."""
    return ReadRecord.__pydantic_serializer__.to_json(record)


def _message_id(field: bytes) -> str | None:
    """The Message-ID in a ``Message-ID: <...>`` header field, as the parser writes it."""
    if b":" not in field:
        return None
    return parse_msg_id(field.split(b":", 1)[1].decode("utf-8", "replace"), "", Defects())


def _slug(folder: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", folder).strip("._") or "folder"

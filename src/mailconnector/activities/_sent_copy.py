"""``save_to_sent``: a copy of each message the SMTP server accepted, APPENDed (flagged ``\\Seen``) to the
sender's Sent folder, for servers that do not file submitted mail themselves.

The copy is a courtesy, never part of sending: a failed APPEND leaves the message sent, is logged as a
warning and shows as ``saved_to_sent: false`` in its response; the message is never sent again because of
it. One IMAP connection serves a whole run, shared by the send workers one APPEND at a time. A failure that
would repeat for every message (a refused login, no Sent folder) stops the copies for the rest of the run
instead of trying, and failing, once per message.
"""

from __future__ import annotations

import logging
import threading

from ..connection import Connection
from ..errors import AuthenticationError, ConfigError, MailConnectorError, ServerResponseError, TransportError
from ..imap import ImapSession
from .reconcile import find_sent_folder

__all__ = ["SentCopies"]

log = logging.getLogger("mailconnector.send")


class SentCopies:
    """Saves sent messages into the connection's Sent folder (``sent_folder``, else the one marked \\Sent)."""

    def __init__(self, connection: Connection) -> None:
        if connection.imap is None:
            raise ConfigError(
                f"connection {connection.name!r} has no imap settings, and save_to_sent needs them to put a copy "
                "of each message into the Sent folder", field="save_to_sent",
                hint="add an imap block to the connection, or turn save_to_sent off")
        if connection.files_sent_mail:
            log.warning("connection %r: its server files sent mail into a Sent folder by itself "
                        "(server_files_sent), so save_to_sent adds a second copy of each message", connection.name)
        self.connection = connection
        self._lock = threading.Lock()
        self._session: ImapSession | None = None
        self._folder: str | None = connection.sent_folder
        self._given_up: MailConnectorError | None = None

    def save(self, data: bytes, message_id: str) -> bool:
        """APPEND ``data`` (the bytes the SMTP server accepted) with ``\\Seen``; False when no copy was made.
        Never raises: the message is sent whatever happens here."""
        with self._lock:
            if self._given_up is not None:
                log.debug("message %s: no copy saved to Sent (%s)", message_id, self._given_up.message)
                return False
            try:
                self._append(data)
                return True
            except (AuthenticationError, ConfigError) as exc:  # a missing folder too: all copies would fail
                self._stop(exc)
                log.warning("message %s was sent, but no copy could be saved to Sent: %s; no more copies are "
                            "tried in this run", message_id, exc.message)
            except ServerResponseError as exc:
                log.warning("message %s was sent, but the server refused its copy in %s: %s", message_id,
                            self._folder, exc.message)
            except MailConnectorError as exc:
                self._drop()
                log.warning("message %s was sent, but its copy could not be saved to Sent: %s", message_id,
                            exc.message)
            except Exception as exc:  # a bug here must not turn a sent message into a failed one
                self._drop()
                log.error("message %s was sent, but saving its copy to Sent failed unexpectedly: %s",
                          message_id, type(exc).__name__, exc_info=True)
            return False

    def _append(self, data: bytes) -> None:
        reused = self._session is not None
        session = self._connected()
        folder = self._folder = self._folder or find_sent_folder(session)
        try:
            session.append(folder, data, flags=["\\Seen"])
        except TransportError:
            self._drop()
            if not reused:
                raise
            # A kept connection the server closed while it was idle: once more on a new one.
            self._connected().append(folder, data, flags=["\\Seen"])

    def _connected(self) -> ImapSession:
        if self._session is None:
            self._session = ImapSession(self.connection).connect()
        return self._session

    def _stop(self, exc: MailConnectorError) -> None:
        self._given_up = exc
        self._drop()

    def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def close(self) -> None:
        """Log out; the next run starts afresh (and tries again after a failure that stopped this one)."""
        with self._lock:
            self._drop()
            self._given_up = None

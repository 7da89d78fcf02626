"""ImapSession: one IMAP connection over ``IMAPClient`` — connect, TLS, login, select, search, fetch, flag, move.

This is the one place where ``imapclient``/``imaplib``, ``ssl`` and ``socket`` exceptions become ours
(``_translate``). STARTTLS is required when the mode says so; a server that does not offer it is refused.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from imapclient import IMAPClient, SocketTimeout, exceptions as imap_exc

from ._imap_fetch import (
    FETCH_ITEMS,
    FetchAhead,
    FetchedMessage,
    parse_fetch,
    parse_fetch_slowly,
    uid_and_size,
    uid_sets,
)
from ._imap_folders import (
    SPECIAL_USE,
    FolderInfo as FolderInfo,
    FolderState as FolderState,
    check_folder_name as check_folder_name,
    folder_levels as folder_levels,
    folder_must_exist,
    folder_order,
)
from ._imap_lib import (
    Client,
    authenticate,
    clean as _clean,
    during_tcp_connect,
    forget_capabilities,
    login_with_literal,
    readable,
    send_uid_fetch,
    set_line_hook,
    uid_fetch_answer,
    unexpected,
    unrepr,
)
from ._net import WrongProtocol, greeting_protocol, make_ssl_context, transport_error, wrong_protocol
from ._session import Session
from ._steps import StepRecorder, shorten, step
from .auth._password import CHALLENGE_RESPONSE, ExchangeFailed, choose_mechanism, exchange_error, start_exchange
from .auth.sasl import decode_oauth_error
from .errors import AuthenticationError, ConfigError, MailConnectorError, ServerResponseError, TransportError
from .logs import redact_imap_line

__all__ = ["FetchAhead", "FetchedMessage", "FolderInfo", "FolderState", "ImapSession"]

wire = logging.getLogger("mailconnector.protocol.imap")


class ImapSession(Session):
    """One authenticated IMAP connection; not thread-safe."""

    protocol = "imap"
    _client: IMAPClient | None = None

    # -------------------------------------------------------------- translate
    def _translated(self, exc: Exception, phase: str) -> MailConnectorError | None:
        if isinstance(exc, imap_exc.LoginError):
            if isinstance(exc.__context__, imap_exc.IMAPClientAbortError):
                # IMAPClient wraps every failure of LOGIN, a dropped or garbled connection too: not a refusal.
                return self._dropped(f"dropped the connection during {phase}: {_clean(exc.__context__)}",
                                     "it is retried; if it keeps happening the server may limit connections")
            if "[UNAVAILABLE]" in str(exc):  # RFC 5530: the server cannot check credentials now
                return self._cannot_check_login(_clean(exc))
            return self._auth_error(str(exc))
        if isinstance(exc, imap_exc.ProtocolError):  # an answer that cannot be parsed: the connection is corrupt
            return self._dropped(f"sent a garbled answer during {phase}: {_clean(exc)}"[:300],
                                 "it is retried on a new connection")
        if isinstance(exc, imap_exc.IMAPClientAbortError):
            return self._dropped(f"dropped the connection during {phase}: {exc}",
                                 "it is retried; if it keeps happening the server may limit connections")
        if isinstance(exc, imap_exc.IMAPClientReadOnlyError):
            return ServerResponseError(f"IMAP {phase}: the folder is read-only: {exc}")
        if isinstance(exc, imap_exc.IMAPClientError):
            return ServerResponseError(f"IMAP server refused {phase}: {_clean(exc)}", text=_clean(exc))
        return None

    def _auth_error(self, text: str) -> AuthenticationError:
        hint = self._password_refused_hint()
        if "[PRIVACYREQUIRED]" in text or "LOGINDISABLED" in text:
            hint = "the server refuses logins without TLS: use security: starttls or ssl"
        return AuthenticationError(
            f"IMAP login as {self.connection.imap_login()!r} refused: {_clean(text)}", hint=hint
        )

    # ---------------------------------------------------------------- connect
    def connect(self, *, login: bool = True, recorder: StepRecorder | None = None) -> ImapSession:
        ctx = make_ssl_context(self.connection.tls) if self.server.security != "none" else None
        timeout = SocketTimeout(self.connection.timeouts.connect, self.connection.timeouts.command)
        try:
            with step(recorder, "greeting") as st, self._translate("connect"):
                try:
                    client = Client(self.server.host, self.server.port, ssl=self.server.security == "ssl",
                                     ssl_context=ctx, timeout=timeout)
                except TimeoutError as exc:
                    # The constructor opens the TCP connection and reads the greeting: tell the two apart.
                    phase = "connect" if during_tcp_connect(exc) else "greeting"
                    raise transport_error(exc, self.endpoint, phase=phase,
                                          waited=self.endpoint.connect_timeout) from exc
                except WrongProtocol as exc:  # seen on a plain connection before imaplib read a byte
                    raise wrong_protocol(self.endpoint, exc.protocol, exc.greeting) from exc
                except imap_exc.IMAPClientError as exc:
                    # Over TLS, imaplib: "unexpected response: b'220 ...'" (an abort), or the greeting as the error
                    said = unexpected(str(exc))
                    other = greeting_protocol(said)
                    if other is not None and other != "IMAP":
                        raise wrong_protocol(self.endpoint, other, said) from exc
                    if isinstance(exc, imap_exc.IMAPClientAbortError):
                        raise transport_error(EOFError(str(exc)), self.endpoint, phase="greeting") from exc
                    raise
                st.detail = shorten(_clean(client.welcome))
            self._client = client
            self._setup_wire_log(client)
            with step(recorder, "capabilities") as caps_step, self._translate("CAPABILITY"):
                caps = client.capabilities()
                caps_step.detail = " ".join(sorted(c.decode() for c in caps))
            if self.server.security == "starttls":
                assert ctx is not None
                tls_context = ctx

                def upgrade() -> object:
                    with self._translate("STARTTLS"):
                        client.starttls(tls_context)
                        forget_capabilities(client)
                    return client.socket()

                self._starttls(recorder, offered=b"STARTTLS" in caps, tls_port=993, upgrade=upgrade)
                # What the Test shows is what the session works with: the list the server gives over TLS.
                caps_step.detail = "after STARTTLS: " + " ".join(self.capabilities())
            if login:
                self._authenticate(recorder, lambda: " ".join(self.auth_mechanisms())
                                   or "no SASL mechanism (the LOGIN command only)")
        except BaseException:
            self.close()
            raise
        return self

    def _setup_wire_log(self, client: IMAPClient) -> None:
        if not wire.isEnabledFor(logging.DEBUG):
            set_line_hook(client, None)
            return
        state = {"auth": False}

        def line(text: str) -> None:
            if text.startswith("> ") or text.startswith("write literal"):
                body = unrepr(text[2:] if text.startswith("> ") else text)
                if " AUTHENTICATE " in body.upper():
                    state["auth"] = True
                shown = redact_imap_line(body, in_auth=False)
                wire.debug("C: %s", shown[:2000])
            else:
                body = unrepr(text[2:] if text.startswith("< ") else text)
                if state["auth"] and not body.startswith("+"):
                    state["auth"] = False
                wire.debug("S: %s", body[:2000] + (" ..." if len(body) > 2000 else ""))

        set_line_hook(client, line)

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> IMAPClient:
        if self._client is None:
            raise TransportError("IMAP session is not connected")
        return self._client

    def capabilities(self) -> list[str]:
        with self._translate("CAPABILITY"):
            return sorted(c.decode() for c in self.client.capabilities())

    def has_capability(self, name: str) -> bool:
        with self._translate("CAPABILITY"):
            return bool(self.client.has_capability(name))

    def auth_mechanisms(self) -> list[str]:
        return [c[5:] for c in self.capabilities() if c.startswith("AUTH=")]

    def login(self) -> None:
        auth = self.connection.auth
        user = self.connection.imap_login()
        if auth.type == "oauth2":
            self._oauth_login(user)
            return
        if auth.type != "basic":
            raise ConfigError("IMAP needs a login: auth.type none is for SMTP relays only",
                              field=f"connections.{self.connection.name}.auth.type")
        assert auth.password is not None
        password = auth.password.get_secret_value()
        client = self.client
        offered = self.auth_mechanisms()
        if b"LOGINDISABLED" in client.capabilities():
            # No clear login on this connection; a challenge-response mechanism keeps the password off the wire.
            mechanism = choose_mechanism(m for m in offered if m in CHALLENGE_RESPONSE)
            if mechanism is None:
                raise AuthenticationError(
                    f"{self.endpoint.shown} refuses plain-text logins on this "
                    "unencrypted connection (LOGINDISABLED)",
                    hint="use security: starttls or ssl",
                )
            self._password_login(mechanism, user, password)
        elif user.isascii() and password.isascii():
            self.auth_mechanism = "LOGIN"
            with self._translate("LOGIN"):
                client.login(user, password)
        elif "PLAIN" in offered:
            self._password_login("PLAIN", user, password)  # RFC 4616 is UTF-8 throughout
        else:
            self._utf8_login(user, password)
        forget_capabilities(client)

    def _password_login(self, mechanism: str, user: str, password: str) -> None:
        exchange = start_exchange("IMAP", mechanism, user, password)
        failed: list[ExchangeFailed] = []

        def respond(challenge: bytes) -> bytes | None:
            try:
                return exchange(challenge)
            except ExchangeFailed as exc:
                failed.append(exc)
                return None  # imaplib answers "*": the server ends the exchange, the connection stays usable

        self.auth_mechanism = mechanism
        try:
            with self._translate("AUTHENTICATE"):
                self.client.sasl_login(mechanism, respond)
        except AuthenticationError as exc:
            if failed:
                raise exchange_error("IMAP", user, failed[0]) from exc
            raise
        if not exchange.complete:  # SCRAM: accepted, yet the server never proved it knows the password
            raise exchange_error("IMAP", user, ExchangeFailed(f"{mechanism}: the server sent no proof"))

    def _utf8_login(self, user: str, password: str) -> None:
        """LOGIN with the password as a literal of UTF-8 bytes: a quoted string may hold ASCII only
        (RFC 3501), and the server offers no AUTHENTICATE PLAIN to carry it."""
        if not user.isascii():
            raise AuthenticationError(
                f"{self.endpoint.shown} offers no way to log in with a non-ASCII "
                "user name (no AUTH=PLAIN)", hint="use the account's ASCII login name (imap.username)",
            )
        self.auth_mechanism = "LOGIN"
        with self._translate("LOGIN"):
            typ, data = login_with_literal(self.client, user, password.encode("utf-8"))
            if typ != "OK":
                raise imap_exc.LoginError(_clean(data[-1] if data else typ))

    def _oauth_login(self, user: str, *, retried: bool = False) -> None:
        client = self.client
        provider, mech, token, payload = self._initial_oauth_response(user, retried=retried)
        challenges: list[str] = []

        def respond(data: bytes) -> bytes:
            if not challenges and not data:
                challenges.append("")
                return payload
            # A non-empty challenge after our response is the server's error: answer empty for the final NO.
            challenges.append(decode_oauth_error(data) or "")
            return b""

        try:
            with self._translate("AUTHENTICATE"):
                try:
                    authenticate(client, mech, respond)
                except imap_exc.IMAPClientError as exc:
                    raise imap_exc.LoginError(str(exc)) from exc
        except AuthenticationError as exc:
            detail = next((c for c in challenges if c), "")
            if self._token_is_worth_a_retry(provider, detail, retried=retried):
                return self._oauth_login(user, retried=True)
            raise self._token_refused(exc.message, reply=exc.message, token=token, user=user,
                                      detail=detail) from exc

    # ----------------------------------------------------------------- folders
    def list_folders(self, *, with_counts: bool = False) -> list[FolderInfo]:
        with self._translate("LIST"):
            rows = self.client.list_folders()
        out: list[FolderInfo] = []
        for flags, delim, name in rows:
            flag_names = tuple(f.decode() if isinstance(f, bytes) else str(f) for f in flags)
            special = next((f for f in flag_names if f in SPECIAL_USE), None)
            messages = unseen = None
            if with_counts and "\\Noselect" not in flag_names and "\\NonExistent" not in flag_names:
                with self._translate("STATUS"):
                    st = self.client.folder_status(name, [b"MESSAGES", b"UNSEEN"])
                messages, unseen = int(st[b"MESSAGES"]), int(st[b"UNSEEN"])
            d = delim.decode() if isinstance(delim, bytes) else delim
            out.append(FolderInfo(str(name), flag_names, special, d, messages, unseen))
        out.sort(key=folder_order)
        return out

    def select(self, folder: str, *, readonly: bool = False) -> FolderState:
        with self._translate(f"SELECT {folder}"), folder_must_exist(folder):
            info = self.client.select_folder(folder, readonly=readonly)
        return FolderState(
            name=folder,
            uidvalidity=int(info.get(b"UIDVALIDITY", 0)),
            uidnext=int(info[b"UIDNEXT"]) if b"UIDNEXT" in info else None,
            exists=int(info.get(b"EXISTS", 0)),
        )

    def create_folder(self, folder: str) -> None:
        with self._translate(f"CREATE {folder}"):
            self.client.create_folder(folder)

    def delete_folder(self, folder: str) -> None:
        with self._translate(f"DELETE {folder}"):
            self.client.delete_folder(folder)

    def folder_exists(self, folder: str) -> bool:
        """Whether a folder of exactly this name exists (IMAPClient's own check treats ``*`` and ``%`` in
        the name as LIST wildcards, so ``Arch*`` would "exist" wherever ``Archive`` does)."""
        return self._listed(folder) is not None

    def _listed(self, folder: str) -> tuple[str, ...] | None:
        """The LIST flags of exactly ``folder`` (INBOX in any case), or None when it is not there."""
        if folder.upper() == "INBOX":
            folder = "INBOX"
        with self._translate("LIST"):
            rows = self.client.list_folders("", folder)
        for flags, _delim, name in rows:
            if str(name) == folder or (folder == "INBOX" and str(name).upper() == "INBOX"):
                names = tuple(f.decode() if isinstance(f, bytes) else str(f) for f in flags)
                if "\\NonExistent" not in names:
                    return names
        return None

    def hierarchy_delimiter(self) -> str | None:
        """The server's hierarchy delimiter (``LIST "" ""``), or None for a flat namespace."""
        with self._translate("LIST"):
            rows = self.client.list_folders("", "")
        for _flags, delim, _name in rows:
            if delim:
                return delim.decode() if isinstance(delim, bytes) else str(delim)
        return None

    def ensure_folder(self, folder: str, *, subscribe: bool = True) -> list[str]:
        """Create ``folder`` unless it exists: its missing parent levels first (servers differ on whether
        CREATE makes them), each level created then subscribed, so mail clients show it. Returns the levels
        created, ``folder`` last; [] when it was there. Idempotent, also when another client creates it at the
        same moment. Names go over the wire in modified UTF-7 (IMAPClient encodes them)."""
        check_folder_name(folder)
        if folder.upper() == "INBOX":
            return []
        levels = folder_levels(folder, self.hierarchy_delimiter())
        created: list[str] = []
        for path in levels:
            flags = self._listed(path)
            # A parent only has to be there; the folder itself must also hold mail (not \Noselect).
            if flags is not None and (path != folder or "\\Noselect" not in flags):
                continue
            if self._create_unless_exists(path):
                created.append(path)
                if subscribe:
                    with self._translate(f"SUBSCRIBE {path}"):
                        self.client.subscribe_folder(path)
        return created

    def _create_unless_exists(self, folder: str) -> bool:
        """CREATE; False when the server says it exists already (created meanwhile by someone else)."""
        with self._translate(f"CREATE {folder}"):
            try:
                self.client.create_folder(folder)
            except imap_exc.IMAPClientError as exc:
                if "ALREADYEXISTS" in str(exc).upper() and self._listed(folder) is not None:
                    return False
                raise
        return True

    # ----------------------------------------------------------------- search
    def search(self, criteria: Sequence[Any] | str, *, charset: str | None = None) -> list[int]:
        with self._translate("UID SEARCH"):
            try:
                uids = self.client.search(criteria, charset=charset)
            except imap_exc.InvalidCriteriaError as exc:
                # The library appends a paragraph about its documentation: the server's words are the first line.
                said = _clean(exc).split("\n", 1)[0].strip()
                raise ConfigError(f"the server refused the search criteria: {said}", field="criteria",
                                  topic="search-criteria",
                                  hint="docs/operations.md lists the keys of read-email criteria") from exc
        return sorted(int(u) for u in uids)

    # ------------------------------------------------------------------ fetch
    def fetch(self, uids: Sequence[int]) -> Iterator[FetchedMessage]:
        """Fetch whole messages without setting \\Seen (``BODY.PEEK[]``), in UID order."""
        messages = self.take_fetch(self.ask_fetch(uids))
        messages.reverse()
        while messages:
            yield messages.pop()  # handed over one by one: a message read is not held by the batch

    def ask_fetch(self, uids: Sequence[int]) -> FetchAhead:
        """Ask for the messages and return at once: the server sends them into the socket's buffers while
        the caller parses the batch before. :meth:`take_fetch` must come before any other command."""
        sets = uid_sets(uids)
        with self._translate("UID FETCH"):
            tag = send_uid_fetch(self.client, sets[0], FETCH_ITEMS) if sets else None
        return FetchAhead(list(uids), sets, tag)

    def take_fetch(self, ahead: FetchAhead) -> list[FetchedMessage]:
        """The messages asked for with :meth:`ask_fetch`, in UID order (the rest of a batch too long for one
        command line is fetched now)."""
        messages: list[FetchedMessage] = []
        tag, ahead.tag = ahead.tag, None
        for number, uid_set in enumerate(ahead.sets):
            if number or tag is None:
                data = self._uid_fetch(uid_set, FETCH_ITEMS)
            else:
                with self._translate("UID FETCH"):
                    data = self._fetch_answer(tag)
            found = parse_fetch(data)
            if found is None:  # an answer the fast path does not know: IMAPClient's parser reads it
                with self._translate("UID FETCH"):
                    found = parse_fetch_slowly(data)
            messages.extend(found)
            del data
        wanted = set(ahead.uids)
        messages = [m for m in messages if m.uid in wanted]  # not an unsolicited answer about another message
        messages.sort(key=lambda m: m.uid)
        return messages

    def forget_fetch(self, ahead: FetchAhead) -> None:
        """Read and drop the answer to a fetch nobody will take (an abandoned iteration), so that the
        connection can be used, or logged out of, cleanly."""
        if ahead.tag is not None:
            tag, ahead.tag = ahead.tag, None
            with self._translate("UID FETCH"):
                uid_fetch_answer(self.client, tag)

    def fetch_sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """Each message's size (``RFC822.SIZE``), so that a fetch batch can be bounded in bytes."""
        sizes: dict[int, int] = {}
        for uid_set in uid_sets(uids):
            for element in self._uid_fetch(uid_set, "(RFC822.SIZE)"):
                found = uid_and_size(element[0] if isinstance(element, tuple) else element)
                if found is not None:
                    sizes[found[0]] = found[1]
        return sizes

    def fetch_header(self, uids: Sequence[int], name: str) -> dict[int, bytes]:
        """One header field of each message, as the server gives it (``Name: value``, or empty)."""
        from imapclient.response_parser import parse_fetch_response

        found: dict[int, bytes] = {}
        for uid_set in uid_sets(uids):
            data = self._uid_fetch(uid_set, f"(UID BODY.PEEK[HEADER.FIELDS ({name.upper()})])")
            with self._translate("UID FETCH"):
                parsed = parse_fetch_response(data, True, True)
            for uid, item in parsed.items():
                for key, value in item.items():
                    if isinstance(key, bytes) and key.startswith(b"BODY[HEADER") and value is not None:
                        found[int(uid)] = bytes(value)
        return found

    def _uid_fetch(self, uid_set: str, items: str) -> list[Any]:
        """``UID FETCH`` through imaplib, the way IMAPClient sends it, but without IMAPClient's response
        parser: a tokenizer written in Python, which costs a quarter of a millisecond per message."""
        with self._translate("UID FETCH"):
            return self._fetch_answer(send_uid_fetch(self.client, uid_set, items))

    def _fetch_answer(self, tag: bytes) -> list[Any]:
        """The FETCH data answering ``tag``; a refusal raised as the library's error (translated by the
        caller's block, as every library error)."""
        typ, data = uid_fetch_answer(self.client, tag)
        if typ != "OK":
            raise imap_exc.IMAPClientError(f"UID FETCH failed: {_clean(data)}")
        return data

    # ------------------------------------------------------------ after read
    def add_flags(self, uids: Iterable[int], flags: Sequence[str]) -> None:
        with self._translate("UID STORE"):
            for uid_set in uid_sets(uids):
                self.client.add_flags(uid_set, [f.encode() for f in flags], silent=True)

    def remove_flags(self, uids: Iterable[int], flags: Sequence[str]) -> None:
        with self._translate("UID STORE"):
            for uid_set in uid_sets(uids):
                self.client.remove_flags(uid_set, [f.encode() for f in flags], silent=True)

    def move(self, uids: Sequence[int], folder: str) -> None:
        """``UID MOVE`` where offered, else copy + ``\\Deleted`` + ``UID EXPUNGE`` (only those UIDs)."""
        with self._translate(f"UID MOVE {folder}"), folder_must_exist(folder):
            for uid_set in uid_sets(uids):
                if self.client.has_capability("MOVE"):
                    self.client.move(uid_set, folder)
                    continue
                self.client.copy(uid_set, folder)
                self.client.add_flags(uid_set, [b"\\Deleted"], silent=True)
                self._expunge(uid_set)

    def delete(self, uids: Sequence[int]) -> None:
        with self._translate("UID STORE \\Deleted"):
            for uid_set in uid_sets(uids):
                self.client.add_flags(uid_set, [b"\\Deleted"], silent=True)
                self._expunge(uid_set)

    def _expunge(self, uid_set: str) -> None:
        if self.client.has_capability("UIDPLUS"):
            self.client.uid_expunge(uid_set)
        else:
            self.client.expunge()

    def append(self, folder: str, message: bytes, *, flags: Sequence[str] = (),
               when: datetime | None = None) -> int | None:
        with self._translate(f"APPEND {folder}"), folder_must_exist(folder):
            resp = self.client.append(folder, message, [f.encode() for f in flags], msg_time=when)
        text = resp.decode() if isinstance(resp, bytes) else str(resp)
        # [APPENDUID uidvalidity uid]
        if "APPENDUID" in text:
            with contextlib.suppress(ValueError, IndexError):
                return int(text.split("APPENDUID", 1)[1].split("]")[0].split()[1])
        return None

    # ------------------------------------------------------------------- idle
    def idle_wait(self, timeout: float, *, stop: threading.Event | None = None,
                  renew_every: float = 25 * 60) -> bool:
        """Wait for new mail with IDLE: True as soon as the server reports a change, False after ``timeout``
        seconds or when ``stop`` is set. IDLE is re-issued every ``renew_every`` seconds (servers drop an
        IDLE after 30 minutes), which also keeps the connection alive."""
        deadline = time.monotonic() + timeout
        with self._translate("IDLE"):
            while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
                self.client.idle()
                renew_at = min(deadline, time.monotonic() + renew_every)
                changed = False
                try:
                    while time.monotonic() < renew_at and not (stop is not None and stop.is_set()):
                        wait = min(1.0, max(0.05, renew_at - time.monotonic()))
                        started = time.monotonic()
                        responses = self.client.idle_check(timeout=wait)
                        if not responses and time.monotonic() - started < wait / 2 and readable(self.client):
                            # idle_check swallows EOF and returns nothing at once: the server has gone.
                            raise EOFError("the server closed the connection during IDLE")
                        if _new_mail(responses):
                            changed = True
                            break
                except BaseException:
                    with contextlib.suppress(Exception):
                        self.client.idle_done()
                    raise
                # What arrived just before DONE is reported in DONE's own responses, and never again.
                _, tail = self.client.idle_done()
                if changed or _new_mail(tail):
                    return True
        return False

    def noop(self) -> None:
        with self._translate("NOOP"):
            self.client.noop()

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            with contextlib.suppress(OSError):
                client.socket().settimeout(2)
            client.logout()
        except (OSError, EOFError, imaplib.IMAP4.error, AttributeError):
            with contextlib.suppress(Exception):
                client.shutdown()


def _new_mail(responses: Iterable[Any]) -> bool:
    """Whether IDLE responses announce a new message (EXISTS or RECENT)."""
    return any(isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses)

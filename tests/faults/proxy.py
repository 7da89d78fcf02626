"""A loopback TCP proxy that forwards to a real server and injects faults at a chosen byte.

Why: a real server never drops a connection on cue, and a mock of the protocol library proves nothing
about the protocol. The proxy sits between the client under test and the real server, so everything the
client does is real, except the one fault the test asks for.

A fault is *where* (a trigger, in one direction, optionally on one connection) plus *what* (an action)::

    with FaultProxy(("127.0.0.1", smtp_port)) as proxy:
        proxy.add(Fault(OnPattern(b"MAIL FROM"), Cut()))                 # cut once the client sent it
        proxy.add(Fault(AfterBytes(4096), Cut(reset=True)))              # RST after 4 KiB client→server
        proxy.add(Fault(OnPattern(b"250 ", before=True), Cut(), direction=S2C, connection=1))
        proxy.add(Fault(OnPattern(b"SIZE 52428800"), Replace(b"SIZE 1000"), direction=S2C, times=None))
        ... connect the client to ("127.0.0.1", proxy.port) ...
        proxy.transcript(C2S)          # what the client sent (all connections), for assertions

Triggers (positions are counted on the original stream of one direction of one connection):

- ``AfterBytes(n)``: once ``n`` bytes have passed.
- ``OnPattern(p)``: once ``p`` has passed (``before=True``: just before ``p`` would pass; ``p`` is then
  held back until the action ran). A pattern split across reads is found: the proxy holds back a tail
  that could start the pattern, for at most ``hold_timeout`` seconds, but only for ``before`` and
  ``Replace`` faults (an "after" match needs no hold-back, so plain forwarding is never slowed).

Actions: ``Cut`` (close both sides; ``reset=True`` sends RST instead of FIN), ``Replace`` (rewrite the
pattern and go on; needs ``OnPattern``), ``Delay`` (pause this direction, then go on), ``Stall`` (swallow
everything after this point in this direction; the connection stays open), ``Corrupt`` (flip the bits of
the next ``count`` bytes, the pattern itself for a ``before`` trigger, then go on).

A fault fires at most ``times`` times over all connections (default once; ``None`` = every time), after
letting the first ``skip`` occurrences of its trigger pass, and only on the ``connection``-th accepted
connection (0-based) when given. To add a kind of fault, add an
action dataclass and one branch in ``_Pump._act``; triggers are matched in ``_Pump._next_event``.

Transcripts keep the first ``record_limit`` bytes of each direction of each connection, as received
(before any ``Replace``).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "C2S",
    "S2C",
    "AfterBytes",
    "ConnectionRecord",
    "Corrupt",
    "Cut",
    "Delay",
    "Direction",
    "Fault",
    "FaultProxy",
    "OnPattern",
    "Replace",
    "Stall",
]

Direction = Literal["c2s", "s2c"]
C2S: Final[Direction] = "c2s"
S2C: Final[Direction] = "s2c"
_CHUNK = 64 * 1024


# --------------------------------------------------------------------------- triggers


@dataclass(frozen=True)
class AfterBytes:
    """Fire once ``count`` bytes of this direction have passed on a connection."""

    count: int

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must be >= 0")


@dataclass(frozen=True)
class OnPattern:
    """Fire when ``pattern`` passes (after it by default; ``before=True``: just before it)."""

    pattern: bytes
    before: bool = False

    def __post_init__(self) -> None:
        if not self.pattern:
            raise ValueError("pattern must not be empty")


Trigger = AfterBytes | OnPattern


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Cut:
    """Close the connection on both sides: FIN by default, RST with ``reset=True``."""

    reset: bool = False


@dataclass(frozen=True)
class Replace:
    """Send ``new`` instead of the matched pattern, then go on forwarding."""

    new: bytes


@dataclass(frozen=True)
class Delay:
    """Pause this direction for ``seconds``, then go on forwarding."""

    seconds: float


@dataclass(frozen=True)
class Stall:
    """Forward nothing more in this direction (bytes are read and dropped); the connection stays open."""


@dataclass(frozen=True)
class Corrupt:
    """XOR the next ``count`` bytes of this direction with ``mask`` (line noise no checksum caught)."""

    count: int = 1
    mask: int = 0xFF

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 < self.mask < 256:
            raise ValueError("count must be >= 1 and mask a non-zero byte")


Action = Cut | Replace | Delay | Stall | Corrupt


@dataclass(eq=False)
class Fault:
    """One fault: a trigger in one direction, an action, and how often / on which connection it fires."""

    trigger: Trigger
    action: Action = field(default_factory=Cut)
    direction: Direction = C2S
    connection: int | None = None
    times: int | None = 1
    skip: int = 0
    fired: int = field(default=0, init=False)
    seen: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if isinstance(self.action, Replace) and not isinstance(self.trigger, OnPattern):
            raise ValueError("Replace needs an OnPattern trigger")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1, or None for unlimited")


@dataclass
class ConnectionRecord:
    """What happened on one proxied connection (read it after the connection ended)."""

    index: int
    received: dict[Direction, bytearray] = field(default_factory=lambda: {C2S: bytearray(), S2C: bytearray()})
    total: dict[Direction, int] = field(default_factory=lambda: {C2S: 0, S2C: 0})
    fired: list[Fault] = field(default_factory=list)
    cut: bool = False
    closed: threading.Event = field(default_factory=threading.Event)


# --------------------------------------------------------------------------- the proxy


class FaultProxy:
    """Listen on loopback, forward each accepted connection to ``upstream``, apply the faults."""

    def __init__(self, upstream: tuple[str, int], *, host: str = "127.0.0.1", record_limit: int = 1 << 20,
                 hold_timeout: float = 0.05, connect_timeout: float = 5.0) -> None:
        self.upstream = upstream
        self.host = host
        self.record_limit = record_limit
        self.hold_timeout = hold_timeout
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._records: list[ConnectionRecord] = []
        self._links: list[_Link] = []
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection, and wait for the threads."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close(reset=False)
            link.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._listener is not None, "start() the proxy first"
        return int(self._listener.getsockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    # ------------------------------------------------------------------ faults
    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def cut_on(self, pattern: bytes, *, direction: Direction = C2S, before: bool = False, reset: bool = False,
               connection: int | None = None) -> Fault:
        """Shorthand: cut once when ``pattern`` passes in ``direction``."""
        return self.add(Fault(OnPattern(pattern, before=before), Cut(reset=reset), direction=direction,
                              connection=connection))

    def cut_after(self, count: int, *, direction: Direction = C2S, reset: bool = False,
                  connection: int | None = None) -> Fault:
        """Shorthand: cut once after ``count`` bytes in ``direction``."""
        return self.add(Fault(AfterBytes(count), Cut(reset=reset), direction=direction, connection=connection))

    def replace(self, pattern: bytes, new: bytes, *, direction: Direction = S2C, times: int | None = None) -> Fault:
        """Shorthand: rewrite ``pattern`` as ``new`` (every time, by default)."""
        return self.add(Fault(OnPattern(pattern), Replace(new), direction=direction, times=times))

    # --------------------------------------------------------------- inspection
    @property
    def connections(self) -> list[ConnectionRecord]:
        with self._lock:
            return list(self._records)

    def transcript(self, direction: Direction = C2S, connection: int | None = None) -> bytes:
        """Bytes received in ``direction``: of one connection, or of all of them in accept order."""
        records = self.connections
        if connection is not None:
            return bytes(records[connection].received[direction])
        return b"".join(bytes(r.received[direction]) for r in records)

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until every connection accepted so far has closed."""
        deadline = time.monotonic() + timeout
        for record in self.connections:
            if not record.closed.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"proxied connection {record.index} still open after {timeout} s")

    # ---------------------------------------------------------------- internals
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(self.upstream, timeout=self.connect_timeout)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                record = ConnectionRecord(index=len(self._records))
                self._records.append(record)
                link = _Link(self, record, client, server)
                self._links.append(link)
            link.start()

    def _active(self, record: ConnectionRecord, direction: Direction) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults
                    if f.direction == direction
                    and (f.connection is None or f.connection == record.index)
                    and (f.times is None or f.fired < f.times)]

    def _claim(self, fault: Fault, record: ConnectionRecord) -> bool:
        """Count one occurrence; True if the fault fires on it (False: skipped, or used up meanwhile)."""
        with self._lock:
            if fault.times is not None and fault.fired >= fault.times:
                return False
            fault.seen += 1
            if fault.seen <= fault.skip:
                return False
            fault.fired += 1
            record.fired.append(fault)
            return True


class _Link:
    """One proxied connection: two pumps, closed by whichever finishes last."""

    def __init__(self, proxy: FaultProxy, record: ConnectionRecord, client: socket.socket,
                 server: socket.socket) -> None:
        self.proxy = proxy
        self.record = record
        self.client = client
        self.server = server
        self._lock = threading.Lock()
        self._closing = False
        self._running = 2
        self._threads = [
            threading.Thread(target=_Pump(self, C2S, client, server).run, daemon=True,
                             name=f"fault-proxy-{record.index}-c2s"),
            threading.Thread(target=_Pump(self, S2C, server, client).run, daemon=True,
                             name=f"fault-proxy-{record.index}-s2c"),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def join(self, timeout: float) -> None:
        for t in self._threads:
            t.join(timeout)

    def close(self, *, reset: bool) -> None:
        """Wake both pumps; the sockets are closed by the last pump out (never under a running recv)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                if reset:
                    # Linger 0: close() sends RST. SHUT_RD wakes a blocked recv without sending a FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RD)
                else:
                    sock.shutdown(socket.SHUT_RDWR)

    def pump_done(self) -> None:
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            for sock in (self.client, self.server):
                with contextlib.suppress(OSError):
                    sock.close()
            self.record.closed.set()


class _Stop(Exception):
    """This direction ends (cut, or the peer went away)."""


class _Pump:
    """Copies one direction, matching the faults on the original stream."""

    def __init__(self, link: _Link, direction: Direction, src: socket.socket, dst: socket.socket) -> None:
        self.link = link
        self.proxy = link.proxy
        self.record = link.record
        self.direction = direction
        self.src = src
        self.dst = dst
        self.consumed = 0          # original bytes already handled (forwarded, replaced or dropped)
        self.held = b""            # received, not yet handled (a possible pattern prefix)
        self.tail = b""            # the last handled bytes, to find "after" patterns split across reads
        self.stalled = False
        self.corrupting = 0        # bytes still to corrupt (Corrupt), and with which mask
        self.corrupt_mask = 0
        self.done_bytes: set[int] = set()  # AfterBytes faults (by id) already fired on this connection

    def run(self) -> None:
        try:
            while True:
                if self.held:
                    ready, _, _ = select.select([self.src], [], [], self.proxy.hold_timeout)
                    if not ready:  # nothing more came: the held bytes were not the pattern
                        self._process(self.held, final=True)
                        self.held = b""
                        continue
                try:
                    data = self.src.recv(_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    if self.held:
                        self._process(self.held, final=True)
                    with contextlib.suppress(OSError):
                        self.dst.shutdown(socket.SHUT_WR)  # pass the half-close on
                    return
                self._keep(data)
                buf, self.held = self.held + data, b""
                self._process(buf, final=False)
        except _Stop:
            return
        finally:
            self.link.pump_done()

    def _keep(self, data: bytes) -> None:
        record = self.record
        record.total[self.direction] += len(data)
        room = self.proxy.record_limit - len(record.received[self.direction])
        if room > 0:
            record.received[self.direction] += data[:room]

    def _send(self, data: bytes) -> None:
        if not data or self.stalled:
            return
        try:
            self.dst.sendall(data)
        except OSError:
            self.link.close(reset=False)
            raise _Stop from None

    def _forward(self, data: bytes) -> None:
        if self.corrupting and data:
            n = min(self.corrupting, len(data))
            self.corrupting -= n
            self._send(bytes(b ^ self.corrupt_mask for b in data[:n]) + data[n:])
        else:
            self._send(data)
        self.consumed += len(data)
        self.tail = (self.tail + data)[-256:]

    def _process(self, buf: bytes, *, final: bool) -> None:
        while buf:
            event = self._next_event(buf)
            if event is None:
                keep = 0 if final else self._hold_length(buf)
                self._forward(buf[:len(buf) - keep])
                self.held = buf[len(buf) - keep:]
                return
            offset, fault = event
            self._forward(buf[:offset])
            buf = buf[offset:]
            trigger = fault.trigger
            if isinstance(trigger, AfterBytes):
                self.done_bytes.add(id(fault))
            if not self.proxy._claim(fault, self.record):
                if isinstance(trigger, OnPattern) and (trigger.before or isinstance(fault.action, Replace)):
                    # Not acted on: let this occurrence through, or it would match again at once.
                    self._forward(buf[:len(trigger.pattern)])
                    buf = buf[len(trigger.pattern):]
                continue
            buf = self._act(fault, buf)

    def _next_event(self, buf: bytes) -> tuple[int, Fault] | None:
        """The earliest fault position in ``buf`` (an offset into it), or None."""
        best: tuple[int, Fault] | None = None
        for fault in self.proxy._active(self.record, self.direction):
            trigger = fault.trigger
            offset: int | None = None
            if isinstance(trigger, AfterBytes):
                if id(fault) not in self.done_bytes and 0 <= trigger.count - self.consumed <= len(buf):
                    offset = trigger.count - self.consumed
            elif trigger.before or isinstance(fault.action, Replace):
                found = buf.find(trigger.pattern)
                offset = found if found >= 0 else None
            else:
                # The match may begin in bytes already forwarded; it must end in this buffer.
                window = self.tail[-(len(trigger.pattern) - 1):] if len(trigger.pattern) > 1 else b""
                found = (window + buf).find(trigger.pattern)
                if found >= 0:
                    offset = found + len(trigger.pattern) - len(window)
            if offset is not None and (best is None or offset < best[0]):
                best = (offset, fault)
        return best

    def _hold_length(self, buf: bytes) -> int:
        """How many trailing bytes could begin a pattern that must be acted on before it passes."""
        longest = 0
        for fault in self.proxy._active(self.record, self.direction):
            trigger = fault.trigger
            if not isinstance(trigger, OnPattern) or not (trigger.before or isinstance(fault.action, Replace)):
                continue
            pattern = trigger.pattern
            for k in range(min(len(pattern) - 1, len(buf)), longest, -1):
                if buf.endswith(pattern[:k]):
                    longest = k
                    break
        return longest

    def _act(self, fault: Fault, buf: bytes) -> bytes:
        """Apply the action at the current position; return what is left of ``buf`` to forward."""
        action = fault.action
        before = isinstance(fault.trigger, OnPattern) and fault.trigger.before
        if isinstance(action, Cut):
            self.record.cut = True
            self.link.close(reset=action.reset)
            raise _Stop
        if isinstance(action, Stall):
            self.stalled = True
            return buf
        if isinstance(action, Replace):
            assert isinstance(fault.trigger, OnPattern)
            pattern = fault.trigger.pattern
            self._send(action.new)
            self.consumed += len(pattern)
            self.tail = (self.tail + pattern)[-256:]
            return buf[len(pattern):]
        if isinstance(action, Corrupt):
            self.corrupting, self.corrupt_mask = action.count, action.mask
            if before:  # the pattern itself is corrupted, and must not match again
                assert isinstance(fault.trigger, OnPattern)
                self._forward(buf[:len(fault.trigger.pattern)])
                return buf[len(fault.trigger.pattern):]
            return buf
        if isinstance(action, Delay):
            time.sleep(action.seconds)
            if before:  # let the pattern through now, or it would match again
                assert isinstance(fault.trigger, OnPattern)
                self._forward(buf[:len(fault.trigger.pattern)])
                return buf[len(fault.trigger.pattern):]
            return buf
        raise TypeError(f"unknown fault action {action!r}")

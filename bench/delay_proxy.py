"""A TCP proxy that delays every chunk by a fixed time in each direction, to put a network between a client
and a server on loopback.

Why: on loopback a round trip costs nothing, so a client that opens a new connection per message (and
does STARTTLS and a login each time) looks as fast as one that keeps connections and pipelines. A real
mail server is a network away (~20 ms round trip to a cloud provider in the same region). With
``--delay 0.010`` every chunk arrives 10 ms after it was read, in both directions: a 20 ms round trip.

Chunks keep their order and the delay does not limit the bandwidth (reading goes on while earlier chunks
wait), like a long but fast link.

    python bench/delay_proxy.py --upstream 127.0.0.1:2525 --delay 0.010     # prints "PORT <n>" when ready
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
import sys

__all__ = ["DelayProxy", "main"]

_CHUNK = 256 * 1024


class DelayProxy:
    """Accepts on ``listen``; each connection is forwarded to ``upstream`` with ``delay`` seconds one way."""

    def __init__(self, upstream: tuple[str, int], *, delay: float, listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.upstream = upstream
        self.delay = delay
        self.listen = listen
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, *self.listen)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(self._pump(client_r, server_w), self._pump(server_r, client_w),
                                 return_exceptions=True)
        except asyncio.CancelledError:  # the proxy is stopping: end quietly
            pass
        finally:
            for w in (client_w, server_w):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read as fast as data comes; a writer task sends each chunk when its time has come."""
        loop = asyncio.get_running_loop()
        queue: collections.deque[tuple[float, bytes]] = collections.deque()
        ready = asyncio.Event()
        done = False

        async def send() -> None:
            while True:
                while not queue:
                    if done:
                        with contextlib.suppress(OSError):
                            if writer.can_write_eof():
                                writer.write_eof()
                        return
                    ready.clear()
                    await ready.wait()
                due, data = queue[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                queue.popleft()
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    break
                queue.append((loop.time() + self.delay, data))
                ready.set()
        finally:
            done = True
            ready.set()
            with contextlib.suppress(OSError, ConnectionError):
                await sender


async def _serve(upstream: tuple[str, int], delay: float, port: int) -> None:
    proxy = DelayProxy(upstream, delay=delay, listen=("127.0.0.1", port))
    bound = await proxy.start()
    print(f"PORT {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the real server")
    parser.add_argument("--delay", type=float, default=0.010, help="seconds added one way (default 0.010)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    try:
        asyncio.run(_serve((host, int(port)), args.delay, args.port))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

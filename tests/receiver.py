"""Webhook receivers for tests: a threaded HTTP server on 127.0.0.1 that records each POST
(headers and raw body) and answers with the next status of a script (then 200); and a
hostile one that drips its answer, a byte at a time."""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


@dataclass
class Receiver:
    url: str
    port: int
    #: Statuses to answer, in order; 200 once they are used up. ``(302, "/elsewhere")``
    #: answers a redirect there.
    script: list[int | tuple[int, str]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received


@contextmanager
def receiver(
    script: list[int | tuple[int, str]] | None = None, tls: ssl.SSLContext | None = None
) -> Iterator[Receiver]:
    """A receiver on 127.0.0.1 (``tls``: a server context, for https)."""
    state = Receiver(url="", port=0, script=list(script or []))
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                state.received.append(Received(self.path, dict(self.headers.items()), body))
                answer = state.script.pop(0) if state.script else 200
            status, location = answer if isinstance(answer, tuple) else (answer, None)
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    state.url = f"{'https' if tls else 'http'}://127.0.0.1:{state.port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Drip:
    url: str
    #: ``time.monotonic()`` when the client hung up mid-answer; None while it listens.
    cut_at: float | None = None


@contextmanager
def dripping(every: float = 0.2, for_seconds: float = 60.0) -> Iterator[Drip]:
    """A receiver on 127.0.0.1 that reads a request and then answers one byte of a status
        line and headers that never end every ``every`` seconds, for ``for_seconds``: each read
        of the client gets a byte well within any read timeout. It notes the moment the client
    hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))
    state = Drip(url=f"http://127.0.0.1:{listener.getsockname()[1]}/hook")

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:  # closed: nobody came
            return
        with conn:
            conn.recv(65536)
            answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000
            deadline = time.monotonic() + for_seconds
            for byte in answer:
                if time.monotonic() > deadline:
                    return
                try:
                    conn.sendall(bytes([byte]))
                    hung_up = select.select([conn], [], [], every)[0] and not conn.recv(1)
                except OSError:
                    hung_up = True
                if hung_up:
                    state.cut_at = time.monotonic()
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        listener.close()

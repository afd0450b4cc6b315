"""A real HTTP server on 127.0.0.1 for tests and benches: programmable feeds and a recording webhook receiver.

It speaks real HTTP over a real socket, so the client code under test runs exactly as in production
(timeouts, redirects, conditional GETs, truncated bodies); only the remote site is ours.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import urlsplit


class Headers(dict[str, str]):
    """Request headers, looked up case-insensitively as HTTP header names are."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__((name.lower(), value) for name, value in items)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(name.lower(), default)


class Received(NamedTuple):
    path: str
    headers: Headers


class Posted(NamedTuple):
    path: str
    headers: Headers
    body: bytes


@dataclass(frozen=True)
class Programmed:
    body: bytes
    status: int = 200
    content_type: str = "application/rss+xml"
    etag: str | None = None
    last_modified: str | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    truncate_at: int | None = None


# (status, headers) or (status, headers, body)
PostResponse = tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released): connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison, as RFC 9110 prescribes for If-None-Match."""
    wanted = etag.removeprefix("W/")
    return any(tag.strip() in ("*", etag) or tag.strip().removeprefix("W/") == wanted
               for tag in if_none_match.split(","))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests assert on `requests`, not on stderr."""

    def _headers(self) -> Headers:
        return Headers(self.headers.items())

    def do_GET(self) -> None:
        owner = self.server.owner
        headers = self._headers()
        owner._record_get(Received(self.path, headers))
        response = owner._programmed(self.path)
        if response is None:
            self._send(404, {"Content-Type": "text/plain"}, b"not programmed\n")
            return
        if response.delay:
            time.sleep(response.delay)
        validators = {"ETag": response.etag, "Last-Modified": response.last_modified}
        validators = {name: value for name, value in validators.items() if value}
        if self._not_modified(response, headers):
            self._send(304, {**validators, **response.headers}, b"")
            return
        self._send(response.status, {"Content-Type": response.content_type, **validators, **response.headers},
                   response.body, truncate_at=response.truncate_at)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, reply = self.server.owner._record_post(Posted(self.path, self._headers(), body))
        self._send(status, headers, reply)

    @staticmethod
    def _not_modified(response: Programmed, headers: Headers) -> bool:
        if response.status != 200:
            return False
        if response.etag and "if-none-match" in headers:
            return _etag_matches(headers["if-none-match"], response.etag)
        return bool(response.last_modified) and headers.get("if-modified-since") == response.last_modified

    def _send(self, status: int, headers: dict[str, str], body: bytes, *, truncate_at: int | None = None) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        if truncate_at is not None:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if status == 304:
            return
        self.wfile.write(body if truncate_at is None else body[:truncate_at])
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FeedServer

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that gave up (a timeout under test) is expected; anything else is a bug worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FeedServer:
    """`set()` what a path answers, point the code under test at `url()`, then read `requests` / `posts`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._responses: dict[str, Programmed] = {}
        self._post_responses: dict[str, list[PostResponse]] = {}
        self.requests: list[Received] = []
        self.posts: list[Posted] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FeedServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        # A short poll interval keeps stop() (and so every test's teardown) fast.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="feed-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FeedServer is not running")
        return self._server.server_address[1]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path if path.startswith('/') else '/' + path}"

    def set(
        self,
        path: str,
        body: bytes,
        *,
        status: int = 200,
        content_type: str = "application/rss+xml",
        etag: str | None = None,
        last_modified: str | None = None,
        delay: float = 0,
        headers: dict[str, str] | None = None,
        truncate_at: int | None = None,
    ) -> None:
        """Program GET `path`; `truncate_at` sends only that many bytes of a body announced in full."""
        programmed = Programmed(body, status, content_type, etag, last_modified, delay, dict(headers or {}),
                                truncate_at)
        with self._lock:
            self._responses[path] = programmed

    def redirect(self, path: str, location: str, *, status: int = 302) -> None:
        self.set(path, b"", status=status, content_type="text/plain", headers={"Location": location})

    def set_post_responses(self, path: str, responses: list[PostResponse]) -> None:
        """Answers for successive POSTs to `path`; the last one repeats once the list is used up."""
        if not responses:
            raise ValueError("give at least one response")
        with self._lock:
            self._post_responses[path] = list(responses)

    def requests_to(self, path: str) -> list[Received]:
        with self._lock:
            return [request for request in self.requests if request.path == path]

    def posts_to(self, path: str) -> list[Posted]:
        with self._lock:
            return [post for post in self.posts if post.path == path]

    def _programmed(self, path: str) -> Programmed | None:
        with self._lock:
            return self._responses.get(path) or self._responses.get(urlsplit(path).path)

    def _record_get(self, request: Received) -> None:
        with self._lock:
            self.requests.append(request)

    def _record_post(self, post: Posted) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.posts.append(post)
            queue = self._post_responses.get(post.path) or self._post_responses.get(urlsplit(post.path).path)
            answer: PostResponse = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else (200, {})
        status, headers, *rest = answer
        return status, {"Content-Type": "text/plain", **headers}, rest[0] if rest else b"ok"

"""Loopback HTTP servers that record what the Prometheus client sends them."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

EMPTY_VECTOR = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}})

Answer = Callable[[http.server.BaseHTTPRequestHandler], None]


class Recorder:
    """An HTTP server on loopback that records each request's path and headers."""

    def __init__(self, answer: Answer) -> None:
        recorder = self
        self.requests: list[tuple[str, dict[str, str]]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.requests.append((self.path, dict(self.headers.items())))
                answer(self)

            def log_message(self, *_: object) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def reply(status: int, body: str, headers: dict[str, str] | None = None) -> Answer:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        payload = body.encode()
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    return answer


@pytest.fixture
def servers() -> Iterator[Callable[[Answer], Recorder]]:
    started: list[Recorder] = []

    def start(answer: Answer) -> Recorder:
        started.append(Recorder(answer))
        return started[-1]

    yield start
    for server in started:
        server.close()


def queries_of(server: Recorder) -> list[str]:
    """The PromQL of every request the server saw."""
    return [parse_qs(urlsplit(path).query)["query"][0] for path, _ in server.requests]

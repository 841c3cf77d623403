"""The HTTP session of one Prometheus source: no redirects, checked peers, a hard deadline.

A pool's Prometheus URL is the tenant's choice, so the session trusts nothing it answers:

- a redirect is an error naming its status, never followed (it would carry the request, and
  a token, to an address nobody checked);
- every connection's peer address is checked against the `DestinationPolicy` once connected,
  before a byte is sent;
- a fetch has a wall-clock deadline over all its queries. requests' timeouts are per socket
  operation, so a server that sends a byte every few seconds would hold a fetch for as long as
  it likes; a thread cannot be killed, so at the deadline `Watchdog` shuts the session's sockets
  down, and the blocked read returns at once.

The environment is not trusted either (`trust_env` off): no proxy from `HTTPS_PROXY`, whose
peer address would hide the real destination, and no credentials from `~/.netrc`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import weakref
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from chiron_operator.metrics.destination import DestinationPolicy


class RedirectRefusedError(requests.RequestException):
    """Prometheus answered with a redirect, which is never followed."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}: a redirect, not followed")
        self.status = status


class Connections:
    """The connections one session opened: checked as they connect, cut together at a deadline.

    `policy` None checks no address (a caller that chose the URL itself: a test, a benchmark).
    """

    def __init__(self, policy: DestinationPolicy | None) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._open: weakref.WeakSet[HTTPConnection] = weakref.WeakSet()

    def opened(self, connection: HTTPConnection, sock: socket.socket) -> None:
        """Check a fresh connection's peer (closing it when refused), then track it."""
        if self.policy is not None:
            try:
                self.policy.check_address(connection.host, str(sock.getpeername()[0]))
            except BaseException:
                sock.close()
                raise
        with self._lock:
            self._open.add(connection)

    def cut(self) -> None:
        """Shut every tracked socket down, so that a read blocked on one returns now."""
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            sock = connection.sock
            if sock is None:
                continue
            # Already closed: nothing is blocked on it.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _pool_classes(connections: Connections) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes whose connections report to `connections` once connected."""

    class Plain(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            connections.opened(self, sock)
            return sock

    class Secure(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            connections.opened(self, sock)
            return sock

    class PlainPool(HTTPConnectionPool):
        ConnectionCls = Plain

    class SecurePool(HTTPSConnectionPool):
        ConnectionCls = Secure

    return {"http": PlainPool, "https": SecurePool}


class GuardedAdapter(HTTPAdapter):
    """requests' adapter over the checked connections, with no retries."""

    def __init__(self, connections: Connections) -> None:
        self._connections = connections  # init_poolmanager, called by super(), reads it
        super().__init__(max_retries=Retry(total=0, redirect=0, raise_on_status=False))

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._connections)


def _refuse_redirect(response: requests.Response, *_: Any, **__: Any) -> requests.Response:
    if response.is_redirect or 300 <= response.status_code < 400:
        response.close()
        raise RedirectRefusedError(response.status_code)
    return response


def guarded_session(adapter: GuardedAdapter, verify_tls: bool | str) -> requests.Session:
    """A session that sends everything through `adapter` and follows no redirect."""
    session = requests.Session()
    session.verify = verify_tls
    session.trust_env = False
    session.max_redirects = 0
    session.hooks["response"].append(_refuse_redirect)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Watchdog:
    """One fetch's deadline: past it, the session's sockets are cut (see the module docstring).

    Use as a context manager around the fetch. Cutting happens under the same lock that
    disarms it, so once the `with` block is left, no late cut can hit the next fetch.
    """

    def __init__(self, connections: Connections, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self._connections = connections
        self._ends_at = time.monotonic() + deadline_s
        self._lock = threading.Lock()
        self._armed = True
        self.fired = False
        self._timer = threading.Timer(deadline_s, self._fire)
        self._timer.daemon = True

    def remaining_s(self) -> float:
        """Seconds left before the deadline (0 once past it)."""
        return max(0.0, self._ends_at - time.monotonic())

    def _fire(self) -> None:
        with self._lock:
            if self._armed:
                self.fired = True
                self._connections.cut()

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._armed = False
        self._timer.cancel()

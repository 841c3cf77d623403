"""The Prometheus HTTP client: issues one pool's queries and parses what comes back.

Blocking (requests, through `prometheus_api_client.PrometheusConnect`); an asyncio caller runs
`fetch` in a thread. No retries: the control loop's next tick is the retry, and a tick must
not stall on backoff while its data ages. A pod-signal query that fails ends the fetch at once:
the result carries the error and no signals at all, never the half that happened to answer.

The server is the pool's choice, so nothing it says is copied into an error (errors land in
the pool's status, which others read): only the HTTP status, and Prometheus's `errorType`
when it is one of the API's own values. The session (`transport`) follows no redirect, checks
the addresses it connects to, and cuts a fetch at its deadline however slowly the server
drips its answer.
"""

from __future__ import annotations

import re
import time
from typing import Final, Self

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from chiron_operator.api.spec import PrometheusSpec
from chiron_operator.metrics.destination import DestinationPolicy, DestinationRefusedError
from chiron_operator.metrics.parse import MalformedResultError, Sample, assemble, parse_vector
from chiron_operator.metrics.promql import PoolQuery, Signal
from chiron_operator.metrics.results import PoolMetrics
from chiron_operator.metrics.transport import (
    Connections,
    GuardedAdapter,
    RedirectRefusedError,
    Watchdog,
    guarded_session,
)

DEFAULT_TIMEOUT_S: Final = 5.0
DEFAULT_DEADLINE_S: Final = 10.0
WATCHDOG_FIRST_S: Final = 0.5
MAX_ERROR_CHARS: Final = 400
# The HTTP API's `errorType` values: an enum, so safe to repeat, unlike the free-text `error`.
PROMETHEUS_ERROR_TYPES: Final = frozenset(
    {
        "timeout",
        "canceled",
        "execution",
        "bad_data",
        "internal",
        "unavailable",
        "not_found",
        "not_acceptable",
    }
)

_QUERY_ERRORS = (
    PrometheusApiClientException,
    requests.RequestException,
    DestinationRefusedError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
)


class DeadlinePassedError(Exception):
    """The fetch's deadline passed before this query could start."""


class PrometheusSource:
    """A Prometheus server the pools' signals are read from.

    `bearer_token` is sent as `Authorization: Bearer ...`. `verify_tls` is requests' `verify`:
    True, False, or the path of a CA bundle. `timeout_s` bounds each connect and each read;
    `deadline_s` bounds the whole fetch. `destinations` is the address policy every connection
    is checked against; None checks none (for a caller that chose the URL itself).
    """

    def __init__(
        self,
        url: str,
        *,
        bearer_token: str | None = None,
        verify_tls: bool | str = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        deadline_s: float = DEFAULT_DEADLINE_S,
        destinations: DestinationPolicy | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self._connections = Connections(destinations)
        adapter = GuardedAdapter(self._connections)
        session = guarded_session(adapter, verify_tls)
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
        self._client = PrometheusConnect(
            url=self.url,
            headers=headers,
            retry=Retry(total=0, raise_on_status=False),
            session=session,
        )
        # The client mounts a plain adapter of its own on the URL: put the guarded one back.
        mounted = session.adapters.get(self.url)
        session.mount(self.url, adapter)
        if mounted is not None and mounted is not adapter:
            mounted.close()

    @classmethod
    def from_spec(
        cls,
        spec: PrometheusSpec,
        *,
        bearer_token: str | None = None,
        verify_tls: bool | str = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> Self:
        """The source a pool's `spec.prometheus` names."""
        return cls(spec.url, bearer_token=bearer_token, verify_tls=verify_tls, timeout_s=timeout_s)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def fetch(self, query: PoolQuery) -> PoolMetrics:
        """Issue the pool's queries (at most eight) and return what they say.

        Errors never raise: a refused destination or a failed pod-signal query gives
        `PoolMetrics(error=...)` with no signals; a failed or refused batch-queue query sets
        only `queue.error`.
        """
        fetched_at_s = time.time()
        policy = self._connections.policy
        try:
            if policy is not None:
                policy.check_url(self.url)
        except DestinationRefusedError as exc:
            return PoolMetrics(
                error=f"Prometheus {self.url} refused: {exc}", fetched_at_s=fetched_at_s
            )
        with Watchdog(self._connections, self.deadline_s) as watchdog:
            return self._fetch(query, watchdog, fetched_at_s)

    def _fetch(self, query: PoolQuery, watchdog: Watchdog, fetched_at_s: float) -> PoolMetrics:
        results: dict[Signal, tuple[Sample, ...]] = {}
        issued = 0
        queue_error = query.queue_refusal
        for signal, promql in query.queries().items():
            issued += 1
            try:
                results[signal] = self._query(promql, watchdog)
            except (*_QUERY_ERRORS, DeadlinePassedError) as exc:
                error = f"{signal.value} query failed: {self._describe(exc, watchdog)}"
                if signal is not Signal.BATCH_QUEUE:
                    return PoolMetrics(error=error, queries=issued, fetched_at_s=fetched_at_s)
                queue_error = error
        return assemble(
            results, query, queries=issued, fetched_at_s=fetched_at_s, queue_error=queue_error
        )

    def _query(self, promql: str, watchdog: Watchdog) -> tuple[Sample, ...]:
        remaining_s = watchdog.remaining_s()
        if remaining_s <= 0.0:
            raise DeadlinePassedError
        # A little past the deadline, so that the watchdog, not a socket timeout, ends a fetch
        # that runs out of time (and the error says which bound it hit).
        bound_s = min(self.timeout_s, remaining_s + WATCHDOG_FIRST_S)
        # The client annotates `timeout` as int; it is requests' timeout, which also takes a
        # (connect, read) pair of float seconds.
        timeout: int = (bound_s, bound_s)  # type: ignore[assignment]
        return parse_vector(self._client.custom_query(promql, timeout=timeout))

    def _describe(self, exc: Exception, watchdog: Watchdog) -> str:
        if watchdog.fired or isinstance(exc, DeadlinePassedError):
            text = f"no complete answer from {self.url} within the {self.deadline_s:g} s deadline"
        elif isinstance(exc, RedirectRefusedError):
            text = f"{exc} ({self.url} answered with a redirect)"
        elif isinstance(exc, DestinationRefusedError):
            text = f"refused: {exc}"
        elif _timed_out(exc):
            text = f"no answer from {self.url} within {self.timeout_s:g} s"
        elif isinstance(exc, requests.ConnectionError | OSError):
            text = f"cannot connect to {self.url} ({type(exc).__name__})"
        elif isinstance(exc, MalformedResultError):
            text = "the answer is not an instant vector"
        elif isinstance(exc, PrometheusApiClientException):
            text = _api_error(str(exc))
        else:
            text = f"the answer is not the Prometheus HTTP API's JSON ({type(exc).__name__})"
        return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _timed_out(exc: BaseException) -> bool:
    """A connect or read timeout, also where requests reports it as a ConnectionError."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.Timeout | TimeoutError):
            return True
        reason = getattr(seen, "reason", None)
        if isinstance(reason, BaseException) and _timed_out(reason):
            return True
        arg = seen.args[0] if seen.args else None
        seen = arg if isinstance(arg, BaseException) else seen.__cause__
    return False


_API_ERROR = re.compile(r"HTTP Status Code (\d+) .*", re.DOTALL)
_ERROR_TYPE = re.compile(r'"errorType"\s*:\s*"([a-z_]{1,32})"')


def _api_error(text: str) -> str:
    """`HTTP <status>`, with Prometheus's `errorType` when it is one of the API's values.

    The client's message holds the body's repr; the body is the server's free text, never
    repeated, and only a known `errorType` value is read from it.
    """
    match = _API_ERROR.fullmatch(text)
    if match is None:
        return "unexpected answer"
    status = match.group(1)
    kind = _ERROR_TYPE.search(text)
    if kind is not None and kind.group(1) in PROMETHEUS_ERROR_TYPES:
        return f"HTTP {status} (Prometheus errorType {kind.group(1)})"
    return f"HTTP {status}"

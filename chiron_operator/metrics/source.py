"""The Prometheus HTTP client: issues one pool's queries and parses what comes back.

Blocking (requests, through `prometheus_api_client.PrometheusConnect`); an asyncio caller runs
`fetch` in a thread. No retries: the control loop's next tick is the retry, and a tick must
not stall on backoff while its data ages. A pod-signal query that fails ends the fetch at once:
the result carries the error and no signals at all, never the half that happened to answer.
"""

from __future__ import annotations

import ast
import json
import re
import time
from typing import Final, Self

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from chiron_operator.api.spec import PrometheusSpec
from chiron_operator.metrics.parse import MalformedResultError, Sample, assemble, parse_vector
from chiron_operator.metrics.promql import PoolQuery, Signal
from chiron_operator.metrics.results import PoolMetrics

DEFAULT_TIMEOUT_S: Final = 5.0
MAX_ERROR_CHARS: Final = 400

_QUERY_ERRORS = (PrometheusApiClientException, requests.RequestException, ValueError, KeyError)


class PrometheusSource:
    """A Prometheus server the pools' signals are read from.

    `bearer_token` is sent as `Authorization: Bearer ...` (the operator reads it from the
    pool's `authSecretRef`). `verify_tls` is requests' `verify`: True, False, or the path of a
    CA bundle.
    """

    def __init__(
        self,
        url: str,
        *,
        bearer_token: str | None = None,
        verify_tls: bool | str = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        session = requests.Session()
        session.verify = verify_tls
        headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else {}
        self._client = PrometheusConnect(
            url=self.url,
            headers=headers,
            retry=Retry(total=0, raise_on_status=False),
            session=session,
        )

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

        Errors never raise: a failed pod-signal query gives `PoolMetrics(error=...)` with no
        signals; a failed batch-queue query sets only `queue.error`.
        """
        fetched_at_s = time.time()
        results: dict[Signal, tuple[Sample, ...]] = {}
        issued = 0
        queue_error = ""
        for signal, promql in query.queries().items():
            issued += 1
            try:
                results[signal] = self._query(promql)
            except _QUERY_ERRORS as exc:
                error = f"{signal.value} query failed: {self._describe(exc)}"
                if signal is not Signal.BATCH_QUEUE:
                    return PoolMetrics(error=error, queries=issued, fetched_at_s=fetched_at_s)
                queue_error = error
        return assemble(
            results, query, queries=issued, fetched_at_s=fetched_at_s, queue_error=queue_error
        )

    def _query(self, promql: str) -> tuple[Sample, ...]:
        # The client annotates `timeout` as int; it is requests' timeout, which takes seconds
        # as a float.
        timeout: int = self.timeout_s  # type: ignore[assignment]
        return parse_vector(self._client.custom_query(promql, timeout=timeout))

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, requests.Timeout):
            text = f"no answer from {self.url} within {self.timeout_s:g} s"
        elif isinstance(exc, requests.ConnectionError):
            text = f"cannot connect to {self.url} ({type(exc).__name__})"
        elif isinstance(exc, MalformedResultError):
            text = f"unexpected result: {exc}"
        elif isinstance(exc, PrometheusApiClientException):
            text = _api_error(str(exc))
        else:
            text = str(exc) or type(exc).__name__
        return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


_API_ERROR = re.compile(r"HTTP Status Code (\d+) \((b'.*'|b\".*\")\)", re.DOTALL)


def _api_error(text: str) -> str:
    """`HTTP 400: <Prometheus's error>` from the client's message, which holds the body's repr."""
    match = _API_ERROR.fullmatch(text)
    if match is None:
        return text
    try:
        body = json.loads(ast.literal_eval(match.group(2)))
        return f"HTTP {match.group(1)}: {body['error']}"
    except (ValueError, SyntaxError, TypeError, KeyError):
        return f"HTTP {match.group(1)}"

"""Many fake vLLM pods behind one loopback server, for a Prometheus to scrape.

Every pod serves the same moving exposition: the emulator's vLLM metric families, fed a steady
stream of synthetic requests (so counters advance and the latency histograms hold
observations), with running and waiting gauges that make the pods look loaded. The operator's
cost per tick depends on how many pods and series Prometheus holds, not on their values, so
one shared exposition (re-rendered once a second) keeps hundreds of pods cheap to serve.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from aiohttp import web

from chiron_operator.devcluster.cluster.filesd import write_file_sd
from chiron_operator.emulator.metrics import CONTENT_TYPE, FinishedRequest, MetricNames, VllmMetrics

RENDER_INTERVAL_S: Final = 1.0
REQUESTS_PER_RENDER: Final = 20
TOKENS_PER_REQUEST: Final = 50


def _finished() -> FinishedRequest:
    return FinishedRequest(
        e2e_s=2.0,
        queue_s=0.1,
        prefill_s=0.2,
        decode_s=1.7,
        inference_s=1.9,
        prompt_tokens=800,
        generation_tokens=TOKENS_PER_REQUEST,
        max_tokens=TOKENS_PER_REQUEST,
        preemptions=0,
    )


class FakeFleet:
    """`pods` (names) served at `/pods/<name>/metrics` from one aiohttp server."""

    def __init__(self, namespace: str, pods: Sequence[str], model: str) -> None:
        self.namespace = namespace
        self.pods = tuple(pods)
        self._metrics = VllmMetrics(model_name=model, max_model_len=4096, names=MetricNames.CURRENT)
        self._known = frozenset(self.pods)
        self._body = b""
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    def _advance(self) -> None:
        for _ in range(REQUESTS_PER_RENDER):
            self._metrics.on_first_schedule(800)
            self._metrics.on_token(0.15, None)
            for _ in range(TOKENS_PER_REQUEST - 1):
                self._metrics.on_token(None, 0.03)
            self._metrics.on_finished(_finished())
        self._metrics.set_state(running=6, waiting=1, kv_usage=0.4)
        self._body = self._metrics.exposition()

    async def _render_forever(self) -> None:
        while True:
            self._advance()
            await asyncio.sleep(RENDER_INTERVAL_S)

    async def _serve(self, request: web.Request) -> web.Response:
        if request.match_info["pod"] not in self._known:
            raise web.HTTPNotFound()
        return web.Response(body=self._body, headers={"Content-Type": CONTENT_TYPE})

    async def start(self) -> int:
        """Serve on a free loopback port; the port."""
        self._advance()
        app = web.Application()
        app.router.add_get("/pods/{pod}/metrics", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        self._task = asyncio.create_task(self._render_forever())
        return self.port

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._runner is not None:
            await self._runner.cleanup()

    def write_targets(self, path: Path) -> None:
        """A file_sd file naming every pod (namespace, pod, and its path on the server)."""
        groups = [
            {
                "targets": [f"127.0.0.1:{self.port}"],
                "labels": {
                    "namespace": self.namespace,
                    "pod": pod,
                    "__metrics_path__": f"/pods/{pod}/metrics",
                },
            }
            for pod in self.pods
        ]
        write_file_sd(path, groups)

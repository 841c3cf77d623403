"""An upstream that answers at once, for the batch benchmark's dispatch measurement.

`python -m chiron_operator.perf.batch_upstream --port P` serves `/v1/chat/completions` and
`/v1/completions` with one fixed completion (with `usage`, as vLLM reports it), `/v1/models` and
`/health`, on 127.0.0.1. It reads each request's body but does no work for it: whatever time a
request takes beyond the client's and this server's bare HTTP handling is the caller's. It runs
as its own process so that its CPU time is neither the gateway's nor the load generator's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from typing import Final

import uvloop
from aiohttp import web
from aiohttp.typedefs import Handler

HOST: Final = "127.0.0.1"
COMPLETION_TOKENS: Final = 16
PROMPT_TOKENS: Final = 96
_TEXT: Final = "Continuous batching keeps the GPU busy while requests come and go."


def _usage() -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }


def chat_answer(model: str) -> bytes:
    """The fixed chat completion every chat request gets."""
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": _TEXT},
        "finish_reason": "length",
    }
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [choice],
        "usage": _usage(),
    }
    return json.dumps(body).encode()


def completion_answer(model: str) -> bytes:
    """The fixed text completion every completions request gets."""
    choice = {"index": 0, "text": _TEXT, "finish_reason": "length", "logprobs": None}
    body = {
        "id": "cmpl-bench",
        "object": "text_completion",
        "created": 0,
        "model": model,
        "choices": [choice],
        "usage": _usage(),
    }
    return json.dumps(body).encode()


def app(model: str) -> web.Application:
    """The server's routes; every answer is built once, up front."""
    answers = {"chat": chat_answer(model), "text": completion_answer(model)}
    models = json.dumps({"object": "list", "data": [{"id": model, "object": "model"}]}).encode()

    def answering(body: bytes) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            await request.read()  # a real server reads the request, so this one does too
            return web.Response(body=body, content_type="application/json")

        return handle

    application = web.Application()
    application.router.add_post("/v1/chat/completions", answering(answers["chat"]))
    application.router.add_post("/v1/completions", answering(answers["text"]))
    application.router.add_get("/v1/models", answering(models))
    application.router.add_get("/health", answering(b"{}"))
    return application


async def _serve(port: int, model: str) -> None:
    runner = web.AppRunner(app(model), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chiron_operator.perf.batch_upstream")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="bench")
    args = p.parse_args(argv)
    uvloop.run(_serve(args.port, args.model))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`chiron-emulator MODEL [vllm serve flags]`: run the vLLM-compatible emulator."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from chiron_operator.emulator.args import parse_args
from chiron_operator.emulator.server import serve

log = logging.getLogger("chiron_operator.emulator")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: the process's arguments), serve until SIGTERM; the exit code."""
    try:
        config = parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help (0) and on errors (2); report it as a return value.
        return exc.code if isinstance(exc.code, int) else 1
    logging.basicConfig(
        level=config.log_level, format="%(levelname)s %(asctime)s %(name)s: %(message)s"
    )
    if config.ignored_args:
        log.warning("ignoring vLLM flags the emulator does not model: %s", config.ignored_args)
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())

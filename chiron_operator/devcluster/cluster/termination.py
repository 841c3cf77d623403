"""How the dev cluster's kubelet stops a deleted pod: preStop hook, SIGTERM, SIGKILL.

As a kubelet does: the pod is already out of every endpoint list (it carries a
deletionTimestamp: the demo's balancer, the Prometheus file_sd file and the operator all treat
it as not ready), so the container's preStop hook runs first while the process keeps serving,
then the process gets SIGTERM, and SIGKILL once the grace period (counted from the start of
the termination, preStop included) is over. A preStop hook that uses up the grace period still
leaves the process `MIN_SIGTERM_GRACE_S` between SIGTERM and SIGKILL, the kubelet's one-off
extension.

Only sleeping hooks are run, as sleeps: the `sleep` action, and `exec` of `sleep N` (directly or
through `sh -c`). The pods are local processes, not containers, so any other exec command would
run on this machine; it is skipped with a warning instead, as are httpGet hooks.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, Final

from chiron_operator.devcluster.cluster.processes import PodProcess

logger = logging.getLogger(__name__)

MIN_SIGTERM_GRACE_S: Final = 2.0
SHELLS: Final = frozenset({"sh", "bash", "dash"})


def pre_stop_sleep_s(container: Mapping[str, Any]) -> float:
    """Seconds the container's preStop hook sleeps (0 without a hook it can run)."""
    hook = (container.get("lifecycle") or {}).get("preStop") or {}
    if not hook:
        return 0.0
    if "sleep" in hook:
        return float((hook["sleep"] or {}).get("seconds") or 0)
    command = (hook.get("exec") or {}).get("command") or []
    seconds = _sleep_command_s([str(part) for part in command])
    if seconds is None:
        logger.warning("preStop hook %s is not a sleep; the dev cluster skips it", hook)
        return 0.0
    return seconds


def _sleep_command_s(command: Sequence[str]) -> float | None:
    if len(command) == 3 and PurePosixPath(command[0]).name in SHELLS and command[1] == "-c":
        command = shlex.split(command[2])
    if len(command) != 2 or PurePosixPath(command[0]).name != "sleep":
        return None
    try:
        seconds = float(command[1])
    except ValueError:
        return None
    return max(0.0, seconds)


async def terminate(process: PodProcess, *, pre_stop_s: float, grace_s: float) -> None:
    """The preStop sleep (within the grace period), then SIGTERM and SIGKILL at its end."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    sleep_s = min(pre_stop_s, grace_s)
    if sleep_s > 0:
        await asyncio.sleep(sleep_s)
    left_s = grace_s - (loop.time() - began)
    # A process that had no grace at all (deleted with gracePeriodSeconds=0) gets none.
    await process.stop(max(left_s, MIN_SIGTERM_GRACE_S) if grace_s > 0 else 0.0)

"""A real PostgreSQL server for tests: a private cluster on a free loopback port, always stopped.

The Debian `postgresql` package's `initdb` and `pg_ctl` (the newest version under
/usr/lib/postgresql) make a throwaway cluster in a temporary directory: trust authentication for
the `chiron` superuser, listening on 127.0.0.1 only, its socket in that directory. The server
refuses to run as root, so as root it runs as the `postgres` user (`runuser`).

    with PostgresServer().start() as server:
        server.url  # postgresql://chiron@127.0.0.1:PORT/postgres

Durability is switched off (`fsync=off`): the tests kill gateways, never the machine, and
creating a database per test is then quick. Without the binaries the tests fail, saying how to
install them (`make system-deps`).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final, Self

import pytest

from chiron_operator.devcluster.cluster.processes import free_port

USER: Final = "chiron"
INSTALL_GLOB: Final = "/usr/lib/postgresql/*/bin/initdb"
START_TIMEOUT_S: Final = 30
STOP_TIMEOUT_S: Final = 30


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin directory; its absence fails the test."""
    found = sorted(glob.glob(INSTALL_GLOB), key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        pytest.fail(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run "
            "`make system-deps` (apt-get install -y --no-install-recommends postgresql)"
        )
    return Path(found[-1]).parent


class PostgresServer:
    """One private PostgreSQL cluster and server. Use as a context manager, or call `stop()`."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or postgres_bin_dir()
        self.as_root = os.geteuid() == 0
        self.workdir = Path(tempfile.mkdtemp(prefix="chiron-pg-"))
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "log"
        self.port = 0
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def _command(self, tool: str, *args: str, timeout_s: float) -> None:
        argv = [str(self.bin_dir / tool), *args]
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}):\n{done.stderr}\n{self.log()}")

    def start(self, attempts: int = 3) -> Self:
        """Create the cluster and start the server on a free port (another if it is taken)."""
        if self.as_root:
            shutil.chown(self.workdir, user="postgres")
        self._command(
            "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", USER, "--no-sync",
            timeout_s=START_TIMEOUT_S,
        )  # fmt: skip
        for attempt in range(attempts):
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._command(
                    "pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(self.log_path),
                    "-w", "-t", str(START_TIMEOUT_S), "start", timeout_s=START_TIMEOUT_S + 5,
                )  # fmt: skip
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                continue
            self._started = True
            return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete the cluster. Idempotent."""
        try:
            if self._started:
                self._started = False
                self._command(
                    "pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop",
                    timeout_s=STOP_TIMEOUT_S,
                )  # fmt: skip
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self, tail_chars: int = 4000) -> str:
        """The end of the server's log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-tail_chars:]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, unix socket only, started once per session.

`postgres_cluster` (session) runs initdb and pg_ctl as user `postgres` (the server refuses to run as root) in a
temporary folder; `postgres_url` (per test) is a fresh database in it. Without the binaries the tests are skipped
with the install hint, except in CI ($CI == "true"), which must run them.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = "PostgreSQL's server is not installed (apt-get install -y postgresql; the tests start their own cluster)"


@dataclass(frozen=True)
class Cluster:
    bin_dir: Path
    socket_dir: Path
    port: int

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}&port={self.port}"


def _server_bin_dir() -> Path | None:
    """The newest of Debian's /usr/lib/postgresql/<major>/bin with initdb."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    return Path(max(found, key=lambda path: int(Path(path).parts[-3]))).parent if found else None


def _as_postgres(argv: list[str], cwd: Path) -> None:
    """Run a server command as user postgres (as is when the tests do not run as root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(prefix + argv, cwd=cwd, check=True, capture_output=True, text=True)


def _owned_by_postgres(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    return folder


def _free_port() -> int:
    """A port number no local server uses; with listen_addresses='' it only names the socket file."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    bin_dir = _server_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI") == "true":
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    data_dir, socket_dir = _owned_by_postgres("chtn-pg-data-"), _owned_by_postgres("chtn-pg-sock-")
    cluster = Cluster(bin_dir, socket_dir, _free_port())
    options = f"-k {socket_dir} -p {cluster.port} -c listen_addresses=''"
    try:
        _as_postgres([str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres"], data_dir)
        # -l: the server writes to a log file, not to our pipes (else waiting for pg_ctl's output never ends)
        start = ["-D", str(data_dir), "-l", str(data_dir / "server.log"), "-o", options, "-w", "start"]
        _as_postgres([str(bin_dir / "pg_ctl"), *start], data_dir)
        try:
            yield cluster
        finally:
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"], data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """A fresh database for one test. Its time zone is not UTC, so a test sees whether times come back as UTC."""
    import psycopg

    name = f"chtn_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_cluster.url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
        # Identifiers cannot be bound parameters; psycopg.sql quotes the generated name.
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        conn.execute(
            psycopg.sql.SQL("ALTER DATABASE {} SET timezone = 'Asia/Kathmandu'").format(psycopg.sql.Identifier(name))
        )
    return postgres_cluster.url(name)

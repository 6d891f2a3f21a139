"""A throwaway MariaDB server on this machine, for the tests and the benchmarks.

:func:`start_mariadb` starts ``mariadbd`` from the system's package in a data directory of
the caller's, on 127.0.0.1 and a free port, with a real user and password;
:meth:`MariaDBServer.stop` stops it. :func:`external_server` names a server that is already
running (``mysql://user:password@host:port/``) instead.

    server = start_mariadb(Path(tempfile.mkdtemp()))
    try:
        url = server.url(asyncio.run(server.create_database("darwin")))
        ...
    finally:
        server.stop()
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from mlserve.models.settings import DatabaseSettings

from .cluster.ports import free_ports

__all__ = [
    "INSTALL_HINT",
    "MariaDBServer",
    "MariaDBUnavailable",
    "ServerTLS",
    "external_server",
    "find_mariadbd",
    "start_mariadb",
]

START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
USER = "mlserve_test"
INSTALL_HINT = (
    "the MariaDB tests need the server binary `mariadbd`: install it with "
    "`apt-get install mariadb-server` (Debian/Ubuntu), or point MLSERVE_TEST_MYSQL_URL at a "
    "MySQL-compatible server (mysql://user:password@host:port/)"
)


class MariaDBUnavailable(RuntimeError):
    """The throwaway server could not be found or started."""


@dataclass(frozen=True)
class ServerTLS:
    """TLS for the server: the CA that signed its certificate, the certificate and its key (PEM).

    With ``required`` the server refuses every connection over TCP that is not encrypted
    (``require_secure_transport``); its own socket, used to set it up, still works.
    """

    ca: Path
    cert: Path
    key: Path
    required: bool = True

    def options(self) -> list[str]:
        required = ["--require-secure-transport=ON"] if self.required else []
        return [f"--ssl-ca={self.ca}", f"--ssl-cert={self.cert}", f"--ssl-key={self.key}", *required]


@dataclass
class MariaDBServer:
    """A MySQL-compatible server one may create and drop databases on."""

    host: str
    port: int
    user: str
    password: str
    process: subprocess.Popen[bytes] | None = None
    datadir: Path | None = None
    log_file: Path | None = None
    tls: ServerTLS | None = None
    created: list[str] = field(default_factory=list)

    def url(self, database: str = "") -> str:
        """Tortoise URL (holds the password: for the caller's own use)."""
        auth = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"mysql://{auth}@{self.host}:{self.port}/{database}"

    def settings(self, database: str) -> DatabaseSettings:
        return DatabaseSettings.from_url(self.url(database), source="test server")

    async def execute(self, sql: str) -> None:
        """Run one statement outside any database."""
        from tortoise.backends.mysql import client

        driver = client.mysql  # type: ignore[attr-defined]  # aiomysql (asyncmy when installed)

        encrypted = {"ssl": ssl.create_default_context(cafile=str(self.tls.ca))} if self.tls else {}
        conn = await driver.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, autocommit=True, **encrypted
        )
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(sql)
        finally:
            conn.close()

    async def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        await self.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        self.created.append(name)
        return name

    async def drop_database(self, name: str) -> None:
        await self.execute(f"DROP DATABASE IF EXISTS `{name}`")
        if name in self.created:
            self.created.remove(name)

    async def drop_leftovers(self) -> None:
        """Drop every database created through this object and not dropped yet."""
        for name in list(self.created):
            await self.drop_database(name)

    def freeze(self, timeout: float = 10.0) -> None:
        """SIGSTOP the server (a hung server: connections stay open, nothing answers), and wait
        until every thread of it is stopped (a signal is delivered asynchronously)."""
        assert self.process is not None, "only a server started here can be frozen"
        pid = self.process.pid
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        tasks = Path(f"/proc/{pid}/task")
        while not all("T (stopped)" in (task / "status").read_text() for task in tasks.iterdir()):
            if time.monotonic() > deadline:
                raise MariaDBUnavailable(f"mariadbd {pid} did not stop within {timeout:g} s of SIGSTOP")
            time.sleep(0.05)

    def thaw(self) -> None:
        """SIGCONT: the frozen server answers again."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)


def find_mariadbd() -> str | None:
    """Path of the server binary, or None."""
    for name in ("mariadbd", "mysqld"):
        found = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK) else None)
        if found:
            return found
    return None


def _client(socket_path: Path) -> list[str]:
    binary = shutil.which("mariadb") or shutil.which("mysql")
    if binary is None:
        raise MariaDBUnavailable("the MariaDB client (`mariadb`) is missing: " + INSTALL_HINT)
    return [binary, "--no-defaults", "--user=root", f"--socket={socket_path}", "--batch"]


def start_mariadb(base_dir: Path, *, timeout: float = START_TIMEOUT, tls: ServerTLS | None = None) -> MariaDBServer:
    """Initialise a data directory under ``base_dir`` and start a server on it.

    The server listens on 127.0.0.1 on a free port; a user with a random password has
    every right; with ``tls`` it speaks TLS. Raises :class:`MariaDBUnavailable` with the
    server's log on failure.
    """
    server_binary = find_mariadbd()
    install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if server_binary is None or install_db is None:
        raise MariaDBUnavailable(INSTALL_HINT)
    datadir = base_dir / "data"
    datadir.mkdir(parents=True, exist_ok=True)
    socket_path = base_dir / "mariadb.sock"
    log_file = base_dir / "mariadb.log"
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    init = subprocess.run(
        [
            install_db,
            "--no-defaults",
            "--auth-root-authentication-method=normal",
            f"--datadir={datadir}",
            "--skip-test-db",
            *as_root,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if init.returncode != 0:
        raise MariaDBUnavailable(f"mariadb-install-db failed:\n{init.stdout}\n{init.stderr}")

    (port,) = free_ports(1)
    process = subprocess.Popen(
        [
            server_binary,
            "--no-defaults",
            f"--datadir={datadir}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--socket={socket_path}",
            f"--pid-file={base_dir / 'mariadb.pid'}",
            f"--log-error={log_file}",
            "--skip-name-resolve",
            "--skip-log-bin",
            # A throwaway server: speed over durability.
            "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--sync-binlog=0",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            *(tls.options() if tls else []),
            *as_root,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = MariaDBServer(
        host="127.0.0.1",
        port=port,
        user=USER,
        password=secrets.token_urlsafe(18),
        process=process,
        datadir=datadir,
        log_file=log_file,
        tls=tls,
    )
    client = _client(socket_path)

    def ready() -> bool:
        if process.poll() is not None:
            log = log_file.read_text(errors="replace") if log_file.exists() else "(no log)"
            raise MariaDBUnavailable(f"mariadbd exited with {process.returncode}:\n{log[-4000:]}")
        probe = subprocess.run([*client, "-e", "SELECT 1"], capture_output=True, timeout=10, check=False)
        return probe.returncode == 0

    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise MariaDBUnavailable(f"mariadbd did not accept connections on {socket_path} within {timeout:g} s")
            time.sleep(0.1)
        statements = "".join(
            f"CREATE USER '{USER}'@'{host}' IDENTIFIED BY '{server.password}';"
            f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'{host}' WITH GRANT OPTION;"
            for host in ("127.0.0.1", "localhost")
        )
        subprocess.run([*client, "-e", statements], check=True, capture_output=True, timeout=30)
    except BaseException:
        server.stop()
        raise
    return server


def external_server(url: str) -> MariaDBServer:
    """The server named by a URL ``mysql://user:password@host:port/``."""
    parts = urlsplit(url)
    if parts.scheme != "mysql" or not parts.hostname:
        raise MariaDBUnavailable("a MySQL server URL must look like mysql://user:password@host:port/")
    return MariaDBServer(
        host=parts.hostname,
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
    )

"""MariaDB for the lab: the seed's database primary and read replica, made real.

Each server runs Debian's ``mariadbd`` inside its host's network namespace, listening on the
host's own address, with everything it writes (data directory, socket, pid file, error log) under
one directory of the run. Nothing of the system's MariaDB is used or touched: no option file is
read (``--no-defaults``), the service the package installs is never started.

* ``skip_reason()``: why MariaDB cannot run here (binaries, PyMySQL), or None;
* ``MariaDB(lab, host, workdir, server_id=N)``: ``install()`` (mariadb-install-db), ``start()``,
  ``query()`` as root over its Unix socket (reachable from outside the namespace), ``stop()``
  (SIGTERM, then SIGKILL, by PID);
* ``replicate(primary, replica)``: a replication user on the primary for the replica's address,
  then ``CHANGE MASTER TO`` ... ``START SLAVE`` on the replica, from the primary's first binary
  log (everything the primary does afterwards, users and schema included, reaches the replica);
* ``create_site(primary, apps)``: the site's database (``foobar.visits``) and an ``app`` user
  for each app server's address, on the primary (and so on the replica);
* ``replica_status(replica)``: ``SHOW SLAVE STATUS`` as a dict.

Every wait has a deadline; a server that does not come up raises with its error log's tail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

try:
    import pymysql
except ImportError:  # reported by skip_reason()
    pymysql = None

SITE_DB = "foobar"
APP_USER = "app"
REPL_USER = "repl"
START_TIMEOUT_S = 90.0  # a guard against a hang: InnoDB's first start on a busy machine takes seconds


def skip_reason() -> str | None:
    for tool in ("mariadbd", "mariadb-install-db"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} missing (Debian mariadb-server; scripts/setup.sh installs it)"
    if pymysql is None:
        return "PyMySQL missing (Debian python3-pymysql; scripts/setup.sh installs it)"
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class MariaDB:
    """One MariaDB server in `host`'s namespace of `lab` (a netns.Lab), on its address."""

    def __init__(self, lab, host: str, workdir: Path, *, server_id: int, port: int = 3306) -> None:
        self.lab, self.host, self.port, self.server_id = lab, host, port, server_id
        self.address = lab.address(host)
        self.dir = Path(workdir) / f"mariadb-{host}"
        self.datadir = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"
        self.error_log = self.dir / "error.log"
        self.process: subprocess.Popen | None = None

    def install(self, timeout: float = 180.0) -> "MariaDB":
        """A new data directory (system tables; root@localhost without password, socket only)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([_tool("mariadb-install-db"), "--no-defaults", f"--datadir={self.datadir}", "--user=root",
                            "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"mariadb-install-db for {self.host}: exit {r.returncode}: {r.stderr[-800:]}")
        return self

    def start(self, *, primary: bool, timeout: float = START_TIMEOUT_S) -> "MariaDB":
        argv = [_tool("mariadbd"), "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
                f"--pid-file={self.dir / 'mysqld.pid'}", f"--log-error={self.error_log}", "--user=root",
                f"--bind-address={self.address}", f"--port={self.port}", f"--server-id={self.server_id}",
                "--skip-name-resolve", "--performance-schema=OFF", "--innodb-buffer-pool-size=16M",
                "--max-connections=64", "--log-bin=mariadb-bin", "--binlog-format=ROW",
                f"--relay-log={self.dir / 'relay-bin'}"]
        if not primary:
            # Writes come only through replication; the app's user could not write here anyway.
            argv += ["--read-only=1"]
        self.process = subprocess.Popen(self.lab.argv(self.host, argv), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd on {self.host} exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                self.query("SELECT 1")
                return self
            except pymysql.MySQLError as e:
                last = str(e)
            time.sleep(0.1)
        raise RuntimeError(f"mariadbd on {self.host} not ready after {timeout:.0f}s ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no error log)"

    def connect(self, database: str | None = None):
        return pymysql.connect(unix_socket=str(self.socket), user="root", password="", database=database,
                               connect_timeout=5, read_timeout=30, write_timeout=30, autocommit=True)

    def query(self, sql: str, args=None) -> list[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def query_dict(self, sql: str) -> list[dict]:
        conn = self.connect()
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean shutdown), SIGKILL after `timeout`; by PID (ip netns exec execs mariadbd)."""
        p, self.process = self.process, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def replicate(primary: MariaDB, replica: MariaDB, password: str) -> None:
    """Replication from the primary's first binary log: the user, then the replica's threads."""
    primary.query(f"CREATE USER '{REPL_USER}'@'{replica.address}' IDENTIFIED BY %s", (password,))
    primary.query(f"GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'{replica.address}'")
    first = primary.query("SHOW BINARY LOGS")[0][0]
    replica.query("CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, MASTER_PASSWORD=%s, "
                  "MASTER_LOG_FILE=%s, MASTER_LOG_POS=4, MASTER_CONNECT_RETRY=1",
                  (primary.address, primary.port, REPL_USER, password, first))
    replica.query("START SLAVE")


def create_site(primary: MariaDB, app_addresses: list[str], password: str) -> None:
    """The site's schema and the app servers' user (INSERT and SELECT on it, from their addresses)."""
    primary.query(f"CREATE DATABASE {SITE_DB}")
    primary.query(f"CREATE TABLE {SITE_DB}.visits (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                  "app VARCHAR(32) NOT NULL, at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))")
    for address in app_addresses:
        primary.query(f"CREATE USER '{APP_USER}'@'{address}' IDENTIFIED BY %s", (password,))
        primary.query(f"GRANT INSERT, SELECT ON {SITE_DB}.* TO '{APP_USER}'@'{address}'")


def replica_status(replica: MariaDB) -> dict:
    rows = replica.query_dict("SHOW SLAVE STATUS")
    return rows[0] if rows else {}


def wait_replicated(primary: MariaDB, replica: MariaDB, timeout: float = 30.0) -> int:
    """Waits until the replica has every visit the primary has; returns the count."""
    deadline = time.monotonic() + timeout
    want = primary.query(f"SELECT COUNT(*) FROM {SITE_DB}.visits")[0][0]
    got = -1
    while time.monotonic() < deadline:
        try:
            got = replica.query(f"SELECT COUNT(*) FROM {SITE_DB}.visits")[0][0]
        except pymysql.err.ProgrammingError:
            got = -1  # the schema has not reached the replica yet
        if got >= want:
            return got
        time.sleep(0.1)
    raise RuntimeError(f"the replica has {got} visits, the primary {want}, after {timeout:.0f}s: "
                       f"{replica_status(replica)}")

#!/usr/bin/env python3
"""www.foobar.com's application: a tiny real app on the seed's three tiers.

    python3 tests/support/foobar_app.py --name app1 --port 8080 [--host ADDR]
        --primary 192.0.2.31 --replica 192.0.2.32 --password-file FILE

``GET /`` (any path but /health) records a visit: one row written to the database primary
(``INSERT INTO foobar.visits``), then the number of visits read back from the read replica. It
answers 200 with the header ``X-Backend: NAME``, ``X-Visits: N`` (the replica's count) and a line
of text saying the same; 503 when a database cannot be reached (with the reason).

``GET /health`` answers 200 ``ok`` only when both the primary and the replica answer a query
(2 s connect timeout each), 503 with the reason otherwise: the gateway's health checks follow the
databases.

It prints ``ready`` once it listens, then one line per request (``REQ METHOD PATH STATUS``), and
serves until SIGTERM. The password is read from a file (mode 0600), never from the command line.
Python 3.11 with Debian's python3-pymysql.
"""

from __future__ import annotations

import argparse
import http.server
import signal
import sys
import threading

import pymysql

DATABASE = "foobar"
USER = "app"
CONNECT_TIMEOUT_S = 2
QUERY_TIMEOUT_S = 5


class App:
    def __init__(self, name: str, primary: str, replica: str, password: str, port: int = 3306) -> None:
        self.name, self.primary, self.replica, self.port = name, primary, replica, port
        self.password = password
        self.lock = threading.Lock()

    def _connect(self, host: str):
        return pymysql.connect(host=host, port=self.port, user=USER, password=self.password, database=DATABASE,
                               connect_timeout=CONNECT_TIMEOUT_S, read_timeout=QUERY_TIMEOUT_S,
                               write_timeout=QUERY_TIMEOUT_S, autocommit=True)

    def _one(self, host: str, sql: str, args=None):
        conn = self._connect(host)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchone()
        finally:
            conn.close()

    def visit(self) -> int:
        """Writes a visit to the primary, reads the count from the replica."""
        self._one(self.primary, "INSERT INTO visits (app) VALUES (%s)", (self.name,))
        return int(self._one(self.replica, "SELECT COUNT(*) FROM visits")[0])

    def health(self) -> str | None:
        """None when both databases answer, else why not."""
        for role, host in (("primary", self.primary), ("replica", self.replica)):
            try:
                self._one(host, "SELECT 1")
            except pymysql.MySQLError as e:
                return f"database {role} {host} unreachable: {e}"
        return None


def handler_for(app: App):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the gateway pools its connections

        def log_message(self, fmt, *args) -> None:  # noqa: D401 (the request log is ours)
            pass

        def _answer(self, status: int, text: str, headers: dict | None = None) -> None:
            body = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", app.name)
            self.send_header("Cache-Control", "no-store")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            print(f"REQ {self.command} {self.path} {status}", flush=True)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?", 1)[0] == "/health":
                why = app.health()
                self._answer(200 if why is None else 503, "ok" if why is None else why)
                return
            try:
                count = app.visit()
            except pymysql.MySQLError as e:
                self._answer(503, f"{app.name}: the database cannot be reached: {e}")
                return
            self._answer(200, f"served by {app.name}; visits: {count} (written to the primary {app.primary}, "
                              f"counted on the replica {app.replica})", {"X-Visits": str(count)})

        do_HEAD = do_GET

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description="www.foobar.com's application (MariaDB primary and replica).")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--primary", required=True, help="the database primary's address (writes)")
    parser.add_argument("--replica", required=True, help="the read replica's address (reads)")
    parser.add_argument("--db-port", type=int, default=3306)
    parser.add_argument("--password-file", required=True, help="the app user's password (first line)")
    args = parser.parse_args()
    with open(args.password_file, encoding="utf-8") as f:
        password = f.readline().strip()
    app = App(args.name, args.primary, args.replica, password, args.db_port)
    server = http.server.ThreadingHTTPServer((args.host, args.port), handler_for(app))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print("ready", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

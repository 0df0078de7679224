"""Static routes through the real gateway: what the site's nginx did, and nothing outside the root.

Two static routes: www.foobar.com/static/ (prefix stripped) and every path of
files.foobar.com; everything else goes to the app pool. Checked over TLS:
types, ETag / Last-Modified / Cache-Control, 304, a single Range (206, 416),
index.html, the 301 for a directory without '/', precompressed .br / .gz with
Vary, HEAD. Then 25 traversal attempts on files.foobar.com, sent raw (no
client-side normalisation): each gets 400 or 404, none reaches the app
server, and inotify shows that no file outside the root was opened.
"""

import ctypes
import ctypes.util
import dataclasses
import hashlib
import os
import select
import struct
from pathlib import Path

import harness as h
import pytest

FILES_HOST = "files.foobar.com"


class Inotify:
    """IN_OPEN and IN_ACCESS events on a few paths (libc's inotify through ctypes)."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20

    def __init__(self, paths) -> None:
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        h.check(self.fd >= 0, "inotify_init1")
        self.watches = {}
        for p in paths:
            wd = self.libc.inotify_add_watch(self.fd, str(p).encode(), self.IN_OPEN | self.IN_ACCESS)
            h.check(wd >= 0, f"inotify_add_watch {p}")
            self.watches[wd] = str(p)

    def events(self) -> list[str]:
        out = []
        while select.select([self.fd], [], [], 0.2)[0]:
            data = os.read(self.fd, 65536)
            pos = 0
            while pos < len(data):
                wd, mask, _, length = struct.unpack_from("iIII", data, pos)
                out.append(f"{self.watches.get(wd)} mask={mask:#x}")
                pos += 16 + length
        return out

    def close(self) -> None:
        os.close(self.fd)


@dataclasses.dataclass
class Tree:
    """The files served: root (the static root), base (its parent, with a secret next to the root),
    outside (a directory beside it) and big (the bytes of root/big.bin)."""
    base: Path
    root: Path
    outside: Path
    big: bytes


@pytest.fixture(scope="module")
def tree() -> Tree:
    base = h.temp_dir() / "static"
    root = base / "root"
    outside = base / "outside"
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / ".git").mkdir()
    outside.mkdir()
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "sub" / "index.html").write_text("<p>sub</p>\n")
    (root / "app.css").write_text("body { color: #333 }\n")
    big = os.urandom(1024 * 1024 - 77)  # the harness reads bodies up to 1 MiB
    (root / "big.bin").write_bytes(big)
    (root / "app.js").write_text("console.log('plain')\n" * 50)
    (root / "app.js.br").write_bytes(b"BR-BYTES")
    (root / "app.js.gz").write_bytes(b"GZ-BYTES")
    (root / ".hidden").write_text("hidden\n")
    (root / ".git" / "config").write_text("[core]\n")
    (base / "secret.txt").write_text("SECRET\n")
    (outside / "secret2.txt").write_text("SECRET2\n")
    os.symlink("../secret.txt", root / "link-out")
    os.symlink(str(base / "secret.txt"), root / "link-abs")
    os.symlink(str(outside), root / "link-dir")
    os.symlink("/proc/self/root/etc/hostname", root / "link-proc")
    os.mkfifo(root / "fifo")
    for d in (base, root, outside, root / "sub", root / "empty", root / ".git"):
        os.chmod(d, 0o755)
    return Tree(base, root, outside, big)


@pytest.fixture(scope="module")
def gw(certs, app1, tree) -> h.Gateway:
    """Static routes: /static/ of the site (with Cache-Control) and all of FILES_HOST; the rest to app1."""
    gw = h.Gateway(certs, {"app1": app1}, http=False)
    gw.config["gateway"]["routes"] = [
        {"host": h.SITE, "path": "/static/",
         "static": {"root": str(tree.root), "cache_control": "public, max-age=60"}},
        {"host": FILES_HOST, "static": {"root": str(tree.root)}},
        {"path": "/", "pool": "app"},
    ]
    gw.start()
    yield gw
    gw.stop()

def get(gw, path, *args, host=h.SITE):
    return h.curl(gw, path, "--path-as-is", *args, host=host)


def raw(gw, target, host=FILES_HOST, method="GET"):
    with h.RawTLS(gw.https_port, gw.certs.ca) as c:
        c.send(f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        return c.read_response(timeout=15)


def test_file_with_validators(gw, tree):
    r = get(gw, "/static/app.css")
    h.check(r.status == 200 and r.body == (tree.root / "app.css").read_bytes(), f"GET app.css: {r}")
    h.check(r.header("Content-Type") == "text/css; charset=utf-8", f"Content-Type: {r.header('Content-Type')}")
    h.check(r.header("Cache-Control") == "public, max-age=60", f"Cache-Control: {r.header('Cache-Control')}")
    h.check(r.header("Accept-Ranges") == "bytes", "Accept-Ranges")
    h.check(r.header("X-Content-Type-Options") == "nosniff", "the security headers are added")
    etag, modified = r.header("ETag"), r.header("Last-Modified")
    h.check(bool(etag) and etag.startswith('"') and bool(modified), f"ETag {etag}, Last-Modified {modified}")
    r2 = get(gw, "/static/app.css", "-H", f"If-None-Match: {etag}")
    h.check(r2.status == 304 and r2.body == b"" and r2.header("ETag") == etag, f"If-None-Match: {r2}")
    r3 = get(gw, "/static/app.css", "-H", f"If-Modified-Since: {modified}")
    h.check(r3.status == 304, f"If-Modified-Since: {r3}")
    r4 = get(gw, "/static/app.css", "-H", 'If-None-Match: "other"')
    h.check(r4.status == 200, f"another ETag: {r4}")


def test_big_file_and_ranges(gw, tree):
    r = get(gw, "/static/big.bin")
    h.check(r.status == 200 and hashlib.sha256(r.body).digest() == hashlib.sha256(tree.big).digest(),
            f"1 MiB file: status {r.status}, {len(r.body)} bytes")
    r = get(gw, "/static/big.bin", "-H", "Range: bytes=100-199")
    h.check(r.status == 206 and r.body == tree.big[100:200], f"Range 100-199: {r.status} {len(r.body)} bytes")
    h.check(r.header("Content-Range") == f"bytes 100-199/{len(tree.big)}", f"Content-Range: {r.header('Content-Range')}")
    r = get(gw, "/static/big.bin", "-H", "Range: bytes=-10")
    h.check(r.status == 206 and r.body == tree.big[-10:], f"suffix range: {r.status}")
    r = get(gw, "/static/big.bin", "-H", f"Range: bytes={len(tree.big)}-")
    h.check(r.status == 416 and r.header("Content-Range") == f"bytes */{len(tree.big)}", f"416: {r}")


def test_index_redirect_head_and_precompressed(gw, tree):
    r = get(gw, "/static/sub/")
    h.check(r.status == 200 and r.body == b"<p>sub</p>\n", f"directory index: {r}")
    r = get(gw, "/static/sub?x=1")
    h.check(r.status == 301 and r.header("Location") == "/static/sub/?x=1", f"directory without '/': {r}")
    r = get(gw, "/static/empty/")
    h.check(r.status == 404, f"a directory without index is never listed: {r}")
    r = raw(gw, "/static/big.bin", host=h.SITE, method="HEAD")
    h.check(r is not None and r.status == 200 and r.header("Content-Length") == str(len(tree.big)) and r.body == b"",
            f"HEAD: {r}")
    r = get(gw, "/static/app.js", "-H", "Accept-Encoding: gzip, br")
    h.check(r.status == 200 and r.header("Content-Encoding") == "br" and r.body == b"BR-BYTES", f"br: {r}")
    h.check(r.header("Vary") == "Accept-Encoding", f"Vary: {r.header('Vary')}")
    h.check(r.header("Content-Type") == "text/javascript; charset=utf-8" or
            "javascript" in (r.header("Content-Type") or ""), f"type of the original: {r.header('Content-Type')}")
    r = get(gw, "/static/app.js", "-H", "Accept-Encoding: gzip, br;q=0")
    h.check(r.header("Content-Encoding") == "gzip" and r.body == b"GZ-BYTES", f"gzip: {r}")
    r = get(gw, "/static/app.js")
    h.check(r.header("Content-Encoding") is None and r.body.startswith(b"console.log"), f"identity: {r}")
    r = get(gw, "/static/app.css", "-X", "POST", "-d", "x")
    h.check(r.status == 405 and r.header("Allow") == "GET, HEAD", f"POST: {r}")
    r = get(gw, "/other")
    h.check(r.status == 200 and r.json()["server"] == "app1", f"a path outside the static route reaches the pool: {r}")


TRAVERSALS = [
    "/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/..%2fsecret.txt", "/..%2Fsecret.txt",
    "/%2e%2e%2fsecret.txt", "/a/../../secret.txt", "/./../secret.txt", "/..\\secret.txt",
    "/%5c..%5csecret.txt", "/link-out", "/link-abs", "/link-dir/secret2.txt", "/link-proc", "/.hidden",
    "/.git/config", "/secret.txt%00.html", "/%00", "/..;/secret.txt", "/%c0%ae%c0%ae/secret.txt",
    "//secret.txt", "/fifo", "/.%2e/secret.txt", "/%252e%252e/secret.txt", "/sub/..%2f..%2fsecret.txt",
]


def test_traversal_reads_nothing(gw, app1, tree):
    watch = Inotify([tree.base / "secret.txt", tree.outside / "secret2.txt", tree.outside])
    try:
        watch.events()  # nothing before
        tag = h.unique("trav")
        results = []
        for i, target in enumerate(TRAVERSALS):
            r = raw(gw, f"{target}?{tag}-{i}")
            results.append((target, r.status if r else None))
            h.check(r is not None and r.status in (400, 404), f"{target}: {r}")
            h.check(b"SECRET" not in (r.body if r else b""), f"{target}: a secret in the body")
        events = watch.events()
        h.check(not events, f"files outside the root were opened: {events}")
        h.check(not app1.saw(tag), "a traversal attempt reached the app server")
        print(f"    {len(TRAVERSALS)} attempts: " + ", ".join(f"{t} {s}" for t, s in results))
    finally:
        watch.close()
    # The watch works: reading the secret directly is seen.
    watch = Inotify([tree.base / "secret.txt"])
    (tree.base / "secret.txt").read_bytes()
    h.check(watch.events(), "inotify saw a direct read (the check above can fail)")
    watch.close()


def test_files_host_serves_the_root(gw):
    r = raw(gw, "/index.html")
    h.check(r is not None and r.status == 200 and r.body == b"<h1>home</h1>\n", f"files host: {r}")
    r = raw(gw, "/")
    h.check(r is not None and r.status == 200 and r.body == b"<h1>home</h1>\n", f"files host index: {r}")


def test_gateway_still_serves(gw):
    h.check(gw.process.running, "the gateway is running")
    r = get(gw, "/static/app.css")
    h.check(r.status == 200, f"after the attempts: {r}")

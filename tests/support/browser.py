"""Headless Chromium driven through the DevTools protocol over pipes (stdlib only).

``chromium --headless=new --remote-debugging-pipe`` reads protocol commands from
its fd 3 and writes responses and events to its fd 4, one JSON message per
NUL-terminated chunk. No port is opened, no npm/pip package is needed.

    browser = Browser().start()          # a skip (pytest) without chromium
    page = browser.new_page()
    page.navigate("http://127.0.0.1:9100/status")
    text = page.evaluate("document.body.innerText")
    page.screenshot(path)
    browser.close()

Every wait has a deadline (a guard against a hang, sized for a busy machine: the
browser's answers take milliseconds on a quiet one). Chromium is a harness
``Process``: stopped by PID (with the descendants it forked), also when the
script fails. The browser is
told to resolve no host name but loopback and to skip its background
services, so a test page can reach nothing but 127.0.0.1.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import processes as h

CHROMIUM_NAMES = ("chromium", "chromium-browser")

# Nothing but loopback: no DNS for any other name, no background services.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--remote-debugging-pipe",
    "--no-sandbox",  # root in a container: the setuid/namespace sandbox is not available
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--no-pings",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
    # The test site resolves to loopback (the gateway under test); nothing else resolves.
    "--host-resolver-rules=MAP www.foobar.com 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--window-size=1280,900",
)


def chromium_path() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class ProtocolError(AssertionError):
    """A DevTools command failed, timed out, or the browser went away."""


def _high_fd(fd: int) -> int:
    """fd moved to a number >= 10, so the child's `3<&N 4>&M` cannot clobber it."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Browser:
    def __init__(self, window: tuple[int, int] = (1280, 900)) -> None:
        self.window = window
        self.process: h.Process | None = None
        self._to_browser = -1    # we write commands here (the browser's fd 3)
        self._from_browser = -1  # we read messages here (the browser's fd 4)
        self._next_id = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._responses: dict[int, dict] = {}
        self._events: list[dict] = []
        self._closed = False
        self._reader: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> "Browser":
        exe = chromium_path()
        if exe is None:
            raise h.Skip("chromium not installed (Debian package `chromium`; scripts/setup.sh installs it)")
        profile = h.temp_dir() / "chromium-profile"
        profile.mkdir(exist_ok=True)
        cmd_r, cmd_w = (_high_fd(fd) for fd in os.pipe())
        out_r, out_w = (_high_fd(fd) for fd in os.pipe())
        # A tiny exec wrapper puts the pipe ends on fds 3 and 4 and becomes the
        # browser (same PID). Not preexec_fn: unsafe with threads running.
        place = ("import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); os.dup2(r, 3); os.dup2(w, 4); "
                 "os.close(r); os.close(w); os.execv(sys.argv[3], sys.argv[3:])")
        argv = [sys.executable, "-c", place, str(cmd_r), str(out_w), exe,
                *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"]
        # Chromium's zygote and utility processes end by themselves once the browser process is
        # gone (their IPC channel closes); on a busy machine that takes a moment.
        self.process = h.Process(argv, "chromium", pass_fds=(cmd_r, out_w), leftover_grace=10.0).start()
        os.close(cmd_r)
        os.close(out_w)
        self._to_browser, self._from_browser = cmd_w, out_r
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()
        version = self.send("Browser.getVersion", timeout=timeout)
        self.version = version.get("product", "?")
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Browser.close, then a bounded wait; the harness stop() kills by PID
        (and any descendant left) if it does not exit by itself."""
        if self.process is None or self.process.popen is None:
            return
        if self.process.running:
            self.process.remember_tree()
            try:
                self.send("Browser.close", timeout=5)
            except ProtocolError:
                pass
            self.process.wait(timeout)
        try:
            self.process.stop(timeout=5)
        finally:
            for fd in (self._to_browser, self._from_browser):
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._to_browser = self._from_browser = -1

    # -- protocol -------------------------------------------------------------

    def _read_loop(self) -> None:
        buf = b""
        try:
            while True:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    break
                buf += chunk
                while b"\0" in buf:
                    raw, buf = buf.split(b"\0", 1)
                    try:
                        msg = json.loads(raw)
                    except ValueError:
                        continue
                    with self._cond:
                        if "id" in msg:
                            self._responses[msg["id"]] = msg
                        else:
                            self._events.append(msg)
                        self._cond.notify_all()
        except OSError:
            pass
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        """Sends one command and waits for its result (raises ProtocolError on error/timeout)."""
        with self._cond:
            if self._closed:
                raise ProtocolError(f"{method}: the browser has gone away")
            self._next_id += 1
            ident = self._next_id
        msg = {"id": ident, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        try:
            os.write(self._to_browser, data)  # small messages: one write
        except OSError as e:
            raise ProtocolError(f"{method}: cannot write to the browser: {e}") from None
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    why = "the browser has gone away" if self._closed else f"no answer within {timeout:.0f}s"
                    raise ProtocolError(f"{method}: {why}")
                self._cond.wait(min(left, 0.5))
            resp = self._responses.pop(ident)
        if "error" in resp:
            raise ProtocolError(f"{method}: {resp['error']}")
        return resp.get("result", {})

    def events(self, method: str | None = None, session: str | None = None) -> list[dict]:
        """Events received so far (optionally of one method / session)."""
        with self._lock:
            return [e for e in self._events if (method is None or e.get("method") == method)
                    and (session is None or e.get("sessionId") == session)]

    def wait_event(self, method: str, session: str | None = None, timeout: float = 30.0, start: int = 0,
                   predicate=None) -> tuple[dict, int]:
        """The first event `method` at index >= start (and matching predicate); returns (event, index)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self._events):
                    e = self._events[i]
                    i += 1
                    if e.get("method") == method and (session is None or e.get("sessionId") == session) \
                            and (predicate is None or predicate(e)):
                        return e, i
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise ProtocolError(f"no {method} event within {timeout:.0f}s")
                self._cond.wait(min(left, 0.5))

    def event_count(self) -> int:
        with self._lock:
            return len(self._events)

    def new_page(self) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, target, session)
        for domain in ("Page", "Runtime", "Network", "Log"):
            page.send(f"{domain}.enable")
        page.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.window[0], "height": self.window[1], "deviceScaleFactor": 1, "mobile": False})
        return page


class Page:
    """One tab, attached with a flat session."""

    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser, self.target, self.session = browser, target, session

    def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        return self.browser.send(method, params, self.session, timeout)

    def navigate(self, url: str, timeout: float = 30.0) -> None:
        start = self.browser.event_count()
        result = self.send("Page.navigate", {"url": url}, timeout)
        if result.get("errorText"):
            raise ProtocolError(f"navigate {url}: {result['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session, timeout, start)

    def evaluate(self, expression: str, timeout: float = 30.0):
        """The value of a JavaScript expression (promises awaited); raises on an exception."""
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True}, timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise ProtocolError(f"evaluate {expression!r}: {d.get('exception', {}).get('description') or d}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, what: str | None = None):
        """Polls a JavaScript expression until it is truthy; returns its value."""
        return h.wait_until(lambda: self.evaluate(expression), timeout, interval=0.1, what=what or expression)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (not only the viewport)."""
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        width = max(int(size["width"]), self.browser.window[0])
        height = min(max(int(size["height"]), 200), 4000)
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                    "clip": {"x": 0, "y": 0, "width": width, "height": height,
                                                             "scale": 1}}, timeout=60)
        path = Path(path)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

"""pytest set-up of the integration tests.

* tests/support is put on sys.path here, once: test files import ``harness``
  (``import harness as h``), ``netns``, ``ha_lab`` ... directly;
* markers (registered in pytest.ini, strict): ``root`` and ``netns`` skip a test
  that needs root or network namespaces on a machine without them; ``tools(...)``
  names the programs a test runs (default curl and openssl) and skips it when one
  is missing. The rampart binary (``RAMPART_BIN``) is required by every file;
* per test file (module scope): a time budget (``BUDGET_S`` in the module, default
  240 s; a guard against a hang, ctest's TIMEOUT is the outer bound) and, at its
  end, the cleanup of every process and the temp dir (processes.cleanup()), which
  fails the file if a process crashed or did not stop. SIGTERM (what ctest sends
  on its timeout) and the budget's expiry interrupt the run the way Ctrl-C does:
  pytest then tears down every fixture (labs, namespaces, gateways) before exiting,
  and the atexit handlers of processes.py and netns.py are the last resort;
* after every test, each backend and gateway still running must be healthy (no
  crash, no dead worker, no sanitizer report); a failed test also shows the last
  stderr lines of each running gateway;
* exit status: 77 when nothing passed or failed and something was skipped (ctest's
  SKIP_RETURN_CODE), otherwise pytest's own (0 all passed, non-zero on a failure).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

SUPPORT_DIR = Path(__file__).resolve().parent.parent / "support"
if str(SUPPORT_DIR) not in sys.path:
    sys.path.insert(0, str(SUPPORT_DIR))

import certificates  # noqa: E402
import gateway  # noqa: E402
import processes  # noqa: E402

SKIP_EXIT = 77
DEFAULT_BUDGET_S = 240  # one file; ctest's TIMEOUT is 300
DEFAULT_TOOLS = ("curl", "openssl")


class BudgetExceeded(KeyboardInterrupt):
    """A test file ran past its time budget: the run stops like on Ctrl-C (fixtures torn down)."""


def _on_term(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_term)


_NETNS_REASON: list[str | None] = []


def _netns_skip_reason() -> str | None:
    """Why this machine has no network namespaces for the tests (probed once per run), or None."""
    if not _NETNS_REASON:
        import netns
        _NETNS_REASON.append(netns.skip_reason(("ip",)))
    return _NETNS_REASON[0]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    root = item.get_closest_marker("root")
    if root is not None and os.geteuid() != 0:
        why = root.kwargs.get("reason") or (root.args[0] if root.args else "")
        pytest.skip("needs root" + (f": {why}" if why else ""))
    if item.get_closest_marker("netns") is not None:
        reason = _netns_skip_reason()
        if reason:
            pytest.skip(reason)
    tools = item.get_closest_marker("tools")
    for name in tools.args if tools is not None else DEFAULT_TOOLS:
        if shutil.which(name) is None:
            pytest.skip(f"{name} not found in PATH")


@pytest.fixture(scope="module", autouse=True)
def file_guard(request: pytest.FixtureRequest):
    """The rampart binary exists; the file's time budget runs; at the end, every process
    it started is stopped (a crash found then fails the file) and its temp dir removed."""
    path = processes.rampart_bin()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"rampart binary not found at {path} (set RAMPART_BIN)")
    budget = int(getattr(request.module, "BUDGET_S", DEFAULT_BUDGET_S))

    def on_alarm(signum, frame):
        raise BudgetExceeded(f"{request.module.__name__} exceeded its {budget}s time budget")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(budget)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        problems = processes.cleanup()
    if problems:
        pytest.fail("cleanup: " + "\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def healthy_after_test():
    """After the test: every backend and gateway still running is healthy."""
    yield
    try:
        processes.check_monitored()
    except processes.ProcessError as e:
        raise processes.ProcessError(f"after the test: {e}") from None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed test shows the last stderr lines of every gateway still running (a
    ProcessError carries its process's own excerpt already)."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.when != "call":
        return
    if call.excinfo is not None and call.excinfo.errisinstance(processes.ProcessError):
        return
    for obj in processes.MONITORED:
        if isinstance(obj, gateway.Gateway) and obj.process is not None:
            tail = obj.process.read_stderr().splitlines()[-10:]
            if tail:
                report.sections.append((f"last {len(tail)} stderr lines of {obj.name} (pid {obj.pid})",
                                        "\n".join(tail)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Exit 77 (ctest: skipped) when every test was skipped."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter is not None else {}
    ran = sum(len(stats.get(k, [])) for k in ("passed", "failed", "error", "xfailed", "xpassed"))
    if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED) and not ran \
            and stats.get("skipped"):
        session.exitstatus = SKIP_EXIT


# ---------------------------------------------------------------------------
# Fixtures shared by the test files
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs() -> certificates.CertSet:
    """A dev CA and ECDSA + RSA certificates for www.foobar.com (rampart certs dev), per file."""
    return certificates.make_certs()


@pytest.fixture(scope="module")
def app1() -> gateway.Backend:
    """tests/support/backend.py named app1, per file (stopped with the file's other processes)."""
    return gateway.Backend("app1").start()


@pytest.fixture(scope="module")
def app2() -> gateway.Backend:
    """The same, named app2."""
    return gateway.Backend("app2").start()


@pytest.fixture(scope="module")
def backends(app1, app2) -> dict:
    """app1 and app2 by name; a test that stops one takes it out of the dict."""
    return {"app1": app1, "app2": app2}

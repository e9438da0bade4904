"""pytest plugin: the whole test session runs offline, and any attempt to leave this machine fails a test.

``tests/conftest.py`` imports :func:`pytest_configure` from here (a non-root conftest may not use
``pytest_plugins``); elsewhere use ``pytest -p tests.plugins.network_guard``. At configure time it calls
:func:`desktop_dpo.core.offline.lock_down` (offline environment + socket guard) and registers
:class:`NetworkGuardPlugin`.

The guard raises ``NetworkBlockedError`` before any packet is sent, but code under test may swallow that
error (``except OSError: pass``, a retry loop, a library that falls back quietly). So every refusal is
also recorded, and the phase (setup, call, teardown, or collecting a module) in which it happened is
reported as failed, naming the address. A test that provokes refusals on purpose says so with
``@pytest.mark.allow_network_refusals``.
"""

from __future__ import annotations

import threading

import pytest

from desktop_dpo.core import offline

__all__ = ["MARKER", "NetworkGuardPlugin", "pytest_configure"]

MARKER = "allow_network_refusals"
PLUGIN_NAME = "desktop_dpo_network_guard"


class NetworkGuardPlugin:
    """Collects refusals from the guard and turns them into failed reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[offline.RefusedAttempt] = []
        # Refusals that happened outside any test or collection (e.g. session-scoped teardown).
        self.outside_tests: list[offline.RefusedAttempt] = []

    # Called by the guard in whichever thread tried to connect.
    def on_refused(self, attempt: offline.RefusedAttempt) -> None:
        with self._lock:
            self._pending.append(attempt)

    def _drain(self) -> list[offline.RefusedAttempt]:
        with self._lock:
            drained, self._pending = self._pending, []
        return drained

    @staticmethod
    def _describe(attempts: list[offline.RefusedAttempt], where: str) -> str:
        lines = [
            f"Network access attempted {where}: the offline guard refused {len(attempts)} attempt(s) "
            "(this fails the test even if the code swallowed NetworkBlockedError):"
        ]
        lines += [f"  {a.operation} -> {a.target}  [thread {a.thread}]" for a in attempts]
        lines.append(f"If the refusal is what the test checks, mark it @pytest.mark.{MARKER}.")
        return "\n".join(lines)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        # Whatever was refused between the previous test and this one belongs to neither.
        self.outside_tests.extend(self._drain())

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
        report = yield
        attempts = self._drain()
        if attempts and item.get_closest_marker(MARKER) is None:
            message = self._describe(attempts, f"during {call.when}")
            if report.failed and report.longrepr is not None:
                report.sections.append(("network guard", message))
            else:
                report.outcome = "failed"
                report.longrepr = message
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> pytest.CollectReport:
        self.outside_tests.extend(self._drain())
        report = yield
        attempts = self._drain()
        if attempts:  # e.g. a test module that reaches for the network when imported
            report.outcome = "failed"
            report.longrepr = self._describe(
                attempts, f"while collecting {collector.nodeid or 'the session'}"
            )
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.outside_tests.extend(self._drain())
        if self.outside_tests and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.outside_tests:
            terminalreporter.write_sep("=", "network guard", red=True)
            terminalreporter.write_line(self._describe(self.outside_tests, "outside any test"))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        offline.remove_refusal_listener(self.on_refused)


def pytest_configure(config: pytest.Config) -> None:
    """Lock the session down and register the plugin (once, even if imported by several conftests)."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}: the test provokes refused network attempts on purpose; they do not fail it",
    )
    if config.pluginmanager.has_plugin(PLUGIN_NAME):
        return
    offline.lock_down()
    plugin = NetworkGuardPlugin()
    offline.add_refusal_listener(plugin.on_refused)
    config.pluginmanager.register(plugin, PLUGIN_NAME)

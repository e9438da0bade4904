"""The offline lock-down: environment, socket guard, and the pytest plugin that fails tests which reach out.

Nothing here ever sends a packet or aims at a real address beyond loopback: the real socket functions
beneath the guard are replaced by recorders, so an address that slipped through would be recorded, not
contacted. The addresses used are reserved for documentation (192.0.2.0/24, 198.51.100.0/24,
2001:db8::/32) or cannot exist (.invalid).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from desktop_dpo.core import offline
from desktop_dpo.core.errors import NetworkBlockedError

REPO_ROOT = Path(__file__).resolve().parents[2]

# What each recorder returns in place of the real call: plausible values for a loopback target.
_FAKE_RESULTS = {
    "connect": None,
    "connect_ex": 0,
    "sendto": 4,
    "sendmsg": 4,
    "getaddrinfo": [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 9))],
    "gethostbyname": "127.0.0.1",
    "gethostbyname_ex": ("localhost", [], ["127.0.0.1"]),
    "gethostbyaddr": ("localhost", [], ["127.0.0.1"]),
    "getnameinfo": ("localhost", "9"),
}


def _recorder(calls: list[tuple[str, tuple]], name: str, is_method: bool):
    def record(*args, **kwargs):
        calls.append((name, args[1:] if is_method else args))  # drop the socket object itself
        return _FAKE_RESULTS[name]

    return record


@pytest.fixture
def real_calls():
    """The guard installed over recorders instead of the real socket functions; yields what reached them.

    The session guard (from the network-guard plugin) is taken off, recorders go where the real functions
    were, the guard is installed on top of them, and afterwards everything is put back as it was.
    """
    was_installed = offline.guard_installed()
    offline.uninstall_guard()
    calls: list[tuple[str, tuple]] = []
    with pytest.MonkeyPatch.context() as mp:
        for name in ("connect", "connect_ex", "sendto", "sendmsg"):
            mp.setattr(socket.socket, name, _recorder(calls, name, is_method=True))
        for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
            mp.setattr(socket, name, _recorder(calls, name, is_method=False))
        offline.install_guard()
        try:
            yield calls
        finally:
            offline.uninstall_guard()
    if was_installed:
        offline.install_guard()


# --- is_loopback -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.3",  # all of 127.0.0.0/8
        "::1",
        "::1%lo",  # with a scope id
        "::ffff:127.0.0.1",  # IPv4-mapped loopback reaches 127.0.0.1
        "localhost",
        "LocalHost.",
        b"127.0.0.1",
        ("127.0.0.1", 8080),
        ("::1", 8080, 0, 0),
        ("localhost", 11434),
    ],
)
def test_loopback_addresses_are_recognised(address):
    assert offline.is_loopback(address)


@pytest.mark.parametrize(
    "address",
    [
        "192.0.2.1",
        "2001:db8::1",
        "::ffff:192.0.2.1",
        "example.invalid",
        "0.0.0.0",  # "any address", not loopback
        "::",
        "127.1",  # the C library would read this as 127.0.0.1, but it is not a canonical address
        "127.0.0.1%eth0",  # not an IPv4 address: it would go to the resolver
        "[::1]",  # URL spelling: the resolver would get it
        "foo.localhost",  # may be sent to DNS by the system resolver
        "localhost.example.invalid",
        "",
        None,
        42,
        ("192.0.2.1", 80),
        ("2001:db8::1", 443, 0, 0),
        (),
    ],
)
def test_anything_else_is_not_loopback(address):
    assert not offline.is_loopback(address)


def test_unix_socket_addresses_are_local():
    assert offline.is_loopback("/run/some.sock", family=socket.AF_UNIX)
    assert offline.is_loopback(b"\0abstract-name", family=socket.AF_UNIX)
    assert not offline.is_loopback("/run/some.sock", family=socket.AF_INET)


# --- the guard refuses before the real call ---------------------------------------------------------


@pytest.mark.allow_network_refusals
@pytest.mark.parametrize(
    ("family", "sock_type", "call", "target"),
    [
        (socket.AF_INET, socket.SOCK_STREAM, lambda s: s.connect(("192.0.2.1", 80)), "192.0.2.1 port 80"),
        (socket.AF_INET, socket.SOCK_STREAM, lambda s: s.connect_ex(("192.0.2.1", 80)), "192.0.2.1"),
        (socket.AF_INET6, socket.SOCK_STREAM, lambda s: s.connect(("2001:db8::1", 443, 0, 0)), "2001:db8::1"),
        (socket.AF_INET, socket.SOCK_STREAM, lambda s: s.connect(("example.invalid", 80)), "example.invalid"),
        (
            socket.AF_INET,
            socket.SOCK_DGRAM,
            lambda s: s.sendto(b"ping", ("198.51.100.7", 53)),
            "198.51.100.7",
        ),
        (
            socket.AF_INET,
            socket.SOCK_DGRAM,
            lambda s: s.sendto(b"ping", 0, ("198.51.100.7", 53)),
            "198.51.100.7",
        ),
        (
            socket.AF_INET,
            socket.SOCK_DGRAM,
            lambda s: s.sendmsg([b"ping"], [], 0, ("198.51.100.7", 53)),
            "198.51.100.7",
        ),
    ],
    ids=["connect", "connect_ex", "connect-ipv6", "connect-hostname", "sendto", "sendto-flags", "sendmsg"],
)
def test_socket_calls_beyond_loopback_are_refused_before_the_real_call(
    real_calls, family, sock_type, call, target
):
    with socket.socket(family, sock_type) as sock, pytest.raises(NetworkBlockedError) as refused:
        call(sock)
    assert real_calls == []  # the real function was never reached: nothing was sent
    assert isinstance(refused.value, ConnectionRefusedError)  # callers catching OSError handle it too
    assert target in str(refused.value)
    assert "offline" in str(refused.value)


@pytest.mark.allow_network_refusals
@pytest.mark.parametrize(
    ("call", "target"),
    [
        (lambda: socket.getaddrinfo("example.invalid", 443), "example.invalid"),
        (lambda: socket.getaddrinfo(host="example.invalid", port=443), "example.invalid"),
        (lambda: socket.getaddrinfo("192.0.2.1", 443), "192.0.2.1"),
        (lambda: socket.gethostbyname("example.invalid"), "example.invalid"),
        (lambda: socket.gethostbyname_ex("example.invalid"), "example.invalid"),
        (lambda: socket.gethostbyaddr("192.0.2.1"), "192.0.2.1"),
        (lambda: socket.getnameinfo(("192.0.2.1", 80), 0), "192.0.2.1"),
        # create_connection resolves first, so not even a socket is made
        (lambda: socket.create_connection(("example.invalid", 80)), "example.invalid"),
    ],
    ids=[
        "getaddrinfo",
        "getaddrinfo-keywords",
        "getaddrinfo-numeric",
        "gethostbyname",
        "gethostbyname_ex",
        "gethostbyaddr",
        "getnameinfo",
        "create_connection",
    ],
)
def test_name_lookups_beyond_loopback_are_refused_before_the_resolver(real_calls, call, target):
    with pytest.raises(NetworkBlockedError, match="look up the host name") as refused:
        call()
    assert real_calls == []
    assert target in str(refused.value)


def test_loopback_and_unix_sockets_reach_the_real_call(real_calls, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.connect(("127.0.0.1", 9))
        assert sock.connect_ex(("localhost", 9)) == 0
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"ping", ("::1", 9, 0, 0))
        sock.sendmsg([b"ping"])  # no address: goes to the connected peer, which connect() checked
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(tmp_path / "app.sock"))

    assert real_calls == [
        ("connect", (("127.0.0.1", 9),)),
        ("connect_ex", (("localhost", 9),)),
        ("sendto", (b"ping", ("::1", 9, 0, 0))),
        ("sendmsg", ([b"ping"],)),
        ("connect", (str(tmp_path / "app.sock"),)),
    ]


def test_loopback_lookups_and_create_connection_reach_the_real_calls(real_calls):
    assert socket.getaddrinfo("localhost", 9) == _FAKE_RESULTS["getaddrinfo"]
    socket.getaddrinfo(None, 9)  # this machine's own addresses
    socket.gethostbyname("127.0.0.1")
    socket.gethostbyaddr("::1")
    socket.getnameinfo(("127.0.0.1", 9), 0)
    with socket.create_connection(("localhost", 9)):
        pass

    assert [name for name, _ in real_calls] == [
        "getaddrinfo",
        "getaddrinfo",
        "gethostbyname",
        "gethostbyaddr",
        "getnameinfo",
        "getaddrinfo",  # inside create_connection ...
        "connect",  # ... which then connects to what the (recorded) resolver answered
    ]
    assert real_calls[-1] == ("connect", (("127.0.0.1", 9),))


@pytest.mark.allow_network_refusals
def test_other_socket_families_are_refused(real_calls):
    # A raw packet socket (Linux) could put frames on the wire without any IP address at all.
    raw_family = getattr(socket, "AF_PACKET", socket.AF_UNSPEC)
    fake_raw_socket = types.SimpleNamespace(family=raw_family)
    with pytest.raises(NetworkBlockedError):
        socket.socket.sendto(fake_raw_socket, b"frame", ("eth0", 0))
    assert real_calls == []


# --- record, listeners, install / uninstall ---------------------------------------------------------


@pytest.mark.allow_network_refusals
def test_refusals_are_recorded_and_announced_even_when_the_error_is_swallowed(real_calls):
    heard: list[offline.RefusedAttempt] = []

    def broken_listener(attempt):
        raise RuntimeError("a broken GUI log must not change the refusal")

    offline.clear_refused_attempts()
    offline.add_refusal_listener(heard.append)
    offline.add_refusal_listener(broken_listener)
    try:
        with socket.socket() as sock, contextlib.suppress(OSError):  # as careless code would
            sock.connect(("192.0.2.1", 443))
        with pytest.raises(NetworkBlockedError):
            socket.gethostbyname("example.invalid")
    finally:
        offline.remove_refusal_listener(heard.append)
        offline.remove_refusal_listener(broken_listener)

    expected = [
        offline.RefusedAttempt("socket.connect", "192.0.2.1 port 443", "MainThread"),
        offline.RefusedAttempt("socket.gethostbyname", "example.invalid", "MainThread"),
    ]
    assert heard == expected
    assert offline.refused_attempts() == expected
    offline.clear_refused_attempts()
    assert offline.refused_attempts() == []


def test_install_is_idempotent_and_uninstall_restores_the_originals(real_calls):
    offline.uninstall_guard()
    recorder_connect = socket.socket.__dict__["connect"]
    recorder_lookup = socket.getaddrinfo

    offline.install_guard()
    guarded_connect = socket.socket.__dict__["connect"]
    offline.install_guard()  # a second install must not wrap the wrapper
    assert socket.socket.__dict__["connect"] is guarded_connect
    assert guarded_connect is not recorder_connect

    offline.uninstall_guard()
    assert not offline.guard_installed()
    assert socket.socket.__dict__["connect"] is recorder_connect
    assert socket.getaddrinfo is recorder_lookup
    offline.uninstall_guard()  # harmless when nothing is installed


@pytest.mark.allow_network_refusals
def test_network_guard_context_manager(real_calls):
    offline.uninstall_guard()  # the recorders stay in place underneath

    with offline.network_guard() as refused:
        assert offline.guard_installed()
        with socket.socket() as sock, pytest.raises(NetworkBlockedError):
            sock.connect(("192.0.2.1", 80))
    assert [a.target for a in refused] == ["192.0.2.1 port 80"]
    assert not offline.guard_installed()  # it was not installed before the block
    assert real_calls == []

    offline.install_guard()
    with offline.network_guard():
        pass
    assert offline.guard_installed()  # it was installed before the block, so it stays


# --- lock_down -----------------------------------------------------------------------------------------


def test_lock_down_sets_the_offline_environment_and_installs_the_guard(real_calls, monkeypatch):
    for name in offline.OFFLINE_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the app has no online mode: a person's setting is overridden
    offline.uninstall_guard()

    offline.lock_down()
    offline.lock_down()  # idempotent

    assert offline.guard_installed()
    assert {name: os.environ[name] for name in offline.OFFLINE_ENVIRONMENT} == dict(
        offline.OFFLINE_ENVIRONMENT
    )
    for name in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HF_HUB_DISABLE_TELEMETRY",
        "DO_NOT_TRACK",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN",
        "BITSANDBYTES_NOWELCOME",
    ):
        assert os.environ[name] == "1", name
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert "TOKENIZERS_PARALLELISM" not in offline.OFFLINE_ENVIRONMENT  # not a network setting


def test_huggingface_hub_imported_after_lock_down_is_offline():
    """What the ordering buys: huggingface_hub reads the variables when imported."""
    env = {k: v for k, v in os.environ.items() if k not in offline.OFFLINE_ENVIRONMENT}
    code = (
        "from desktop_dpo.core import offline; offline.lock_down()\n"
        "from huggingface_hub import constants\n"
        "print(constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_TELEMETRY, "
        "constants.HF_HUB_DISABLE_IMPLICIT_TOKEN)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True"]


def test_lock_down_warns_when_an_ml_library_was_imported_first(real_calls, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "transformers", types.ModuleType("transformers"))
    with caplog.at_level(logging.WARNING, logger=offline.__name__):
        offline.lock_down()
    assert "transformers" in caplog.text
    assert offline.guard_installed()


# --- the pytest plugin ---------------------------------------------------------------------------------


def test_this_session_runs_under_the_plugin(request):
    assert request.config.pluginmanager.has_plugin("desktop_dpo_network_guard")
    assert offline.guard_installed()
    assert os.environ["HF_HUB_OFFLINE"] == "1"


_INNER_CONFTEST = """
import json
import socket
from pathlib import Path

LOG = Path(__file__).with_name("reached_real_calls.txt")
RESULTS = {
    "connect": None,
    "getaddrinfo": [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 9))],
    "gethostbyname": "127.0.0.1",
}


def recorder(name, is_method):
    def record(*args):
        with LOG.open("a") as f:
            f.write(f"{name} {args[1:] if is_method else args!r}\\n")
        return RESULTS[name]
    return record


# Imported before the plugin's pytest_configure installs the guard, so the guard wraps these recorders:
# in this session the real socket functions cannot be reached at all.
socket.socket.connect = recorder("connect", True)
socket.getaddrinfo = recorder("getaddrinfo", False)
socket.gethostbyname = recorder("gethostbyname", False)
"""

_INNER_TESTS = """
import socket
import threading

import pytest

from desktop_dpo.core.errors import NetworkBlockedError


def test_swallows_the_refusal():
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    except OSError:
        pass  # code under test hides the error: the plugin must still fail the test


def test_refused_in_a_background_thread():
    def quietly():
        try:
            socket.socket().connect(("198.51.100.7", 443))
        except OSError:
            pass
    worker = threading.Thread(target=quietly, name="sampler")
    worker.start()
    worker.join()


def test_loopback_is_fine():
    socket.create_connection(("127.0.0.1", 9)).close()


@pytest.mark.allow_network_refusals
def test_refusal_expected_on_purpose():
    with pytest.raises(NetworkBlockedError):
        socket.socket().connect(("198.51.100.8", 443))


@pytest.fixture
def leaky_fixture():
    yield
    try:
        socket.gethostbyname("teardown.invalid")
    except OSError:
        pass


def test_refused_in_fixture_teardown(leaky_fixture):
    pass
"""

_INNER_IMPORT_TIME = """
import socket

try:
    socket.gethostbyname("import-time.invalid")
except OSError:
    pass


def test_never_reached_trivially():
    pass
"""


def test_plugin_fails_tests_that_reach_beyond_loopback_even_when_the_error_is_swallowed(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # keeps this repository's settings out
    (tmp_path / "conftest.py").write_text(textwrap.dedent(_INNER_CONFTEST))
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(_INNER_TESTS))
    (tmp_path / "test_import_time.py").write_text(textwrap.dedent(_INNER_IMPORT_TIME))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.plugins.network_guard",
            "-p",
            "no:cacheprovider",
            "--continue-on-collection-errors",
            "-rA",
            "-q",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, out

    outcomes = {
        line.split()[1]: line.split()[0]
        for line in done.stdout.splitlines()
        if line.split()[:1] in (["PASSED"], ["FAILED"], ["ERROR"])
    }
    assert outcomes == {
        "test_import_time.py": "ERROR",
        "test_inner.py::test_swallows_the_refusal": "FAILED",
        "test_inner.py::test_refused_in_a_background_thread": "FAILED",
        "test_inner.py::test_loopback_is_fine": "PASSED",
        "test_inner.py::test_refusal_expected_on_purpose": "PASSED",
        "test_inner.py::test_refused_in_fixture_teardown": "ERROR",
    }, out
    # The failure names what was refused, where, and from which thread.
    assert "socket.getaddrinfo -> 192.0.2.1" in out
    assert "socket.connect -> 198.51.100.7 port 443  [thread sampler]" in out
    assert "during teardown" in out and "teardown.invalid" in out
    assert "while collecting" in out and "import-time.invalid" in out

    # Only loopback ever reached the (recorded) real functions.
    reached = (tmp_path / "reached_real_calls.txt").read_text()
    assert "127.0.0.1" in reached
    for outside in ("192.0.2.1", "198.51.100", ".invalid"):
        assert outside not in reached

"""Network lock-down: desktop-dpo never talks to anything beyond this machine.

Two layers, both applied by :func:`lock_down` before any ML library is imported:

1. Environment variables that switch Hugging Face, transformers, datasets and friends to offline mode
   and turn their telemetry off. These libraries read them *at import time*, hence "before any ML import".
   They are also the only defence against network code written in C or Rust (hf_xet, libcurl), which
   never goes through Python's ``socket`` module.
2. A socket guard: ``socket.socket.connect``, ``connect_ex``, ``sendto``, ``sendmsg`` and the name
   resolution functions of the ``socket`` module are wrapped so that anything aimed beyond loopback
   raises :class:`~desktop_dpo.core.errors.NetworkBlockedError` *before* the real call runs: no packet,
   no DNS query. Loopback (127.0.0.0/8, ::1, ``localhost``) and Unix sockets stay usable.

Every refusal is recorded (:func:`refused_attempts`) and announced to listeners
(:func:`add_refusal_listener`), so the GUI can show it and the test suite can fail a test whose code
swallowed the exception.

Limits, by design: a function captured with ``from socket import getaddrinfo`` before the guard was
installed keeps the unguarded resolver (its connection attempt is still refused, since ``connect`` is a
method looked up on the class at call time); sockets made from ``_socket.socket`` directly are not seen.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, NoReturn

from desktop_dpo.core.errors import NetworkBlockedError

log = logging.getLogger(__name__)

OFFLINE_ENVIRONMENT: Mapping[str, str] = MappingProxyType(
    {
        # huggingface_hub (and through it transformers, peft, trl, datasets, llama_cpp.Llama.from_pretrained):
        # never ask the Hub, resolve everything from local files.
        "HF_HUB_OFFLINE": "1",
        # The older name; huggingface_hub still honours it, and so does code written against transformers 4.
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        # Telemetry: the Hub's own switch, the generic one it also reads, and https://donottrack.sh/.
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        # Never attach a stored Hub token to a request, should one be made anyway.
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        # The `hf` command line would otherwise check PyPI for a newer version.
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        # hf_xet moves bytes in Rust, below the socket guard: keep huggingface_hub from using it at all.
        "HF_HUB_DISABLE_XET": "1",
        # datasets pings the Hub to count downloads when it is not offline.
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
        # transformers would fetch compiled kernels from the Hub ("kernels" package) for some layers.
        "USE_HUB_KERNELS": "NO",
        # Code from a model repository is never run (transformers' RAG retriever reads this variable).
        "TRUST_REMOTE_CODE": "false",
        # Experiment trackers that transformers' Trainer / TRL can report to.
        "WANDB_MODE": "disabled",
        "WANDB_DISABLED": "true",
        "DISABLE_MLFLOW_INTEGRATION": "TRUE",
        # Gradio (pulled in by some tools) phones home unless told not to.
        "GRADIO_ANALYTICS_ENABLED": "False",
        # bitsandbytes' banner (older versions), no network but noise on every start.
        "BITSANDBYTES_NOWELCOME": "1",
    }
)

# Modules that read the variables above when they are imported: if one is already loaded, lock_down()
# came too late for it (the socket guard still holds).
_READS_ENV_AT_IMPORT = ("huggingface_hub", "transformers", "datasets", "peft", "trl", "accelerate")

_SOCKET_METHODS = ("connect", "connect_ex", "sendto", "sendmsg")
_RESOLVERS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo")
_LOCAL_FAMILIES = frozenset(f for f in (getattr(socket, "AF_UNIX", None),) if f is not None)
_IP_FAMILIES = frozenset((socket.AF_INET, socket.AF_INET6))
_LOCALHOST_NAMES = frozenset(("localhost", "localhost."))


class RefusedAttempt(NamedTuple):
    """One refused attempt to reach beyond this machine."""

    operation: str  # what was called, e.g. "socket.connect" or "socket.getaddrinfo"
    target: str  # the address or host name as it was given, e.g. "192.0.2.1 port 443"
    thread: str  # name of the thread that tried, to find the culprit in a log


RefusalListener = Callable[[RefusedAttempt], None]


class _GuardState:
    """The guard's bookkeeping. There is exactly one, because the ``socket`` module it patches is one per
    process; it is private so that the functions below are the only way to change it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        # (owner, attribute name) -> what was there before install_guard(), to put back on uninstall.
        self.originals: dict[tuple[Any, str], Any] = {}
        # Bounded: code stuck in a retry loop must not grow memory without end.
        self.refused: deque[RefusedAttempt] = deque(maxlen=1000)
        self.listeners: list[RefusalListener] = []


_state = _GuardState()


def lock_down() -> None:
    """Make this process offline: set :data:`OFFLINE_ENVIRONMENT` and install the socket guard.

    Call it first thing at start-up (``cli.main()``), before torch, transformers, peft, llama_cpp or
    huggingface_hub is imported, because those read the environment when imported. The variables are
    overwritten even if the person set them otherwise: the app has no online mode. Idempotent: calling it
    again sets the same values and leaves the one installed guard in place.
    """
    os.environ.update(OFFLINE_ENVIRONMENT)
    too_late = [name for name in _READS_ENV_AT_IMPORT if name in sys.modules]
    if too_late:
        log.warning(
            "lock_down() ran after %s was imported; those modules may not see the offline settings, "
            "but the socket guard still refuses the network.",
            ", ".join(too_late),
        )
    install_guard()


def is_loopback(address: object, family: int | None = None) -> bool:
    """True when ``address`` can only mean this machine.

    ``address`` is a host (``"127.0.0.1"``, ``"::1"``, ``"localhost"``, as str or bytes) or a socket address
    tuple as given to ``socket.connect`` (``(host, port)`` or ``(host, port, flowinfo, scope_id)``).
    With ``family=socket.AF_UNIX`` any address is local (a path or an abstract name).

    Deliberately strict, because a "no" costs an error message and a wrong "yes" costs a leak: only
    127.0.0.0/8, ::1 (with or without a scope), IPv4-mapped loopback (``::ffff:127.0.0.1``) and the exact
    name ``localhost`` count. Other spellings (``"127.1"``, ``"0.0.0.0"``, ``"[::1]"``, ``"foo.localhost"``)
    would be resolved by the system, so they are not loopback here.
    """
    if family is not None and family in _LOCAL_FAMILIES:
        return True
    if isinstance(address, (tuple, list)):
        return len(address) >= 1 and _host_is_loopback(address[0])
    return _host_is_loopback(address)


def _host_is_loopback(host: object) -> bool:
    if isinstance(host, (bytes, bytearray)):
        try:
            host = bytes(host).decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str):
        return False
    if host.lower() in _LOCALHOST_NAMES:
        return True
    try:
        # Strict parsing on purpose: ip_address() accepts only canonical forms, so anything it parses is
        # exactly the address the C library will use, and anything else would go to the resolver.
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # ::ffff:127.0.0.1 reaches 127.0.0.1; Python < 3.13 does not call it loopback.
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def guard_installed() -> bool:
    """True while the socket guard is in place."""
    with _state.lock:
        return bool(_state.originals)


def install_guard() -> None:
    """Wrap the socket functions so that non-loopback targets raise :class:`NetworkBlockedError`.

    Idempotent: a second call does nothing (the functions are never wrapped twice). Whatever sits in
    ``socket.socket.connect`` etc. at this moment is what the guard calls for allowed targets and what
    :func:`uninstall_guard` puts back.
    """
    with _state.lock:
        if _state.originals:
            return
        for name in _SOCKET_METHODS:
            real = getattr(socket.socket, name, None)
            if real is None:  # sendmsg does not exist on Windows
                continue
            _state.originals[(socket.socket, name)] = real
            setattr(socket.socket, name, _guard_socket_method(name, real))
        for name in _RESOLVERS:
            real = getattr(socket, name)
            _state.originals[(socket, name)] = real
            setattr(socket, name, _guard_resolver(name, real))


def uninstall_guard() -> None:
    """Put back what :func:`install_guard` replaced (for tests). Does nothing if no guard is installed."""
    with _state.lock:
        for (owner, name), real in _state.originals.items():
            setattr(owner, name, real)
        _state.originals.clear()


@contextlib.contextmanager
def network_guard() -> Iterator[list[RefusedAttempt]]:
    """Guard the network inside a ``with`` block; yields a list that fills with the attempts refused in it.

    If the guard was already installed it stays installed afterwards; otherwise it is removed again.
    """
    refused_here: list[RefusedAttempt] = []
    listener = refused_here.append
    with _state.lock:
        was_installed = guard_installed()
        install_guard()
    add_refusal_listener(listener)
    try:
        yield refused_here
    finally:
        remove_refusal_listener(listener)
        if not was_installed:
            uninstall_guard()


def refused_attempts() -> list[RefusedAttempt]:
    """The attempts refused so far in this process (the latest 1000), oldest first."""
    with _state.lock:
        return list(_state.refused)


def clear_refused_attempts() -> None:
    """Forget the recorded attempts (listeners are unaffected)."""
    with _state.lock:
        _state.refused.clear()


def add_refusal_listener(listener: RefusalListener) -> None:
    """Call ``listener(attempt)`` on every refusal, in the thread that tried, just before the error is raised.

    A GUI must hop to its own thread (e.g. emit a signal). Exceptions from a listener are logged and do not
    stop the refusal.
    """
    with _state.lock:
        _state.listeners.append(listener)


def remove_refusal_listener(listener: RefusalListener) -> None:
    """Stop calling ``listener``; does nothing if it was not added."""
    with _state.lock, contextlib.suppress(ValueError):
        _state.listeners.remove(listener)


def _refuse(operation: str, target: str, *, lookup: bool = False) -> NoReturn:
    attempt = RefusedAttempt(operation=operation, target=target, thread=threading.current_thread().name)
    with _state.lock:
        _state.refused.append(attempt)
        listeners = list(_state.listeners)
    for listener in listeners:
        try:
            listener(attempt)
        except Exception:  # a broken listener must not turn a refusal into a different error
            log.exception("network refusal listener %r failed", listener)
    what = f"look up the host name {target}" if lookup else f"connect to {target}"
    raise NetworkBlockedError(
        f"desktop-dpo works offline and refused to {what} ({operation}); nothing was sent. "
        "Only this machine (localhost) can be reached: use model files and folders that are already on "
        "this computer."
    )


def _describe(address: object) -> str:
    if isinstance(address, (tuple, list)) and len(address) >= 2:
        host = address[0].decode("ascii", "replace") if isinstance(address[0], bytes) else address[0]
        return f"{host} port {address[1]}"
    if isinstance(address, bytes):
        return address.decode("ascii", "replace")
    return str(address)


def _socket_address_argument(name: str, args: tuple[Any, ...]) -> tuple[bool, object]:
    """Where the destination is in each method's positional arguments (all four are positional-only).
    Returns (has_address, address); without one the real call either uses the connected peer (already
    checked by connect) or raises TypeError itself."""
    if name in ("connect", "connect_ex"):
        return (len(args) >= 1, args[0] if args else None)
    if name == "sendto":  # sendto(data, address) or sendto(data, flags, address)
        return (len(args) in (2, 3), args[-1] if args else None)
    # sendmsg(buffers[, ancdata[, flags[, address]]])
    return (len(args) >= 4, args[3] if len(args) >= 4 else None)


def _guard_socket_method(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(real)
    def guarded(sock: socket.socket, *args: Any, **kwargs: Any) -> Any:
        has_address, address = _socket_address_argument(name, args)
        if has_address and not _socket_target_allowed(sock.family, address):
            _refuse(f"socket.{name}", _describe(address))
        return real(sock, *args, **kwargs)

    return guarded


def _socket_target_allowed(family: int, address: object) -> bool:
    if family in _LOCAL_FAMILIES:
        return True
    # Anything other than IP and Unix sockets (raw packets, Bluetooth, CAN, ...) has no business here.
    return family in _IP_FAMILIES and is_loopback(address)


def _guard_resolver(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(real)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if name == "getaddrinfo":  # getaddrinfo(host, port, ...), the only one taking keywords
            host = args[0] if args else kwargs.get("host")
            # getaddrinfo(None, port) asks for this machine's own addresses; no query leaves it.
            if host is not None and not _host_is_loopback(host):
                _refuse(f"socket.{name}", _describe(host), lookup=True)
        elif args:  # without an argument the real function raises TypeError itself
            # getnameinfo(sockaddr, flags) is a reverse lookup of sockaddr's host; the others take a host.
            target = args[0]
            if not is_loopback(target):
                _refuse(f"socket.{name}", _describe(target), lookup=True)
        return real(*args, **kwargs)

    return guarded

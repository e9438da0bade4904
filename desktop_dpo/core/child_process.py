"""Supervised child processes: the frames both sides speak, the parent's handle on a child, exits in words.

Native code that can crash (llama.cpp, bitsandbytes) runs in a child process the app watches: a crash
there ends the child, never the window. Two children use this module: llama.cpp's
(``core/llm/llama_child.py``, supervised by ``core/llm/supervised.py``) and training's
(``core/dpo/train_child.py``).

- **Frames**: each message is a 4-byte big-endian length and a pickle (:func:`write_frame`,
  :func:`read_frame`), on the child's stdin and on a copy of its stdout (:func:`take_over_pipes`).
- **The parent's side**: :class:`ChildProcess` starts ``python -m MODULE`` in its own session, reads its
  frames and its stderr on two daemon threads, and puts :data:`PIPE_CLOSED` last in ``frames`` when the
  child's pipe closes (it ended: :func:`describe_exit` says how).
- **No orphans**: the child exits when its stdin closes (the parent quit or died); an ``atexit`` hook kills
  the children still running when the parent exits normally.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import faulthandler
import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, BinaryIO

_HEADER = struct.Struct(">I")
# How long a child asked to stop may take before it is killed.
STOP_GRACE_S = 1.0

PIPE_CLOSED = object()
"""The last item of :attr:`ChildProcess.frames`: the child's pipe closed (it exited, or crashed)."""


# ---------------------------------------------------------------------------------------------------------
# Frames (both sides)
# ---------------------------------------------------------------------------------------------------------


def write_frame(stream: BinaryIO, message: object, lock: threading.Lock | None = None) -> None:
    """Write one frame (length + pickle) and flush it."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if lock is None:
        stream.write(_HEADER.pack(len(data)) + data)
        stream.flush()
        return
    with lock:
        stream.write(_HEADER.pack(len(data)) + data)
        stream.flush()


def read_frame(stream: BinaryIO) -> Any:
    """Read one frame; raises EOFError when the other side has closed the pipe."""
    header = _read_exactly(stream, _HEADER.size)
    (length,) = _HEADER.unpack(header)
    return pickle.loads(_read_exactly(stream, length))


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    parts: list[bytes] = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            raise EOFError
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------------------
# The child's side
# ---------------------------------------------------------------------------------------------------------


def take_over_pipes() -> tuple[BinaryIO, BinaryIO]:
    """Set up a supervised child process; returns its frame pipes ``(inbox, outbox)``.

    The frames go out on a copy of stdout, and file descriptor 1 is pointed at stderr, so whatever native code
    prints goes to the parent's log, never into a frame. faulthandler leaves a Python traceback in that log
    when native code crashes, and the network is locked down before anything heavy is imported. Shared by
    every supervised child (llama.cpp's, training's).
    """
    outbox = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    faulthandler.enable()

    from desktop_dpo.core import offline

    offline.lock_down()
    return os.fdopen(os.dup(0), "rb", buffering=0), outbox


# ---------------------------------------------------------------------------------------------------------
# The parent's side
# ---------------------------------------------------------------------------------------------------------


_live_children: weakref.WeakSet[ChildProcess] = weakref.WeakSet()


def _kill_live_children() -> None:
    for child in list(_live_children):
        child.kill()


atexit.register(_kill_live_children)


def describe_exit(returncode: int | None) -> str:
    """How a child ended, in words: "a segmentation fault (signal 11)", "exit code 3", ..."""
    if returncode is None:
        return "no answer"
    if returncode < 0:
        number = -returncode
        names = {
            signal.SIGSEGV: "a segmentation fault",
            signal.SIGABRT: "an abort",
            signal.SIGKILL: "being killed (often: out of memory)",
            signal.SIGILL: "an illegal instruction (a build for another CPU)",
            signal.SIGFPE: "an arithmetic fault",
        }
        if hasattr(signal, "SIGBUS"):
            names[signal.SIGBUS] = "a bus error"
        try:
            label = names.get(signal.Signals(number), signal.Signals(number).name)
        except ValueError:
            label = "a signal"
        return f"{label} (signal {number})"
    return f"exit code {returncode}"


class ChildProcess:
    """One child process and the threads that read its frames and its stderr.

    ``module`` is what the child runs (``python -m module``): it speaks in frames on its stdout and
    exits when its stdin closes. ``logger`` receives the child's stderr lines; the last 40 are kept in
    ``stderr_tail`` for the crash log. ``frames`` receives every frame, then :data:`PIPE_CLOSED`.
    """

    def __init__(self, module: str, env: dict[str, str] | None = None, *, logger: logging.Logger) -> None:
        command = [sys.executable, "-m", module]
        self._log = logger
        thread_name = module.rsplit(".", 1)[-1].replace("_", "-")
        environment = dict(os.environ if env is None else env)
        # The child imports this package: make sure it finds the same one, even when run from a checkout.
        package_root = str(Path(__file__).resolve().parents[2])
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, environment.get("PYTHONPATH", "")) if p
        )
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
            # Its own session: a Ctrl-C in the terminal reaches the app, which then stops the child in order.
            start_new_session=sys.platform != "win32",
        )
        self.frames: queue.Queue[Any] = queue.Queue()
        self._write_lock = threading.Lock()
        threading.Thread(target=self._read_frames, name=f"{thread_name}-frames", daemon=True).start()
        threading.Thread(target=self._read_stderr, name=f"{thread_name}-stderr", daemon=True).start()
        _live_children.add(self)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def _read_frames(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        try:
            while True:
                self.frames.put(read_frame(stream))
        except Exception:  # EOF, or a frame cut short by a crash
            pass
        self.frames.put(PIPE_CLOSED)

    def _read_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                self.stderr_tail.append(line)
                self._log.debug("[pid %d] %s", self.process.pid, line)

    def send(self, message: object) -> bool:
        """Send a frame; False when the child is already gone."""
        stdin = self.process.stdin
        if stdin is None:
            return False
        try:
            write_frame(stdin, message, self._write_lock)
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def wait_exit(self, timeout_s: float) -> int | None:
        """The exit status, waiting up to ``timeout_s``; None if it still runs."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """End the child now (idempotent)."""
        with contextlib.suppress(OSError):
            if self.process.poll() is None:
                self.process.kill()
        with contextlib.suppress(Exception):
            self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()
        _live_children.discard(self)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Ask the child to exit; kill it if it has not within ``grace_s``."""
        if self.alive():
            self.send(("close",))
            with contextlib.suppress(OSError, ValueError):
                if self.process.stdin is not None:
                    self.process.stdin.close()  # EOF: the child exits even if it missed the frame
            self.wait_exit(grace_s)
        self.kill()

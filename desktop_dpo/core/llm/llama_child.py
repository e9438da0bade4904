"""The child process that runs llama.cpp for the app: ``python -m desktop_dpo.core.llm.llama_child``.

Native code can crash on hardware nobody tested (see ``load_modes.py``); a crash kills the whole process,
with no exception and no ``finally``. So llama.cpp runs here, one model per child, and the window, the
database and every pick stay in the parent (``supervised.py``), which sees the crash as the end of this
process and says so in words.

Protocol: frames on a pipe, each a 4-byte big-endian length and a pickle (``core/child_process.py``). The
parent sends ``("load", kwargs)`` once, then requests ``(name, request_id, kwargs)`` one at a time,
``("cancel", request_id)`` at any moment, and ``("close",)``. The child answers ``("loaded", info)``, and for a request
its events ``("event", request_id, event)``, ``("tick",)`` when a decode returned (proof of progress while
a long prompt is evaluated), then ``("done", request_id, value)`` or ``("error", request_id, kind,
message)``.

The child's stdout is kept for frames only: file descriptor 1 is pointed at stderr, so anything native code
prints goes to the parent's log instead of corrupting a frame. When the parent's end of the pipe closes
(the parent exited or was killed), the child exits at once: it never outlives the app.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from desktop_dpo.core.child_process import read_frame, take_over_pipes, write_frame

# Set in tests only, through the environment the parent passes on: makes this child fail the way native
# code fails on other hardware. "KIND" or "KIND:PATH", where a PATH makes the fault happen once (the file
# is removed when it fires). Kinds: "amx" (segfault while loading in the normal mode, as llama.cpp's AMX
# repacking does; safe mode loads), "segv-load", "hang-load", "segv-pair" and "hang-pair" (in the middle
# of a pair, after some tokens). And one that is no fault: "hold:PATH" pauses every answer after its first
# visible text while PATH exists (a test's Stop then lands mid-answer, however fast the model).
FAULT_ENV = "DESKTOP_DPO_INJECT_LLAMA_FAULT"

TICK_INTERVAL_S = 0.5  # at most one "tick" frame per this many seconds


# ---------------------------------------------------------------------------------------------------------
# Fault injection (tests)
# ---------------------------------------------------------------------------------------------------------


class _Faults:
    """The fault this child was asked to simulate, if any."""

    def __init__(self, spec: str) -> None:
        kind, _, once = spec.partition(":")
        self.kind = kind
        self.once_file = Path(once) if once else None

    def fires(self, kind: str) -> bool:
        if self.kind != kind:
            return False
        if self.once_file is None:
            return True
        try:
            self.once_file.unlink()
        except FileNotFoundError:
            return False
        return True

    @staticmethod
    def segfault() -> None:
        import ctypes

        faulthandler.disable()  # a real native crash, without Python's report
        ctypes.string_at(0)  # reads address 0: SIGSEGV in native code, as llama.cpp's crash

    @staticmethod
    def hang() -> None:
        while True:
            time.sleep(3600)

    def at_load(self, safe_mode: bool) -> None:
        if (self.kind == "amx" and not safe_mode) or self.fires("segv-load"):
            self.segfault()
        if self.fires("hang-load"):
            self.hang()

    def after_event(self, n_tokens: int, text: str, cancelled: Callable[[], bool]) -> None:
        """Called after each streamed event was sent."""
        if self.kind == "hold" and self.once_file is not None:
            # Not a fault: the answer pauses after its first visible text while the file exists and no stop
            # has come (at most a minute), so a test's Stop lands mid-answer even on a model that writes
            # hundreds of tokens a second.
            deadline = time.monotonic() + 60
            while (
                text.strip() and self.once_file.exists() and not cancelled() and time.monotonic() < deadline
            ):
                time.sleep(0.01)
            return
        if n_tokens < 3:
            return
        if self.fires("segv-pair"):
            self.segfault()
        if self.fires("hang-pair"):
            self.hang()


# ---------------------------------------------------------------------------------------------------------
# The child's main loop
# ---------------------------------------------------------------------------------------------------------


class _Child:
    def __init__(self, inbox: BinaryIO, outbox: BinaryIO) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.out_lock = threading.Lock()
        self.requests: list[tuple[str, int, dict[str, Any]]] = []
        self.ready = threading.Condition()
        self.cancels: dict[int, Any] = {}  # request id -> CancelToken of the request running
        self.closing = False
        self.faults = _Faults(os.environ.get(FAULT_ENV, ""))
        self.engine: Any = None
        self.last_tick = 0.0

    def send(self, message: object) -> None:
        write_frame(self.outbox, message, self.out_lock)

    def listen(self) -> None:
        """Reader thread: queue requests, apply cancels at once; exit the process when the parent is gone."""
        while True:
            try:
                frame = read_frame(self.inbox)
            except (EOFError, OSError, pickle.UnpicklingError):
                os._exit(0)  # the parent closed the pipe or died: never outlive it
            if frame[0] == "cancel":
                token = self.cancels.get(frame[1])
                if token is not None:
                    token.cancel()
                continue
            with self.ready:
                if frame[0] == "close":
                    self.closing = True
                else:
                    self.requests.append(frame)
                self.ready.notify()

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last_tick >= TICK_INTERVAL_S:
            self.last_tick = now
            self.send(("tick",))

    def load(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        from desktop_dpo.core.llm.llamacpp import LlamaCppEngine

        self.faults.at_load(bool(kwargs.get("safe_mode")))
        if self.faults.kind == "hold":
            kwargs = {
                **kwargs,
                "event_interval_s": 0,
            }  # an event per token, so the hold lands at the first text
        self.engine = LlamaCppEngine(**kwargs, on_decode=self.tick).load()
        engine = self.engine
        # A warm-up decode, a batch of several tokens and then one token, as sampling will run: llama.cpp's
        # repacked weights (AMX, CPU repack) are first used here, and that is where they crash on CPUs that
        # cannot take them. Crashing now is crashing "while loading": retried in safe mode before the person
        # has seen a single token.
        warm = engine.tokenize("Hello, this warms the model up.", add_bos=True)[:8]
        engine.logits(warm)
        engine.logits(warm[:1])
        return {
            "n_ctx": engine.n_ctx,
            "n_vocab": engine.n_vocab,
            "n_batch": engine.n_batch,
            "n_threads": engine.n_threads,
            "chat_template": engine.chat_template,
            "bos_text": engine.bos_text,
            "eos_text": engine.eos_text,
            "gpu_layers": engine.loaded_gpu_layers,
        }

    def run(self, name: str, request_id: int, kwargs: dict[str, Any]) -> Any:
        from desktop_dpo.core.jobs import CancelToken
        from desktop_dpo.core.llm.generation import TokenEvent

        engine = self.engine
        if name == "tokenize":
            return engine.tokenize(**kwargs)
        if name == "prompt_tokens":
            return engine.prompt_tokens(kwargs["prompt"])
        if name == "logits":
            return engine.logits(kwargs["tokens"])
        if name not in ("generate", "generate_pair"):
            raise ValueError(f"unknown request {name!r}")
        cancel = CancelToken()
        self.cancels[request_id] = cancel
        try:
            job = getattr(engine, name)(**kwargs, cancel=cancel)
            while True:
                try:
                    event = next(job)
                except StopIteration as stop:
                    return stop.value
                self.send(("event", request_id, event))
                if isinstance(event, TokenEvent):
                    self.faults.after_event(event.n_tokens, event.text, lambda: cancel.cancelled)
        finally:
            self.cancels.pop(request_id, None)

    def serve(self) -> None:
        threading.Thread(target=self.listen, name="llama-child-listen", daemon=True).start()
        while True:
            with self.ready:
                while not self.requests and not self.closing:
                    self.ready.wait()
                if not self.requests:  # closing, nothing left to do
                    break
                frame = self.requests.pop(0)
            if frame[0] == "load":
                self._answer(frame[0], 0, lambda f=frame: self.load(f[1]))
            else:
                name, request_id, kwargs = frame
                self._answer(name, request_id, lambda n=name, r=request_id, k=kwargs: self.run(n, r, k))
        if self.engine is not None:
            with contextlib.suppress(Exception):
                self.engine.close(timeout_s=1.0)

    def _answer(self, name: str, request_id: int, call: Callable[[], Any]) -> None:
        try:
            value = call()
        except Exception as exc:
            self.send(("error", request_id, _error_kind(exc), str(exc)))
        else:
            self.send(("loaded", value) if name == "load" else ("done", request_id, value))


def _error_kind(exc: BaseException) -> str:
    """The name the parent rebuilds the error from: our own error classes by name, else a general one."""
    from desktop_dpo.core import errors

    name = type(exc).__name__
    if isinstance(exc, errors.DesktopDpoError) and getattr(errors, name, None) is type(exc):
        return name
    return "ValueError" if isinstance(exc, ValueError) else "ModelError"


def main() -> None:
    """Entry point of the child: take the frame pipe over from stdout, then serve the parent."""
    inbox, outbox = take_over_pipes()
    _Child(inbox, outbox).serve()


if __name__ == "__main__":
    main()

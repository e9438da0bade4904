"""llama.cpp in a supervised child process: a native crash becomes a message, never a dead window.

:class:`SupervisedLlamaEngine` has the interface of :class:`~desktop_dpo.core.llm.llamacpp.LlamaCppEngine`
(the :class:`~desktop_dpo.core.llm.generation.Engine` protocol, ``load_job`` and ``logits``) and the same
events, but the model lives in a child process (``llama_child.py``, started and watched through
``core/child_process.py``), one per model, as LM Studio and Ollama run theirs. The parent keeps the window,
the database and every pick; the child holds only the model.

What the supervisor does, like a notebook's kernel manager:
- **A crash** (segfault, abort, killed for memory) ends the child; the parent reads the end of its pipe and
  raises :class:`~desktop_dpo.core.errors.EngineCrashed` with what happened in words. A crash while
  *loading* in the normal mode is retried at once in safe mode (``load_modes.py``), and a job says so with
  a ``Log`` line; after any crash in the normal mode, the model loads in safe mode from then on, and that is
  remembered per model file, llama.cpp version and CPU, so the next start goes straight to it.
- **A hang** (no token, no finished decode and no answer for ``hang_timeout_s``) is a crash too: the child
  is killed.
- **Cancel** reaches the child at once (a frame read by its listening thread); the answer comes back at the
  next token boundary. A child that has not answered a second later is killed. **Closing** ends the child
  within a second, and a child whose parent dies exits by itself (its end of the pipe closes).

Streaming costs little: events are the engine's own (merged every ``event_interval_s``), pickled over a
pipe; ``bench/sampling.py`` measures it against in-process llama.cpp.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

from desktop_dpo.core import errors
from desktop_dpo.core.child_process import PIPE_CLOSED, STOP_GRACE_S, ChildProcess, describe_exit
from desktop_dpo.core.errors import DesktopDpoError, EngineCrashed, JobCancelled, ModelError
from desktop_dpo.core.jobs import CancelToken, Log, drive
from desktop_dpo.core.llm.engine_base import EngineBase, GenerationRequest, claim_engine
from desktop_dpo.core.llm.generation import Prompt, seed_source
from desktop_dpo.core.llm.load_modes import LoadMode, LoadModeMemory

log = logging.getLogger(__name__)
child_log = logging.getLogger("desktop_dpo.llama_child")

# A generating child that sends nothing (no token, no finished decode) for this long is taken for hung.
HANG_TIMEOUT_S = 120.0
# The same while it loads: reading a large file from a slow disk takes long, and sends nothing meanwhile.
LOAD_TIMEOUT_S = 600.0
_POLL_S = 0.05  # how often a waiting job looks at its cancel token
CHILD_MODULE = "desktop_dpo.core.llm.llama_child"  # what the child runs (python -m)


class SupervisedLlamaEngine(EngineBase):
    """One GGUF model in llama.cpp, in a child process the app supervises.

    Args:
        model_path: the .gguf file.
        n_ctx, n_threads, n_gpu_layers, flash_attn, n_batch, event_interval_s: as for
            :class:`~desktop_dpo.core.llm.llamacpp.LlamaCppEngine`.
        seed: where seeds come from when a call gives none (None: random; an int: a reproducible series).
        memory: the remembered load modes (``LoadModeMemory.in_folder(paths.data_dir)``); None: start in
            the normal mode each time and remember nothing.
        mode: force a load mode ("normal" or "safe") instead of the remembered one.
        hang_timeout_s: a child that sends nothing (no token, no decode, no answer) for this long while
            generating is taken for hung, and killed (None: :data:`HANG_TIMEOUT_S`).
        load_timeout_s: the same while it loads the model (None: :data:`LOAD_TIMEOUT_S`).
        env: environment of the child (None: this process's).
        chat_template: the template conversations are rendered with, in place of the file's own (None: the
            file's), as ``LlamaCppEngine``'s.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        seed: int | None = None,
        flash_attn: bool | None = None,
        n_batch: int = 512,
        event_interval_s: float = 0.03,
        memory: LoadModeMemory | None = None,
        mode: LoadMode | None = None,
        hang_timeout_s: float | None = None,
        load_timeout_s: float | None = None,
        env: dict[str, str] | None = None,
        chat_template: str | None = None,
    ):
        self.model_path = Path(model_path)
        self._engine_kwargs: dict[str, Any] = {
            "model_path": str(self.model_path),
            "chat_template": chat_template,
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "n_gpu_layers": n_gpu_layers,
            "flash_attn": flash_attn,
            "n_batch": n_batch,
            "event_interval_s": event_interval_s,
        }
        self.memory = memory
        self.forced_mode = mode
        self.hang_timeout_s = hang_timeout_s if hang_timeout_s is not None else HANG_TIMEOUT_S
        self.load_timeout_s = load_timeout_s if load_timeout_s is not None else LOAD_TIMEOUT_S
        self.env = env
        self._seed_source = seed_source(seed)
        self._busy = threading.Lock()
        self._load_lock = threading.Lock()
        self._child: ChildProcess | None = None
        self._next_request = 0
        self._crashed_in_normal_mode = False
        self.mode: LoadMode | None = None  # the mode the running child loaded with
        self.n_ctx = 0
        self.n_vocab = 0
        self.n_batch = n_batch
        self.n_threads = n_threads or 0
        self.chat_template: str | None = None
        self.bos_text = ""
        self.eos_text = ""
        self.gpu_layers = 0

    # -- life cycle ------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """True while a child holds the model."""
        return self._child is not None and self._child.alive()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs (tests and diagnostics)."""
        return self._child.pid if self._child is not None else None

    def load(self, on_event: Callable[[Any], object] | None = None) -> SupervisedLlamaEngine:
        """Start the child and load the model (idempotent; slow: call it off the GUI thread).

        ``on_event`` receives the ``Log`` lines of a crash and retry. Raises as :meth:`load_job`.
        """
        drive(self.load_job(), on_event or (lambda _event: None))
        return self

    def load_job(self, cancel: CancelToken | None = None) -> Generator[Any, None, None]:
        """Load the model if no child holds it (a job step): yields ``Log`` lines when a load crashes and is
        retried in safe mode.

        Raises:
            EngineCrashed: the child crashed or hung even in safe mode.
            ModelError: llama.cpp refused the file (damaged, unknown architecture, not enough memory).
        """
        with self._load_lock:
            if self.loaded:
                return
            self._discard_child()
            mode = self._first_mode()
            try:
                self._start(mode, cancel)
            except EngineCrashed as crash:
                if mode == "safe":
                    raise
                self._crashed_in_normal_mode = True
                yield Log(
                    f"The model crashed while loading ({crash.how}); trying again in safe mode "
                    "(slower, without llama.cpp's CPU repacking or some GPU layers)…",
                    level="warning",
                )
                self._start("safe", cancel)
                if self.memory is not None:
                    self.memory.remember(self.model_path, "safe", f"crashed while loading: {crash.how}")
                # A warning again, so the banner ends on what happened and what it means, not on "trying".
                later = " It will start that way from now on." if self.memory is not None else ""
                yield Log(
                    f"The model crashed while loading ({crash.how}) and now runs in safe mode (slower, without "
                    f"llama.cpp's CPU repacking or some GPU layers); your picks are safe.{later}",
                    level="warning",
                )

    def _first_mode(self) -> LoadMode:
        if self.forced_mode is not None:
            return self.forced_mode
        if self._crashed_in_normal_mode:
            return "safe"
        return self.memory.mode_for(self.model_path) if self.memory is not None else "normal"

    def _start(self, mode: LoadMode, cancel: CancelToken | None) -> None:
        if not self.model_path.is_file():
            raise ModelError(f"The model file {self.model_path} was not found. Choose the file again.")
        child = ChildProcess(CHILD_MODULE, self.env, logger=child_log)
        self._child = child
        child.send(("load", {**self._engine_kwargs, "safe_mode": mode == "safe"}))
        try:
            frame = self._wait(child, self.load_timeout_s, cancel, doing="loading")
        except BaseException:
            self._discard_child()
            raise
        if frame is None:
            self._discard_child()
            raise JobCancelled("Stopped as you asked.")
        if frame[0] == "error":
            self._discard_child()
            raise _rebuild_error(frame[2], frame[3])
        info = frame[1]
        self.mode = mode
        self.n_ctx = info["n_ctx"]
        self.n_vocab = info["n_vocab"]
        self.n_batch = info["n_batch"]
        self.n_threads = info["n_threads"]
        self.chat_template = info["chat_template"]
        self.bos_text = info["bos_text"]
        self.eos_text = info["eos_text"]
        self.gpu_layers = info["gpu_layers"]
        log.info("%s runs in llama.cpp child process %d (%s mode)", self.model_path.name, child.pid, mode)

    def close(self, timeout_s: float = STOP_GRACE_S) -> None:
        """End the child (within ``timeout_s``): a generation still running is stopped."""
        child, self._child = self._child, None
        if child is not None:
            child.stop(timeout_s)

    def _discard_child(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.kill()

    def __enter__(self) -> SupervisedLlamaEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------------------

    def _run(self, request: GenerationRequest) -> Generator[Any, None, list[Any]]:
        """``generate`` and ``generate_pair`` (EngineBase's), exactly as ``LlamaCppEngine``'s, run by the
        child; a crash raises :class:`~desktop_dpo.core.errors.EngineCrashed`."""
        pair = len(request.seeds) > 1
        kwargs: dict[str, Any] = {
            "prompt": request.prompt,
            "settings": request.settings,
            "stop": tuple(request.stop),
        }
        if pair:
            kwargs["seeds"] = tuple(request.seeds)
        else:
            kwargs["seed"] = request.seeds[0]
        if request.ignore_eos:
            kwargs["ignore_eos"] = True
        name, doing = ("generate_pair", "writing the answers") if pair else ("generate", "writing the answer")
        answer = yield from self._request(name, kwargs, request.cancel, doing=doing)
        return list(answer) if pair else [answer]

    def tokenize(self, text: str, *, add_bos: bool | None = None, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``, as ``LlamaCppEngine.tokenize``."""
        kwargs = {"text": text, "add_bos": add_bos, "parse_special": parse_special}
        return drive(self._request("tokenize", kwargs, None, doing="reading the text"), lambda _e: None)

    def prompt_tokens(self, prompt: Prompt) -> tuple[list[int], list[str]]:
        """Tokens of a prompt and the stop strings its layout needs, as ``LlamaCppEngine.prompt_tokens``."""
        return drive(self._request("prompt_tokens", {"prompt": prompt}, None, doing="reading the conversation"),
                     lambda _e: None)  # fmt: skip

    def logits(self, tokens: Sequence[int]) -> Any:
        """Next-token logits of every position, as ``LlamaCppEngine.logits`` (float32 [len, n_vocab])."""
        kwargs = {"tokens": list(tokens)}
        return drive(self._request("logits", kwargs, None, doing="scoring the text"), lambda _e: None)

    def _request(
        self, name: str, kwargs: dict[str, Any], cancel: CancelToken | None, *, doing: str
    ) -> Generator[Any, None, Any]:
        claim_engine(self._busy)
        cancel = cancel or CancelToken()
        finished = False
        child: ChildProcess | None = None
        request_id = 0
        try:
            yield from self.load_job(cancel)
            child = self._child
            assert child is not None
            self._next_request += 1
            request_id = self._next_request
            child.send((name, request_id, kwargs))
            cancel_sent = False
            while True:
                frame = self._wait(
                    child,
                    STOP_GRACE_S if cancel_sent else self.hang_timeout_s,
                    None if cancel_sent else cancel,
                    doing="stopping" if cancel_sent else doing,
                )
                if frame is None:  # the cancel token was set: tell the child, keep reading its answer
                    child.send(("cancel", request_id))
                    cancel_sent = True
                    continue
                kind = frame[0]
                if kind == "event":
                    yield frame[2]
                elif kind == "done":
                    finished = True
                    return frame[2]
                elif kind == "error":
                    finished = True
                    raise _rebuild_error(frame[2], frame[3])
        except EngineCrashed:
            finished = True
            if cancel.cancelled and child is not None and self._child is child:
                # Asked to stop, and the child did not within the grace period (a long decode): it was
                # ended; that is the stop the person wanted, not a crash of the model.
                self._discard_child()
                raise JobCancelled("Stopped as you asked.") from None
            self._after_crash()
            raise
        finally:
            if not finished and child is not None:
                # The job stopped mid-way (JobCancelled thrown in at a yield) or was abandoned: stop the
                # request, and end a child that does not answer within the grace period.
                self._abandon(child, request_id)
            self._busy.release()

    def _wait(self, child: ChildProcess, timeout_s: float, cancel: CancelToken | None, *, doing: str) -> Any:
        """The child's next frame other than a tick. None when ``cancel`` was set first.

        Raises:
            EngineCrashed: the child ended, or sent nothing for ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if cancel is not None and cancel.cancelled:
                return None
            try:
                frame = child.frames.get(timeout=_POLL_S if cancel is not None else min(timeout_s, 1.0))
            except queue.Empty:
                if time.monotonic() < deadline:
                    continue
                child.kill()
                raise EngineCrashed(
                    f"The model stopped responding while {doing} (nothing for {timeout_s:.0f} s), so it was "
                    "stopped. Nothing you saved is lost. Try again: it restarts in safe mode.",
                    how="it stopped responding",
                ) from None
            if frame is PIPE_CLOSED:
                returncode = child.wait_exit(2.0)
                how = describe_exit(returncode)
                tail = " | ".join(list(child.stderr_tail)[-3:])
                # The log file keeps the details; the person reads the EngineCrashed message (or a Log line).
                log.info(
                    "llama.cpp child %d ended while %s: %s. Last output: %s", child.pid, doing, how, tail
                )
                child.kill()
                raise EngineCrashed(
                    f"The model crashed while {doing} ({how}). Nothing you saved is lost. "
                    "Try again: it restarts in safe mode.",
                    how=how,
                )
            if frame[0] == "tick":
                deadline = time.monotonic() + timeout_s
                continue
            return frame

    def _after_crash(self) -> None:
        """A crash after loading: the next load goes to safe mode (and, in the normal mode, remember it)."""
        crashed_mode = self.mode
        self._discard_child()
        if crashed_mode == "normal" and self.forced_mode is None:
            self._crashed_in_normal_mode = True
            if self.memory is not None:
                self.memory.remember(self.model_path, "safe", "crashed or hung while generating")

    def _abandon(self, child: ChildProcess, request_id: int) -> None:
        child.send(("cancel", request_id))
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            try:
                frame = child.frames.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if frame is PIPE_CLOSED:
                break
            if frame[0] in ("done", "error") and frame[1] == request_id:
                return  # it stopped in time; the child stays loaded for the next job
        if self._child is child:
            self._discard_child()
        else:
            child.kill()


def _rebuild_error(kind: str, message: str) -> Exception:
    """The child's error as the parent raises it: our own classes by name, ValueError, else ModelError."""
    if kind == "ValueError":
        return ValueError(message)
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, DesktopDpoError) and cls is not EngineCrashed:
        with contextlib.suppress(TypeError):
            return cls(message)
    return ModelError(message)

"""llama.cpp in a supervised child: same answers as in-process, and a native crash or a hang is a message.

Faults are injected in the child (``llama_child.FAULT_ENV``) as native code fails: a real segmentation fault
(a read of address 0) while loading, in the middle of a pair, or a child that stops answering. The "amx"
fault crashes every load in the normal mode and none in safe mode, as llama.cpp's AMX repacking does on
AVX-512 + AMX CPUs, so a machine without AMX tests that path too. On such a CPU the normal mode crashes
for real, and these tests see the same fallback.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.errors import EngineCrashed, JobCancelled, ModelError
from desktop_dpo.core.jobs import CancelToken, Log
from desktop_dpo.core.llm.generation import ResponseFinished, TokenEvent
from desktop_dpo.core.llm.llama_child import FAULT_ENV
from desktop_dpo.core.llm.llamacpp import LlamaCppEngine
from desktop_dpo.core.llm.load_modes import LoadModeMemory, cpu_signature
from desktop_dpo.core.llm.supervised import SupervisedLlamaEngine
from tests.core.test_llamacpp import drive

SETTINGS = SamplingSettings(temperature=1.0, top_p=0.95, top_k=40, repeat_penalty=1.1, max_tokens=24)
PROMPT = "User: Tell me about tea.\nAssistant:"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def wait_gone(pid: int, within_s: float) -> float:
    start = time.monotonic()
    while pid_alive(pid):
        if time.monotonic() - start > within_s:
            raise AssertionError(f"child {pid} still runs after {within_s} s")
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def tiny_q8_gguf(tiny_model_dir: Path, tmp_path_factory) -> Path:
    from desktop_dpo.core.export.gguf import convert_hf_to_gguf

    out = tmp_path_factory.mktemp("tiny-q8-supervised") / "tiny-llama-q8_0.gguf"
    return drive(convert_hf_to_gguf(tiny_model_dir, out, outtype="q8_0"))[1]


def fault_env(kind: str, once: Path | None = None) -> dict[str, str]:
    if once is not None:
        once.write_text("armed")
    return {**os.environ, FAULT_ENV: f"{kind}:{once}" if once else kind}


def make(path: Path, tmp_path: Path, **kwargs) -> SupervisedLlamaEngine:
    settings = {"n_ctx": 128, "n_threads": 1, "event_interval_s": 0, **kwargs}
    settings["memory"] = kwargs.get("memory") or LoadModeMemory(tmp_path / "modes.json")
    return SupervisedLlamaEngine(path, **settings)


# ---------------------------------------------------------------------------------------------------------
# Same answers as in-process
# ---------------------------------------------------------------------------------------------------------


def test_a_pair_from_the_child_is_token_for_token_the_in_process_pair(tiny_q8_gguf, tmp_path):
    with make(tiny_q8_gguf, tmp_path, mode="safe") as child:
        events, (a, b) = drive(child.generate_pair(PROMPT, SETTINGS, seeds=(5, 6)))
    with LlamaCppEngine(tiny_q8_gguf, n_ctx=128, n_threads=1, event_interval_s=0, safe_mode=True) as local:
        _, (la, lb) = drive(local.generate_pair(PROMPT, SETTINGS, seeds=(5, 6)))
    assert (a.text, b.text) == (la.text, lb.text) and a.text != b.text
    assert (a.seed, b.seed) == (5, 6) and a.completion_tokens == la.completion_tokens
    streamed = ["".join(e.text for e in events if isinstance(e, TokenEvent) and e.seq == k) for k in (0, 1)]
    assert streamed == [a.text, b.text]  # streamed as it was written, each side on its own
    assert sorted(e.seq for e in events if isinstance(e, ResponseFinished)) == [0, 1]


def test_the_child_reports_what_the_engine_knows(tiny_q8_gguf, tmp_path):
    with make(tiny_q8_gguf, tmp_path) as engine:
        engine.load()
        assert engine.loaded and engine.n_ctx >= 128 and engine.n_vocab > 400
        ids = engine.tokenize("Tell me about tea.", add_bos=True)
        logits = engine.logits(ids)
        assert logits.shape == (len(ids), engine.n_vocab)
        assert engine.mode in ("normal", "safe")


def test_a_damaged_file_is_a_model_error_and_no_child_is_left(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    engine = make(broken, tmp_path, mode="normal")
    with pytest.raises(ModelError, match=r"could not load broken\.gguf") as caught:
        engine.load()
    assert not isinstance(caught.value, EngineCrashed)
    assert engine.pid is None


def test_cancel_stops_a_pair_at_a_token_and_keeps_the_text(tiny_q8_gguf, tmp_path):
    cancel = CancelToken()
    long = dataclasses.replace(SETTINGS, max_tokens=2000)
    with make(tiny_q8_gguf, tmp_path, mode="safe", n_ctx=4096) as engine:
        job = engine.generate_pair(PROMPT, long, seeds=(1, 2), cancel=cancel, ignore_eos=True)
        events = []
        for event in job:
            events.append(event)
            if isinstance(event, TokenEvent) and not cancel.cancelled:
                cancel.cancel()
        results = [e.result for e in events if isinstance(e, ResponseFinished)]
        assert [r.finish_reason for r in results] == ["cancelled", "cancelled"]
        assert all(r.completion_tokens < 2000 for r in results)
        pid = engine.pid
        assert pid is not None and pid_alive(pid)  # a stop keeps the model loaded for the next pick
        _, again = drive(engine.generate(PROMPT, SETTINGS, seed=3))
        assert again.finish_reason in ("stop", "length") and engine.pid == pid


# ---------------------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------------------


def test_a_crash_while_loading_is_retried_in_safe_mode_and_remembered(tiny_q8_gguf, tmp_path):
    memory = LoadModeMemory(tmp_path / "modes.json")
    engine = make(tiny_q8_gguf, tmp_path, memory=memory, env=fault_env("amx"))
    try:
        events, (a, _b) = drive(engine.generate_pair(PROMPT, SETTINGS, seeds=(1, 2)))
    finally:
        engine.close()
    notes = [e.message for e in events if isinstance(e, Log)]
    assert any("crashed while loading (a segmentation fault (signal 11)); trying again in safe mode" in n
               for n in notes), notes  # fmt: skip
    assert a.finish_reason in ("stop", "length")
    (record,) = memory.records()
    assert record.mode == "safe" and "segmentation fault" in record.reason
    assert record.cpu == cpu_signature() and Path(record.model_path) == tiny_q8_gguf.resolve()

    # Next time (a new engine, as after a restart of the app) it goes straight to safe mode: no crash.
    again = make(tiny_q8_gguf, tmp_path, memory=memory, env=fault_env("amx"))
    try:
        events, _ = drive(again.generate(PROMPT, SETTINGS, seed=4))
        assert again.mode == "safe"
    finally:
        again.close()
    assert not [e for e in events if isinstance(e, Log)]


def test_a_file_replaced_under_the_same_name_starts_over_in_the_normal_mode(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x" * 10)
    memory = LoadModeMemory(tmp_path / "modes.json")
    memory.remember(model, "safe", "crashed while loading")
    assert memory.mode_for(model) == "safe"
    assert memory.mode_for(model, version="9.9.9") == "normal"  # another llama.cpp
    assert memory.mode_for(model, cpu="another CPU [0]") == "normal"
    model.write_bytes(b"x" * 11)
    assert memory.mode_for(model) == "normal"
    (tmp_path / "modes.json").write_text("{ damaged")
    assert memory.mode_for(model) == "normal" and memory.records() == []


def test_a_crash_while_loading_even_in_safe_mode_says_so(tiny_q8_gguf, tmp_path):
    engine = make(tiny_q8_gguf, tmp_path, env=fault_env("segv-load"))
    with pytest.raises(EngineCrashed, match=r"crashed while loading \(a segmentation fault \(signal 11\)\)"):
        drive(engine.generate(PROMPT, SETTINGS, seed=1))
    assert engine.pid is None


def test_a_crash_in_the_middle_of_a_pair_is_a_message_and_the_next_pair_works(tiny_q8_gguf, tmp_path):
    memory = LoadModeMemory(tmp_path / "modes.json")
    engine = make(tiny_q8_gguf, tmp_path, memory=memory, env=fault_env("segv-pair", tmp_path / "once"))
    try:
        events: list[object] = []
        with pytest.raises(EngineCrashed) as caught:
            for event in engine.generate_pair(PROMPT, dataclasses.replace(SETTINGS, max_tokens=40),
                                              seeds=(1, 2), ignore_eos=True):  # fmt: skip
                events.append(event)
        message = str(caught.value)
        assert "crashed while writing the answers (a segmentation fault (signal 11))" in message
        assert "Nothing you saved is lost" in message
        assert any(isinstance(e, TokenEvent) for e in events)  # it crashed mid-way, not before
        assert engine.pid is None

        _, (a, b) = drive(engine.generate_pair(PROMPT, SETTINGS, seeds=(1, 2)))
        assert a.finish_reason in ("stop", "length") and b.finish_reason in ("stop", "length")
        assert engine.mode == "safe"
    finally:
        engine.close()
    assert memory.mode_for(tiny_q8_gguf) == "safe"


def test_a_hung_child_is_treated_as_a_crash(tiny_q8_gguf, tmp_path):
    engine = make(tiny_q8_gguf, tmp_path, env=fault_env("hang-pair", tmp_path / "once"), hang_timeout_s=2)
    try:
        engine.load()
        pid = engine.pid
        start = time.monotonic()
        with pytest.raises(EngineCrashed, match=r"stopped responding while writing the answers"):
            drive(engine.generate_pair(PROMPT, SETTINGS, seeds=(1, 2), ignore_eos=True))
        assert time.monotonic() - start < 30
        wait_gone(pid, 1.0)
        _, (a, _b) = drive(engine.generate_pair(PROMPT, SETTINGS, seeds=(1, 2)))
        assert a.finish_reason in ("stop", "length")
    finally:
        engine.close()


def test_a_hang_while_loading_is_treated_as_a_crash(tiny_q8_gguf, tmp_path):
    engine = make(tiny_q8_gguf, tmp_path, env=fault_env("hang-load", tmp_path / "once"), load_timeout_s=3)
    try:
        events, result = drive(engine.generate(PROMPT, SETTINGS, seed=1))
    finally:
        engine.close()
    assert any("stopped responding" in e.message and "safe mode" in e.message
               for e in events if isinstance(e, Log))  # fmt: skip
    assert result.finish_reason in ("stop", "length")


def test_stopping_a_hung_pair_ends_the_child_within_a_second(tiny_q8_gguf, tmp_path):
    engine = make(tiny_q8_gguf, tmp_path, env=fault_env("hang-pair", tmp_path / "once"))
    cancel = CancelToken()
    try:
        engine.load()
        pid = engine.pid
        job = engine.generate_pair(PROMPT, SETTINGS, seeds=(1, 2), cancel=cancel, ignore_eos=True)
        next(job)  # it streams its first tokens, then hangs (in native code, as far as the app can tell)
        time.sleep(0.5)
        cancel.cancel()  # the person presses Stop
        stopped_at = time.monotonic()
        with pytest.raises(JobCancelled):
            for _event in job:
                pass
        assert time.monotonic() - stopped_at < 1.5
        wait_gone(pid, 0.5)
        assert engine.pid is None
    finally:
        engine.close()


def test_closing_ends_the_child_within_a_second_even_mid_pair(tiny_q8_gguf, tmp_path):
    engine = make(tiny_q8_gguf, tmp_path, env=fault_env("hang-pair", tmp_path / "once"))
    engine.load()
    pid = engine.pid
    job = engine.generate_pair(PROMPT, SETTINGS, seeds=(1, 2), ignore_eos=True)
    next(job)  # it streams, then hangs
    start = time.monotonic()
    job.close()  # the job is closed mid-way, as when the app quits during a pick
    engine.close()
    assert time.monotonic() - start < 2.5
    wait_gone(pid, 0.5)


def test_the_child_never_outlives_a_killed_app(tiny_q8_gguf, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from desktop_dpo.core.llm.supervised import SupervisedLlamaEngine
        engine = SupervisedLlamaEngine({str(tiny_q8_gguf)!r}, n_ctx=128, n_threads=1, mode="safe").load()
        print(engine.pid, flush=True)
        time.sleep(600)
        """
    )
    app = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(app.stdout.readline())
        assert pid_alive(child_pid)
        app.kill()  # kill -9: no atexit, no finally in the app
        app.wait()
        wait_gone(child_pid, 1.0)
    finally:
        app.kill()

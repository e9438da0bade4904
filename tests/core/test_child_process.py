"""The plumbing of supervised children: frames both ways, native prints kept out of them, a death in words.

The llama.cpp child (``test_supervised_engine.py``) and the training child (``test_train.py``) are tested
with their real work; here a child of a dozen lines shows what the shared module itself promises.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path

import pytest

from desktop_dpo.core.child_process import (
    PIPE_CLOSED,
    ChildProcess,
    describe_exit,
    read_frame,
    write_frame,
)

# Echoes every frame; prints to stdout (as native code does) before each answer; aborts when asked.
ECHO_CHILD = """
import os, sys
from desktop_dpo.core.child_process import read_frame, take_over_pipes, write_frame

inbox, outbox = take_over_pipes()
while True:
    frame = read_frame(inbox)
    print("native noise on stdout", flush=True)
    os.write(1, b"more noise on fd 1\\n")
    if frame == ("abort",):
        os.abort()
    write_frame(outbox, ("echo", frame))
"""


def test_exits_are_described_in_words():
    assert describe_exit(-11) == "a segmentation fault (signal 11)"
    assert describe_exit(-9) == "being killed (often: out of memory) (signal 9)"
    assert describe_exit(-6) == "an abort (signal 6)"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(None) == "no answer"


def test_frames_keep_their_boundaries_and_a_cut_frame_is_the_end():
    stream = io.BytesIO()
    lock = threading.Lock()
    write_frame(stream, ("event", 1, "x" * 100_000), lock)
    write_frame(stream, ("done", 1, {"n": 2}))
    data = stream.getvalue()
    reader = io.BytesIO(data)
    assert read_frame(reader) == ("event", 1, "x" * 100_000)
    assert read_frame(reader) == ("done", 1, {"n": 2})
    with pytest.raises(EOFError):
        read_frame(reader)
    cut = io.BytesIO(data[:-3])  # a child that died in the middle of its second frame
    assert read_frame(cut) == ("event", 1, "x" * 100_000)
    with pytest.raises(EOFError):
        read_frame(cut)


def test_a_child_answers_in_frames_and_its_death_is_told_in_words(tmp_path: Path, caplog):
    (tmp_path / "echo_child.py").write_text(ECHO_CHILD, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    caplog.set_level(logging.DEBUG, logger="test.echo_child")
    child = ChildProcess("echo_child", env, logger=logging.getLogger("test.echo_child"))
    try:
        assert child.send(("hello", [1, 2]))
        # What the child printed went to its stderr, not into the frame pipe.
        assert child.frames.get(timeout=30) == ("echo", ("hello", [1, 2]))
        assert child.send(("abort",))
        assert child.frames.get(timeout=30) is PIPE_CLOSED
        assert describe_exit(child.wait_exit(5)) == "an abort (signal 6)"
        assert not child.alive()
    finally:
        child.kill()
    assert not child.send(("late",))  # a dead child refuses frames instead of raising
    assert "native noise on stdout" in child.stderr_tail
    assert "more noise on fd 1" in child.stderr_tail

"""Ctrl-C in ``desktop-dpo``: the job stops cleanly, "Stopped." is printed and the exit status is 130.

The token wiring is checked in process (a real SIGINT to this process); the whole path on a real
``desktop-dpo`` process training and exporting the tiny model: what a person who presses Ctrl-C in a
terminal gets, and what the database and the disk hold afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from desktop_dpo import cli
from desktop_dpo.config import HOME_ENV, AppPaths
from desktop_dpo.core.dpo.checkpoint import latest_checkpoint
from desktop_dpo.core.dpo.run_lock import run_is_busy
from desktop_dpo.core.store import Store

WAIT_S = 300  # generous: the machine is shared; nothing here asserts on time
TRAIN_OPTIONS = ["--batch-size", "2", "--grad-accum", "1", "--max-length", "48", "--lora-r", "4", "--threads", "1",
                 "--device", "cpu", "--quantization", "none", "--heldout-fraction", "0.25"]  # fmt: skip


def test_the_first_ctrl_c_sets_the_token_and_the_second_aborts():
    before = signal.getsignal(signal.SIGINT)
    with cli.stop_on_ctrl_c("Stopping") as token:
        assert not token.cancelled
        os.kill(os.getpid(), signal.SIGINT)
        assert token.cancelled  # the job sees it at its next event: no KeyboardInterrupt so far
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs between bytecodes; this is never reached in full
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back


def test_outside_the_main_thread_the_token_is_only_a_token():
    before = signal.getsignal(signal.SIGINT)
    seen: list[bool] = []

    def work() -> None:
        with cli.stop_on_ctrl_c() as token:
            seen.append(token.cancelled)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen == [False] and signal.getsignal(signal.SIGINT) is before


def _desktop_dpo(*args: str, home: Path) -> subprocess.Popen[str]:
    """A real ``desktop-dpo`` process (the console script beside this interpreter)."""
    script = Path(sys.executable).with_name("desktop-dpo")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "desktop_dpo"]
    env = {**os.environ, HOME_ENV: str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _stderr_reader(process: subprocess.Popen[str]) -> list[str]:
    """Collect stderr in a thread, character by character (progress bars end lines with ``\\r``)."""
    chunks: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        while text := process.stderr.read(1):
            chunks.append(text)

    threading.Thread(target=read, daemon=True).start()
    return chunks


def _wait_for(condition, process: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert process.poll() is None, f"desktop-dpo ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S} s"
        time.sleep(0.05)


def test_ctrl_c_stops_training_at_a_step_with_a_checkpoint_and_the_run_resumable(home_with_pairs):
    paths = AppPaths.default()
    # Many epochs: the run is still training whenever the signal comes.
    process = _desktop_dpo(
        "train", "--model", "tiny", "--epochs", "500", *TRAIN_OPTIONS, home=home_with_pairs
    )
    err = _stderr_reader(process)
    with Store.open(paths.db_path) as store:

        def stepped() -> bool:
            run = store.get_run(1)
            return run is not None and run.step >= 1

        _wait_for(stepped, process, "a training step")

    process.send_signal(signal.SIGINT)
    assert process.wait(WAIT_S) == cli.EXIT_STOPPED == 130
    shown = "".join(err)
    assert "Stopping after this step (Ctrl-C again aborts at once)" in shown
    assert "Stopped. Continue with: desktop-dpo train --resume 1" in shown
    assert "Traceback" not in shown
    with Store.open(paths.db_path) as store:
        run = store.get_run(1)
        assert run.status == "stopped" and run.error is None and 1 <= run.step < run.total_steps
        # A checkpoint of the very step the run row names: resume loses nothing.
        assert latest_checkpoint(Path(run.checkpoint_dir)).name == f"step-{run.step:07d}"
        assert not run_is_busy(Path(run.checkpoint_dir))  # the run's lock went with the process


def test_ctrl_c_stops_an_export_and_nothing_is_kept(home_with_pairs, tmp_path, capsys):
    paths = AppPaths.default()
    assert cli.main(["train", "--model", "tiny", "--epochs", "1", *TRAIN_OPTIONS]) == cli.EXIT_OK
    capsys.readouterr()
    out = tmp_path / "exports"

    process = _desktop_dpo("export", "--run", "1", "--quant", "Q8_0", "--out", str(out), home=home_with_pairs)
    err = _stderr_reader(process)
    _wait_for(lambda: "Merging the adapter" in "".join(err), process, "export under way")
    process.send_signal(signal.SIGINT)

    assert process.wait(WAIT_S) == cli.EXIT_STOPPED
    stdout = process.stdout.read() if process.stdout is not None else ""
    shown = "".join(err)
    assert "Stopped. Nothing was kept." in shown and "Traceback" not in shown
    assert "Registered as model" not in stdout
    with Store.open(paths.db_path) as store:
        assert store.list_exports(1) == [] and [m.name for m in store.list_models()] == ["tiny"]
    # No export folder, and no hidden work folder or partial file beside where it would have gone.
    assert not out.exists() or list(out.iterdir()) == []

"""Startup: time from process start to the main window's first paint, ours against bare PySide6 windows.

Arms, each in its own fresh interpreter (``python -c``), so imports are paid in full every time:

- ``ours``: the real entry point, ``desktop_dpo.cli.main()``, with a private ``DESKTOP_DPO_HOME``.
- ``bare``: an empty ``QMainWindow`` of the same size (the headline peer).
- ``bare_text``: the same with one ``QLabel``. Qt builds its font database the first time any text is
  laid out (~70 ms here), which the empty window never does; this arm shows that floor, which every
  window with a word on it pays.

The arms alternate and repeat; medians are compared. Wall time is read on the system-wide monotonic
clock: the parent just before starting the child, the child once the first paint has finished (a zero
timer queued from the top-level window's first Paint event runs after the whole paint pass). Every arm
reaches that point through the same patched ``QApplication.exec``. The child also reports the CPU time it
had used by then, which other work on a shared machine disturbs less than wall time.

Byte-code caching is on for the children (in a temporary folder), as for an installed app, whatever
PYTHONDONTWRITEBYTECODE says in this shell. A warm-up round (not counted) fills that cache; then one start
on a fresh home measures the very first start (database created), then the alternating rounds run.

Run from the repository root:  python bench/startup.py [--runs 7]
Last line:  startup: ratio=X ours_ms=Y bare_ms=Z ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WINDOW_SIZE = (1120, 720)  # the bare windows get the size ours opens with
ARMS = ("ours", "bare", "bare_text")

# Runs in the child. Prints "painted <monotonic s> <CPU s of this process>" once the first paint is done,
# then quits.
CHILD = r"""
import os, sys, time

arm, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def watch_first_paint():
    # QApplication.exec returns once the first paint has finished.
    from PySide6.QtCore import QEvent, QObject, QTimer
    from PySide6.QtWidgets import QApplication, QMainWindow

    real_exec = QApplication.exec

    class FirstPaint(QObject):
        done = False

        def eventFilter(self, obj, event):
            if not self.done and event.type() == QEvent.Type.Paint and isinstance(obj, QMainWindow):
                self.done = True
                QTimer.singleShot(0, self.report)  # after this paint pass (children included) has finished
            return False

        def report(self):
            print(f"painted {time.monotonic():.6f} {time.process_time():.6f}", flush=True)
            QApplication.instance().quit()

    def exec_until_first_paint(app):
        watcher = FirstPaint(app)
        app.installEventFilter(watcher)
        QTimer.singleShot(30000, app.quit)  # never hang the benchmark
        return real_exec()

    QApplication.exec = exec_until_first_paint


if arm == "ours":
    # The real entry point: `desktop-dpo` runs desktop_dpo.cli:main(), whose window command imports the GUI
    # modules first thing. The watcher goes in right after that import, before any window exists, so ours
    # pays every import in the real order and at the real moment (after main() has prepared start-up).
    import desktop_dpo.cli

    open_window = desktop_dpo.cli._cmd_gui

    def cmd_gui(args, paths):
        import desktop_dpo.app  # what the real command does first

        watch_first_paint()
        return open_window(args, paths)

    desktop_dpo.cli._cmd_gui = cmd_gui
    sys.exit(desktop_dpo.cli.main([]))

watch_first_paint()
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow

app = QApplication(sys.argv[:1])
window = QMainWindow()
window.setWindowTitle("bare")
if arm == "bare_text":
    window.setCentralWidget(QLabel("desktop-dpo"))
window.resize(width, height)
window.show()
sys.exit(app.exec())
"""


def run_arm(arm: str, home: Path, pycache: Path) -> tuple[float, float]:
    """Milliseconds from starting the child process to the end of its window's first paint, and the CPU
    milliseconds the child had used by then."""
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "offscreen"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["DESKTOP_DPO_HOME"] = str(home)  # only ours reads it
    args = [sys.executable, "-c", CHILD, arm, str(WINDOW_SIZE[0]), str(WINDOW_SIZE[1])]
    start = time.monotonic()
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    painted = [line for line in proc.stdout.splitlines() if line.startswith("painted ")]
    if proc.returncode != 0 or not painted:
        raise RuntimeError(f"{arm} arm failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    _, painted_at, cpu_seconds = painted[-1].split()
    return (float(painted_at) - start) * 1000.0, float(cpu_seconds) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7, help="measured runs per arm (default 7)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dpo-startup-") as tmp:
        pycache = Path(tmp) / "pycache"
        for arm in ARMS:  # warm-up: byte-code cache and disk cache
            run_arm(arm, Path(tmp) / "warm-up-home", pycache)
        home = Path(tmp) / "home"
        first_ms, _ = run_arm("ours", home, pycache)
        print(f"first start (creates the database): {first_ms:.0f} ms")

        wall: dict[str, list[float]] = {arm: [] for arm in ARMS}
        cpu: dict[str, list[float]] = {arm: [] for arm in ARMS}
        for index in range(args.runs):
            # Rotate the order, so drift on a shared machine hits every arm alike.
            order = ARMS[index % len(ARMS) :] + ARMS[: index % len(ARMS)]
            for arm in order:
                wall_ms, cpu_ms = run_arm(arm, home, pycache)
                wall[arm].append(wall_ms)
                cpu[arm].append(cpu_ms)
            print(
                f"run {index + 1}: "
                + ", ".join(f"{a} {wall[a][-1]:.0f} ms (cpu {cpu[a][-1]:.0f})" for a in ARMS)
            )

    med = {arm: statistics.median(wall[arm]) for arm in ARMS}
    med_cpu = {arm: statistics.median(cpu[arm]) for arm in ARMS}
    for arm in ARMS:
        print(f"{arm}: median {med[arm]:.0f} ms (min {min(wall[arm]):.0f}), cpu median {med_cpu[arm]:.0f} ms")
    print(
        f"startup: ratio={med['ours'] / med['bare']:.2f} ours_ms={med['ours']:.0f} bare_ms={med['bare']:.0f} "
        f"text_ratio={med['ours'] / med['bare_text']:.2f} bare_text_ms={med['bare_text']:.0f} "
        f"cpu_ratio={med_cpu['ours'] / med_cpu['bare']:.2f} first_ms={first_ms:.0f}"
    )


if __name__ == "__main__":
    main()

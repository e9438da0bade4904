"""Startup: time from process start to the main window's first paint, ours against a bare PySide6 window.

Each arm runs in its own fresh interpreter (``python -c``), so imports are paid in full every time; the
arms alternate and repeat, and the medians are compared. Time is measured on the system-wide monotonic
clock: the parent reads it just before starting the child, the child reads it once the window's first
paint has finished (a zero timer queued from the first Paint event of the top-level window runs after the
whole window has painted). Both arms reach that point through the same patched ``QApplication.exec``, so
they are measured identically; ours goes through the real entry point, ``desktop_dpo.cli.main``, with a
private ``--home`` folder. Byte-code caching is on for the children (in a temporary folder), as it is for
an installed app, whatever PYTHONDONTWRITEBYTECODE says in this shell.

Run from the repository root:  python bench/startup.py [--runs 7]
Last line:  startup: ratio=X ours_ms=Y bare_ms=Z
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
WINDOW_SIZE = (1120, 720)  # the bare window gets the size ours opens with

# Runs in the child. Prints "painted <monotonic s> <CPU s of this process>" once the first paint is done,
# then quits.
CHILD = r"""
import sys, time

arm, home, width, height = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if arm == "ours":
    # The same import order as `desktop-dpo` (entry point, lock_down's module, then the GUI modules, which
    # bring Qt): PySide6 makes every import after its own slower, so importing Qt first here would
    # penalise ours. lock_down() itself still runs first thing in main().
    import desktop_dpo.cli
    import desktop_dpo.core.offline
    import desktop_dpo.app

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
    sys.exit(desktop_dpo.cli.main(["--home", home]))
else:
    app = QApplication(sys.argv[:1])
    window = QMainWindow()
    window.setWindowTitle("bare")
    window.resize(width, height)
    window.show()
    sys.exit(app.exec())
"""


def run_arm(arm: str, home: Path, pycache: Path) -> tuple[float, float]:
    """Milliseconds from starting the child process to the end of its window's first paint, and the CPU
    milliseconds the child had used by then (less disturbed by other work on a shared machine)."""
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "offscreen"
    # Byte-code caching on, as in an installed app (pip compiles on install); kept out of the checkout.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("DESKTOP_DPO_HOME", None)  # ours gets --home; the bare arm never reads it
    args = [sys.executable, "-c", CHILD, arm, str(home), str(WINDOW_SIZE[0]), str(WINDOW_SIZE[1])]
    start = time.monotonic()
    proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    painted = [line for line in proc.stdout.splitlines() if line.startswith("painted ")]
    if proc.returncode != 0 or not painted:
        raise RuntimeError(f"{arm} arm failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    _, painted_at, cpu_seconds = painted[-1].split()
    return (float(painted_at) - start) * 1000.0, float(cpu_seconds) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="measured runs per arm (default 7)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dpo-startup-") as tmp:
        home = Path(tmp) / "home"
        pycache = Path(tmp) / "pycache"
        # Not counted: the first start creates the database and the folders, writes the byte-code cache
        # and warms the disk cache.
        first_ms, _ = run_arm("ours", home, pycache)
        run_arm("bare", home, pycache)
        print(f"first start (creates the database): {first_ms:.0f} ms")
        times: dict[str, list[float]] = {"ours": [], "bare": []}
        cpu: dict[str, list[float]] = {"ours": [], "bare": []}
        for index in range(args.runs):
            # Alternate which arm goes first, so drift on a shared machine hits both alike.
            order = ("ours", "bare") if index % 2 == 0 else ("bare", "ours")
            for arm in order:
                wall_ms, cpu_ms = run_arm(arm, home, pycache)
                times[arm].append(wall_ms)
                cpu[arm].append(cpu_ms)
            print(
                f"run {index + 1}: ours {times['ours'][-1]:.0f} ms (cpu {cpu['ours'][-1]:.0f}), "
                f"bare {times['bare'][-1]:.0f} ms (cpu {cpu['bare'][-1]:.0f})"
            )

    ours, bare = statistics.median(times["ours"]), statistics.median(times["bare"])
    ours_cpu, bare_cpu = statistics.median(cpu["ours"]), statistics.median(cpu["bare"])
    print(f"ours: median {ours:.0f} ms (min {min(times['ours']):.0f}); bare: median {bare:.0f} ms (min {min(times['bare']):.0f})")
    print(
        f"startup: ratio={ours / bare:.2f} ours_ms={ours:.0f} bare_ms={bare:.0f} "
        f"cpu_ratio={ours_cpu / bare_cpu:.2f} first_ms={first_ms:.0f}"
    )


if __name__ == "__main__":
    main()

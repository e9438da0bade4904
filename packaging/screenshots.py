"""Screenshots of every view with real content, for the README (offscreen; nothing is downloaded).

    python packaging/screenshots.py [--home DIR] [--out resources/screenshots]

``--home`` is an app home with real work in it (pairs, a finished run, an export, an evaluation). Without
one, or when it has no finished run yet, the script first runs ``desktop-dpo demo --quick`` into it: the
bundled Gemma 3 270M demo model, real sampling, real training steps, a real export and a blind evaluation
(a few minutes on two cores). Then it opens the app's real main window on that home, and for each view
does what a person would before looking (samples a pair in Collect, sends a message in Chat, asks for an
evaluation pair, selects the newest run and export) and saves ``<view>.png``, the data check
(``data-check.png``) and, with ``--find-beta``, Find β after its short trainings (``find-beta.png``); Collect, Train
and Chat are shot once more in the dark scheme (``<view>-dark.png``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE = (1280, 820)
DARK_VIEWS = ("collect", "train", "chat")  # also shot in the dark scheme (<view>-dark.png)
WAIT_S = 600.0
FIND_BETA_WAIT_S = 3600.0  # 4 × 16 steps of the demo model: over 10 minutes on two CPU cores


def _wait(app, done: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    """Run the event loop until ``done()`` (the window stays live: jobs run in their threads)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("a view did not finish what it was asked to do")
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):  # let layouts and repaints settle
        app.processEvents()
        time.sleep(0.01)


def _ensure_content(home: Path) -> None:
    from desktop_dpo.config import HOME_ENV, AppPaths
    from desktop_dpo.core.store import Store

    os.environ[HOME_ENV] = str(home)
    paths = AppPaths.default().ensure()
    with Store.open(paths.db_path) as store:
        finished = [r for r in store.list_runs() if r.status == "completed"]
    if finished:
        return
    print("No finished run in this home yet: running `desktop-dpo demo --quick` first…", file=sys.stderr)
    command = [sys.executable, "-m", "desktop_dpo", "demo", "--quick", "--home", str(home)]
    subprocess.run(command, check=True)


def take_screenshots(home: Path, out: Path, *, find_beta: bool = False) -> list[Path]:
    """Open the main window on ``home`` and save one PNG per view into ``out`` (and the data check; and Find β
    when ``find_beta``)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from desktop_dpo.core.offline import lock_down

    lock_down()
    from PySide6.QtWidgets import QWidget

    from desktop_dpo.app import create_application
    from desktop_dpo.config import HOME_ENV, AppPaths
    from desktop_dpo.core.llm.engine_pool import EnginePool
    from desktop_dpo.core.store import Store
    from desktop_dpo.gui.beta_search_dialog import find_beta_blocker
    from desktop_dpo.gui.main_window import MainWindow
    from desktop_dpo.gui.theme import current_theme
    from desktop_dpo.workers.job_worker import JobRegistry

    os.environ[HOME_ENV] = str(home)
    paths = AppPaths.default().ensure()
    app = create_application([sys.argv[0]])
    store = Store.open(paths.db_path, backups_dir=paths.backups_dir)
    registry, pool = JobRegistry(), EnginePool()
    window = MainWindow(store=store, registry=registry, paths=paths, pool=pool)
    appearance = current_theme().choice  # put back at the end: the screenshots leave the home as it was
    window.choose_appearance("light")
    window.resize(*SIZE)
    window.show()
    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []

    def shoot_widget(widget: QWidget, key: str) -> None:
        _wait(app, lambda: True)
        path = out / f"{key}.png"
        widget.grab().save(str(path))
        saved.append(path)
        print(f"saved {path}", file=sys.stderr)

    def shoot(key: str) -> None:
        shoot_widget(window, key)

    try:
        demo = next((m for m in store.list_models() if m.source == "demo"), None) or store.default_model()
        aligned = next((m for m in reversed(store.list_models()) if m.source == "aligned"), None)
        runs = [r for r in store.list_runs() if r.status == "completed"]

        window.show_view("models")
        models = window.view("models")
        if aligned is not None:
            models.select_model(aligned.id)  # its lineage shows in the details
        shoot("models")

        window.show_view("collect")
        collect = window.view("collect")
        if demo is not None:
            collect.set_model(demo)
        collect.set_prompt("Give me three tips for sleeping better.")
        if collect.sample():
            _wait(app, lambda: collect.pair is not None and collect.pair.complete)
        shoot("collect")

        window.show_view("train")
        train = window.view("train")
        if runs:
            train.select_run(runs[-1].id)
        shoot("train")
        if find_beta:  # short trainings at four β on the demo's pairs: minutes on a CPU
            if demo is not None:
                train.set_model(demo.id)
            _wait(app, lambda: train.preset is not None)  # Start (and Find β) wait for the device preset
            print(f"Find β: {find_beta_blocker(train.current_model(), train._plan, train.start_blocker()) or 'ready'}",
                  file=sys.stderr)  # fmt: skip
            dialog = train.find_beta()
            if dialog is not None and dialog.start():
                _wait(app, lambda: not dialog.running(), timeout_s=FIND_BETA_WAIT_S)
                shoot_widget(dialog, "find-beta")
                dialog.close()

        window.show_view("export")
        export = window.view("export")
        if export.exports_tree.topLevelItemCount():
            export.exports_tree.setCurrentItem(export.exports_tree.topLevelItem(0))
        shoot("export")

        window.show_view("chat")
        chat = window.view("chat")
        if aligned is not None:
            chat.set_model(aligned)
        chat.new_conversation()
        chat.set_message("What is a good way to start learning to cook?")
        if chat.send():
            _wait(app, lambda: chat.reply is None)
        chat.set_message("And what should I cook first?")
        if chat.send():
            _wait(app, lambda: chat.reply is None)
        shoot("chat")

        window.show_view("evaluate")
        evaluate = window.view("evaluate")
        if evaluate.next_prompt():
            _wait(
                app,
                lambda: (
                    (evaluate.pair is not None and evaluate.pair.results is not None)
                    or evaluate.error_text() != ""
                ),
            )
        shoot("evaluate")

        window.show_view("data")
        data = window.view("data")
        if data.table.model().rowCount():
            data.table.selectRow(0)
        shoot("data")
        data.open_check()
        _wait(app, lambda: not registry.is_busy("data-check:data"))
        shoot("data-check")

        window.show_view("storage")  # scans when first shown
        _wait(app, lambda: True)
        _wait(app, lambda: not registry.is_busy("storage"))
        shoot("storage")

        # The same work in the dark scheme, for the views a person spends the most time in.
        window.choose_appearance("dark")
        for key in DARK_VIEWS:
            window.show_view(key)
            shoot(f"{key}-dark")
        window.choose_appearance(appearance)
    finally:
        registry.cancel_all_and_wait()
        window.close()
        pool.close_all()
        store.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="an app home with real work in it (default: a fresh one)")
    parser.add_argument("--out", type=Path, default=REPO / "resources" / "screenshots")
    parser.add_argument("--find-beta", action="store_true", help="also run Find β (minutes) and shoot it")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="desktop-dpo-screenshots-"))
    _ensure_content(home.resolve())
    paths = take_screenshots(home.resolve(), args.out.resolve(), find_beta=args.find_beta)
    print(f"{len(paths)} screenshots in {args.out}")


if __name__ == "__main__":
    main()

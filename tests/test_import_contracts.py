"""The layering rules of ARCHITECTURE.md, checked on every test run (as napari does).

import-linter checks the contracts in pyproject.toml; the one rule it cannot express (workers use only
PySide6.QtCore, never QtWidgets or QtGui: it sees external packages only as a whole) is checked here by
reading the workers' imports.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKERS = REPO / "desktop_dpo" / "workers"
# What a worker may import from Qt: threads, signals, timers. Never a widget or anything that paints.
WORKERS_ALLOWED_QT = {"PySide6", "PySide6.QtCore"}


def test_import_linter_contracts_are_kept():
    # A fresh interpreter, so the graph is built from the files as they are now; no cache written into
    # the checkout.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    assert "0 broken" in report, report


def _qt_imports(path: Path) -> set[str]:
    """Every PySide6 module a file imports, at any depth (functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "PySide6"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "PySide6":
            found.add(node.module)
            if node.module == "PySide6":  # from PySide6 import QtWidgets
                found |= {f"PySide6.{alias.name}" for alias in node.names}
    return found


def test_workers_use_only_qtcore():
    files = sorted(WORKERS.rglob("*.py"))
    assert files, f"no worker modules found under {WORKERS}"
    offending = {
        str(path.relative_to(REPO)): sorted(qt - WORKERS_ALLOWED_QT)
        for path in files
        if (qt := _qt_imports(path)) - WORKERS_ALLOWED_QT
    }
    assert offending == {}, f"workers may import only PySide6.QtCore: {offending}"


def test_qt_import_checker_sees_widget_imports(tmp_path):
    # The check above is only worth something if it notices a widget import in every spelling.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from PySide6.QtCore import QThread\n"
        "import PySide6.QtGui\n"
        "def later():\n"
        "    from PySide6 import QtWidgets\n",
        encoding="utf-8",
    )
    assert _qt_imports(sample) - WORKERS_ALLOWED_QT == {"PySide6.QtGui", "PySide6.QtWidgets"}


FIRST_RUN = REPO / "desktop_dpo" / "gui" / "first_run.py"


def _window_uses(tree: ast.AST) -> set[str]:
    """The attributes read on ``self.window`` (how FirstRun reaches the main window)."""
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "window"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }


def _protocol_members(tree: ast.AST, name: str) -> set[str]:
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)
    return {
        item.target.id if isinstance(item, ast.AnnAssign) else item.name
        for item in cls.body
        if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name))
        or isinstance(item, ast.FunctionDef)
    }


def test_first_run_uses_only_the_windows_public_api():
    # The contract keeps first_run from importing main_window; this keeps it from reaching past the API
    # it declares (FirstRunHost) to the window's widgets, which no import would show.
    tree = ast.parse(FIRST_RUN.read_text(encoding="utf-8"), filename=str(FIRST_RUN))
    allowed = _protocol_members(tree, "FirstRunHost")
    used = _window_uses(tree)
    assert used, "FirstRun no longer uses self.window: update this check"
    assert used - allowed == set(), f"first_run reaches past FirstRunHost: {sorted(used - allowed)}"


def test_the_window_api_checker_sees_a_reach_into_internals():
    tree = ast.parse(
        "class FirstRunHost:\n"
        "    store: object\n"
        "    def view(self, key): ...\n"
        "class FirstRun:\n"
        "    def go(self):\n"
        "        self.window.view('collect')\n"
        "        self.window.pages.widget(1)\n"
        "        other.window.nav\n"
    )
    assert _protocol_members(tree, "FirstRunHost") == {"store", "view"}
    assert _window_uses(tree) == {"view", "pages"}

"""``desktop-dpo info``: folders, database contents, library versions and the hardware report."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from desktop_dpo import __version__
from desktop_dpo.cli import EXIT_FAILED, EXIT_OK, _open_store, _stopped, data_folder_problem, stop_on_ctrl_c
from desktop_dpo.config import AppPaths
from desktop_dpo.core.dpo.pair_counts import store_pair_counts
from desktop_dpo.core.errors import StoreError

# Distributions whose versions `info` reports; read from package metadata, so nothing heavy is imported.
REPORTED_DISTRIBUTIONS = (
    ("PySide6", ("PySide6-Essentials", "PySide6")),
    ("torch", ("torch",)),
    ("transformers", ("transformers",)),
    ("peft", ("peft",)),
    ("bitsandbytes", ("bitsandbytes",)),
    ("llama-cpp-python", ("llama-cpp-python", "llama_cpp_python")),
    ("sqlite-utils", ("sqlite-utils",)),
    ("trl", ("trl",)),
)


def add_info_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The ``info`` subcommand and its options."""
    info = commands.add_parser(
        "info", parents=[common], help="show folders, database contents, versions and the hardware"
    )
    info.add_argument(
        "--no-hardware",
        action="store_true",
        help="leave out the hardware checks (they take a few seconds: torch and llama.cpp are loaded to ask)",
    )
    info.add_argument(
        "--forget-safe-mode",
        action="store_true",
        help="forget which models crashed llama.cpp here, so that each loads in the normal mode again",
    )
    info.set_defaults(command_handler=cmd_info)


def cmd_info(args: argparse.Namespace, paths: AppPaths) -> int:
    """Print the report; exits non-zero when the data folder or the database cannot be read."""
    import platform

    from desktop_dpo.core.offline import guard_installed

    rows: list[tuple[str, str]] = [
        ("desktop-dpo", __version__),
        ("Data folder", str(paths.data_dir)),
        ("Database", str(paths.db_path)),
        ("Logs", str(paths.log_dir)),
    ]
    status = EXIT_OK
    problem = data_folder_problem(paths) if not paths.db_path.is_file() else None
    if problem is not None:
        rows.append(("Contents", problem))
        status = EXIT_FAILED
    elif not paths.db_path.exists():
        rows.append(("Contents", "no database yet (it is created when the app first opens)"))
    else:
        try:
            with _open_store(paths) as store:
                counts = store.table_counts()
                rows += [
                    ("Schema", str(store.schema_version)),
                    (
                        "Pairs",
                        # Counted as the window counts them (a pick between two identical answers trains nothing).
                        f"{store.count_comparisons()} collected, "
                        f"{store_pair_counts(store).usable} usable for training",
                    ),
                    ("Prompts", str(counts.get("prompts", 0))),
                    ("Models", str(counts.get("models", 0))),
                    ("Training runs", str(counts.get("runs", 0))),
                    ("Exports", str(counts.get("exports", 0))),
                ]
        except StoreError as exc:
            rows.append(("Contents", f"cannot be read: {exc}"))
            status = EXIT_FAILED
    rows.append(("Python", f"{platform.python_version()} ({sys.executable})"))
    for label, names in REPORTED_DISTRIBUTIONS:
        rows.append((label, installed_version(names)))
    rows.append(("Network", "blocked beyond this computer" if guard_installed() else "NOT guarded"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label + ':':<{width + 2}}{value}")
    if getattr(args, "forget_safe_mode", False):
        from desktop_dpo.core.hardware import forget_safe_mode

        dropped = forget_safe_mode(paths)
        print()
        print(
            f"Safe mode forgotten ({dropped} remembered load{'s' if dropped != 1 else ''}): every model "
            "loads in the normal mode next time."
            if dropped
            else "Safe mode was off for every model: nothing to forget."
        )
    if not getattr(args, "no_hardware", False):
        # The libraries are asked in child processes: a native crash there becomes a line of the report.
        from desktop_dpo.core.hardware import probe_hardware
        from desktop_dpo.core.hardware_report import render_report

        print("\nHardware", flush=True)
        with stop_on_ctrl_c() as stop:
            report = probe_hardware(paths, cancel=stop)
        if stop.cancelled:
            return _stopped("The hardware checks were left unfinished.")
        print(render_report(report))
    return status


def installed_version(distributions: Sequence[str]) -> str:
    """Version of the first installed distribution of ``distributions``, without importing it."""
    from importlib import metadata  # ~30 ms of email parsing modules: only `info` needs it

    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"

"""Latest: the newest versions pyproject.toml allows, tested against the lock (constraints.txt).

constraints.txt pins the exact versions CI tests with, so a newcomer installs what passed. This script is
how the lock moves forward: it installs what a fresh install *without* the lock would get today, runs the
tests most likely to break on a new release there, and prints what differs from the lock and what broke.

Steps (a scratch virtual environment in a temporary folder, or in ``--dir``):

1. ``python -m venv``, then ``pip install torch==2.13.0`` (the README's first step: the CPU build on a
   machine that has it on disk; on a CUDA machine whatever torch 2.13.0 that pip finds).
2. ``pip install --no-cache-dir llama-cpp-python`` in pyproject's range: it compiles llama.cpp for this
   CPU (a wheel in pip's cache may have been compiled for another one). About 8 minutes on 2 cores.
3. ``pip install -e ".[dev]"`` with no constraints, so pip picks the newest release pyproject allows of
   every distribution (and of everything they need).
4. ``pytest`` in that environment on the oracle tests (tests/core/test_dpo_oracle.py: our loss, log-probs
   and gradients against TRL's) and the llama.cpp tests (tests/core/test_llamacpp.py,
   tests/core/test_sampling.py).

Output: the distributions whose version differs from constraints.txt (upgraded, downgraded, new: not in
the lock, gone: in the lock but no longer installed), then each test that failed with its first error
line. ``--dry-run`` only resolves (``pip install --dry-run``; no build, a minute or so) and prints the
version table.

Moving the lock forward, once nothing broke: regenerate constraints.txt from the scratch environment
(``--dir`` keeps it; ``pip freeze --exclude-editable``, with the local tag dropped from torch's line and
no nvidia-* or triton lines, as its header says), reinstall with it and run the whole suite.

Run from the repository root:  python bench/latest.py [--dry-run] [--dir DIR]
Last line:  latest: upgraded=N downgraded=N new=N gone=N failed_tests=M passed_tests=P install_failed=0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "constraints.txt"
TORCH = "torch==2.13.0"  # as the README installs it, before the app
EXTRAS = "dev"
TESTS = ("tests/core/test_dpo_oracle.py", "tests/core/test_llamacpp.py", "tests/core/test_sampling.py")
# Never compared: the installer's own tools, and what a CUDA build of torch brings (the lock has none).
IGNORED = {"pip", "setuptools", "wheel", "desktop-dpo"}
IGNORED_PREFIXES = ("nvidia-", "triton")


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """``{canonical name: version}`` from a constraints file of ``name==version`` lines."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def pyproject_requirement(name: str) -> str:
    """The requirement string pyproject.toml gives ``name`` (e.g. ``llama-cpp-python>=0.3.16,<0.3.37``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        if canonicalize_name(Requirement(text).name) == canonicalize_name(name):
            return text
    raise SystemExit(f"pyproject.toml does not name {name}")


def compared(name: str) -> bool:
    return name not in IGNORED and not name.startswith(IGNORED_PREFIXES)


def differences(lock: dict[str, str], latest: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """Rows ``(name, locked, latest, change)`` for every distribution whose version is not the locked one.

    Versions compare without their local tag, as pip's ``==`` does: ``2.13.0+cpu`` is the locked ``2.13.0``.
    """
    rows = []
    for name in sorted(set(lock) | set(latest)):
        if not compared(name):
            continue
        old, new = lock.get(name), latest.get(name)
        if old is None:
            rows.append((name, "-", new, "new"))
        elif new is None:
            rows.append((name, old, "-", "gone"))
        elif Version(new).public != Version(old).public:
            rows.append((name, old, new, "upgraded" if Version(new) > Version(old) else "downgraded"))
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    if not rows:
        print("every distribution is at its locked version")
        return
    header = ("distribution", "constraints.txt", "latest", "change")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


class Venv:
    """A scratch virtual environment; every pip and pytest call is logged to ``log``."""

    def __init__(self, folder: Path, python: str) -> None:
        self.folder = folder
        self.path = folder / "venv"
        self.log = folder / "latest.log"
        bin_dir = self.path / ("Scripts" if os.name == "nt" else "bin")
        self.python = bin_dir / "python"
        self.log.unlink(missing_ok=True)
        self.env = {**os.environ, "VIRTUAL_ENV": str(self.path), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        self.env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env.pop("PYTHONHOME", None)
        self.env.pop("PIP_CONSTRAINT", None)  # no constraints: what pyproject.toml alone allows
        self._run([python, "-m", "venv", str(self.path)], "creating the scratch environment")

    def _run(self, command: list[str], what: str) -> int:
        started = time.perf_counter()
        print(f"{what} ...", file=sys.stderr, flush=True)
        with self.log.open("a") as log:
            log.write(f"\n$ {' '.join(command)}\n")
            log.flush()
            code = subprocess.run(
                command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            ).returncode
        print(f"  {what}: exit status {code} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        return code

    def pip(self, *args: str, what: str) -> int:
        return self._run([str(self.python), "-m", "pip", *args], what)

    def resolve(self) -> dict[str, str]:
        """What a fresh install of torch 2.13.0 and the app with its dev extra would bring (a dry run)."""
        report = self.folder / "resolve.json"
        code = self.pip(
            "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), TORCH,
            "-e", f".[{EXTRAS}]", what="resolving the newest versions pyproject.toml allows",
        )  # fmt: skip
        if code != 0:
            raise SystemExit(f"pip could not resolve the newest versions; see {self.log}")
        items = json.loads(report.read_text())["install"]
        return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in items}

    def installed(self) -> dict[str, str]:
        out = subprocess.run(
            [str(self.python), "-m", "pip", "list", "--format=json"],
            env=self.env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return {canonicalize_name(d["name"]): d["version"] for d in json.loads(out)}

    def test(self) -> tuple[int, list[tuple[str, str]]]:
        """Runs TESTS here: ``(passed, [(failed test, first line of its error)])``."""
        report = self.folder / "junit.xml"
        self._run(
            [str(self.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *TESTS],
            f"running {len(TESTS)} test files",
        )  # fmt: skip
        if not report.is_file():
            return 0, [("pytest", f"no report written; see {self.log}")]
        passed, failed = 0, []
        for case in ET.parse(report).getroot().iter("testcase"):
            problem = case.find("failure")
            if problem is None:
                problem = case.find("error")
            if problem is not None:
                message = (problem.get("message") or problem.text or "").strip().splitlines() or [""]
                failed.append((f"{case.get('classname')}::{case.get('name')}", message[0][:160]))
            elif case.find("skipped") is None:
                passed += 1
        return passed, failed


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Install the newest versions pyproject.toml allows into a scratch venv, run the oracle "
        "and llama.cpp tests there and print what differs from constraints.txt and what broke. Takes ~10 "
        "minutes and more on 2 cores (llama-cpp-python compiles from source: 3-8 minutes; 5 minutes in all "
        "on a quiet machine on 2026-12-05); --dry-run only resolves (about a minute).",
    )
    parser.add_argument(
        "--dir", type=Path, help="put the scratch venv here and keep it (default: a temporary folder)"
    )
    parser.add_argument(
        "--dry-run",
        "--list",
        action="store_true",
        dest="dry_run",
        help="only resolve and print the version differences; install and test nothing",
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter for the scratch venv (default: this one)"
    )
    args = parser.parse_args()

    lock = read_lock()
    if args.dir:
        if (args.dir / "venv").exists():
            shutil.rmtree(args.dir / "venv")  # a fresh install, never a leftover one
        args.dir.mkdir(parents=True, exist_ok=True)
        folder, cleanup = args.dir.resolve(), None
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="desktop-dpo-latest-")
        folder = Path(cleanup.name)
    try:
        venv = Venv(folder, args.python)
        resolved = venv.resolve()
        passed, failed, install_failed = 0, [], False
        if args.dry_run:
            latest = resolved
        else:
            steps = [
                ("install", TORCH, "installing " + TORCH),
                ("install", "--no-cache-dir", pyproject_requirement("llama-cpp-python"),
                 "compiling llama-cpp-python for this CPU (about 8 minutes on 2 cores)"),
                ("install", "-e", f".[{EXTRAS}]", "installing the app with the newest versions allowed"),
            ]  # fmt: skip
            for *pip_args, what in steps:
                if venv.pip(*pip_args, what=what) != 0:
                    install_failed = True
                    sys.stderr.write("".join(venv.log.read_text().splitlines(keepends=True)[-30:]))
                    failed.append(("pip " + " ".join(pip_args), f"the install failed; see {venv.log}"))
                    break
            latest = resolved if install_failed else venv.installed()
            if not install_failed:
                passed, failed = venv.test()

        rows = differences(lock, latest)
        print(f"\n{'resolved' if args.dry_run else 'installed'} against {LOCK.name} (differences only):")
        print_table(rows)
        if not args.dry_run:
            print(f"\n{passed} passed, {len(failed)} failed in {', '.join(TESTS)}")
            for test, message in failed:
                print(f"  FAILED {test}: {message}")
            if args.dir:
                print(f"scratch venv kept: {venv.path} (log: {venv.log})")
        counts = {
            change: sum(r[3] == change for r in rows) for change in ("upgraded", "downgraded", "new", "gone")
        }
        headline = " ".join(f"{k}={v}" for k, v in counts.items())
        if args.dry_run:
            print(f"latest: {headline} dry_run=1")
        else:
            print(
                f"latest: {headline} failed_tests={len(failed)} passed_tests={passed} "
                f"install_failed={int(install_failed)}"
            )
    finally:
        if cleanup is not None:
            cleanup.cleanup()


if __name__ == "__main__":
    main()

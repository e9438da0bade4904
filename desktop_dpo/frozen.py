"""Entry point of the standalone app (the PyInstaller bundle): the app, or Python for its own child processes.

In a bundle, ``sys.executable`` is the app, not a Python interpreter. The export starts its child processes
as ``sys.executable -c CODE ARGS`` (the converter and the quantizer, see ``core/export/gguf.py``), so this
entry point recognises that form, and ``-m MODULE ARGS``, and runs it as Python would: same ``sys.argv``,
same ``__main__`` semantics, same exit status. Any other command line goes to ``desktop_dpo.cli``.
Outside a bundle it behaves the same, which is how the tests exercise it.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PythonInvocation:
    """A ``python -c CODE ARGS`` or ``python -m MODULE ARGS`` command line."""

    flag: str  # "-c" or "-m"
    target: str  # the code (-c) or the module name (-m)
    args: tuple[str, ...]  # what follows, as the child's sys.argv[1:]


def parse_python_invocation(argv: Sequence[str]) -> PythonInvocation | None:
    """The Python-style invocation in ``argv`` (without the program name), or None for an app command.

    Only a leading ``-c``/``-m`` counts, as for the interpreter: ``desktop-dpo export -m x`` stays an app
    command. ``-c``/``-m`` without a target is not Python-style either (the app's parser explains it).
    """
    if len(argv) >= 2 and argv[0] in ("-c", "-m"):
        return PythonInvocation(argv[0], argv[1], tuple(argv[2:]))
    return None


def run_python_invocation(invocation: PythonInvocation) -> int:
    """Run ``invocation`` in this process as the interpreter would; returns the exit status.

    ``sys.exit(n)`` in the child code raises SystemExit, which is left to propagate, exactly as in a
    real interpreter; an uncaught exception propagates too (traceback, exit status 1).
    """
    # The offline lock-down holds in the app's child processes as in the app itself.
    from desktop_dpo.core.offline import lock_down

    lock_down()
    if invocation.flag == "-c":
        sys.argv = ["-c", *invocation.args]
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(compile(invocation.target, "<string>", "exec"), namespace)
    else:
        sys.argv = [invocation.target, *invocation.args]  # run_module replaces [0] with the file path
        runpy.run_module(invocation.target, run_name="__main__", alter_sys=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line of the bundle's executable; returns the process exit status."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if getattr(sys, "frozen", False):
        # A frozen app must answer multiprocessing's own child command lines before anything else.
        import multiprocessing

        multiprocessing.freeze_support()
    invocation = parse_python_invocation(arguments)
    if invocation is not None:
        return run_python_invocation(invocation)
    from desktop_dpo.cli import main as cli_main

    return cli_main(arguments)


if __name__ == "__main__":
    raise SystemExit(main())

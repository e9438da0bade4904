"""The standalone app's entry point: app commands go to the CLI, and ``-c``/``-m`` command lines run as
Python would, because in a bundle ``sys.executable`` is the app and the export starts its converter and
quantizer as ``sys.executable -c CODE ARGS``.

Each case runs the entry point in a child process, as a bundle would be started: it applies the offline
lock-down, which changes a process for good.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from desktop_dpo import __version__
from desktop_dpo.core.export.gguf import convert_hf_to_gguf, quantize_gguf
from desktop_dpo.core.jobs import run_job
from desktop_dpo.core.llm.gguf_info import read_gguf_info
from desktop_dpo.frozen import PythonInvocation, parse_python_invocation

REPO = Path(__file__).resolve().parents[1]
# What the bundle's executable runs (packaging/launcher.py), started through this interpreter.
LAUNCH = "from desktop_dpo.frozen import main; raise SystemExit(main())"


def _app(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, *args], capture_output=True, text=True, timeout=300, cwd=cwd or REPO
    )


def test_only_a_leading_c_or_m_with_a_target_is_a_python_command_line():
    assert parse_python_invocation(["-c", "print(1)", "a"]) == PythonInvocation("-c", "print(1)", ("a",))
    assert parse_python_invocation(["-m", "convert_hf_to_gguf", "x"]) == PythonInvocation(
        "-m", "convert_hf_to_gguf", ("x",)
    )
    assert parse_python_invocation([]) is None
    assert parse_python_invocation(["-c"]) is None
    assert parse_python_invocation(["export", "-m", "x"]) is None
    assert parse_python_invocation(["--home", "/tmp/x", "info"]) is None


def test_code_sees_its_arguments_and_its_exit_status_is_the_processes():
    result = _app("-c", "import sys; print(sys.argv, __name__); sys.exit(3)", "a", "b c")
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == "['-c', 'a', 'b c'] __main__"


def test_an_uncaught_exception_fails_the_process_with_its_traceback():
    result = _app("-c", "raise ValueError('bad input')")
    assert result.returncode == 1
    assert "ValueError: bad input" in result.stderr


def test_a_module_runs_as_main_with_its_arguments(tmp_path):
    (tmp_path / "greeter.py").write_text(
        "import sys\nif __name__ == '__main__':\n    print('hello', sys.argv[1:], sys.argv[0].endswith('greeter.py'))\n",
        encoding="utf-8",
    )
    result = _app("-m", "greeter", "--name", "x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello ['--name', 'x'] True"


def test_child_code_runs_locked_down_like_the_app():
    result = _app("-c", "from desktop_dpo.core.offline import guard_installed; print(guard_installed())")
    assert result.stdout.strip() == "True", result.stderr


def test_app_commands_still_reach_the_command_line():
    result = _app("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"desktop-dpo {__version__}"


@pytest.fixture
def bundle_executable(tmp_path, monkeypatch) -> Path:
    """``sys.executable`` replaced by a stand-in for the bundle's executable: a program that is not
    Python and hands its whole command line to the frozen entry point, as the real one does."""
    program = tmp_path / "desktop-dpo"
    program.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "{LAUNCH}" "$@"\n', encoding="utf-8")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(program))
    return program


def test_the_export_converts_and_quantizes_through_the_bundle_executable(
    bundle_executable, tiny_model_dir, tmp_path
):
    metadata = {"desktop_dpo.test": "through the bundle"}
    f16, _ = run_job(convert_hf_to_gguf(tiny_model_dir, tmp_path / "tiny-f16.gguf", metadata=metadata))
    q8, _ = run_job(quantize_gguf(f16, tmp_path / "tiny-q8_0.gguf", "Q8_0", threads=1))

    f16_info, q8_info = read_gguf_info(f16), read_gguf_info(q8)
    assert (f16_info["file_type"], q8_info["file_type"]) == ("F16", "Q8_0")
    # The header field came from the converter's child code, and the quantizer's child carried it over.
    assert q8_info["metadata"]["desktop_dpo.test"] == "through the bundle"
    assert q8_info["parameter_count"] == f16_info["parameter_count"]

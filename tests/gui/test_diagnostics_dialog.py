"""Help → Diagnostics: the hardware report in words, gathered off the GUI thread; safe mode with Forget."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from desktop_dpo.core import hardware
from desktop_dpo.core.llm.load_modes import LoadModeMemory, llama_cpp_version
from desktop_dpo.gui.diagnostics_dialog import CHECKING_TEXT, DiagnosticsDialog

TORCH_CUDA = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
# The rebuild keeps the installed version (the probe's own answer here).
LLAMA_CUDA = (
    'CMAKE_ARGS="-DGGML_CUDA=on" pip install --no-cache-dir --force-reinstall '
    f"llama-cpp-python=={llama_cpp_version()}"
)
AMX_SYSTEM_INFO = "CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |"
REPORT_WAIT_MS = 60_000  # the probe children start a Python each; the machine is shared


def _answer(**facts: object) -> str:
    return f"print({hardware.ANSWER_PREFIX!r} + {json.dumps(json.dumps(facts))})"


@pytest.fixture
def fake_probes(monkeypatch):
    """Probe children that answer at once as a CPU-only install on a machine with an NVIDIA GPU would."""
    monkeypatch.setattr(
        hardware,
        "LLAMA_PROBE_CODE",
        _answer(system_info=AMX_SYSTEM_INFO, gpu_offload=False, backends=["CPU"]),
    )
    monkeypatch.setattr(
        hardware,
        "TORCH_PROBE_CODE",
        _answer(
            torch={"version": "2.13.0+cpu", "cuda_build": None},
            bitsandbytes={"version": "0.50.2", "cuda": False, "library": "libbitsandbytes_cpu.so"},
        ),
    )
    monkeypatch.setattr(hardware, "find_nvidia_gpus", lambda: ("NVIDIA GeForce RTX 4090",))


def _help_action(window, text: str):
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    return next(a for a in help_menu.actions() if a.text().replace("&", "") == text)


def _open(qtbot, window) -> DiagnosticsDialog:
    _help_action(window, "Diagnostics…").trigger()
    dialog = window.diagnostics_dialog
    assert isinstance(dialog, DiagnosticsDialog) and dialog.isVisible()
    return dialog


def _wait_for_report(qtbot, dialog: DiagnosticsDialog) -> None:
    qtbot.waitUntil(lambda: dialog.report is not None, timeout=REPORT_WAIT_MS)


def test_diagnostics_opens_from_help_checks_then_shows_the_report_and_the_fix(
    qtbot, make_window, fake_probes
):
    window = make_window()
    dialog = _open(qtbot, window)
    assert dialog.status_label.text() == CHECKING_TEXT
    assert not dialog.copy_button.isEnabled()
    _wait_for_report(qtbot, dialog)

    assert dialog.status_label.text().startswith("2 things to fix")
    rows = dict(dialog.report_rows)
    assert rows["CPU features"] == "AVX2, AVX512, AMX_INT8, REPACK"
    assert rows["GPU offload"] == "no: llama.cpp runs on the CPU only"
    assert rows["torch"] == "2.13.0+cpu (CPU-only build)"
    assert rows["NVIDIA GPUs"] == "NVIDIA GeForce RTX 4090"
    card, llama_card = dialog.warning_cards
    assert "CPU-only" in card.text.text()
    assert "without CUDA" in llama_card.text.text()
    assert llama_card.command.text() == LLAMA_CUDA
    assert card.command.text() == TORCH_CUDA and card.command.isReadOnly()
    qtbot.waitUntil(card.isVisible)  # laid out on the next turn of the event loop
    qtbot.mouseClick(card.copy_button, Qt.MouseButton.LeftButton)
    assert QApplication.clipboard().text() == TORCH_CUDA

    qtbot.mouseClick(dialog.copy_button, Qt.MouseButton.LeftButton)
    copied = QApplication.clipboard().text()
    assert "CPU features:" in copied and TORCH_CUDA in copied
    assert dialog.safe_mode_text.text() == "Off: every model loads in the normal mode."
    assert not dialog.forget_button.isVisible()

    # A second Diagnostics… raises the open one rather than probing twice.
    _help_action(window, "Diagnostics…").trigger()
    assert window.diagnostics_dialog is dialog
    dialog.close()


def test_safe_mode_records_show_and_forget_empties_them(qtbot, make_window, fake_probes, app_home, tmp_path):
    model = tmp_path / "gemma-3-270m-q4_k_m.gguf"
    model.write_bytes(b"GGUF")
    memory = LoadModeMemory.in_folder(app_home.data_dir)
    memory.remember(model, "safe", "crashed while loading (signal 11, SIGSEGV)")
    window = make_window()
    dialog = _open(qtbot, window)
    _wait_for_report(qtbot, dialog)

    assert dialog.safe_mode_text.text().startswith("On for 1 model file")
    [record] = [label.text() for label in dialog.safe_mode_labels]
    assert "gemma-3-270m-q4_k_m.gguf: crashed while loading (signal 11, SIGSEGV)" in record
    qtbot.waitUntil(dialog.forget_button.isVisible)

    qtbot.mouseClick(dialog.forget_button, Qt.MouseButton.LeftButton)
    assert dialog.safe_mode_text.text() == "Off: every model loads in the normal mode."
    assert dialog.safe_mode_labels == []
    assert not dialog.forget_button.isVisible()
    assert memory.records() == []
    dialog.close()


def test_closing_while_checking_stops_the_probe(qtbot, make_window, monkeypatch, registry):
    monkeypatch.setattr(hardware, "LLAMA_PROBE_CODE", "import time; time.sleep(60)")
    monkeypatch.setattr(hardware, "TORCH_PROBE_CODE", "import time; time.sleep(60)")
    window = make_window()
    dialog = _open(qtbot, window)
    qtbot.waitUntil(lambda: registry.is_busy("hardware"))
    dialog.close()
    qtbot.waitUntil(lambda: not registry.is_busy("hardware"), timeout=10_000)


def test_quitting_while_checking_stops_the_probe_without_asking(qtbot, make_window, monkeypatch, registry):
    from PySide6.QtWidgets import QMessageBox

    monkeypatch.setattr(hardware, "LLAMA_PROBE_CODE", "import time; time.sleep(60)")
    monkeypatch.setattr(hardware, "TORCH_PROBE_CODE", "import time; time.sleep(60)")
    monkeypatch.setattr(QMessageBox, "question", lambda *args: pytest.fail("asked about the hardware check"))
    window = make_window()
    window.show()
    _open(qtbot, window)
    qtbot.waitUntil(lambda: registry.is_busy("hardware"))
    assert window.close()
    qtbot.waitUntil(lambda: not registry.is_busy("hardware"), timeout=10_000)

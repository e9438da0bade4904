"""Hardware in words: the parsed llama.cpp features, the warnings with their commands, probes that crash."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desktop_dpo.config import AppPaths
from desktop_dpo.core import hardware
from desktop_dpo.core.errors import JobCancelled
from desktop_dpo.core.hardware import cpu_features_from, parse_system_info, probe_hardware
from desktop_dpo.core.hardware_report import (
    BackendDevice,
    BitsAndBytesFacts,
    CudaDevice,
    HardwareReport,
    LlamaCppFacts,
    TorchFacts,
    Unavailable,
    render_report,
)
from desktop_dpo.core.jobs import CancelToken
from desktop_dpo.core.llm.load_modes import LoadModeMemory

# llama_print_system_info() of llama-cpp-python 0.3.36 built with CUDA on an RTX 4090 desktop...
CUDA_SYSTEM_INFO = (
    "CUDA : ARCHS = 890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | "
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | "
    "OPENMP = 1 | REPACK = 1 | "
)
# ... and of the CPU build on an AVX-512 + AMX Xeon (this project's CI machine).
AMX_SYSTEM_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | "
    "OPENMP = 1 | REPACK = 1 |"
)
# Before ggml's backend registry (2024), the features came with no backend name and zeros included.
OLD_SYSTEM_INFO = "AVX = 1 | AVX_VNNI = 0 | AVX2 = 1 | AVX512 = 0 | FMA = 1 | NEON = 0 | "

TORCH_CUDA = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
# The installed version is pinned, so the rebuild keeps the version the app was tested with.
LLAMA_CUDA = (
    'CMAKE_ARGS="-DGGML_CUDA=on" pip install --no-cache-dir --force-reinstall llama-cpp-python==0.3.36'
)


def _answer(**facts: object) -> str:
    """The program of a probe child that answers ``facts`` at once (no library imported)."""
    return f"print({hardware.ANSWER_PREFIX!r} + {json.dumps(json.dumps(facts))})"


FAKE_LLAMA = _answer(system_info=AMX_SYSTEM_INFO, gpu_offload=False, backends=["CPU"])
FAKE_TORCH = _answer(
    torch={"version": "2.13.0+cpu", "cuda_build": None, "devices": [], "mps_built": False},
    bitsandbytes={"version": "0.50.2", "cuda": False, "library": "/x/libbitsandbytes_cpu.so"},
)


def _cpu_torch() -> TorchFacts:
    return TorchFacts("2.13.0+cpu", None, None, (), "", False, False)


def _llama(system_info: str, backends: tuple[str, ...]) -> LlamaCppFacts:
    return LlamaCppFacts(
        version="0.3.36",
        system_info=system_info,
        backends=backends,
        cpu_features=cpu_features_from(parse_system_info(system_info)),
        devices=(BackendDevice("CPU", "Intel(R) Xeon(R) Processor", "CPU", 0, 0),),
        gpu_offload="CUDA" in backends,
    )


def _report(**changes: object) -> HardwareReport:
    base = {
        "cpu_model": "Intel(R) Xeon(R) Processor",
        "system": "Linux",
        "machine": "x86_64",
        "nvidia_gpus": (),
        "llama_cpp": _llama(AMX_SYSTEM_INFO, ("CPU",)),
        "torch": _cpu_torch(),
        "bitsandbytes": BitsAndBytesFacts("0.50.2", False, False, "libbitsandbytes_cpu.so", ""),
        "llama_cpp_version": "0.3.36",
        "cpu": "Intel(R) Xeon(R) Processor [abc]",
    }
    return HardwareReport(**{**base, **changes})  # type: ignore[arg-type]


def _paths(tmp_path) -> AppPaths:
    return AppPaths.in_home(tmp_path)


# -------------------------------------------------------------------------------- parsing


def test_system_info_of_a_cuda_build_names_both_backends_and_the_cpu_features():
    parsed = parse_system_info(CUDA_SYSTEM_INFO)
    assert list(parsed) == ["CUDA", "CPU"]
    assert parsed["CUDA"] == {"ARCHS": "890", "USE_GRAPHS": "1", "PEER_MAX_BATCH_SIZE": "128"}
    assert cpu_features_from(parsed) == (
        "SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", "LLAMAFILE", "OPENMP", "REPACK",
    )  # fmt: skip


def test_system_info_of_an_amx_xeon_shows_avx512_amx_and_repack():
    features = cpu_features_from(parse_system_info(AMX_SYSTEM_INFO))
    assert {"AVX2", "AVX512", "AVX512_BF16", "AMX_INT8", "REPACK"} <= set(features)


def test_an_old_system_info_without_backend_names_counts_as_cpu_and_drops_the_zeros():
    assert cpu_features_from(parse_system_info(OLD_SYSTEM_INFO)) == ("AVX", "AVX2", "FMA")


def test_the_report_reads_in_words():
    report = _report(
        llama_cpp=LlamaCppFacts(
            "0.3.36",
            CUDA_SYSTEM_INFO,
            ("CUDA", "CPU"),
            cpu_features_from(parse_system_info(CUDA_SYSTEM_INFO)),
            (BackendDevice("CUDA0", "NVIDIA GeForce RTX 4090", "GPU", 24 * 2**30, 20 * 2**30),),
            True,
        ),
        torch=TorchFacts("2.13.0+cu128", "12.8", None, (CudaDevice("NVIDIA GeForce RTX 4090", 24 * 2**30, 22 * 2**30),), "", False, False),
        nvidia_gpus=("NVIDIA GeForce RTX 4090",),
    )  # fmt: skip
    text = render_report(report)
    assert "llama.cpp:       0.3.36; backends: CUDA, CPU" in text
    assert "CUDA0: NVIDIA GeForce RTX 4090 (GPU, 20.0 of 24.0 GiB free)" in text
    assert "GPU offload:     yes" in text
    assert "torch:           2.13.0+cu128 (CUDA 12.8 build)" in text
    assert "NVIDIA GeForce RTX 4090 (22.0 of 24.0 GiB free)" in text
    assert "Training device: CUDA GPU" in text
    assert "WARNING" not in text and report.warnings() == []


# -------------------------------------------------------------------------------- warnings


def test_an_nvidia_gpu_with_a_cpu_only_torch_gets_the_readmes_command():
    report = _report(nvidia_gpus=("NVIDIA GeForce RTX 4090",))
    [torch_warning, llama_warning] = report.warnings()
    assert "NVIDIA GeForce RTX 4090" in torch_warning.message and "CPU-only" in torch_warning.message
    assert torch_warning.command == TORCH_CUDA
    assert "without CUDA" in llama_warning.message
    assert llama_warning.command == LLAMA_CUDA
    text = render_report(report)
    assert f"    {TORCH_CUDA}" in text and f"    {LLAMA_CUDA}" in text


def test_llama_cpp_without_cuda_is_flagged_where_torch_sees_a_gpu_even_without_nvidia_smi():
    cuda_torch = TorchFacts("2.13.0+cu128", "12.8", None, (CudaDevice("NVIDIA H100", 80 * 2**30, 79 * 2**30),), "", False, False)  # fmt: skip
    [warning] = _report(torch=cuda_torch).warnings()
    assert warning.command == LLAMA_CUDA and "NVIDIA H100" in warning.message


def test_a_machine_without_an_nvidia_gpu_gets_no_warning():
    assert _report().warnings() == []
    # torch or llama.cpp unknown: nothing is claimed about them
    unknown = Unavailable("unknown (torch did not answer within 120 s)")
    assert _report(nvidia_gpus=("NVIDIA T4",), torch=unknown, llama_cpp=unknown).warnings() == []


def test_apple_silicon_without_metal_gets_the_metal_build_command():
    [warning] = _report(system="Darwin", machine="arm64").warnings()
    assert (
        warning.command
        == 'CMAKE_ARGS="-DGGML_METAL=on" pip install --no-cache-dir --force-reinstall llama-cpp-python==0.3.36'
    )
    metal = _llama("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 | ARM_FMA = 1 |", ("Metal", "BLAS", "CPU"))
    assert _report(system="Darwin", machine="arm64", llama_cpp=metal).warnings() == []


# -------------------------------------------------------------------------------- probes in child processes


def test_a_crashing_llama_cpp_probe_becomes_words_and_the_rest_of_the_report_stays(tmp_path):
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    report = probe_hardware(_paths(tmp_path), llama_code=crash, torch_code=FAKE_TORCH)
    words = "llama.cpp crashed while reporting its features (signal 11, SIGSEGV)"
    assert report.llama_cpp == Unavailable(words)
    text = render_report(report)
    assert f"CPU features:    {words}" in text
    assert "torch:           2.13.0+cpu (CPU-only build)" in text
    assert "bitsandbytes:    0.50.2: no CUDA; NF4 runs on the CPU; libbitsandbytes_cpu.so" in text


def test_bitsandbytes_crashing_after_torch_answered_keeps_torchs_answer(tmp_path):
    torch_then_crash = (
        _answer(torch={"version": "2.13.0+cpu", "cuda_build": None})
        + "\nimport os, signal; os.kill(os.getpid(), signal.SIGABRT)"
    )
    report = probe_hardware(_paths(tmp_path), llama_code=FAKE_LLAMA, torch_code=torch_then_crash)
    assert isinstance(report.torch, TorchFacts) and report.torch.cpu_only
    assert (
        str(report.bitsandbytes)
        == "bitsandbytes crashed while reporting its CUDA support (signal 6, SIGABRT)"
    )
    assert "AMX_INT8" in report.llama_cpp.cpu_features  # type: ignore[union-attr]


def test_a_hanging_probe_is_ended_and_said_so(tmp_path):
    started = time.monotonic()
    report = probe_hardware(
        _paths(tmp_path), llama_code="import time; time.sleep(60)", torch_code=FAKE_TORCH, timeout_s=1
    )
    assert time.monotonic() - started < 20
    assert str(report.llama_cpp) == "unknown (llama.cpp did not answer within 1 s)"


def test_a_probe_that_fails_says_why_and_missing_libraries_say_not_installed(tmp_path):
    report = probe_hardware(
        _paths(tmp_path),
        llama_code="raise RuntimeError('no libllama.so here')",
        torch_code=_answer(torch={"missing": True}, bitsandbytes={"missing": True}),
    )
    assert str(report.llama_cpp) == "unknown (llama.cpp failed: RuntimeError: no libllama.so here)"
    assert str(report.torch) == "not installed" and str(report.bitsandbytes) == "not installed"


def test_a_cancel_kills_the_probe_children_at_once(tmp_path):
    token = CancelToken()
    token.cancel()
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        probe_hardware(_paths(tmp_path), cancel=token, llama_code="import time; time.sleep(60)", torch_code="import time; time.sleep(60)")  # fmt: skip
    assert time.monotonic() - started < 10


# -------------------------------------------------------------------------------- safe mode


def test_safe_mode_shows_this_cpus_records_and_how_to_forget_them(tmp_path):
    paths = _paths(tmp_path)
    model = tmp_path / "demo.gguf"
    model.write_bytes(b"GGUF")
    memory = LoadModeMemory.in_folder(paths.data_dir)
    memory.remember(model, "safe", "crashed while loading (signal 11, SIGSEGV)")
    memory.remember(tmp_path / "demo.gguf", "safe", "elsewhere", cpu="Another CPU [123]")  # not this CPU
    other = tmp_path / "fine.gguf"
    other.write_bytes(b"GGUF")
    memory.remember(other, "normal", "loaded")  # loads normally: not safe mode

    report = probe_hardware(paths, llama_code=FAKE_LLAMA, torch_code=FAKE_TORCH)
    assert [r.model_path for r in report.safe_mode] == [str(model.resolve())]
    text = render_report(report)
    assert "Safe mode:       on for 1 model file" in text
    assert "demo.gguf: crashed while loading (signal 11, SIGSEGV), since" in text
    assert "desktop-dpo info --forget-safe-mode" in text

    assert hardware.forget_safe_mode(paths, report.safe_mode) == 2  # this file, on both CPUs
    report = probe_hardware(paths, llama_code=FAKE_LLAMA, torch_code=FAKE_TORCH)
    assert report.safe_mode == ()
    assert "Safe mode:       off: every model loads normally" in render_report(report)


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's"
)
def test_a_probe_child_dies_with_the_app():
    app = (
        "import time; from desktop_dpo.core import hardware; "
        "child = hardware.start_probe_child('import time; time.sleep(120)'); "
        "print(child.pid, flush=True); time.sleep(120)"
    )
    parent = subprocess.Popen([sys.executable, "-c", app], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
    finally:
        parent.kill()
        parent.wait()

    def alive() -> bool:
        try:
            status = Path(f"/proc/{child_pid}/status").read_text()
        except OSError:
            return False
        return "\nState:\tZ" not in status  # a zombie has ended; only its exit status waits to be read

    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive()

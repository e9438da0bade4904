"""Export a finished training run: merge → F16 GGUF with metadata → quantize → parity → Modelfiles.

One job (a generator, see ``core/jobs.py``) turns a run's LoRA adapter into files that run anywhere
llama.cpp runs::

    run's adapter + its full-precision base ──merge (shard by shard)──► merged/ (bf16 safetensors)
    merged/ ──llama.cpp converter──► F16 GGUF ──header: template, stops, provenance──► <name>.F16.gguf
    <name>.F16.gguf ──llama.cpp quantizer──► <name>.Q4_K_M.gguf, <name>.Q8_0.gguf ...
    parity check (tokenizers, logits vs F16, perplexity per file, trained policy vs merged)
    next to each file: <file>.Modelfile (Ollama) and the llama.cpp command line in RUN.txt

Everything is written inside a hidden work folder next to the destination, which is renamed to its final
name only when the whole export is complete, after a free-space check: a stop, a crash or a full disk
never leaves a broken file (or half an export) under the final name. :func:`export_run` writes no database
rows; :func:`recorded_export`, the job the CLI, the GUI's worker and the demo drive, runs it and then
records the export with :func:`persist_export` on the store it is given (the driver thread's own): the
exported files as export rows and as an aligned model. A stop or a failure records nothing.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from desktop_dpo import __version__
from desktop_dpo.core.dpo.runs import without_quantization_note
from desktop_dpo.core.errors import ExportError
from desktop_dpo.core.export.gguf import (
    DEFAULT_QUANTIZATION,
    QUANTIZATIONS,
    STOP_STRINGS_KEY,
    WORKING_FILE_MAX_BYTES,
    WORKING_QUANTIZATION,
    convert_hf_to_gguf,
    estimate_export_bytes,
    estimate_gguf_bytes,
    llama_cpp_command,
    modelfile_text,
    quantize_gguf,
    working_quantization,
)
from desktop_dpo.core.jobs import CancelToken, Job, Log, Progress
from desktop_dpo.core.model_files import (
    EXPORT_FOLDER_KEY,
    MERGED_FOLDER_KEY,
    atomic_output,
    find_training_folder,
    partial_path,
    recorded_dtype,
    remove_partial_outputs,
    training_folder,
)
from desktop_dpo.core.tensor_file import check_tensor_file

if TYPE_CHECKING:
    from desktop_dpo.core.export.parity import ParityReport
    from desktop_dpo.core.store import ModelRow, RunRow, Store

MERGED_FOLDER = "merged"
_SPACE_MARGIN = 256 * 1024 * 1024
_HASH_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class ExportSettings:
    """What an export writes. Every field but ``quantizations`` has the default a person gets from the Export
    view, which ticks :func:`default_quantizations` (Q8_0 too, for a model up to a few billion parameters)."""

    quantizations: tuple[str, ...] = (
        DEFAULT_QUANTIZATION,
    )  # file types to write (F16, Q8_0, Q5_K_M, Q4_K_M)
    destination: str | None = None  # folder that receives the export folder (None: the app's exports folder)
    name: str | None = None  # the export folder's and files' name (None: from the run and base model)
    # The merged model's weights: float16 keeps three more bits than bfloat16 and is what the F16 GGUF
    # stores, so the converter copies it as it is; a weight beyond float16's range falls back to bfloat16.
    merge_dtype: str = "float16"
    parity: bool = True  # run the parity check (a few seconds for small models)


@dataclass(frozen=True)
class ExportedFile:
    """One GGUF of an export."""

    quantization: str  # "Q4_K_M", "F16" ...
    path: str  # final path (after the export folder was moved into place)
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ExportFinished:
    """The export is complete and in its final folder; :func:`recorded_export` records it next."""

    run_id: int
    folder: str  # the export folder
    merged_dir: str  # the merged Hugging Face folder inside it
    files: tuple[ExportedFile, ...]
    parity: dict[str, Any] = field(default_factory=dict)  # ParityReport.to_dict(), or {} when skipped
    parity_lines: tuple[str, ...] = ()  # the report in sentences
    metadata: dict[str, Any] = field(default_factory=dict)  # what went into each file's header


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._").lower() or "model"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def export_folder_name(run: RunRow, base: ModelRow) -> str:
    """The default name of a run's export: base model and run, file-system safe (``gemma-3-270m-run-3``)."""
    return f"{_slug(base.name)}-run-{run.id}"


def _heldout_pairs(store: Store, run: RunRow) -> list[Any]:
    from desktop_dpo.core.dpo.data import pairs_from_comparisons

    views = store.comparison_views(ids=run.comparison_ids, include_deleted=True)
    pairs = pairs_from_comparisons(views)
    heldout = {p.id for p in store.list_prompts() if p.split == "heldout"}
    return [pair for pair in pairs if pair.prompt_id in heldout]


def _settle_template(merged_dir: Path, adapter_dir: Path, base: ModelRow) -> tuple[str, list[str]]:
    """The template the run trained with, written into the merged folder, and its stop strings.

    The adapter records the template it was trained with (``train.write_trained_template``); an adapter
    saved before that was recorded gets the base model's template (the person's choice, else its own).
    The merged folder then carries it as ``chat_template.jinja`` (in place of one in tokenizer_config.json),
    so its tokenizer, the GGUF converter and the next round of training all see the same template.
    """
    from desktop_dpo.core.dpo.checkpoint import TRAINED_TEMPLATE_FILE, trained_template
    from desktop_dpo.core.llm.template_choice import template_for
    from desktop_dpo.core.llm.templates import DEFAULT_TEMPLATE, stop_strings
    from desktop_dpo.core.models import inspect_model

    merged = inspect_model(merged_dir)
    template = (
        trained_template(adapter_dir) or template_for(base, own=merged.chat_template) or DEFAULT_TEMPLATE
    )
    (merged_dir / TRAINED_TEMPLATE_FILE).write_text(template, encoding="utf-8")
    config_file = merged_dir / "tokenizer_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if isinstance(config, dict) and "chat_template" in config:
            del config["chat_template"]
            config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    (merged_dir / "chat_template.json").unlink(missing_ok=True)
    return template, stop_strings(template, merged.bos_token or "", merged.eos_token or "")


def _keep_update_on_base_grid(
    quantized: Path, f16: Path, base: ModelRow, quantization: str, cancel: CancelToken
) -> Job:
    """When the model was trained from a quantized GGUF (``base``: :func:`grid_model`, that GGUF or the one of
    this file type it was made from), put the quantized file on that GGUF's grid.

    Quantizing again would round the trained weights back onto the base's grid points and erase the
    update (``core/export/grid.py``); this moves the base's integers by stochastic rounding instead.
    Nothing to do for a base that is not a GGUF, or a file type that shares no tensor type with it.
    """
    if base.kind != "gguf":
        return
    source = Path(base.path)
    if not source.is_file():
        yield Log(
            f"{base.name}'s GGUF file is no longer at {source}, so {quantization} was quantized from scratch: "
            "an update smaller than its rounding step may be lost. Put the file back and export again to "
            "keep it.",
            level="warning",
        )
        return
    from desktop_dpo.core.export.grid import patch_onto_base_grid

    cancel.raise_if_cancelled()
    yield Log(f"Keeping the update at {quantization}: rounding it onto {base.name}'s own grid…")
    try:
        report = patch_onto_base_grid(quantized, f16, source, seed=0)
    except ValueError as exc:
        yield Log(f"{exc} {quantization} was kept as the quantizer wrote it.", level="warning")
        return
    if report.tensors_moved:
        share = report.integers_changed / max(1, report.integers_total)
        yield Log(
            f"{quantization}: {report.tensors_moved} tensors on {base.name}'s grid, {share:.1%} of their "
            "weights moved by one step to carry the update."
        )


def grid_model(store: Store, base: ModelRow, quantization: str) -> ModelRow:
    """The model whose grid a ``quantization`` file of a run on ``base`` is put on: the nearest GGUF of that
    file type in ``base``'s lineage (``base``, the model it was made from, and so on), else ``base``.

    A round that went on with Q8_0 leaves a Q8_0 base for the next; its Q4_K_M file then goes onto the grid of
    the Q4_K_M the lineage started from, carrying every round's update, instead of being quantized from scratch,
    which would round small updates away.
    """
    seen: set[int] = set()
    model: ModelRow | None = base
    while model is not None and model.id not in seen:
        if model.kind == "gguf" and recorded_dtype(model) == quantization:
            return model
        seen.add(model.id)
        model = store.get_model(model.parent_model_id) if model.parent_model_id is not None else None
    return base


@dataclass(frozen=True)
class _ExportPlan:
    """What an export works from, checked before anything is written (:func:`_plan_export`)."""

    run: RunRow
    base: ModelRow
    base_dir: Path  # the base model's full-precision folder the adapter merges into
    adapter_dir: Path
    config: Any  # the run's TrainConfig
    quantizations: tuple[str, ...]  # upper-case, no duplicates, all known
    grids: dict[str, ModelRow]  # per file type, the GGUF whose grid carries the update (:func:`grid_model`)
    parent: Path  # the folder the export goes into
    name: str  # the export folder's name (and the files' stem)

    @property
    def final(self) -> Path:
        return self.parent / self.name


def _plan_export(store: Store, run_id: int, settings: ExportSettings, exports_dir: Path) -> _ExportPlan:
    """Refuse, with what to do, an export that cannot work: nothing to export, an unwritable or full disk."""
    from desktop_dpo.core.dpo.config import TrainConfig

    quantizations = tuple(dict.fromkeys(q.upper() for q in settings.quantizations))
    if not quantizations:
        raise ExportError("Choose at least one file type to export (Q4_K_M is a good default).")
    unknown = [q for q in quantizations if q not in QUANTIZATIONS]
    if unknown:
        raise ExportError(f"Unknown file type {unknown[0]}; choose from {', '.join(QUANTIZATIONS)}.")
    run = store.get_run(run_id)
    if run is None:
        raise ExportError(f"There is no training run {run_id}.")
    if run.status != "completed" or not run.adapter_path or not Path(run.adapter_path).is_dir():
        raise ExportError(
            f"Run {run.id} ({run.name}) has no finished adapter yet (status: {run.status}). Finish or resume "
            "the training first."
        )
    base = store.get_model(run.base_model_id) if run.base_model_id is not None else None
    if base is None:
        raise ExportError(f"The base model of run {run.id} is no longer registered; register it again first.")
    try:
        base_dir = training_folder(base)
    except Exception as exc:
        raise ExportError(str(exc)) from exc
    plan = _ExportPlan(
        run=run,
        base=base,
        base_dir=base_dir,
        adapter_dir=Path(run.adapter_path),
        config=TrainConfig.from_dict(run.config),
        quantizations=quantizations,
        grids={quantization: grid_model(store, base, quantization) for quantization in quantizations},
        parent=Path(settings.destination) if settings.destination else exports_dir,
        name=_slug(settings.name) if settings.name else export_folder_name(run, base),
    )
    _check_destination(plan)
    # The adapter is read whole now: a damaged one is refused before minutes of merging.
    check_tensor_file(plan.adapter_dir / "adapter_model.safetensors", f"The adapter of run {run.id}")
    _check_free_space(plan)
    return plan


def _check_destination(plan: _ExportPlan) -> None:
    """The export folder is new and its parent writable (found now, not after the merge)."""
    if plan.final.exists():
        raise ExportError(
            f"{plan.final} already exists. Choose another name or folder, or remove the old export."
        )
    try:
        plan.parent.mkdir(parents=True, exist_ok=True)
        probe = partial_path(plan.final)
        probe.mkdir()  # a read-only folder or mount is found now, not after the merge
        probe.rmdir()
    except OSError as exc:
        raise ExportError(
            f"Cannot write the export into {plan.parent}: {exc.strerror or exc}. Choose a folder you can write "
            "to (--out DIR), or make this one writable."
        ) from exc


def _check_free_space(plan: _ExportPlan) -> None:
    """Room for the merged folder, the F16 GGUF and every quantized file, with a margin."""
    f16_bytes = estimate_gguf_bytes(plan.base_dir, "f16")  # two bytes a weight: the merged folder is as large
    needed = 2 * f16_bytes
    for quantization in plan.quantizations:
        if quantization != "F16":
            # From the tensors' shapes, as llama.cpp picks each one's type; the flat rate when unreadable.
            estimate = estimate_export_bytes(plan.base_dir, quantization)
            needed += (
                estimate if estimate is not None else int(f16_bytes * QUANTIZATIONS[quantization][1] / 2)
            )
    free = shutil.disk_usage(plan.parent).free
    if free < needed + _SPACE_MARGIN:
        raise ExportError(
            f"Not enough free disk space in {plan.parent}: this export needs about {needed / 1e9:.2f} GB (merged "
            f"model, F16 GGUF and the quantized files) and {free / 1e9:.2f} GB are free. Free some space or "
            "choose another folder."
        )


def _merge(plan: _ExportPlan, work: Path, dtype: str, cancel: CancelToken) -> Job:
    """Merge the adapter into the base (``work/merged``); bfloat16 when float16 would overflow. Returns the folder."""
    from desktop_dpo.core.export.merge import Float16RangeError, merge_adapter

    yield Log(f"Merging the adapter of run {plan.run.id} into {plan.base.name}…")
    try:
        merged = yield from merge_adapter(
            plan.base_dir, plan.adapter_dir, work / MERGED_FOLDER, dtype=dtype, cancel=cancel
        )
    except Float16RangeError as exc:
        yield Log(f"{exc} Merging in bfloat16 instead.", level="warning")
        merged = yield from merge_adapter(
            plan.base_dir, plan.adapter_dir, work / MERGED_FOLDER, dtype="bfloat16", cancel=cancel
        )
    cancel.raise_if_cancelled()
    return merged


def _header_metadata(plan: _ExportPlan, stops: list[str], default_template: bool) -> dict[str, Any]:
    """The GGUF header fields: a name and description, and where the model came from (``desktop_dpo.*``)."""
    run, base = plan.run, plan.base
    return {
        "general.name": f"{base.name} (aligned, run {run.id})",
        "general.description": (
            f"{base.name} aligned with DPO on {len(run.comparison_ids)} of your preference pairs by "
            f"desktop-dpo {__version__}."
        ),
        "general.base_model.count": 1,
        "general.base_model.0.name": base.name,
        "desktop_dpo.version": __version__,
        "desktop_dpo.base_model": base.name,
        "desktop_dpo.base_fingerprint": base.fingerprint,
        "desktop_dpo.run_id": run.id,
        "desktop_dpo.run_name": run.name,
        "desktop_dpo.reference": run.reference,
        "desktop_dpo.settings": json.dumps(plan.config.to_dict(), sort_keys=True),
        "desktop_dpo.pairs": len(run.comparison_ids),
        "desktop_dpo.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "desktop_dpo.uses_default_template": default_template,
        STOP_STRINGS_KEY: json.dumps(stops),  # JSON text: a GGUF array may not be empty
    }


def _convert(
    plan: _ExportPlan, merged: Path, work: Path, metadata: dict[str, Any], template: str, cancel: CancelToken
) -> Job:
    """The merged folder as ``<name>.F16.gguf`` in ``work``. Returns its path."""
    f16 = work / f"{plan.name}.F16.gguf"
    yield Log("Converting the merged model to GGUF…")
    # The header (template, stops, provenance) is written with the file; the quantizer carries it over.
    yield from convert_hf_to_gguf(
        merged, f16, outtype="f16", metadata=metadata, chat_template=template, cancel=cancel
    )
    return f16


def _quantize(plan: _ExportPlan, f16: Path, work: Path, cancel: CancelToken) -> Job:
    """Every chosen file type from the F16 file. Returns ``{quantization: path}`` in the chosen order."""
    files: dict[str, Path] = {}
    for quantization in plan.quantizations:
        if quantization == "F16":
            files["F16"] = f16
            continue
        yield Log(f"Quantizing to {quantization}…")
        files[quantization] = yield from quantize_gguf(
            f16, work / f"{plan.name}.{quantization}.gguf", quantization, cancel=cancel
        )
        yield from _keep_update_on_base_grid(
            files[quantization], f16, plan.grids[quantization], quantization, cancel
        )
    return files


def _parity(
    store: Store,
    plan: _ExportPlan,
    merged: Path,
    f16: Path,
    files: dict[str, Path],
    work: Path,
    cancel: CancelToken,
) -> Job:
    """Check the files answer like the trained model; writes ``parity.json``. Returns the report."""
    from desktop_dpo.core.export.parity import parity_check

    yield Log("Checking that the exported files answer like the trained model…")
    adapter_info = _adapter_info(plan.adapter_dir)
    policy = {
        "base_dir": plan.base_dir,
        "adapter_dir": plan.adapter_dir,
        "pairs": _heldout_pairs(store, plan.run),
        "quantization": adapter_info.get("quantization", "none"),
        "max_length": plan.config.max_length,
        "max_prompt_length": plan.config.max_prompt_length,
    }
    report = yield from parity_check(
        merged, f16, {q: p for q, p in files.items() if q != "F16"}, policy=policy, cancel=cancel
    )
    (work / "parity.json").write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    return report


def _write_run_notes(
    plan: _ExportPlan, work: Path, files: dict[str, Path], default_template: bool, stops: list[str]
) -> None:
    """A ``<file>.Modelfile`` (Ollama) next to each file, and RUN.txt: how to run each in each tool."""
    name = plan.name
    run_lines = [f"# {plan.base.name}, aligned by desktop-dpo (run {plan.run.id})", ""]
    for quantization, path in files.items():
        modelfile = path.with_name(f"{path.name}.Modelfile")
        modelfile.write_text(
            modelfile_text(path.name, uses_default_template=default_template, stop_strings=stops),
            encoding="utf-8",
        )
        run_lines += [
            f"## {quantization}",
            f"llama.cpp:  {llama_cpp_command(path.name, uses_default_template=default_template, stop_strings=stops)}",
            f"Ollama:     ollama create {name}-{quantization.lower()} -f {modelfile.name}",
            f"            ollama run {name}-{quantization.lower()}",
            "LM Studio:  copy the .gguf file into a folder under ~/.lmstudio/models/",
            "",
        ]
    (work / "RUN.txt").write_text("\n".join(run_lines), encoding="utf-8")


def _export_write_error(exc: OSError, parent: Path) -> Exception:
    """An OSError while writing the export, as an ExportError saying what to do (or itself if unforeseen)."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ExportError(
            f"Cannot write the export into {parent}: {exc.strerror}; nothing was kept. Choose a folder "
            "you can write to (--out DIR)."
        )
    if exc.errno == 28:
        return ExportError(
            f"The disk filled up while exporting to {parent}; nothing was kept. Free some space and try again."
        )
    return exc


def export_run(
    store: Store,
    run_id: int,
    settings: ExportSettings,
    exports_dir: Path,
    *,
    cancel: CancelToken | None = None,
) -> Job:
    """Export a completed run (a job; yields Progress/Log events, then :class:`ExportFinished`, and returns it).

    The stages, each a function above: plan and refuse early (:func:`_plan_export`), merge, settle the chat
    template, header metadata, convert to F16 GGUF, quantize, parity check, Modelfiles and RUN.txt, checksums.

    Args:
        store: the driver thread's store (only read).
        run_id: a completed run with an adapter.
        settings: which files, where, under what name.
        exports_dir: the default parent folder (``AppPaths.exports_dir``) when ``settings.destination`` is None.
        cancel: checked between stages and inside each (merge, convert, quantize); nothing is kept on stop.

    Raises:
        ExportError: the run cannot be exported yet, or a stage failed (the message says why and what to do).
        JobCancelled: stopped as asked.
    """
    from desktop_dpo.core.llm.templates import uses_default_template

    cancel = cancel or CancelToken()
    plan = _plan_export(store, run_id, settings, exports_dir)
    final = plan.final
    remove_partial_outputs(final)  # a crashed export's leftovers
    try:
        with atomic_output(final) as work:
            work.mkdir()
            merged = yield from _merge(plan, work, settings.merge_dtype, cancel)
            template, stops = _settle_template(merged, plan.adapter_dir, plan.base)
            default_template = uses_default_template(template)
            metadata = _header_metadata(plan, stops, default_template)
            f16 = yield from _convert(plan, merged, work, metadata, template, cancel)
            files = yield from _quantize(plan, f16, work, cancel)
            report: ParityReport | None = None
            if settings.parity:
                report = yield from _parity(store, plan, merged, f16, files, work, cancel)
            if "F16" not in plan.quantizations:
                f16.unlink()
            _write_run_notes(plan, work, files, default_template, stops)
            cancel.raise_if_cancelled()
            yield Progress(0, 0, "Computing checksums")
            hashed = {q: (_sha256(p), p.stat().st_size) for q, p in files.items()}
    except OSError as exc:
        error = _export_write_error(exc, plan.parent)
        if error is exc:
            raise
        raise error from exc

    finished = ExportFinished(
        run_id=plan.run.id,
        folder=str(final),
        merged_dir=str(final / MERGED_FOLDER),
        files=tuple(
            ExportedFile(
                quantization=q, path=str(final / p.name), sha256=hashed[q][0], size_bytes=hashed[q][1]
            )
            for q, p in files.items()
        ),
        parity=report.to_dict() if report is not None else {},
        parity_lines=tuple(report.lines()) if report is not None else (),
        metadata=metadata,
    )
    yield finished
    return finished


def _adapter_info(adapter_dir: Path) -> dict[str, Any]:
    """What training wrote next to the adapter (``desktop_dpo_run.json``), or {} for an imported adapter."""
    try:
        data = json.loads((adapter_dir / "desktop_dpo_run.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# An earlier round in a base model's name (``… · aligned, run 3 · Q4_K_M``), which an aligned model's name
# says anew.
_EARLIER_ROUND = re.compile(r"\s*·\s*aligned, run \d+\s*·\s*[^·]*$")


def aligned_model_name(base_name: str, run_id: int, quantization: str) -> str:
    """The name an exported model is registered under: its base, the run it came from and its file's
    quantization (``Gemma 3 270M · aligned, run 3 · Q4_K_M``). The base's own quantization note and
    earlier round are left out, so a next round's model is named the same way, not ever longer."""
    base = _EARLIER_ROUND.sub("", without_quantization_note(base_name)).strip() or base_name
    return f"{base} · aligned, run {run_id} · {quantization}"


def estimated_file_sizes(base: ModelRow) -> dict[str, int | None]:
    """About how large each file type of an export of a run on ``base`` comes out (None: cannot be told), from
    the tensor table of the folder the export merges into: ``base``'s training folder (a GGUF's trainable copy
    or merged folder), else its own folder. Reads a few KB: cheap enough while a person picks a run."""
    folder = find_training_folder(base) or Path(base.path)
    return {name: estimate_export_bytes(folder, name) for name in QUANTIZATIONS}


def default_quantizations(sizes: Mapping[str, int | None]) -> tuple[str, ...]:
    """The files an export writes unless the person chooses others, given :func:`estimated_file_sizes`:
    Q4_K_M, the file to share, and Q8_0, the one the app works with (``gguf.WORKING_ORDER``), while that comes
    to at most ``WORKING_FILE_MAX_BYTES``; Q4_K_M alone for a larger model, or one whose size cannot be told."""
    size = sizes.get(WORKING_QUANTIZATION)
    if size is None or size > WORKING_FILE_MAX_BYTES:
        return (DEFAULT_QUANTIZATION,)
    return (DEFAULT_QUANTIZATION, WORKING_QUANTIZATION)


def persist_export(store: Store, finished: ExportFinished, *, register_as: str | None = None) -> list[int]:
    """Record an export: each file as an export row, and one file registered as an aligned model.

    ``register_as`` picks which file becomes the registered model, the one the app works with (default: the
    most faithful written, ``gguf.working_quantization``: Q8_0 over Q4_K_M). The aligned model's parent is the
    run's base model, so its lineage is visible. Returns the ids of the registered models (one).
    """
    from desktop_dpo.core.models import register_model

    run = store.get_run(finished.run_id)
    base_id = run.base_model_id if run is not None else None
    register_as = register_as or working_quantization(f.quantization for f in finished.files)
    chosen = next((f for f in finished.files if f.quantization == register_as), finished.files[0])
    with store.atomic():
        model = register_model(
            store,
            chosen.path,
            source="aligned",
            name=aligned_model_name(
                str(finished.metadata.get("desktop_dpo.base_model", "model")),
                finished.run_id,
                chosen.quantization,
            ),
            parent_model_id=base_id,
            run_id=finished.run_id,
        )
        # The merged folder is this model's trainable form: the next round trains from it (model_files.training_folder).
        store.update_model_info(
            model.id, **{MERGED_FOLDER_KEY: finished.merged_dir, EXPORT_FOLDER_KEY: finished.folder}
        )
        for file in finished.files:
            store.add_export(
                path=file.path,
                quantization=file.quantization,
                sha256=file.sha256,
                size_bytes=file.size_bytes,
                run_id=finished.run_id,
                model_id=model.id if file is chosen else None,
                parity=finished.parity,
                meta={**finished.metadata, "folder": finished.folder, "merged_dir": finished.merged_dir},
            )
    return [model.id]


@dataclass(frozen=True)
class ExportRecorded:
    """The export is complete and in the database: ``model_id`` is the aligned model now registered."""

    model_id: int
    finished: ExportFinished


def recorded_export(
    store: Store,
    run_id: int,
    settings: ExportSettings,
    exports_dir: Path,
    *,
    cancel: CancelToken,
    register_as: str | None = None,
) -> Job:
    """Export ``run_id`` and record it on ``store`` (a recorded job): :func:`export_run`'s events, then
    :func:`persist_export` and :class:`ExportRecorded`, which it also returns.

    ``register_as``: as for :func:`persist_export`. ``desktop-dpo export``, the GUI's export worker and the
    demo drive this job (``jobs.drive``).
    """
    finished = yield from export_run(store, run_id, settings, exports_dir, cancel=cancel)
    (model_id,) = persist_export(store, finished, register_as=register_as)
    recorded = ExportRecorded(model_id=model_id, finished=finished)
    yield recorded
    return recorded

"""What the app keeps on disk, what each thing is for, and a clean-up that deletes only what is safe.

:func:`scan_storage` lists every folder and file under the app's folders (``AppPaths``) as a
:class:`StorageItem`: its kind, its size (one ``lstat`` walk, nothing opened or loaded), what uses it,
and whether it may be removed (with the reason when not). The rules:

- a trainable copy or GGUF copy of a registered model: removable, it is made again on demand (said so);
- checkpoints of a completed run: removable; of a stopped or failed run: only when the person confirms
  the run will not be resumed (``confirm_no_resume``); of a running run: never;
- a run's adapter that an aligned model or an export refers to: not removable;
- an exported file (or merged folder) of a registered aligned model: not removable until that model is
  removed in the Models view;
- the database, the current log, a registered model's own file: never;
- orphans (in the app's folders, known to nothing in the store) and leftovers of a crashed job (what
  ``model_files.atomic_output`` was writing, named as ``model_files.is_partial_output`` recognises): removable,
  unless written in the last minutes (a job may still be writing it).

:func:`remove_items` is the clean-up job. It scans again before deleting (the store may have changed
since the list was shown), deletes only what is removable now, never follows a symbolic link (a link is
removed, its target is not touched), never deletes anything outside the app's folders, and updates the
rows that pointed at what it removed (a model's GGUF copy key, a run's ``adapter_path``, export rows),
so a copy is re-made on demand instead of being looked for.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from desktop_dpo.config import AppPaths
from desktop_dpo.core.dpo.runs import run_label
from desktop_dpo.core.jobs import CancelToken, Job, Progress
from desktop_dpo.core.model_files import (
    EXPORT_FOLDER_KEY,
    GGUF_COPY_INFO_KEY,
    GGUF_COPY_OUTTYPE_KEY,
    MERGED_FOLDER_KEY,
    TRAINABLE_COPY_KEY,
    gguf_copy_path,
    is_partial_output,
    trainable_copy_dir,
)
from desktop_dpo.core.store import ExportRow, ModelRow, RunRow, Store
from desktop_dpo.core.wording import human_size

KIND_LABELS = {
    "database": "Database",
    "backup": "Database backup",
    "log": "Log file",
    "model": "Model file",
    "trainable_copy": "Trainable copy",
    "gguf_copy": "GGUF copy",
    "run_checkpoints": "Run checkpoints",
    "run_adapter": "Run adapter",
    "merged_model": "Merged model",
    "gguf_export": "GGUF export",
    "orphan": "Unused",
    "leftover": "Leftover of a stopped job",
    "other": "Other",
}
# A leftover younger than this may still be written by a job that is running now: it is not offered.
LEFTOVER_QUIET_S = 10 * 60
_DATABASE_SUFFIXES = ("", "-wal", "-shm", "-journal")


@dataclass(frozen=True)
class StorageItem:
    """One thing the app keeps on disk."""

    path: str  # the file or folder
    kind: str  # a key of KIND_LABELS
    size_bytes: int  # bytes of its files (links and folders themselves count as nothing)
    used_by: str  # what it is, and what uses it, in words
    removable: bool  # clean-up may delete it (needs_confirmation items: only when confirmed)
    reason: str  # removable: what removing it means; not removable: why not
    needs_confirmation: bool = False  # checkpoints of a stopped or failed run: removing ends its resume
    model_ids: tuple[int, ...] = ()  # models whose rows point at it
    run_id: int | None = None  # the run it belongs to
    export_ids: tuple[int, ...] = ()  # export rows of it
    extra_paths: tuple[str, ...] = ()  # removed with it (a GGUF's Modelfile)

    @property
    def label(self) -> str:
        """The kind, in words."""
        return KIND_LABELS.get(self.kind, self.kind)

    def can_remove(self, confirm_no_resume: bool = False) -> bool:
        """Whether a clean-up deletes it (checkpoints of a resumable run only with ``confirm_no_resume``)."""
        return self.removable or (self.needs_confirmation and confirm_no_resume)


@dataclass(frozen=True)
class Removing:
    """The clean-up is deleting ``path`` (item ``done + 1`` of ``total``)."""

    path: str
    done: int
    total: int


@dataclass(frozen=True)
class CleanupResult:
    """What a clean-up did."""

    removed: tuple[str, ...]  # paths deleted
    skipped: tuple[tuple[str, str], ...]  # (path, why it was left) for requested items not deleted
    bytes_freed: int


# --------------------------------------------------------------------------------------------------
# Walking the tree: lstat only, never into a link
# --------------------------------------------------------------------------------------------------


def _walk(path: Path, skip: frozenset[str] = frozenset()) -> tuple[int, float]:
    """``(bytes, newest mtime)`` of a file or folder tree, without following links or opening a file.

    Paths in ``skip`` (listed as items of their own) are left out, so nothing is counted twice.
    """
    try:
        info = os.lstat(path)
    except OSError:
        return 0, 0.0
    if not stat.S_ISDIR(info.st_mode):
        return (info.st_size if stat.S_ISREG(info.st_mode) else 0), info.st_mtime
    total, newest = 0, info.st_mtime
    stack = [_norm(path)]  # entries' paths then compare with the normalised ones in ``skip``
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.path in skip:
                        continue
                    try:
                        entry_info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    newest = max(newest, entry_info.st_mtime)
                    if stat.S_ISDIR(entry_info.st_mode):
                        stack.append(entry.path)
                    elif stat.S_ISREG(entry_info.st_mode):
                        total += entry_info.st_size
        except OSError:
            continue
    return total, newest


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:
        return []


def _norm(path: str | Path) -> str:
    """A path compared as text: absolute and normalised, links not resolved (a link is itself)."""
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


# --------------------------------------------------------------------------------------------------
# Scan
# --------------------------------------------------------------------------------------------------


class _Scan:
    """One scan: the store's rows read once, then each of the app's folders looked through."""

    def __init__(self, store: Store, paths: AppPaths, now: float):
        self.paths = paths
        self.now = now
        self.models = store.list_models()
        self.runs = store.list_runs()
        self.exports = store.list_exports()
        self.items: list[StorageItem] = []

    def add(
        self,
        path: Path,
        kind: str,
        used_by: str,
        removable: bool,
        reason: str,
        *,
        needs_confirmation: bool = False,
        model_ids: tuple[int, ...] = (),
        run_id: int | None = None,
        export_ids: tuple[int, ...] = (),
        extra_paths: tuple[str, ...] = (),
        skip: Iterable[Path] = (),
    ) -> None:
        size, _ = _walk(path, frozenset(_norm(p) for p in skip))
        size += sum(_walk(Path(extra))[0] for extra in extra_paths)
        self.items.append(
            StorageItem(
                path=str(path),
                kind=kind,
                size_bytes=size,
                used_by=used_by,
                removable=removable,
                reason=reason,
                needs_confirmation=needs_confirmation,
                model_ids=model_ids,
                run_id=run_id,
                export_ids=export_ids,
                extra_paths=extra_paths,
            )
        )

    def is_young(self, path: Path) -> bool:
        """Written in the last minutes: a job may still be writing it."""
        return self.now - _walk(path)[1] < LEFTOVER_QUIET_S

    def leftover(self, path: Path) -> None:
        if self.is_young(path):
            self.add(
                path,
                "leftover",
                "Half-written files of a job",
                False,
                "Written in the last few minutes: a job may still be writing it. Try again later.",
            )
        else:
            self.add(
                path,
                "leftover",
                "Half-written files of a job that stopped or crashed",
                True,
                "Never finished; nothing uses it.",
            )

    def orphan(self, path: Path, where: str) -> None:
        self.add(
            path,
            "orphan",
            f"In the {where} folder, but no model, run or export refers to it",
            True,
            "Nothing in desktop-dpo uses it.",
        )

    # ---------------------------------------------------------------- data folder, backups, logs

    def scan_top(self) -> None:
        data = self.paths.data_dir
        known = {self.paths.models_dir, self.paths.runs_dir, self.paths.exports_dir, self.paths.backups_dir}
        known.add(self.paths.log_dir)
        db = self.paths.db_path
        # One item: the file with its write-ahead log and shared-memory index (SQLite's, in WAL mode).
        companions = tuple(
            str(db.with_name(db.name + suffix))
            for suffix in _DATABASE_SUFFIXES[1:]
            if db.with_name(db.name + suffix).is_file()
        )
        if db.is_file():
            self.add(
                db,
                "database",
                "Your picks, prompts, runs and exports",
                False,
                "The database itself: never removed here.",
                extra_paths=companions,
            )
        database_names = {db.name + suffix for suffix in _DATABASE_SUFFIXES}
        for entry in _children(data):
            if entry in known or entry.name in database_names:
                continue
            if is_partial_output(entry):
                self.leftover(entry)
            else:
                # Window settings and anything else put here: small, and not ours to judge.
                self.add(
                    entry,
                    "other",
                    "Settings and other files of the data folder",
                    False,
                    "Not made by a job; left alone.",
                )
        for entry in _children(self.paths.backups_dir):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(_walk(entry)[1]))
            self.add(
                entry,
                "backup",
                f"Copy of the database taken before an upgrade ({when})",
                True,
                "Only needed to go back to an older version of desktop-dpo.",
            )
        current = self.paths.log_file
        for entry in _children(self.paths.log_dir):
            if _norm(entry) == _norm(current):
                self.add(entry, "log", "The current log file", False, "desktop-dpo is writing to it.")
            else:
                self.add(entry, "log", "An older log file", True, "Only useful to look into a past problem.")

    # ---------------------------------------------------------------- models folder

    def scan_models(self) -> None:
        busy_bases = {run.base_model_id for run in self.runs if run.status == "running"}
        for entry in _children(self.paths.models_dir):
            if is_partial_output(entry):
                self.leftover(entry)
                continue
            where = _norm(entry)
            own = [m for m in self.models if _within(_norm(m.path), where)]
            if own:
                names = ", ".join(m.name for m in own)
                self.add(
                    entry,
                    "model",
                    f"The file of {names}",
                    False,
                    f"{names} is registered from it: remove it in Models first.",
                    model_ids=tuple(m.id for m in own),
                )
                continue
            trainable = [m for m in self.models if self._is_trainable_copy(m, where)]
            if trainable:
                names = ", ".join(m.name for m in trainable)
                ids = tuple(m.id for m in trainable)
                if any(m.id in busy_bases for m in trainable):
                    self.add(
                        entry,
                        "trainable_copy",
                        f"The trainable copy of {names}",
                        False,
                        f"A run is training {names} from it now.",
                        model_ids=ids,
                    )
                else:
                    self.add(
                        entry,
                        "trainable_copy",
                        f"The trainable copy of {names} (for training)",
                        True,
                        f"Made again from {names} when you next train it (Models: Make trainable copy).",
                        model_ids=ids,
                    )
                continue
            copies = [m for m in self.models if self._is_gguf_copy(m, where)]
            if copies:
                names = ", ".join(m.name for m in copies)
                nested = self._nested_leftovers(entry)
                if any(self.is_young(child) for child in nested):
                    removable, reason = False, f"A conversion of {names} is writing into it now."
                else:
                    removable, reason = (
                        True,
                        f"Made again automatically the next time {names} writes an answer.",
                    )
                self.add(
                    entry,
                    "gguf_copy",
                    f"The GGUF copy of {names} that llama.cpp runs",
                    removable,
                    reason,
                    model_ids=tuple(m.id for m in copies),
                    skip=nested,
                )
                continue
            self.orphan(entry, "models")

    def _is_trainable_copy(self, model: ModelRow, where: str) -> bool:
        recorded = model.info.get(TRAINABLE_COPY_KEY)
        if recorded and _norm(recorded) == where:
            return True
        # The folder the Models view and the demo make, recorded or not.
        return model.kind == "gguf" and where == _norm(trainable_copy_dir(self.paths, model))

    def _is_gguf_copy(self, model: ModelRow, where: str) -> bool:
        if model.kind != "hf":
            return False
        recorded = model.info.get(GGUF_COPY_INFO_KEY)
        if recorded and _norm(Path(recorded).parent) == where:
            return True
        return _norm(gguf_copy_path(model, self.paths).parent) == where

    def _nested_leftovers(self, folder: Path) -> list[Path]:
        found = [child for child in _children(folder) if is_partial_output(child)]
        for child in found:
            self.leftover(child)
        return found

    # ---------------------------------------------------------------- runs folder

    def _run_dir(self, run: RunRow) -> str:
        if run.checkpoint_dir:
            return _norm(run.checkpoint_dir)
        if run.adapter_path:
            return _norm(Path(run.adapter_path).parent)
        return _norm(self.paths.runs_dir / f"run-{run.id:04d}")

    def scan_runs(self) -> None:
        by_dir = {self._run_dir(run): run for run in self.runs}
        for entry in _children(self.paths.runs_dir):
            if is_partial_output(entry):
                self.leftover(entry)
                continue
            run = by_dir.get(_norm(entry))
            if run is None or not _is_real_dir(entry):
                self.orphan(entry, "runs")
                continue
            for child in _children(entry):
                if is_partial_output(child):
                    self.leftover(child)
                elif child.name == "checkpoints" and _is_real_dir(child):
                    self._checkpoints(run, child)
                elif run.adapter_path and _norm(child) == _norm(run.adapter_path):
                    self._adapter(run, child)
                elif _is_real_dir(child) or child.is_symlink():
                    self.orphan(child, "runs")
                # Small files of the run folder itself (notes) stay with it.

    def _checkpoints(self, run: RunRow, folder: Path) -> None:
        nested = self._nested_leftovers(folder)
        used_by = f"Checkpoints of {run_label(run.id, run.name)}, step {run.step}"
        if run.status == "running":
            removable, reason, confirm = False, f"Run {run.id} is training now.", False
        elif run.status == "completed":
            removable, reason, confirm = (
                True,
                f"Run {run.id} finished: checkpoints only serve to resume a run.",
                False,
            )
        else:
            removable, confirm = False, True
            reason = (
                f"Run {run.id} can still be resumed from it ({run.status} at step {run.step}). "
                "Remove only if you will not resume it."
            )
        self.add(
            folder,
            "run_checkpoints",
            used_by,
            removable,
            reason,
            needs_confirmation=confirm,
            run_id=run.id,
            skip=nested,
        )

    def _adapter(self, run: RunRow, folder: Path) -> None:
        used_by = f"The adapter of {run_label(run.id, run.name)}: what training made"
        if run.status == "running":
            self.add(folder, "run_adapter", used_by, False, f"Run {run.id} is training now.", run_id=run.id)
            return
        models = [m for m in self.models if m.run_id == run.id]
        exports = [e for e in self.exports if e.run_id == run.id]
        if models or exports:
            needers = [f"model {m.name}" for m in models] + ([f"{len(exports)} export(s)"] if exports else [])
            self.add(
                folder,
                "run_adapter",
                used_by,
                False,
                f"The adapter of run {run.id}, which {' and '.join(needers)} need(s).",
                run_id=run.id,
            )
            return
        self.add(
            folder,
            "run_adapter",
            used_by,
            True,
            f"Not exported yet: without it run {run.id} must be trained again to export it.",
            run_id=run.id,
        )

    # ---------------------------------------------------------------- exports folder

    def scan_exports(self) -> None:
        for entry in _children(self.paths.exports_dir):
            if is_partial_output(entry):
                self.leftover(entry)
                continue
            where = _norm(entry)
            rows = [e for e in self.exports if _within(_norm(e.path), where)]
            models = [m for m in self.models if self._model_refers_to(m, where)]
            if not rows and not models:
                self.orphan(entry, "exports")
            elif not _is_real_dir(entry):
                self._export_file(entry, rows)
            else:
                for child in _children(entry):
                    if is_partial_output(child):
                        self.leftover(child)
                    elif _is_real_dir(child) and (child / "config.json").exists():
                        self._merged(child, rows)
                    elif child.name.endswith(".gguf"):
                        self._export_file(child, rows)
                # Notes (RUN.txt, Modelfiles, reports) are small and go with their export folder.

    def _model_refers_to(self, model: ModelRow, where: str) -> bool:
        candidates = [model.path, *(model.info.get(k) for k in (MERGED_FOLDER_KEY, EXPORT_FOLDER_KEY))]
        return any(isinstance(c, str) and c and _within(_norm(c), where) for c in candidates)

    def _export_file(self, file: Path, rows: Sequence[ExportRow]) -> None:
        mine = [e for e in rows if _norm(e.path) == _norm(file)]
        run_id = mine[0].run_id if mine else None
        modelfile = file.with_name(file.name + ".Modelfile")
        extra = (str(modelfile),) if modelfile.exists() else ()
        quant = f" ({mine[0].quantization})" if mine else ""
        used_by = f"Exported GGUF of run {run_id}{quant}" if run_id is not None else f"Exported GGUF{quant}"
        kept = [m for m in self.models if _norm(m.path) == _norm(file)]
        export_ids = tuple(e.id for e in mine)
        if kept:
            names = ", ".join(m.name for m in kept)
            self.add(
                file,
                "gguf_export",
                f"{used_by}: the file of model {names}",
                False,
                f"The file of aligned model {names}, which you kept: remove it in Models first.",
                model_ids=tuple(m.id for m in kept),
                run_id=run_id,
                export_ids=export_ids,
                extra_paths=extra,
            )
        else:
            self.add(
                file,
                "gguf_export",
                used_by,
                True,
                "Not registered as a model; the run's adapter can export it again.",
                run_id=run_id,
                export_ids=export_ids,
                extra_paths=extra,
            )

    def _merged(self, folder: Path, rows: Sequence[ExportRow]) -> None:
        where = _norm(folder)
        run_ids = {e.run_id for e in rows if e.run_id is not None}
        run = f" of run {min(run_ids)}" if run_ids else ""
        used_by = f"Merged model{run} (full precision, Hugging Face folder)"
        kept = [m for m in self.models if self._model_refers_to(m, where)]
        if kept:
            names = ", ".join(m.name for m in kept)
            self.add(
                folder,
                "merged_model",
                f"{used_by}: what {names} trains from",
                False,
                f"The trainable form of aligned model {names}, which you kept: remove it in Models first.",
                model_ids=tuple(m.id for m in kept),
            )
        else:
            self.add(
                folder,
                "merged_model",
                used_by,
                True,
                "No registered model uses it; the run's adapter can merge it again.",
            )


def scan_storage(store: Store, paths: AppPaths) -> list[StorageItem]:
    """Every folder and file the app keeps, what it is for and whether clean-up may delete it.

    Reads the store's model, run and export rows once and walks the app's folders with ``lstat``
    (nothing is opened or loaded, links are not followed), so it is quick even for large models.
    Items do not overlap: a leftover inside a GGUF copy folder is its own item and not counted twice.
    """
    scan = _Scan(store, paths, time.time())
    scan.scan_top()
    scan.scan_models()
    scan.scan_runs()
    scan.scan_exports()
    return scan.items


def total_size(items: Iterable[StorageItem]) -> int:
    """Bytes of ``items`` together."""
    return sum(item.size_bytes for item in items)


# --------------------------------------------------------------------------------------------------
# Clean-up
# --------------------------------------------------------------------------------------------------


def _app_roots(paths: AppPaths) -> list[str]:
    return [os.path.realpath(paths.data_dir), os.path.realpath(paths.log_dir)]


def _protected(paths: AppPaths) -> set[str]:
    """The app's folders themselves: their contents may go, never the folders."""
    folders = (paths.data_dir, paths.log_dir, paths.models_dir, paths.runs_dir, paths.exports_dir)
    return {os.path.realpath(folder) for folder in (*folders, paths.backups_dir)}


def _safe_target(path: str, paths: AppPaths) -> str | None:
    """Why ``path`` must not be deleted, or None when it lies inside the app's folders.

    The folder it is in is resolved (a link to elsewhere in its parents is seen through); the entry
    itself is not (a link is deleted as a link, its target left alone).
    """
    absolute = os.path.abspath(path)
    real = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
    if real in _protected(paths):
        return "it is one of the app's own folders"
    if not any(_within(real, root) for root in _app_roots(paths)):
        return "it is outside desktop-dpo's folders"
    return None


def _delete(path: str) -> None:
    """Delete a file, a link (never its target) or a folder tree (links inside are unlinked, not followed)."""
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    else:
        shutil.rmtree(path)


def _update_store(store: Store, item: StorageItem) -> None:
    """Make the rows that pointed at a deleted item stop pointing at it."""
    if item.kind == "gguf_copy":
        for model_id in item.model_ids:
            store.remove_model_info_keys(model_id, GGUF_COPY_INFO_KEY, GGUF_COPY_OUTTYPE_KEY)
    elif item.kind == "trainable_copy":
        for model_id in item.model_ids:
            model = store.get_model(model_id)
            recorded = model.info.get(TRAINABLE_COPY_KEY) if model is not None else None
            if recorded and _norm(recorded) == _norm(item.path):
                store.remove_model_info_keys(model_id, TRAINABLE_COPY_KEY)
    elif item.kind == "run_adapter" and item.run_id is not None:
        store.update_run(item.run_id, adapter_path=None)
    elif item.kind == "run_checkpoints" and item.run_id is not None:
        run = store.get_run(item.run_id)
        if run is not None and run.status != "completed":
            store.update_run(
                item.run_id,
                error="Its checkpoints were removed to free disk space: resuming starts again at step 0.",
            )
    elif item.kind == "gguf_export":
        store.delete_exports(item.export_ids)


def _remove_empty_export_folders(paths: AppPaths, removed: Sequence[str]) -> None:
    """An export folder left with only notes (RUN.txt, reports) once its files are gone goes too."""
    exports = _norm(paths.exports_dir)
    for parent in {os.path.dirname(p) for p in removed}:
        if os.path.dirname(parent) != exports or os.path.islink(parent) or not os.path.isdir(parent):
            continue
        rest = os.listdir(parent)
        has_model = any(name.endswith(".gguf") or os.path.isdir(os.path.join(parent, name)) for name in rest)
        if not has_model:
            shutil.rmtree(parent, ignore_errors=True)


def remove_items(
    store: Store,
    paths: AppPaths,
    items: Sequence[StorageItem],
    cancel: CancelToken | None = None,
    *,
    confirm_no_resume: bool = False,
) -> Job:
    """Delete the removable ones of ``items`` and update the rows that pointed at them (a job).

    The folders are scanned again first and each item judged as it is now (a new export may need an
    adapter that was removable when the list was shown); what is not removable any more is skipped and
    said why. ``confirm_no_resume`` allows the checkpoints of stopped or failed runs (their runs then
    start again at step 0). Yields :class:`Removing` per item; returns a :class:`CleanupResult`.
    ``cancel`` is checked between items (an item is never half-deleted by a stop).
    """
    cancel = cancel or CancelToken()
    current = {_norm(item.path): item for item in scan_storage(store, paths)}
    removed: list[str] = []
    skipped: list[tuple[str, str]] = []
    freed = 0
    for done, requested in enumerate(items):
        cancel.raise_if_cancelled()
        yield Removing(requested.path, done, len(items))
        item = current.get(_norm(requested.path))
        if item is None:
            skipped.append((requested.path, "It is no longer there."))
            continue
        if not item.can_remove(confirm_no_resume):
            skipped.append((item.path, item.reason))
            continue
        why_not = _safe_target(item.path, paths)
        if why_not is not None:
            skipped.append((item.path, f"Not removed: {why_not}."))
            continue
        try:
            for extra in item.extra_paths:
                if _safe_target(extra, paths) is None and os.path.lexists(extra):
                    _delete(extra)
            _delete(item.path)
        except OSError as exc:
            skipped.append((item.path, f"Could not be removed ({exc.strerror or exc})."))
            continue
        _update_store(store, item)
        removed.append(item.path)
        freed += item.size_bytes
    _remove_empty_export_folders(paths, removed)
    yield Progress(len(items), len(items), f"Freed {human_size(freed)}")
    return CleanupResult(removed=tuple(removed), skipped=tuple(skipped), bytes_freed=freed)


def scan_job(store: Store, paths: AppPaths, cancel: CancelToken | None = None) -> Job:
    """:func:`scan_storage` as a job, on the store of the thread that runs it (a worker's own).

    Yields one :class:`Progress`; returns the list of :class:`StorageItem`.
    """
    yield Progress(0, 0, "Measuring what desktop-dpo keeps…")
    return scan_storage(store, paths)

"""What the app keeps on disk and the clean-up: a fake app home holding one of everything."""

from __future__ import annotations

import builtins
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from desktop_dpo.core.jobs import run_job
from desktop_dpo.core.model_files import GGUF_COPY_INFO_KEY, gguf_copy_path
from desktop_dpo.core.storage import (
    LEFTOVER_QUIET_S,
    CleanupResult,
    StorageItem,
    remove_items,
    scan_storage,
)
from desktop_dpo.core.store import Store


def write(path: Path, size: int, *, old: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    if old:  # older than the quiet period: a crashed job's, not a running one's
        stamp = time.time() - LEFTOVER_QUIET_S - 60
        os.utime(path, (stamp, stamp))
    return path


def age_tree(folder: Path) -> None:
    stamp = time.time() - LEFTOVER_QUIET_S - 60
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            os.utime(os.path.join(root, name), (stamp, stamp), follow_symlinks=False)
    os.utime(folder, (stamp, stamp))


@dataclass
class Home:
    paths: object
    store: Store
    outside: Path  # a folder outside the app's folders that links point into
    ids: dict[str, int]
    p: dict[str, Path]


@pytest.fixture
def home(app_home, tmp_path) -> Home:
    paths = app_home
    store = Store.open(paths.db_path, backups_dir=paths.backups_dir)
    outside = tmp_path / "outside"
    write(outside / "precious.txt", 7)
    ids: dict[str, int] = {}
    p: dict[str, Path] = {}

    # Models: an HF model with a GGUF copy, a GGUF with a trainable copy, the demo model kept in models/.
    hf_dir = tmp_path / "my-hf-model"
    write(hf_dir / "config.json", 2)
    ids["hf"] = store.add_model(name="HF model", path=str(hf_dir), kind="hf", fingerprint="hf-fp-1")
    hf = store.get_model(ids["hf"])
    p["gguf_copy"] = gguf_copy_path(hf, paths)
    write(p["gguf_copy"], 1000)
    store.update_model_info(
        ids["hf"], **{GGUF_COPY_INFO_KEY: str(p["gguf_copy"]), "gguf_copy_outtype": "q8_0"}
    )
    ids["gguf"] = store.add_model(
        name="GGUF model",
        path=str(write(tmp_path / "m.gguf", 10)),
        kind="gguf",
        fingerprint="0123456789abcdefXYZ",
    )
    p["trainable"] = paths.models_dir / "0123456789abcdef-trainable"
    write(p["trainable"] / "model.safetensors", 2000)
    store.update_model_info(ids["gguf"], trainable_copy=str(p["trainable"]))
    p["demo"] = write(paths.models_dir / "demo" / "demo.gguf", 300)
    ids["demo"] = store.add_model(
        name="Demo", path=str(p["demo"]), kind="gguf", fingerprint="demo", source="demo"
    )
    p["model_orphan"] = paths.models_dir / "gone-model-fp"
    write(p["model_orphan"] / "x.q8_0.gguf", 50)
    (p["model_orphan"] / "link").symlink_to(outside / "precious.txt")  # removed as a link only
    p["old_partial"] = write(paths.models_dir / ".x.1234-abcdef12.partial", 40, old=True)
    p["young_partial"] = write(paths.models_dir / ".y.5678-0123abcd.partial", 30)

    # Runs: 1 completed and exported, 2 stopped, 3 completed not exported, 4 running.
    def make_run(name: str, status: str, *, checkpoints: int = 0, adapter: int = 0) -> int:
        run_id = store.create_run(name=name, base_model_id=ids["hf"], config={}, comparison_ids=[1])
        folder = paths.runs_dir / f"run-{run_id:04d}"
        fields: dict[str, object] = {"status": status, "checkpoint_dir": str(folder), "step": 5}
        if checkpoints:
            write(folder / "checkpoints" / "step-0000005" / "adapter_model.safetensors", checkpoints)
            write(folder / "checkpoints" / "latest", 12)
        if adapter:
            write(folder / "adapter" / "adapter_model.safetensors", adapter)
            fields["adapter_path"] = str(folder / "adapter")
        store.update_run(run_id, **fields)
        return run_id

    ids["run_exported"] = make_run("exported", "completed", checkpoints=100, adapter=200)
    ids["run_stopped"] = make_run("stopped", "stopped", checkpoints=300)
    ids["run_done"] = make_run("done", "completed", adapter=400)
    ids["run_live"] = make_run("live", "running", checkpoints=500)
    p["ckpt_tmp"] = write(
        paths.runs_dir / "run-0002" / "checkpoints" / ".step-0000009.99-abcdef12.partial" / "w", 60
    )
    age_tree(p["ckpt_tmp"].parent)
    p["run_orphan"] = paths.runs_dir / "run-0099"
    write(p["run_orphan"] / "adapter" / "adapter_model.safetensors", 70)
    p["run_link"] = paths.runs_dir / "linked"
    p["run_link"].symlink_to(outside, target_is_directory=True)

    # Exports: run 1's folder with a merged model, a registered Q4 and an unregistered Q8 (+ Modelfile).
    export_dir = paths.exports_dir / "hf-model-run-1"
    write(export_dir / "merged" / "config.json", 5)
    write(export_dir / "merged" / "model.safetensors", 3000)
    p["merged"] = export_dir / "merged"
    p["q4"] = write(export_dir / "hf-model-run-1.Q4_K_M.gguf", 800)
    p["q8"] = write(export_dir / "hf-model-run-1.Q8_0.gguf", 900)
    p["q8_modelfile"] = write(export_dir / "hf-model-run-1.Q8_0.gguf.Modelfile", 9)
    write(export_dir / "RUN.txt", 11)
    ids["aligned"] = store.add_model(
        name="HF model · run 1 · Q4_K_M",
        path=str(p["q4"]),
        kind="gguf",
        fingerprint="aligned",
        source="aligned",
        info={"hf_path": str(p["merged"]), "export_folder": str(export_dir)},
        parent_model_id=ids["hf"],
        run_id=ids["run_exported"],
    )
    ids["export_q4"] = store.add_export(
        path=str(p["q4"]),
        quantization="Q4_K_M",
        sha256="a",
        size_bytes=800,
        run_id=1,
        model_id=ids["aligned"],
    )
    ids["export_q8"] = store.add_export(
        path=str(p["q8"]), quantization="Q8_0", sha256="b", size_bytes=900, run_id=1
    )
    p["export_orphan"] = write(paths.exports_dir / "forgotten.gguf", 120)
    p["export_leftover"] = paths.exports_dir / ".other.99-abcd1234.partial"
    write(p["export_leftover"] / "merged" / "model.safetensors", 130)
    age_tree(p["export_leftover"])

    p["backup"] = write(paths.backups_dir / "desktop-dpo.v1.20260101-000000.sqlite", 140)
    p["old_log"] = write(paths.log_dir / "desktop-dpo.log.1", 150)
    p["log"] = write(paths.log_file, 160)
    yield Home(paths, store, outside, ids, p)
    store.close()


def by_path(items: list[StorageItem]) -> dict[str, StorageItem]:
    return {item.path: item for item in items}


def test_every_kept_thing_is_listed_with_what_it_is_and_whether_it_may_go(home):
    items = by_path(scan_storage(home.store, home.paths))
    p, ids = home.p, home.ids

    def item(path: Path) -> StorageItem:
        return items[str(path)]

    copy = item(p["gguf_copy"].parent)
    assert (copy.kind, copy.removable, copy.size_bytes) == ("gguf_copy", True, 1000)
    assert "Made again" in copy.reason and "HF model" in copy.used_by
    trainable = item(p["trainable"])
    assert (trainable.kind, trainable.removable, trainable.size_bytes) == ("trainable_copy", True, 2000)
    assert "GGUF model" in trainable.reason
    demo = item(p["demo"].parent)
    assert (demo.kind, demo.removable) == ("model", False)
    assert "remove it in Models first" in demo.reason
    orphan = item(p["model_orphan"])
    assert (orphan.kind, orphan.removable, orphan.size_bytes) == ("orphan", True, 50)  # the link inside: 0
    assert (item(p["old_partial"]).kind, item(p["old_partial"]).removable) == ("leftover", True)
    young = item(p["young_partial"])
    assert (young.kind, young.removable) == ("leftover", False)
    assert "may still be writing" in young.reason

    runs = home.paths.runs_dir
    done_ckpt = item(runs / "run-0001" / "checkpoints")
    assert (done_ckpt.kind, done_ckpt.removable, done_ckpt.size_bytes) == ("run_checkpoints", True, 112)
    exported_adapter = item(runs / "run-0001" / "adapter")
    assert (exported_adapter.kind, exported_adapter.removable) == ("run_adapter", False)
    assert "the adapter of run 1" in exported_adapter.reason.lower() and "export" in exported_adapter.reason
    stopped = item(runs / "run-0002" / "checkpoints")
    assert (stopped.removable, stopped.needs_confirmation) == (False, True)
    assert "run 2 can still be resumed" in stopped.reason.lower()
    assert stopped.size_bytes == 312  # its leftover partial folder is an item of its own, not counted twice
    assert item(p["ckpt_tmp"].parent).kind == "leftover"
    unexported = item(runs / "run-0003" / "adapter")
    assert (unexported.removable, unexported.run_id) == (True, ids["run_done"])
    live = item(runs / "run-0004" / "checkpoints")
    assert (live.removable, live.needs_confirmation) == (False, False)
    assert "training now" in live.reason
    assert item(p["run_orphan"]).kind == "orphan"
    link = item(p["run_link"])
    assert (link.kind, link.size_bytes) == ("orphan", 0)  # a link is never walked into

    merged = item(p["merged"])
    assert (merged.kind, merged.removable, merged.size_bytes) == ("merged_model", False, 3005)
    q4 = item(p["q4"])
    assert (q4.kind, q4.removable) == ("gguf_export", False)
    assert "remove it in Models first" in q4.reason
    q8 = item(p["q8"])
    assert (q8.kind, q8.removable, q8.size_bytes, q8.export_ids) == (
        "gguf_export",
        True,
        909,
        (ids["export_q8"],),
    )
    assert item(p["export_orphan"]).kind == "orphan"
    assert (item(p["export_leftover"]).kind, item(p["export_leftover"]).removable) == ("leftover", True)

    assert item(p["backup"]).removable
    assert item(p["old_log"]).removable and not item(p["log"]).removable
    database = item(home.paths.db_path)
    assert (database.kind, database.removable) == ("database", False)
    # Nothing counted twice: only a leftover lies inside another item (and is left out of its size).
    listed = list(items)
    nested = [b for a in listed for b in listed if a != b and b.startswith(a + os.sep)]
    assert nested and all(items[b].kind == "leftover" for b in nested)


def test_a_scan_opens_no_file(home, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"the scan opened {args[0] if args else kwargs}")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(io, "open", refuse)
    items = scan_storage(home.store, home.paths)
    assert len(items) > 20


def test_clean_up_removes_only_what_may_go_and_the_store_follows(home):
    items = scan_storage(home.store, home.paths)
    expected_freed = sum(item.size_bytes for item in items if item.removable)
    result, _ = run_job(remove_items(home.store, home.paths, items))
    assert isinstance(result, CleanupResult)
    assert result.bytes_freed == expected_freed > 0
    p, ids, store = home.p, home.ids, home.store

    for gone in ("gguf_copy", "trainable", "model_orphan", "old_partial", "q8", "q8_modelfile", "export_orphan",
                 "export_leftover", "backup", "old_log", "run_orphan", "run_link", "ckpt_tmp"):  # fmt: skip
        assert not os.path.lexists(p[gone]), gone
    for kept in ("demo", "young_partial", "merged", "q4", "log"):
        assert p[kept].exists(), kept
    runs = home.paths.runs_dir
    assert not (runs / "run-0001" / "checkpoints").exists()
    assert (runs / "run-0001" / "adapter").is_dir()  # export and aligned model need it
    assert (runs / "run-0002" / "checkpoints" / "latest").is_file()  # resumable: not without confirmation
    assert not (runs / "run-0003" / "adapter").exists()
    assert (runs / "run-0004" / "checkpoints").is_dir()
    assert home.paths.db_path.is_file()

    # Links were removed as links: what they pointed at is untouched.
    assert (home.outside / "precious.txt").read_bytes() == b"x" * 7

    # The rows that pointed at removed files no longer do: copies are re-made on demand.
    assert GGUF_COPY_INFO_KEY not in store.get_model(ids["hf"]).info
    assert "gguf_copy_outtype" not in store.get_model(ids["hf"]).info
    assert "trainable_copy" not in store.get_model(ids["gguf"]).info
    assert store.get_run(ids["run_done"]).adapter_path is None
    assert store.get_run(ids["run_exported"]).adapter_path is not None
    assert [e.id for e in store.list_exports()] == [ids["export_q4"]]
    # What was refused is said, with the reason.
    skipped = dict(result.skipped)
    assert "can still be resumed" in skipped[str(runs / "run-0002" / "checkpoints")]
    assert "remove it in Models first" in skipped[str(p["q4"])]


def test_checkpoints_of_a_stopped_run_go_only_when_the_person_confirms_no_resume(home):
    folder = home.paths.runs_dir / "run-0002" / "checkpoints"
    item = by_path(scan_storage(home.store, home.paths))[str(folder)]
    result, _ = run_job(remove_items(home.store, home.paths, [item]))
    assert result.removed == () and folder.is_dir()
    result, _ = run_job(remove_items(home.store, home.paths, [item], confirm_no_resume=True))
    assert result.removed == (str(folder),) and not folder.exists()
    run = home.store.get_run(home.ids["run_stopped"])
    assert run.status == "stopped" and "starts again at step 0" in run.error


def test_nothing_outside_the_app_folders_is_deleted_whatever_is_asked(home, tmp_path):
    outside_file = home.outside / "precious.txt"
    forged = [
        StorageItem(str(outside_file), "orphan", 7, "forged", True, "forged"),
        StorageItem(str(home.p["run_link"] / "precious.txt"), "orphan", 7, "through a link", True, "forged"),
        StorageItem(str(home.paths.models_dir), "orphan", 0, "the folder itself", True, "forged"),
    ]
    result, _ = run_job(remove_items(home.store, home.paths, forged))
    assert result.removed == () and result.bytes_freed == 0
    assert outside_file.read_bytes() == b"x" * 7
    assert home.paths.models_dir.is_dir()


def test_an_item_is_judged_again_when_cleaning(home):
    # Shown as removable, then an export of run 3 appeared: its adapter is needed now.
    adapter = home.paths.runs_dir / "run-0003" / "adapter"
    item = by_path(scan_storage(home.store, home.paths))[str(adapter)]
    assert item.removable
    home.store.add_export(path="/elsewhere/x.gguf", quantization="Q8_0", sha256="c", size_bytes=1, run_id=3)
    result, _ = run_job(remove_items(home.store, home.paths, [item]))
    assert result.removed == () and adapter.is_dir()
    assert "export" in dict(result.skipped)[str(adapter)]


def test_removing_the_aligned_model_first_frees_its_export_files(home):
    home.store.remove_model(home.ids["aligned"])
    items = by_path(scan_storage(home.store, home.paths))
    assert items[str(home.p["q4"])].removable
    assert items[str(home.p["merged"])].removable
    # The adapter stays needed while export rows of run 1 exist.
    assert not items[str(home.paths.runs_dir / "run-0001" / "adapter")].removable
    export_folder = home.p["q4"].parent
    chosen = [items[str(home.p[k])] for k in ("q4", "q8", "merged")]
    result, _ = run_job(remove_items(home.store, home.paths, chosen))
    assert len(result.removed) == 3
    assert not export_folder.exists()  # only notes were left: the folder went with its files
    assert home.store.list_exports() == []

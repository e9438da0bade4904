"""One module owns the rules about a model's files: which folder training loads, how a job writes a file or
folder whole, how the clean-up knows what a crashed job left, and which files make and travel with a model."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desktop_dpo.core.dpo.runs import trainable_reason
from desktop_dpo.core.errors import JobCancelled, ModelError
from desktop_dpo.core.export.merge import merge_adapter
from desktop_dpo.core.jobs import CancelToken, run_job
from desktop_dpo.core.model_files import (
    ARCHITECTURE_KEY,
    BOS_TOKEN_KEY,
    CAN_MAKE_TRAINABLE_COPY_KEY,
    CHAT_TEMPLATE_KEY,
    CONFIG_AND_TOKENIZER_FILES,
    CONTEXT_LENGTH_KEY,
    DTYPE_KEY,
    EOS_TOKEN_KEY,
    FINGERPRINTED_FILES,
    MERGED_FOLDER_KEY,
    PARAMETER_COUNT_KEY,
    SIZE_BYTES_KEY,
    TRAINABLE_COPY_KEY,
    TRAINABLE_COPY_MARKER,
    WEIGHT_INDEX_FILES,
    WEIGHTS_FORMAT_KEY,
    atomic_output,
    find_training_folder,
    is_partial_output,
    partial_outputs_of,
    remove_partial_outputs,
    trainable_copy_dir,
    training_folder,
)
from desktop_dpo.core.models import ModelInfo, fingerprint
from desktop_dpo.core.storage import LEFTOVER_QUIET_S, scan_storage
from tests.core.test_merge import _make_adapter

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------------------------------------
# Which folder training loads
# --------------------------------------------------------------------------------------------------------


def hf_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    return path


def trainable_copy(path: Path, of_fingerprint: str) -> Path:
    """A finished trainable copy as make_trainable_copy leaves it: a HF folder with its marker."""
    hf_folder(path)
    (path / TRAINABLE_COPY_MARKER).write_text(json.dumps({"source_fingerprint": of_fingerprint}), "utf-8")
    return path


def gguf_row(store, name: str, **info):
    model_id = store.add_model(
        name=name, path=f"/{name}.gguf", kind="gguf", fingerprint=f"fp-{name}", info=info
    )
    return store.get_model(model_id)


def test_a_hugging_face_model_trains_from_its_own_folder_until_it_is_gone(memory_store, tmp_path):
    folder = hf_folder(tmp_path / "hf")
    model = memory_store.get_model(
        memory_store.add_model(name="hf", path=str(folder), kind="hf", fingerprint="h")
    )
    assert training_folder(model) == find_training_folder(model) == folder
    shutil.rmtree(folder)
    assert find_training_folder(model) is None
    with pytest.raises(ModelError, match=r"no longer in .*hf.*Put them back"):
        training_folder(model)


def test_a_gguf_trains_from_its_finished_trainable_copy_of_its_present_contents(memory_store, tmp_path):
    bare = gguf_row(memory_store, "bare")
    assert find_training_folder(bare) is None
    with pytest.raises(ModelError, match="without a trainable copy yet"):
        training_folder(bare)
    assert "without a trainable copy" in trainable_reason(bare)

    copy = trainable_copy(tmp_path / "copy", "fp-copied")
    copied = gguf_row(memory_store, "copied", **{TRAINABLE_COPY_KEY: str(copy)})
    assert training_folder(copied) == copy and trainable_reason(copied) is None

    # The same folder recorded for a GGUF whose contents changed since (another fingerprint): no copy of it.
    changed = gguf_row(memory_store, "changed", **{TRAINABLE_COPY_KEY: str(copy)})
    assert find_training_folder(changed) is None and trainable_reason(changed) is not None
    with pytest.raises(ModelError, match="not made from what its GGUF file holds now"):
        training_folder(changed)

    unfinished = hf_folder(tmp_path / "unfinished")  # no marker: the copy never finished
    half = gguf_row(memory_store, "half", **{TRAINABLE_COPY_KEY: str(unfinished)})
    assert find_training_folder(half) is None


def test_an_exported_model_trains_from_its_merged_folder_before_any_trainable_copy(memory_store, tmp_path):
    merged = hf_folder(tmp_path / "export" / "merged")
    copy = trainable_copy(tmp_path / "copy", "fp-aligned")
    aligned = gguf_row(
        memory_store, "aligned", **{MERGED_FOLDER_KEY: str(merged), TRAINABLE_COPY_KEY: str(copy)}
    )
    # The merged folder holds the full-precision weights; the copy only a dequantized Q4 of them.
    assert training_folder(aligned) == merged and trainable_reason(aligned) is None

    shutil.rmtree(merged)  # the export folder was deleted: the copy still serves
    assert training_folder(aligned) == copy
    only_merged = gguf_row(memory_store, "only-merged", **{MERGED_FOLDER_KEY: str(merged)})
    with pytest.raises(ModelError, match=r"no longer in .*merged"):
        training_folder(only_merged)


def test_the_trainable_copy_folder_is_one_per_gguf_content(memory_store, app_home):
    first, second = gguf_row(memory_store, "a"), gguf_row(memory_store, "b")
    assert trainable_copy_dir(app_home, first).parent == app_home.models_dir
    assert trainable_copy_dir(app_home, first) != trainable_copy_dir(app_home, second)
    again = memory_store.get_model(
        memory_store.add_model(name="a again", path="/elsewhere/a.gguf", kind="gguf", fingerprint="fp-a")
    )
    assert trainable_copy_dir(app_home, again) == trainable_copy_dir(app_home, first)


def test_the_registration_keys_are_fields_of_model_info():
    keys = {
        ARCHITECTURE_KEY,
        PARAMETER_COUNT_KEY,
        SIZE_BYTES_KEY,
        CONTEXT_LENGTH_KEY,
        CHAT_TEMPLATE_KEY,
        BOS_TOKEN_KEY,
        EOS_TOKEN_KEY,
        DTYPE_KEY,
        WEIGHTS_FORMAT_KEY,
        CAN_MAKE_TRAINABLE_COPY_KEY,
    }
    assert keys <= {f.name for f in dataclasses.fields(ModelInfo)}


# --------------------------------------------------------------------------------------------------------
# atomic_output and the clean-up
# --------------------------------------------------------------------------------------------------------


def test_a_file_is_written_under_a_partial_name_and_renamed_whole(tmp_path):
    target = tmp_path / "notes.json"
    with atomic_output(target) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".notes.json.") and is_partial_output(temp)
        temp.write_text("new", encoding="utf-8")
        assert not target.exists()
    assert target.read_text(encoding="utf-8") == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.json"]


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_failure_keeps_the_old_target_and_leaves_nothing(tmp_path, kind):
    target = tmp_path / "out"
    if kind == "file":
        target.write_text("old", encoding="utf-8")
    else:
        target.mkdir()
        (target / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_output(target) as temp:
        if kind == "file":
            temp.write_text("half", encoding="utf-8")
        else:
            temp.mkdir()
            (temp / "half.txt").write_text("half", encoding="utf-8")
        raise RuntimeError("disk on fire")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    kept = target.read_text(encoding="utf-8") if kind == "file" else (target / "old.txt").read_text("utf-8")
    assert kept == "old"


def test_a_folder_replaces_the_folder_at_its_target(tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "stale.bin").write_bytes(b"old")
    with atomic_output(target) as temp:
        temp.mkdir()
        (temp / "fresh.bin").write_bytes(b"new")
    assert [p.name for p in target.iterdir()] == ["fresh.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_a_block_that_writes_nothing_fails_and_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_output(tmp_path / "never"):
        pass
    assert list(tmp_path.iterdir()) == []


def _job_writing(target: Path, cancel: CancelToken):
    with atomic_output(target) as temp:
        temp.mkdir()
        for step in range(3):
            (temp / f"part-{step}").write_bytes(b"x")
            cancel.raise_if_cancelled()
            yield step
    return target


def test_a_stopped_or_abandoned_job_leaves_nothing_half_written(tmp_path):
    abandoned = _job_writing(tmp_path / "abandoned", CancelToken())
    assert next(abandoned) == 0 and [p for p in tmp_path.iterdir() if is_partial_output(p)]
    abandoned.close()  # GeneratorExit at the yield: the driver went away
    assert list(tmp_path.iterdir()) == []

    token = CancelToken()
    stopped = _job_writing(tmp_path / "stopped", token)
    next(stopped)
    token.cancel()
    with pytest.raises(JobCancelled):
        run_job(stopped)
    assert list(tmp_path.iterdir()) == []

    assert run_job(_job_writing(tmp_path / "done", CancelToken()))[0] == tmp_path / "done"
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["part-0", "part-1", "part-2"]


_CRASH = """
import contextlib, os, sys
from pathlib import Path
from desktop_dpo.core.model_files import atomic_output
with contextlib.ExitStack() as stack:
    for target in sys.argv[1:]:
        temp = stack.enter_context(atomic_output(target))
        temp.mkdir()
        (temp / "weights.bin").write_bytes(b"half")
        print(temp, flush=True)
    os._exit(9)  # killed while writing: no clean-up runs
"""


def _crash_while_writing(*targets: Path) -> list[Path]:
    """What a process killed in the middle of ``atomic_output`` leaves: one partial output per target."""
    done = subprocess.run(
        [sys.executable, "-c", _CRASH, *map(str, targets)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 9, done.stderr
    left = [Path(line) for line in done.stdout.splitlines()]
    assert len(left) == len(targets) and all(path.is_dir() for path in left)
    return left


def test_stale_partial_outputs_of_a_target_are_found_and_removed_and_no_others(tmp_path):
    *mine, other_target = _crash_while_writing(
        tmp_path / "model.gguf",
        tmp_path / "model.gguf",
        tmp_path / "model",  # a prefix: another target
    )
    strangers = [
        tmp_path / name for name in (".model.gguf.tmp", ".model.gguf.123.partial", "model.gguf.partial")
    ]
    for path in strangers:
        path.write_bytes(b"not ours to remove")
    assert partial_outputs_of(tmp_path / "model.gguf") == sorted(mine)
    remove_partial_outputs(tmp_path / "model.gguf")
    assert sorted(tmp_path.iterdir()) == sorted([other_target, *strangers])


def _age(path: Path) -> None:
    old = time.time() - LEFTOVER_QUIET_S - 60
    for entry in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(entry, (old, old))


def test_the_clean_up_offers_exactly_what_crashed_writers_left(store, app_home):
    leftovers = _crash_while_writing(
        app_home.models_dir / "0123456789abcdef-trainable",
        app_home.exports_dir / "tiny-run-1",
        app_home.runs_dir / "run-0001",
        app_home.data_dir / "llama-load-modes.json",
    )
    # Hidden names that are not ours (a text editor's, a sync tool's, the names of older writers).
    strangers = [
        app_home.models_dir / ".model.gguf.tmp",
        app_home.models_dir / ".x.partial-1a2b3c4d",
        app_home.exports_dir / ".tiny-run-1.exporting-1a2b3c4d",
        app_home.data_dir / ".settings.json.swp",
    ]
    for path in strangers:
        path.write_bytes(b"someone else's")
    for path in [*leftovers, *strangers]:
        _age(path)
    items = {Path(item.path): item for item in scan_storage(store, app_home)}
    assert {path for path, item in items.items() if item.kind == "leftover"} == set(leftovers)
    assert all(items[path].removable for path in leftovers)
    assert all(items[path].kind != "leftover" for path in strangers if path in items)

    (young,) = _crash_while_writing(app_home.models_dir / "being-written")  # a job may still write it
    item = next(i for i in scan_storage(store, app_home) if Path(i.path) == young)
    assert (item.kind, item.removable) == ("leftover", False)


# --------------------------------------------------------------------------------------------------------
# The files that make a model, and travel with a merged one
# --------------------------------------------------------------------------------------------------------


def test_the_fingerprint_of_a_folder_is_what_it_was(tmp_path):
    """Registered models keep their fingerprints: the list and its order are part of the hash."""
    for number, name in enumerate(FINGERPRINTED_FILES):
        (tmp_path / name).write_text(f"{name} {number}\n", encoding="utf-8")
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (tmp_path / "README.md").write_text("x", encoding="utf-8")
    assert fingerprint(tmp_path) == "70c9c3fa9ec5d19c1204a8c26d1964860bdddcdcd6084ced1f82befa7d13fff6"


def test_every_file_that_changes_the_fingerprint_travels_with_the_merged_model(tiny_model_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    adapter = _make_adapter(base, tmp_path / "adapter")
    for name in CONFIG_AND_TOKENIZER_FILES:
        if not (base / name).exists():
            (base / name).write_text(f"{name} of the base\n", encoding="utf-8")
    for name in FINGERPRINTED_FILES:
        before = fingerprint(base)
        saved = (base / name).read_bytes() if (base / name).exists() else None
        with (base / name).open("a", encoding="utf-8") as handle:
            handle.write("\n")
        assert fingerprint(base) != before, f"{name} does not change the fingerprint"
        if saved is None:
            (base / name).unlink()
        else:
            (base / name).write_bytes(saved)

    merged, _ = run_job(merge_adapter(base, adapter, tmp_path / "merged"))
    for name in CONFIG_AND_TOKENIZER_FILES:
        assert (merged / name).is_file(), f"{name} changes the fingerprint but the merge does not copy it"
        if name != "config.json":  # rewritten: the merged weights' dtype, no quantization
            assert (merged / name).read_bytes() == (base / name).read_bytes()
    # The rest of the fingerprinted files index a sharded model's weights: the merge writes its own.
    assert set(FINGERPRINTED_FILES) - set(CONFIG_AND_TOKENIZER_FILES) == set(WEIGHT_INDEX_FILES)
    assert "vocab.txt" in CONFIG_AND_TOKENIZER_FILES

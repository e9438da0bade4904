"""Bad inputs and faults around training, export and the data folder: what the person does, what they see.

Each test is named by what the person does; it asserts the message they see (through the CLI where they
use the CLI) and that nothing already saved is lost. ``CASES`` feeds the catalogue table.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from desktop_dpo import cli
from desktop_dpo.config import HOME_ENV, AppPaths
from desktop_dpo.core.dpo import train as train_module
from desktop_dpo.core.dpo.run_lock import LOCK_FILE, RunBusyError, RunLock
from desktop_dpo.core.dpo.train import TrainConfig, TrainingError, drive_training, run_folder
from desktop_dpo.core.jobs import CancelToken
from desktop_dpo.core.storage import LEFTOVER_QUIET_S, scan_storage
from desktop_dpo.core.store import Store
from desktop_dpo.core.tensor_file import DamagedTensorFileError, check_tensor_file
from tests.core.test_cluster import write_adapter

REPO = Path(__file__).resolve().parents[1]

# (what the person does, the message they see) for docs/bad-inputs.md.
CASES = [
    (
        "runs `desktop-dpo train --resume N` while another window trains run N",
        "Run N is training in another window (or terminal). Wait for it to finish, or stop it there, then "
        "resume it here.",
    ),
    (
        "trains with `--reference bogus` or `--reference model:abc`",
        "The reference 'bogus' is not one desktop-dpo knows: give adapter_off (the base model) or "
        "model:<id> with the id of a registered model (a previous round's), e.g. model:3.",
    ),
    (
        "trains with `--reference model:99` (no such model)",
        "The reference model:99 is not a registered model; give the id of one in the Models view ...",
    ),
    (
        "trains with `--lr nan`",
        "These training settings cannot work: lr must be a number, not nan.",
    ),
    (
        "resumes a run whose checkpoint pickle is refused by weights_only",
        "The checkpoint at … is damaged or was not written by desktop-dpo; start the run again "
        "(desktop-dpo train --resume RUN_ID --restart) or delete ….",
    ),
    (
        "imports an adapter whose safetensors lost its last 500 bytes",
        "The adapter in … is damaged: … cannot be read whole (…). It was probably cut short while being "
        "written or copied; copy or train it again. Nothing was imported.",
    ),
    (
        "exports with `--out` on a read-only folder or mount",
        "Cannot write the export into …: Read-only file system. Choose a folder you can write to "
        "(--out DIR), or make this one writable.",
    ),
    (
        "kills an export with `kill -9` while the converter runs",
        "(nothing to read: the converter child ends with its parent instead of writing on as an orphan)",
    ),
    (
        "opens Storage after a killed export left a hidden `.NAME.exporting-*` folder",
        "Leftover of a stopped job (safe to remove)",
    ),
    (
        "gives `--home` a path that is a file",
        "… is a file, not a folder, so the data folder … cannot be made there. Give --home a folder (it is "
        "created when missing), or move the file away.",
    ),
    (
        "uses a read-only data folder",
        "The data folder … is read-only: desktop-dpo keeps its database there and must write to it. Make it "
        "writable, or choose another folder with --home DIR.",
    ),
]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private home; monkeypatch restores DESKTOP_DPO_HOME, which --home sets for the whole process."""
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "unused-default"))
    return (tmp_path / "home").resolve()


@pytest.fixture(autouse=True)
def no_lock_down(monkeypatch):
    monkeypatch.setattr("desktop_dpo.core.offline.lock_down", lambda: None)


def paths_of(home: Path) -> AppPaths:
    return AppPaths(data_dir=home / "data", log_dir=home / "logs").ensure()


def _model_and_run(home: Path, **run) -> tuple[int, int]:
    """A registered (fake) model with one run; returns (model id, run id)."""
    with Store.open(paths_of(home).db_path) as store:
        model_id = store.add_model(name="tiny", path=str(home / "model"), kind="hf", fingerprint="f" * 16)
        run_id = store.create_run(
            name="round 1", base_model_id=model_id, config=TrainConfig().to_dict(), comparison_ids=[], **run
        )
    return model_id, run_id


def _hold_lock_in_another_process(run_dir: Path, run_id: int) -> subprocess.Popen:
    """Another 'window': a process that takes the run's lock and keeps it until killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from desktop_dpo.core.dpo.run_lock import RunLock
        lock = RunLock(Path({str(run_dir)!r}), {run_id})
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


# ------------------------------------------------------------------------------------------ races


def test_resuming_a_run_another_window_is_training_is_refused(home, capsys):
    _, run_id = _model_and_run(home)
    with Store.open(paths_of(home).db_path) as store:
        store.update_run(run_id, status="running", step=7)
        run = store.get_run(run_id)
    run_dir = run_folder(run, paths_of(home).runs_dir)
    other = _hold_lock_in_another_process(run_dir, run_id)
    try:
        argv = ["train", "--resume", str(run_id), "--lr", "5e-5", "--home", str(home)]
        assert cli.main(argv) == 1
        assert f"Run {run_id} is training in another window" in capsys.readouterr().err
        # The core job refuses too (the GUI's child goes through it), and records nothing over the other's.
        with Store.open(paths_of(home).db_path) as store:
            with pytest.raises(RunBusyError, match=f"Run {run_id} is training in another window"):
                drive_training(store, run_id, cancel=CancelToken(), runs_dir=paths_of(home).runs_dir)
            after = store.get_run(run_id)
        assert (after.status, after.step, after.error) == ("running", 7, None)
        assert after.config["lr"] == TrainConfig().lr  # --lr was not written into the other's run
    finally:
        other.kill()
        other.wait()
    # The OS drops the lock with the process: the run can be taken again.
    RunLock(run_dir, run_id).release()
    assert (run_dir / LOCK_FILE).exists()


# ------------------------------------------------------------------------------------------ wrong settings


@pytest.mark.parametrize("reference", ["bogus", "model:abc", "model:", "model:-1"])
def test_training_with_a_reference_that_is_not_adapter_off_or_a_model_is_refused(home, capsys, reference):
    _model_and_run(home)
    assert cli.main(["train", "--model", "tiny", "--reference", reference, "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert f"The reference {reference!r} is not one desktop-dpo knows" in err
    assert "adapter_off" in err and "model:<id>" in err
    with Store.open(paths_of(home).db_path) as store:
        assert len(store.list_runs()) == 1  # no run was made


def test_training_against_a_reference_model_that_is_not_registered_is_refused(home):
    from desktop_dpo.core.dpo.runs import create_run_for_model

    model_id, _ = _model_and_run(home)
    with Store.open(paths_of(home).db_path) as store:
        model = store.get_model(model_id)
        with pytest.raises(TrainingError, match="model:99 is not a registered model"):
            create_run_for_model(store, model, TrainConfig(), reference="model:99", comparison_ids=[1])
        assert len(store.list_runs()) == 1


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_training_with_a_learning_rate_of_nan_is_refused(home, capsys, value):
    _model_and_run(home)
    assert cli.main(["train", "--model", "tiny", f"--lr={value}", "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert "These training settings cannot work" in err and "lr must be a number" in err
    with pytest.raises(TrainingError, match="beta must be a number"):
        TrainConfig(beta=float("nan")).validated()


def test_resuming_from_a_checkpoint_pickle_that_is_not_ours_says_it_is_damaged(tmp_path):
    import torch

    checkpoint = tmp_path / "run-0001" / "checkpoints" / "step-0000004"
    checkpoint.mkdir(parents=True)
    # A pickle of an arbitrary class: weights_only refuses to load it (it could run code).
    torch.save({"format": 1, "payload": Path("/etc")}, checkpoint / "training_state.pt")
    with pytest.raises(TrainingError) as caught:
        train_module._load_checkpoint(checkpoint, None, None, TrainConfig(), 4)
    message = str(caught.value)
    assert f"The checkpoint at {checkpoint} is damaged or was not written by desktop-dpo" in message
    assert f"delete {checkpoint}" in message and "UnpicklingError" not in message
    (checkpoint / "training_state.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(TrainingError, match="is damaged or was not written by desktop-dpo"):
        train_module._load_checkpoint(checkpoint, None, None, TrainConfig(), 4)
    assert checkpoint.is_dir()  # nothing removed behind the person's back


def test_importing_an_adapter_cut_short_by_500_bytes_is_refused(home, tiny_model_dir, tmp_path, capsys):
    from desktop_dpo.core.models import register_model

    with Store.open(paths_of(home).db_path) as store:
        tiny_id = register_model(store, tiny_model_dir, name="tiny").id
    adapter = write_adapter(tmp_path / "cut", in_features=64)
    weights = adapter / "adapter_model.safetensors"
    assert check_tensor_file(weights, "the adapter") > 0
    data = weights.read_bytes()
    weights.write_bytes(data[:-500])
    argv = ["import-adapter", str(adapter), "--base", str(tiny_id), "--home", str(home)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"The adapter in {adapter} is damaged" in err and "Nothing was imported" in err
    assert "Traceback" not in err
    with Store.open(paths_of(home).db_path) as store:
        assert store.list_runs() == []  # not recorded as a completed run
    with pytest.raises(DamagedTensorFileError, match="no weights file"):
        check_tensor_file(tmp_path / "missing.safetensors", "the adapter")


# ------------------------------------------------------------------------------------------ export


def test_exporting_to_a_read_only_folder_says_so(home, tmp_path, capsys, monkeypatch):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}", encoding="utf-8")
    adapter = write_adapter(tmp_path / "adapter", in_features=64)
    with Store.open(paths_of(home).db_path) as store:
        model_id = store.add_model(name="tiny", path=str(model_dir), kind="hf", fingerprint="f" * 16)
        run_id = store.create_run(
            name="r", base_model_id=model_id, config=TrainConfig().to_dict(), comparison_ids=[]
        )
        store.update_run(run_id, status="completed", adapter_path=str(adapter))
    out = tmp_path / "mount"
    out.mkdir()
    real_mkdir = Path.mkdir

    def read_only_mount(self, *args, **kwargs):  # root ignores chmod; a read-only mount does not
        if self.parent == out:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_mount)
    assert cli.main(["export", "--run", str(run_id), "--out", str(out), "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert f"Cannot write the export into {out}: Read-only file system" in err
    assert "--out DIR" in err and "Traceback" not in err
    with Store.open(paths_of(home).db_path) as store:
        assert store.get_run(run_id).status == "completed"
    assert adapter.is_dir() and list(out.iterdir()) == []


def test_killing_an_export_with_sigkill_ends_its_converter_child(tmp_path):
    """The parent runs ``_run_child`` (as an export does) and is killed by SIGKILL mid-way."""
    temp = tmp_path / ".model.gguf.partial"
    pid_file = tmp_path / "child.pid"
    parent_code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from desktop_dpo.core.export import gguf
        from desktop_dpo.core.jobs import CancelToken
        child = gguf._PARENT_WATCH + '''
        import os, time
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        with open({str(temp)!r}, "ab") as out:
            while True:
                out.write(b"x" * 1024); out.flush(); time.sleep(0.05)
        '''
        job = gguf._run_child([sys.executable, "-c", child], Path({str(temp)!r}), 10**9, "writing",
                              CancelToken(), "the test")
        for _ in job:
            pass
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=REPO)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child_pid), "the converter child outlived its killed parent"
    size = temp.stat().st_size
    time.sleep(0.3)
    assert temp.stat().st_size == size  # nobody writes the .partial any more


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_opening_storage_after_a_killed_export_offers_its_hidden_folder_for_removal(home):
    paths = paths_of(home)
    leftover = paths.exports_dir / ".tiny-run-1.exporting-1a2b3c4d"
    (leftover / "merged").mkdir(parents=True)
    (leftover / "merged" / "model.safetensors").write_bytes(b"\0" * 4096)
    old = time.time() - LEFTOVER_QUIET_S - 60
    os.utime(leftover, (old, old))
    for child in leftover.rglob("*"):
        os.utime(child, (old, old))
    with Store.open(paths.db_path) as store:
        items = scan_storage(store, paths)
    (item,) = [i for i in items if i.path == str(leftover)]
    assert item.kind == "leftover" and item.removable
    assert item.label == "Leftover of a stopped job"


# ------------------------------------------------------------------------------------------ data folder


def test_giving_home_a_path_that_is_a_file_says_so(home, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n", encoding="utf-8")
    assert cli.main(["info", "--no-hardware", "--home", str(a_file)]) == 1
    out = capsys.readouterr().out
    assert f"{a_file} is a file, not a folder" in out and "no database yet" not in out
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n", encoding="utf-8")
    assert cli.main(["data", "import", str(pairs), "--home", str(a_file)]) == 1
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Give --home a folder" in err
    assert a_file.read_text(encoding="utf-8") == "mine\n"


def test_using_a_read_only_data_folder_says_so(home, tmp_path, capsys, monkeypatch):
    paths = paths_of(home)
    with Store.open(paths.db_path) as store:
        store.add_model(name="kept", path=str(tmp_path), kind="hf", fingerprint="k" * 16)
    real_access = os.access

    def read_only(path, mode, *args, **kwargs):  # a read-only mount (root ignores chmod)
        if Path(path) == paths.data_dir and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", read_only)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n", encoding="utf-8")
    assert cli.main(["data", "import", str(pairs), "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert f"The data folder {paths.data_dir} is read-only" in err and "--home DIR" in err
    monkeypatch.setattr(os, "access", real_access)
    with Store.open(paths.db_path) as store:
        assert [m.name for m in store.list_models()] == ["kept"]

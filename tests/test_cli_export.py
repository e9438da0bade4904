"""``desktop-dpo train`` then ``desktop-dpo export`` without a screen: files, registration, messages."""

from __future__ import annotations

from pathlib import Path

from desktop_dpo import cli
from desktop_dpo.config import HOME_ENV, AppPaths
from desktop_dpo.core.store import Store


def test_train_then_export_writes_gguf_files_and_registers_the_aligned_model(
    home_with_pairs, tmp_path, capsys
):
    paths = AppPaths.default()
    with Store.open(paths.db_path) as store:
        model = next(m for m in store.list_models() if m.name == "tiny")

    train_args = [
        "train",
        "--model",
        str(model.id),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
    ]
    train_args += ["--max-length", "48", "--lora-r", "4", "--threads", "1", "--device", "cpu"]
    train_args += ["--quantization", "none", "--heldout-fraction", "0.25"]
    assert cli.main(train_args) == cli.EXIT_OK
    capsys.readouterr()

    out = tmp_path / "exports"
    status = cli.main(["export", "--run", "1", "--quant", "F16", "--quant", "Q8_0", "--out", str(out)])
    printed = capsys.readouterr()
    assert status == cli.EXIT_OK, printed.err
    folder = out / "tiny-run-1"
    assert (folder / "tiny-run-1.Q8_0.gguf").is_file() and (folder / "tiny-run-1.F16.gguf").is_file()
    assert "Tokenizers agree" in printed.out
    assert f"Q8_0: {folder / 'tiny-run-1.Q8_0.gguf'}" in printed.out
    assert "Registered as model 2" in printed.out
    with Store.open(paths.db_path) as store:
        aligned = store.get_model(2)
        assert aligned.source == "aligned" and aligned.parent_model_id == model.id and aligned.run_id == 1
        assert Path(aligned.path).name == "tiny-run-1.Q8_0.gguf"  # the file the app goes on with
        assert {e.quantization for e in store.list_exports(1)} == {"Q8_0", "F16"}

    # Exporting again under the same name is refused in words; nothing is overwritten.
    size = (folder / "tiny-run-1.Q8_0.gguf").stat().st_size
    assert cli.main(["export", "--run", "1", "--out", str(out)]) == cli.EXIT_FAILED
    assert "already exists" in capsys.readouterr().err
    assert (folder / "tiny-run-1.Q8_0.gguf").stat().st_size == size

    # By default: Q4_K_M to share and, for a model this small, Q8_0, which the app goes on with.
    assert (
        cli.main(["export", "--run", "1", "--out", str(out), "--name", "again", "--no-parity"]) == cli.EXIT_OK
    )
    assert sorted(p.name for p in (out / "again").glob("*.gguf")) == ["again.Q4_K_M.gguf", "again.Q8_0.gguf"]
    with Store.open(paths.db_path) as store:
        assert Path(store.get_model(3).path).name == "again.Q8_0.gguf"


def test_exporting_a_run_that_does_not_exist_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("desktop_dpo.core.offline.lock_down", lambda: None)
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    assert cli.main(["export", "--run", "9"]) == cli.EXIT_FAILED
    assert "There is no training run 9" in capsys.readouterr().err

"""The whole loop on the tiny model: train a few steps → merge → F16 and Q8_0 GGUF → llama.cpp loads and
generates → parity (identical token ids, ≥ 99% top-1 agreement for F16) → the aligned model is registered."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import pytest

from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.dpo.train import drive_training
from desktop_dpo.core.errors import ExportError, JobCancelled
from desktop_dpo.core.export import pipeline
from desktop_dpo.core.export.gguf import STOP_STRINGS_KEY, read_gguf_metadata
from desktop_dpo.core.export.pipeline import ExportFinished, ExportSettings, export_run, persist_export
from desktop_dpo.core.jobs import CancelToken, run_job
from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store
from tests.conftest import record_topic_pairs, train_to_the_end

TOPICS = [
    "apples",
    "rivers",
    "trains",
    "music",
    "winter",
    "cats",
    "maps",
    "bread",
    "stars",
    "clocks",
    "boats",
    "tea",
]
CONFIG = TrainConfig(
    lr=5e-3, epochs=1, batch_size=2, grad_accum=1, max_length=64, max_prompt_length=32, lora_r=4,
    lora_alpha=8, checkpoint_every=100, eval_every=100, heldout_fraction=0.25, seed=3, threads=1,
    quantization="none", device="cpu",
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A completed run on the tiny HF model (a few real DPO steps), in its own database."""
    home = tmp_path_factory.mktemp("loop")
    store = Store.open(home / "db.sqlite")
    record_topic_pairs(store, TOPICS)
    base = register_model(store, tiny_model_dir, name="tiny-base")
    run_id = train_to_the_end(store, base.id, CONFIG.to_dict(), home / "run", name="loop")
    store.close()
    return home, run_id


def test_train_merge_export_chat_and_parity(trained, tmp_path):
    from tests.plugins.llama_oracle import safe_llama

    home, run_id = trained
    store = Store.open(home / "db.sqlite")
    try:
        settings = ExportSettings(quantizations=("F16", "Q8_0"), destination=str(tmp_path))
        finished, events = run_job(export_run(store, run_id, settings, tmp_path))
        assert isinstance(finished, ExportFinished) and isinstance(events[-1], ExportFinished)
        folder = Path(finished.folder)
        names = sorted(p.name for p in folder.iterdir())
        stem = f"tiny-base-run-{run_id}"
        assert names == sorted(
            [
                "merged",
                "parity.json",
                "RUN.txt",
                f"{stem}.F16.gguf",
                f"{stem}.F16.gguf.Modelfile",
                f"{stem}.Q8_0.gguf",
                f"{stem}.Q8_0.gguf.Modelfile",
            ]
        )
        assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no work folder left behind

        # llama.cpp loads and generates with each file.
        for file in finished.files:
            llm = safe_llama(model_path=file.path, n_ctx=256, n_threads=1, verbose=False)
            try:
                text = llm.create_completion("Tell me about owls.", max_tokens=8, temperature=0.0)
                assert text["choices"][0]["finish_reason"] in ("stop", "length")
            finally:
                llm.close()

        # Parity: identical token ids on every test text and ≥ 99% top-1 agreement for F16.
        parity = finished.parity
        assert parity["tokenizer_texts"] >= 5 and parity["tokenizer_identical"] == parity["tokenizer_texts"]
        assert parity["top1_agreement"] >= 0.99
        assert set(parity["perplexity"]) == {"F16", "Q8_0"}
        assert parity["perplexity_ratio"]["Q8_0"] == pytest.approx(1.0, abs=0.05)
        assert parity["policy_pairs"] >= 1 and parity["policy_preference_kept"] == 1.0
        assert parity["policy_max_logp_diff"] < 0.5  # bf16 rounding of the merged weights, nothing more
        assert json.loads((folder / "parity.json").read_text())["top1_agreement"] == parity["top1_agreement"]
        assert any("Tokenizers agree" in line for line in finished.parity_lines)

        # The header carries the chat template and the provenance (read back with the gguf package).
        meta = read_gguf_metadata(finished.files[1].path)
        assert "<|assistant|>" in meta["tokenizer.chat_template"]  # the model's own template
        assert meta["desktop_dpo.run_id"] == run_id and meta["desktop_dpo.pairs"] == len(TOPICS)
        assert meta["desktop_dpo.base_model"] == "tiny-base"
        assert json.loads(meta["desktop_dpo.settings"])["lora_r"] == 4
        # Its own template ends a turn with <|end|>: the stop strings every engine uses for it, EOS after.
        assert json.loads(meta[STOP_STRINGS_KEY]) == ["<|end|>", "</s>"]
        assert 'PARAMETER stop "<|end|>"' in (folder / f"{stem}.Q8_0.gguf.Modelfile").read_text()
        modelfile = (folder / f"{stem}.Q8_0.gguf.Modelfile").read_text()
        assert modelfile.startswith(f"FROM ./{stem}.Q8_0.gguf") and "TEMPLATE" not in modelfile
        assert f"llama-cli -m {stem}.Q8_0.gguf -cnv --jinja" in (folder / "RUN.txt").read_text()

        # The driver records it: the aligned model is registered with its lineage, and every file is an export.
        (model_id,) = persist_export(store, finished, register_as="Q8_0")
        model = store.get_model(model_id)
        assert model.source == "aligned" and model.run_id == run_id
        assert model.parent_model_id == store.get_run(run_id).base_model_id
        assert model.path == finished.files[1].path and model.info["hf_path"] == finished.merged_dir
        exports = store.list_exports(run_id)
        assert [e.quantization for e in exports] == ["F16", "Q8_0"]
        assert all(len(e.sha256) == 64 and e.size_bytes > 0 for e in exports)
    finally:
        store.close()


def test_stop_during_export_keeps_nothing_and_changes_no_row(trained, tmp_path):
    home, run_id = trained
    store = Store.open(home / "db.sqlite")
    try:
        before = store.table_counts()
        cancel = CancelToken()
        job = export_run(store, run_id, ExportSettings(destination=str(tmp_path)), tmp_path, cancel=cancel)
        for event in job:
            if "Converting" in getattr(event, "message", ""):
                cancel.cancel()  # during the conversion: the merged folder is already written
        pytest.fail("the export should have stopped")
    except JobCancelled:
        assert list(tmp_path.iterdir()) == []
        assert store.table_counts() == before
    finally:
        store.close()


def test_full_disk_is_refused_before_anything_is_written(monkeypatch, trained, tmp_path):
    home, run_id = trained
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda _p: usage(10**9, 10**9, 10**6))
    store = Store.open(home / "db.sqlite")
    try:
        before = store.table_counts()
        with pytest.raises(ExportError, match="Not enough free disk space"):
            run_job(export_run(store, run_id, ExportSettings(destination=str(tmp_path)), tmp_path))
        assert list(tmp_path.iterdir()) == []
        assert store.table_counts() == before
    finally:
        store.close()


def test_a_run_that_is_not_finished_cannot_be_exported(trained, tmp_path):
    home, _run_id = trained
    store = Store.open(home / "db.sqlite")
    try:
        pending = store.create_run(
            name="pending", base_model_id=None, config=CONFIG.to_dict(), comparison_ids=[]
        )
        with pytest.raises(ExportError, match="no finished adapter yet"):
            run_job(export_run(store, pending, ExportSettings(), tmp_path))
    finally:
        store.close()


def test_a_base_model_without_template_exports_the_layout_it_was_trained_with(tiny_model_dir, tmp_path):
    """A base model (no chat template, like the Gemma demo) was trained on the default User:/Assistant: layout;
    its export must carry that layout and the stop strings, so Ollama and llama.cpp prompt it the same way."""
    import shutil

    from desktop_dpo.core.llm.templates import DEFAULT_STOP_STRINGS, DEFAULT_TEMPLATE

    base_dir = tmp_path / "base-no-template"
    shutil.copytree(tiny_model_dir, base_dir)
    (base_dir / "chat_template.jinja").unlink()
    config = json.loads((base_dir / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base_dir / "tokenizer_config.json").write_text(json.dumps(config))

    store = Store.open(tmp_path / "db.sqlite")
    try:
        for topic in TOPICS[:6]:
            store.record_pair(
                messages=[{"role": "user", "content": f"Tell me about {topic}."}],
                text_a=f" Gladly: {topic} are lovely.",
                text_b=f" No. {topic} bore me.",
                verdict="a",
            )
        base = register_model(store, base_dir, name="base")
        assert base.info["uses_default_template"]
        run_id = store.create_run(
            name="base",
            base_model_id=base.id,
            config=CONFIG.replace(epochs=1, heldout_fraction=0.0).to_dict(),
            comparison_ids=[v.comparison.id for v in store.comparison_views()],
            checkpoint_dir=str(tmp_path / "run"),
        )
        drive_training(store, run_id, cancel=CancelToken())
        out = tmp_path / "out"
        settings = ExportSettings(quantizations=("Q8_0",), destination=str(out), parity=False)
        finished, _ = run_job(export_run(store, run_id, settings, out))
    finally:
        store.close()
    (file,) = finished.files
    meta = read_gguf_metadata(file.path)
    assert meta["tokenizer.chat_template"] == DEFAULT_TEMPLATE
    assert json.loads(meta[STOP_STRINGS_KEY]) == list(DEFAULT_STOP_STRINGS)
    assert meta["desktop_dpo.uses_default_template"] is True
    modelfile = Path(file.path + ".Modelfile").read_text()
    assert 'TEMPLATE """' in modelfile and 'PARAMETER stop "\\nUser:"' in modelfile
    assert finished.parity == {}  # skipped as asked
    assert not Path(file.path).with_name(f"{Path(file.path).name.split('.')[0]}.F16.gguf").exists()

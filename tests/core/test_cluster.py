"""Outgrowing one machine: export pairs + a TRL script, run that script for real, import its adapter back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from desktop_dpo.core.cluster import (
    ACCELERATE_FILE,
    HELDOUT_FILE,
    MANIFEST_FILE,
    README_FILE,
    SCRIPT_FILE,
    TEMPLATE_FILE,
    TRAIN_FILE,
    ClusterError,
    export_trl,
    import_adapter,
    import_model,
)
from desktop_dpo.core.dpo.config import TrainConfig
from desktop_dpo.core.errors import ModelError
from desktop_dpo.core.export.merge import plan_merge
from desktop_dpo.core.llm.template_choice import KNOWN_TEMPLATES, TemplateChoice, set_template_choice
from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store

TRAIN_TIMEOUT_S = 900  # generous: two shared cores; nothing asserts on time
CONFIG = TrainConfig(
    heldout_fraction=0.25,
    max_length=96,
    max_prompt_length=48,
    lora_r=4,
    lora_alpha=8,
    beta=0.2,
    sft_weight=0.5,  # the script runs TRL's "sigmoid" + "sft" losses, as our SFT term
)


@pytest.fixture
def home_store(app_home):
    store = Store.open(app_home.db_path, backups_dir=app_home.backups_dir)
    yield store
    store.close()


@pytest.fixture
def tiny(home_store, tiny_model_dir):
    return register_model(home_store, tiny_model_dir, name="tiny")


def add_pairs(store: Store, model_id: int, count: int = 12) -> None:
    for i in range(count):
        messages = [{"role": "user", "content": f"Tell me about the number {i}."}]
        if i == 0:  # a multi-turn prompt with a system message survives the export
            messages = [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Tell me about zero."},
            ]
        store.record_pair(
            messages=messages,
            text_a=f"The number {i} is a fine number.",
            text_b=f"no {i}",
            verdict="a" if i % 2 else "b",
            model_a_id=model_id,
            model_b_id=model_id,
        )
    # A tie gives no pair and is not exported.
    store.record_pair(messages=[{"role": "user", "content": "tie"}], text_a="x", text_b="y", verdict="tie")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prompt_key(row: dict) -> str:
    return json.dumps(row["prompt"], sort_keys=True)


def test_export_writes_split_pairs_a_script_an_accelerate_config_and_a_readme(home_store, tiny, tmp_path):
    add_pairs(home_store, tiny.id)
    folder = tmp_path / "for-the-cluster"
    result = export_trl(home_store, folder, model=tiny, config=CONFIG)

    train, heldout = lines(folder / TRAIN_FILE), lines(folder / HELDOUT_FILE)
    assert (len(train), len(heldout)) == (result.train_pairs, result.heldout_pairs) == (9, 3)
    assert not {prompt_key(r) for r in train} & {prompt_key(r) for r in heldout}  # kept apart by prompt
    every = train + heldout
    assert all(set(row) == {"prompt", "chosen", "rejected"} for row in every)
    multi_turn = next(r for r in every if r["prompt"][0]["role"] == "system")
    assert [m["role"] for m in multi_turn["prompt"]] == ["system", "user", "assistant", "user"]
    assert multi_turn["chosen"] == [{"role": "assistant", "content": "no 0"}]  # verdict b on pair 0
    # The split is recorded: the held-out prompts stay held out of later runs here.
    splits = {p.text: p.split for p in home_store.list_prompts() if p.split}
    assert sum(1 for s in splits.values() if s == "heldout") == 3 and len(splits) == 12

    script = (folder / SCRIPT_FILE).read_text(encoding="utf-8")
    compile(script, SCRIPT_FILE, "exec")
    for setting in (
        "'beta': 0.2",
        "'loss_type': 'sigmoid'",
        "'lora_r': 4",
        "'lora_alpha': 8",
        "'max_length': 96",
    ):
        assert setting in script
    assert "DPOTrainer" in script and "LoraConfig" in script
    accelerate = (folder / ACCELERATE_FILE).read_text(encoding="utf-8")
    assert "distributed_type: MULTI_GPU" in accelerate and "mixed_precision: bf16" in accelerate
    readme = (folder / README_FILE).read_text(encoding="utf-8")
    assert (
        f"accelerate launch --config_file {ACCELERATE_FILE} {SCRIPT_FILE} --model_name_or_path {tiny.path}"
        in readme
    )
    assert f"desktop-dpo import-adapter adapter --base {tiny.id}" in readme
    manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["base_model"]["fingerprint"] == tiny.fingerprint
    assert len(manifest["comparison_ids"]) == 12
    # The script trains with the template the pairs were sampled with: the model's own here...
    assert (folder / TEMPLATE_FILE).read_text(encoding="utf-8") == tiny.info["chat_template"]
    assert "tokenizer.chat_template = Path(args.chat_template_file).read_text" in script
    # ... and the one the person chose for the model, once chosen.
    set_template_choice(home_store, tiny.id, TemplateChoice("known", name="chatml"))
    export_trl(home_store, folder, model=home_store.get_model(tiny.id), config=CONFIG)
    assert (folder / TEMPLATE_FILE).read_text(encoding="utf-8") == KNOWN_TEMPLATES["chatml"].text


def test_export_without_usable_pairs_says_what_to_do(home_store, tiny, tmp_path):
    with pytest.raises(ClusterError, match="no usable pairs"):
        export_trl(home_store, tmp_path / "empty", model=tiny)
    assert not (tmp_path / "empty" / SCRIPT_FILE).exists()


@pytest.mark.parametrize("loss_type", ["orpo", "simpo", "kto"])
def test_a_loss_the_dpo_script_cannot_train_is_refused_before_anything_is_written(
    home_store, tiny, tmp_path, loss_type
):
    folder = tmp_path / "elsewhere"
    with pytest.raises(ClusterError, match="choose DPO, IPO or hinge"):
        export_trl(
            home_store,
            folder,
            model=tiny,
            config=CONFIG.replace(loss_type=loss_type, sft_weight=0.0, label_smoothing=0.0),
        )
    assert not folder.exists()
    assert all(row.split is None for row in home_store.list_prompts())  # no split recorded either


def test_the_script_trains_with_trl_and_its_adapter_imports_as_a_finished_run(
    home_store, tiny, app_home, tiny_model_dir, tmp_path
):
    add_pairs(home_store, tiny.id)
    folder = tmp_path / "for-the-cluster"
    exported = export_trl(home_store, folder, model=tiny, config=CONFIG)
    out = tmp_path / "trained-adapter"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
        "CUDA_VISIBLE_DEVICES": "",
    }
    # Plain python, one process, as on a single GPU box; two steps are enough to write a real adapter.
    proc = subprocess.run(
        [sys.executable, str(folder / SCRIPT_FILE), "--model_name_or_path", str(tiny_model_dir),
         "--max_steps", "2", "--cpu", "--output_dir", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (out / "adapter_model.safetensors").is_file()
    adapter_config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert (adapter_config["r"], adapter_config["lora_alpha"], adapter_config["peft_type"]) == (4, 8, "LORA")

    run = import_adapter(home_store, app_home, out, tiny.id)
    assert run.status == "completed" and run.base_model_id == tiny.id
    assert Path(run.adapter_path).parent.parent == app_home.runs_dir  # copied in: independent of `out`
    assert (Path(run.adapter_path) / "adapter_model.safetensors").is_file()
    assert (run.config["lora_r"], run.config["lora_alpha"], run.config["beta"]) == (4, 8, 0.2)
    assert run.config["heldout_fraction"] == 0.25 and run.config["sft_weight"] == 0.5 and run.step == 2
    assert run.comparison_ids == list(exported.comparison_ids)
    assert home_store.get_run(run.id) == run
    # Export merges it: the plan matches every LoRA pair to a weight of the tiny base.
    plan = plan_merge(tiny_model_dir, run.adapter_path)
    assert len(plan.updates) == 14  # 7 linear layers per block, 2 blocks ("all-linear")


def write_adapter(folder: Path, in_features: int, out_features: int = 64, rank: int = 4) -> Path:
    """A LoRA adapter of q_proj in layer 0, sized for a model ``in_features`` wide."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {
            f"{prefix}.lora_A.weight": torch.zeros(rank, in_features),
            f"{prefix}.lora_B.weight": torch.zeros(out_features, rank),
        },
        str(folder / "adapter_model.safetensors"),
    )
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj"],
    }
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_an_adapter_of_another_model_is_refused_in_words(home_store, tiny, app_home, tmp_path):
    adapter = write_adapter(tmp_path / "wide-adapter", in_features=128)  # the tiny model is 64 wide
    with pytest.raises(ClusterError, match="does not fit tiny") as caught:
        import_adapter(home_store, app_home, adapter, tiny.id)
    assert "trained on another model" in str(caught.value) and "--base" in str(caught.value)
    assert home_store.list_runs() == []
    assert not any(app_home.runs_dir.iterdir())  # nothing half-imported left behind
    # The same file shaped for this model imports.
    fitting = write_adapter(tmp_path / "fitting-adapter", in_features=64)
    run = import_adapter(home_store, app_home, fitting, tiny.id)
    assert (run.status, run.config["target_modules"], run.comparison_ids) == ("completed", "q_proj", [])


def test_other_things_than_an_adapter_are_refused(home_store, tiny, app_home, tmp_path, tiny_gguf):
    with pytest.raises(ClusterError, match=r"no adapter_config\.json"):
        import_adapter(home_store, app_home, tmp_path, tiny.id)
    with pytest.raises(ClusterError, match="no model 999"):
        import_adapter(home_store, app_home, tmp_path, 999)
    gguf = register_model(home_store, tiny_gguf, name="tiny gguf")
    fitting = write_adapter(tmp_path / "fitting-adapter", in_features=64)
    with pytest.raises(ModelError, match="trainable copy"):
        import_adapter(home_store, app_home, fitting, gguf.id)


def test_a_merged_model_imports_as_a_model(home_store, tiny, tiny_model_dir, tmp_path):
    import shutil

    merged = tmp_path / "merged-elsewhere"
    shutil.copytree(tiny_model_dir, merged)
    model = import_model(home_store, merged, name="merged on the cluster", base_model_id=tiny.id)
    assert (model.source, model.kind, model.parent_model_id, model.name) == (
        "imported", "hf", tiny.id, "merged on the cluster",
    )  # fmt: skip
    with pytest.raises(ClusterError, match="no model 999"):
        import_model(home_store, merged, base_model_id=999)

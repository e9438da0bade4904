"""Merging a LoRA adapter into its base, shard by shard, against peft's own merge_and_unload."""

from __future__ import annotations

import errno
import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from desktop_dpo.core.errors import ExportError, JobCancelled
from desktop_dpo.core.export import merge
from desktop_dpo.core.export.merge import merge_adapter, plan_merge
from desktop_dpo.core.jobs import CancelToken, Progress, run_job
from tests.plugins.tiny_model import build_tiny_model


def _make_adapter(base_dir: Path, out: Path, *, r: int = 4, alpha: int = 8, rslora: bool = False) -> Path:
    """A LoRA adapter with random (non-zero) A and B on every linear layer, saved by peft."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules="all-linear",
        init_lora_weights=False,  # B != 0: the adapter really changes the model
        use_rslora=rslora,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # larger updates than peft's random init, so a wrong scale cannot hide
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.05)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    return out


def _peft_merged_state(base_dir: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def _load_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return _make_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "adapter")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_merged_weights_equal_peft_merge_and_unload(tiny_model_dir, adapter, tmp_path, dtype):
    out, events = run_job(merge_adapter(tiny_model_dir, adapter, tmp_path / "merged", dtype=dtype))

    ours = _load_folder(out)
    reference = _peft_merged_state(tiny_model_dir, adapter)
    assert set(ours) == set(reference)
    original = _load_folder(tiny_model_dir)
    changed = 0
    for key, expected in reference.items():
        assert ours[key].dtype == getattr(torch, dtype)
        # Both merge in fp32; ours is then rounded once to the stored dtype (at most one unit in the last place).
        torch.testing.assert_close(ours[key].float(), expected, rtol=8e-3, atol=1e-6)
        changed += not torch.allclose(original[key].float(), expected, atol=1e-3)
    assert changed >= 7 * 2  # every linear layer of both blocks moved: the adapter was applied
    assert isinstance(events[-1], Progress) and "Merged" in events[-1].message


def test_merged_folder_loads_in_transformers_and_answers_like_the_adapter(tiny_model_dir, adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = run_job(merge_adapter(tiny_model_dir, adapter, tmp_path / "merged", dtype="float16"))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == "float16" and "quantization_config" not in config

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    ids = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids
    merged = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    policy = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32), str(adapter)
    )
    with torch.no_grad():
        merged_logits = merged(ids).logits
        policy_logits = policy(ids).logits
    assert torch.equal(merged_logits.argmax(-1), policy_logits.argmax(-1))
    assert (merged_logits - policy_logits).abs().max().item() < 5e-2


def test_rank_stabilised_lora_uses_alpha_over_sqrt_r(tiny_model_dir, tmp_path):
    adapter = _make_adapter(tiny_model_dir, tmp_path / "rs", r=4, alpha=8, rslora=True)
    plan = plan_merge(tiny_model_dir, adapter)
    assert [update.scale for update in plan.updates.values()] == [pytest.approx(8 / 2)] * len(plan.updates)
    out, _ = run_job(merge_adapter(tiny_model_dir, adapter, tmp_path / "merged", dtype="float16"))
    reference = _peft_merged_state(tiny_model_dir, adapter)
    ours = _load_folder(out)
    for key, expected in reference.items():
        torch.testing.assert_close(ours[key].float(), expected, rtol=2e-3, atol=1e-6)


def test_sharded_base_is_merged_shard_by_shard(monkeypatch, tiny_model_dir, adapter, tmp_path):
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    model.save_pretrained(str(sharded), safe_serialization=True, max_shard_size="100KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        shutil.copy2(tiny_model_dir / name, sharded / name)
    shards = sorted(sharded.glob("*.safetensors"))
    assert len(shards) > 2

    seen: list[int] = []
    real_merged_tensor = merge._merged_tensor

    def counting(weight, update, adapter_tensors, dtype):
        seen.append(weight.numel())
        return real_merged_tensor(weight, update, adapter_tensors, dtype)

    monkeypatch.setattr(merge, "_merged_tensor", counting)
    out, _ = run_job(merge_adapter(sharded, adapter, tmp_path / "merged"))
    # Every tensor of every shard went through the merge, one at a time.
    assert len(seen) == len(_load_folder(sharded))
    assert sorted(p.name for p in out.glob("*.safetensors")) == [p.name for p in shards]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    reference = _peft_merged_state(tiny_model_dir, adapter)
    ours = _load_folder(out)
    assert set(ours) == set(reference)
    for key, expected in reference.items():
        torch.testing.assert_close(ours[key].float(), expected, rtol=8e-3, atol=1e-6)


def test_an_adapter_of_another_model_is_refused_before_anything_is_written(adapter, tmp_path):
    other = build_tiny_model(tmp_path / "other", hidden=32, intermediate=64)
    with pytest.raises(ExportError, match="trained on another model"):
        run_job(merge_adapter(other, adapter, tmp_path / "merged"))
    assert not (tmp_path / "merged").exists()
    assert not list(tmp_path.glob(".merged*"))


def test_a_folder_without_adapter_is_refused_in_words(tiny_model_dir, tmp_path):
    with pytest.raises(ExportError, match="not a LoRA adapter folder"):
        run_job(merge_adapter(tiny_model_dir, tmp_path, tmp_path / "merged"))


def test_an_existing_destination_is_never_overwritten(tiny_model_dir, adapter, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        run_job(merge_adapter(tiny_model_dir, adapter, out))
    assert (out / "keep.txt").read_text() == "mine"


def test_stop_leaves_nothing_behind(tiny_model_dir, adapter, tmp_path):
    cancel = CancelToken()
    job = merge_adapter(tiny_model_dir, adapter, tmp_path / "merged", cancel=cancel)
    next(job)  # reading headers
    cancel.cancel()
    with pytest.raises(JobCancelled):
        for _ in job:
            pass
    assert not (tmp_path / "merged").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_not_enough_free_space_is_refused_up_front(monkeypatch, tiny_model_dir, adapter, tmp_path):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(merge.shutil, "disk_usage", lambda _path: usage(10**9, 10**9, 1000))
    with pytest.raises(ExportError, match="Not enough free disk space"):
        run_job(merge_adapter(tiny_model_dir, adapter, tmp_path / "merged"))
    assert list(tmp_path.iterdir()) == []


def test_disk_filling_up_mid_merge_keeps_nothing_under_the_final_name(
    monkeypatch, tiny_model_dir, adapter, tmp_path
):
    written = []

    def full_disk(self, tensor):
        if len(written) == 5:  # a few tensors in: the file is half written
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(tensor.numel())

    monkeypatch.setattr(merge._SafetensorsStream, "write", full_disk)
    with pytest.raises(ExportError, match="disk filled up"):
        run_job(merge_adapter(tiny_model_dir, adapter, tmp_path / "merged"))
    assert list(tmp_path.iterdir()) == []


def test_the_streamed_file_is_a_valid_safetensors_file_with_metadata(tiny_model_dir, adapter, tmp_path):
    from safetensors import safe_open

    out, _ = run_job(merge_adapter(tiny_model_dir, adapter, tmp_path / "merged"))
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata()["format"] == "pt"
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"BF16"}  # noqa: SIM118

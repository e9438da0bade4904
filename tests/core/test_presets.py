"""Training presets from the GPU's free memory and the model's size, worked out by hand.

``preset_for`` is a pure function of (free bytes, total bytes, model shape), so every case below runs on
a CPU machine. The expected settings come from the estimate in ``training_memory`` (see its docstring),
with the arithmetic written out in each test:

    usable       = free - 1 GiB headroom
    weights      = params × 0.55 (NF4) or × 2 (bf16)
    LoRA state   = 2 · r · params / h weights × 16 bytes, r = 16
    tokens/pair  = 512 + 2 · (1024 - 512) = 1536 (prompt once, chosen and rejected after it)
    activations  = tokens × h × 34 × layers per pair, or tokens × h × (2 · layers + 34) with checkpointing
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from desktop_dpo.core.dpo.config import (
    CPU_PRESET,
    GIB,
    DeviceInfo,
    ModelShape,
    default_preset,
    detect_device,
    model_shape,
    preset_for,
    sized_for_pairs,
    sizing_sentence,
    smaller_settings,
    training_memory,
)

SEVEN_B = ModelShape(params=7_000_000_000, hidden_size=4096, layers=32)  # Llama-2-7B-like
HALF_B = ModelShape(params=500_000_000, hidden_size=896, layers=24)  # Qwen2-0.5B-like
ONE_B = ModelShape(params=1_240_000_000, hidden_size=2048, layers=16)  # Llama-3.2-1B-like


def test_a_7b_model_on_a_busy_24gb_card_gets_nf4_batch_1_with_checkpointing():
    # usable = 6 GiB - 1 GiB = 5,368,709,120 bytes.
    # bf16: the weights alone are 7e9 × 2 = 14e9 bytes: no.
    # NF4: weights 7e9 × 0.55 = 3,850,000,000; LoRA 2·16·7e9/4096 = 54,687,500 weights × 16 = 875,000,000;
    #      fixed 4,725,000,000, leaving 643,709,120.
    #      Without checkpointing one pair needs 1536 × 4096 × 34 × 32 = 6,845,104,128: no.
    #      With checkpointing one pair needs 1536 × 4096 × (2·32 + 34) = 616,562,688: fits; two do not.
    preset = preset_for(6 * GIB, 24 * GIB, SEVEN_B)
    config = preset.config
    assert preset.fits
    assert (config.quantization, config.gradient_checkpointing, config.batch_size) == ("nf4", True, 1)
    assert (config.grad_accum, config.max_length, config.max_prompt_length) == (16, 1024, 512)
    assert config.device == "cuda" and (config.lora_r, config.lora_alpha) == (16, 32)
    assert preset.estimated_bytes == 4_725_000_000 + 616_562_688 + GIB  # 5.97 GiB
    # In words: why 4-bit, how much is free of how much, and the estimate.
    assert "4-bit base (QLoRA)" in preset.reason and "7.0B-parameter model" in preset.reason
    assert "6.0 GB free of 24.0 GB (other programs use the rest)" in preset.reason
    assert (
        "gradient checkpointing on" in preset.reason
        and "1 pair per pass, 16 pairs per update" in preset.reason
    )
    assert "about 6.0 GB in use" in preset.reason


def test_a_small_model_on_a_free_24gb_card_gets_a_16_bit_base_and_a_full_batch():
    # usable = 24 GiB - 1 GiB = 24,696,061,952.
    # bf16: weights 5e8 × 2 = 1e9; LoRA 2·16·5e8/896 = 17,857,142.9 weights × 16 = 285,714,285.7;
    #       one pair 1536 × 896 × 34 × 24 = 1,123,024,896; 16 pairs 17,968,398,336;
    #       total 19,254,112,622 <= 24,696,061,952: batch 16, one pass per update.
    preset = preset_for(24 * GIB, 24 * GIB, HALF_B)
    config = preset.config
    assert (config.quantization, config.gradient_checkpointing) == ("none", False)
    assert (config.batch_size, config.grad_accum) == (16, 1)
    assert "a 16-bit base" in preset.reason and "500M-parameter model fits in 24.0 GB free" in preset.reason
    assert "other programs" not in preset.reason  # all of it is free


def test_nf4_comes_before_checkpointing_when_a_16_bit_base_leaves_no_room():
    # 0.5B model, 3 GiB free: usable 2,147,483,648.
    # bf16 fixed 1,285,714,286 leaves 861,769,362 < one pair (1,123,024,896): no.
    # NF4 fixed 275,000,000 + 285,714,286 = 560,714,286 leaves 1,586,769,362: one pair, no checkpointing.
    config = preset_for(3 * GIB, 24 * GIB, HALF_B).config
    assert (config.quantization, config.gradient_checkpointing, config.batch_size) == ("nf4", False, 1)


def test_a_16_bit_base_at_a_small_batch_beats_nf4_at_a_larger_one():
    # 1.24B model, 7.5 GiB free of 8: usable 6.5 GiB = 6,979,321,856.
    # bf16 fixed 2,480,000,000 + 19,375,000 × 16 = 2,790,000,000; one pair 1536 × 2048 × 34 × 16 =
    # 1,711,276,032; two pairs 6,212,552,064 fit, four (9,635,104,128) do not: bf16, batch 2, 8 passes.
    config = preset_for(int(7.5 * GIB), 8 * GIB, ONE_B).config
    assert (config.quantization, config.batch_size, config.grad_accum) == ("none", 2, 8)
    assert not config.gradient_checkpointing


def test_when_nothing_fits_the_smallest_settings_come_with_a_warning():
    # 7B with 4 GiB free: usable 3,221,225,472 < the NF4 weights and LoRA state alone (4,725,000,000).
    preset = preset_for(4 * GIB, 24 * GIB, SEVEN_B)
    config = preset.config
    assert not preset.fits
    assert (config.quantization, config.gradient_checkpointing, config.batch_size) == ("nf4", True, 1)
    assert (config.max_length, config.max_prompt_length) == (512, 256)
    # NF4 fixed 4,725,000,000 + one pair of 768 tokens × 4096 × 98 = 308,281,344, + 1 GiB headroom.
    assert preset.estimated_bytes == 4_725_000_000 + 308_281_344 + GIB
    assert "close programs that use the GPU or choose a smaller model" in preset.reason


def test_an_unknown_model_is_sized_as_a_typical_3b_model():
    # 3.2B, h 3072, 28 layers, 24 GiB free: usable 24,696,061,952; bf16 fixed 6.4e9 + 33,333,333 × 16 =
    # 6,933,333,333; one pair 1536 × 3072 × 34 × 28 = 4,492,099,584; two fit (15,917,532,501), four do not
    # (24,901,731,669).
    preset = preset_for(24 * GIB, 24 * GIB, None)
    assert (preset.config.quantization, preset.config.batch_size) == ("none", 2)
    assert "a typical 3.2B-parameter model" in preset.reason


def test_more_free_memory_never_means_smaller_settings():
    previous = None
    for free_gib in (2, 4, 6, 8, 12, 16, 24, 48, 80):
        for shape in (HALF_B, ONE_B, SEVEN_B):
            config = preset_for(free_gib * GIB, 80 * GIB, shape).config
            assert config.pairs_per_step == 16  # every preset learns from the same pairs per update
        config = preset_for(free_gib * GIB, 80 * GIB, SEVEN_B).config
        rank = (config.quantization == "none", not config.gradient_checkpointing, config.batch_size)
        if previous is not None:
            assert rank >= previous
        previous = rank


def test_the_cpu_gets_full_precision_and_the_device_decides():
    preset = preset_for(None, None, SEVEN_B)
    assert preset.config == CPU_PRESET
    assert (CPU_PRESET.quantization, CPU_PRESET.device, CPU_PRESET.gradient_checkpointing) == (
        "none",
        "cpu",
        False,
    )
    assert "full precision" in preset.reason
    # The GPU's free memory, not its total, sizes the preset.
    busy = DeviceInfo("cuda", "NVIDIA RTX 4090", memory_bytes=24 * GIB, free_bytes=6 * GIB)
    assert default_preset(busy, SEVEN_B) == preset_for(6 * GIB, 24 * GIB, SEVEN_B)
    assert default_preset(DeviceInfo("cpu", "CPU", None), SEVEN_B).config == CPU_PRESET


@pytest.mark.parametrize(("threads", "name"), [(1, "CPU (1 thread)"), (6, "CPU (6 threads)")])
def test_the_cpu_is_named_with_its_threads(monkeypatch, threads, name):
    # Train's note reads "Settings for CPU (1 thread): …" on a one-core machine or VM.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert detect_device() == DeviceInfo("cpu", name, None)


def test_a_run_on_a_few_pairs_makes_more_updates_with_an_sft_term():
    gpu = preset_for(20 * GIB, 24 * GIB, HALF_B).config
    assert gpu.batch_size == 16
    for preset in (CPU_PRESET, gpu):
        sized, why = sized_for_pairs(preset, 45)
        # 45 pairs at 16 per update were 3 updates an epoch: now 6, each larger, and the chosen answers learnt.
        assert (sized.pairs_per_step, sized.lr, sized.sft_weight) == (8, 2e-4, 1.0)
        assert sized.batch_size <= preset.batch_size, "never more memory than the preset"
        assert why == (
            "With 45 training pairs, 8 pairs per update instead of 16, a learning rate of 0.0002 instead of "
            "0.0001 and an SFT term on your chosen answers: they learn more from a few picks."
        )
        assert sized_for_pairs(preset, 399)[0] == sized
    # Many pairs, none yet, an unknown count, or a loss without an SFT term: the preset as it is.
    for pairs in (400, 5000, 0, None):
        assert sized_for_pairs(CPU_PRESET, pairs) == (CPU_PRESET, "")
    orpo = CPU_PRESET.replace(loss_type="orpo")
    assert sized_for_pairs(orpo, 45) == (orpo, "")
    assert sized_for_pairs(CPU_PRESET, 1)[1].startswith("With 1 training pair, ")
    # Options of the person's own (the command line's) win, and the sentence names only what sizing changed.
    sized = sized_for_pairs(CPU_PRESET, 45)[0]
    own = {"lr": 5e-5, "sft_weight": 0.0}
    assert sizing_sentence(CPU_PRESET.replace(**own), sized.replace(**own), 45) == (
        "With 45 training pairs, 8 pairs per update instead of 16: they learn more from a few picks."
    )
    mine = {"batch_size": 2, "grad_accum": 1, "lr": 5e-5, "sft_weight": 0.0}
    assert sizing_sentence(CPU_PRESET.replace(**mine), sized.replace(**mine), 45) == ""


def test_out_of_memory_suggestion_keeps_the_pairs_per_step():
    config = preset_for(6 * GIB, 24 * GIB, SEVEN_B).config  # NF4, checkpointing, batch 1
    after = smaller_settings(config)
    assert after.pairs_per_step == config.pairs_per_step and after.max_length == 512


def test_training_memory_adds_weights_lora_and_activations():
    shape = ModelShape(params=1000, hidden_size=10, layers=2)
    # NF4 550 + LoRA 2·16·1000/10 × 16 = 51,200 + one pair (4 + 2·4 = 12 tokens) × 10 × 34 × 2 = 8,160.
    assert training_memory(
        shape, quantization="nf4", batch_size=1, max_length=8, max_prompt_length=4,
        gradient_checkpointing=False, lora_r=16,
    ) == 550 + 51_200 + 8_160  # fmt: skip
    # bf16 2,000; checkpointing: 12 × 10 × (2·2 + 34) = 4,560 per pair, two pairs.
    assert training_memory(
        shape, quantization="none", batch_size=2, max_length=8, max_prompt_length=4,
        gradient_checkpointing=True, lora_r=16,
    ) == 2_000 + 51_200 + 2 * 4_560  # fmt: skip


def test_model_shape_counts_parameters_from_safetensors_headers(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    shape = model_shape(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert shape == ModelShape(params=sum(p.numel() for p in model.parameters()), hidden_size=64, layers=2)

    # Sharded files are summed; a multimodal config keeps the language model's shape in text_config.
    folder = tmp_path / "sharded"
    folder.mkdir()
    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, str(folder / "model-00001-of-00002.safetensors"))
    save_file(
        {"c": torch.zeros(2, 2, 2, dtype=torch.bfloat16)}, str(folder / "model-00002-of-00002.safetensors")
    )
    (folder / "config.json").write_text(
        json.dumps({"text_config": {"hidden_size": 8, "num_hidden_layers": 3}})
    )
    assert model_shape(folder) == ModelShape(params=12 + 5 + 8, hidden_size=8, layers=3)


@pytest.mark.parametrize("tied, expected", [(False, 98_304 + 65_536), (True, 98_304 + 32_768)])
def test_model_shape_estimates_parameters_from_the_config_without_weights(tmp_path, tied, expected):
    # 12 · layers · h² = 12 · 2 · 64² = 98,304; embeddings 512 × 64 = 32,768, twice when untied.
    config = {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 512, "tie_word_embeddings": tied}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert model_shape(tmp_path) == ModelShape(params=expected, hidden_size=64, layers=2)
    (tmp_path / "config.json").write_text("{}")
    assert model_shape(tmp_path) is None

"""How large an exported GGUF will be, before it is written: llama.cpp's mix of tensor types, not a flat rate.

A Q4_K_M file keeps the output matrix (the embedding, when the model ties them) and half the value and
feed-forward-down matrices at more bits, falls back to 32-weight types for rows 256 does not divide, and
keeps norms in F32. The estimate follows the same rules from the model's tensor shapes.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from desktop_dpo.core.export.gguf import (
    QUANTIZATIONS,
    convert_hf_to_gguf,
    estimate_export_bytes,
    estimate_quantized_bytes,
    quantize_gguf,
)
from desktop_dpo.core.jobs import run_job

# Gemma 3 270M, as its config.json and model.safetensors describe it: tied embedding, 640-wide rows.
_GEMMA_VOCAB, _GEMMA_HIDDEN, _GEMMA_LAYERS, _GEMMA_FFN = 262_144, 640, 18, 2048


def _gemma_3_270m() -> list[tuple[str, tuple[int, ...]]]:
    tensors: list[tuple[str, tuple[int, ...]]] = [
        ("model.embed_tokens.weight", (_GEMMA_VOCAB, _GEMMA_HIDDEN)),
        ("model.norm.weight", (_GEMMA_HIDDEN,)),
    ]
    for i in range(_GEMMA_LAYERS):
        p = f"model.layers.{i}."
        tensors += [
            (p + "self_attn.q_proj.weight", (1024, _GEMMA_HIDDEN)),
            (p + "self_attn.k_proj.weight", (256, _GEMMA_HIDDEN)),
            (p + "self_attn.v_proj.weight", (256, _GEMMA_HIDDEN)),
            (p + "self_attn.o_proj.weight", (_GEMMA_HIDDEN, 1024)),
            (p + "mlp.gate_proj.weight", (_GEMMA_FFN, _GEMMA_HIDDEN)),
            (p + "mlp.up_proj.weight", (_GEMMA_FFN, _GEMMA_HIDDEN)),
            (p + "mlp.down_proj.weight", (_GEMMA_HIDDEN, _GEMMA_FFN)),
            (p + "self_attn.q_norm.weight", (256,)),
            (p + "self_attn.k_norm.weight", (256,)),
        ]
        for norm in ("input", "post_attention", "pre_feedforward", "post_feedforward"):
            tensors.append((p + f"{norm}_layernorm.weight", (_GEMMA_HIDDEN,)))
    return tensors


def _gemma_q4_k_m_by_hand() -> int:
    """The tensor bytes of Gemma 3 270M in Q4_K_M, worked out from llama.cpp's rules (header left out)."""
    q8_0, q5_0, q4_k, q6_k = 34 / 32, 22 / 32, 144 / 256, 210 / 256
    embedding = _GEMMA_VOCAB * _GEMMA_HIDDEN * q8_0  # tied output matrix, 640 % 256 != 0: Q6_K -> Q8_0
    # Rows of 640 (q, k, v, gate, up) fall back from Q4_K to Q5_0; o (rows of 1024) and down (2048) stay K.
    plain = (1024 + 256 + 256 + 2 * _GEMMA_FFN) * _GEMMA_HIDDEN * q5_0 + _GEMMA_HIDDEN * 1024 * q4_k
    down = _GEMMA_HIDDEN * _GEMMA_FFN * q4_k
    # 9 of the 18 layers (first and last eighth, every third between) keep v in Q8_0 and down in Q6_K.
    more_bits = 256 * _GEMMA_HIDDEN * (q8_0 - q5_0) + _GEMMA_HIDDEN * _GEMMA_FFN * (q6_k - q4_k)
    norms = (4 * _GEMMA_HIDDEN + 2 * 256) * 4
    return int(embedding + _GEMMA_LAYERS * (plain + down + norms) + 9 * more_bits + _GEMMA_HIDDEN * 4)


def test_q4_k_m_of_a_gemma_sized_model_is_estimated_near_the_file_llama_cpp_writes():
    tensors = _gemma_3_270m()
    estimate = estimate_quantized_bytes(tensors, "Q4_K_M")
    by_hand = _gemma_q4_k_m_by_hand()
    assert by_hand < estimate < by_hand + 8_000_000  # the tensors as worked out, plus a 262k-token vocabulary
    # The Q4_K_M file a person exported was 261 MB; a flat 0.65 byte a weight said 174 MB.
    assert abs(estimate - 261e6) / 261e6 < 0.15
    weights = sum(math.prod(shape) for _, shape in tensors)
    assert abs(weights * QUANTIZATIONS["Q4_K_M"][1] - 261e6) / 261e6 > 0.3  # why the flat rate was wrong


def test_more_bits_for_the_output_and_half_the_value_and_down_matrices():
    layers = 8
    tensors = [("model.embed_tokens.weight", (32_000, 4096)), ("lm_head.weight", (32_000, 4096))]
    for i in range(layers):
        tensors += [
            (f"model.layers.{i}.self_attn.v_proj.weight", (4096, 4096)),
            (f"model.layers.{i}.mlp.down_proj.weight", (4096, 4096)),
        ]
    q4_k, q6_k, header = 144 / 256, 210 / 256, 8 * 1024 + 32_000 * 24
    matrix = 4096 * 4096
    more = 4  # of 8 layers: 0 (first eighth), 3 and 6 (every third between), 7 (last eighth)
    expected = (
        32_000 * 4096 * (q4_k + q6_k)  # embedding in Q4_K, the separate output matrix in Q6_K
        + 2 * matrix * (more * q6_k + (layers - more) * q4_k)
        + header
    )
    assert estimate_quantized_bytes(tensors, "Q4_K_M") == pytest.approx(expected, rel=1e-6)


@pytest.fixture(scope="module")
def k_quant_model(tmp_path_factory) -> tuple[Path, Path]:
    """A small Llama whose 256-wide rows take K-quants and whose 640-wide rows fall back: (folder, F16 GGUF)."""
    from tests.plugins.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("estimate")
    model = build_tiny_model(folder / "model", hidden=256, layers=8, intermediate=640)
    f16, _ = run_job(convert_hf_to_gguf(model, folder / "model.F16.gguf", outtype="f16"))
    return model, f16


@pytest.mark.parametrize("quantization", list(QUANTIZATIONS))
def test_the_estimate_from_the_model_folder_is_close_to_the_real_file(k_quant_model, tmp_path, quantization):
    model, f16 = k_quant_model
    out, events = run_job(quantize_gguf(f16, tmp_path / f"model.{quantization}.gguf", quantization))
    real = out.stat().st_size
    estimate = estimate_export_bytes(model, quantization)
    assert estimate is not None and abs(estimate - real) / real < 0.1
    # The quantizer's progress bar counts toward the same estimate (from the F16 file's tensors).
    assert abs(events[0].total - real) / real < 0.1


def test_a_folder_without_readable_weights_has_no_estimate(tmp_path):
    assert estimate_export_bytes(tmp_path, "Q4_K_M") is None
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    assert estimate_export_bytes(tmp_path, "Q4_K_M") is None

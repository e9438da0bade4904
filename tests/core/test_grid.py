"""Quantizing onto the base's grid (core/export/grid.py): the block layouts against gguf-py's dequantizer,
unbiased stochastic rounding, and a real file whose update llama.cpp's quantizer erases and the patch keeps."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from desktop_dpo.core.export.gguf import quantize_gguf
from desktop_dpo.core.export.grid import FORMATS, patch_onto_base_grid, round_onto_grid
from desktop_dpo.core.jobs import run_job

# Where each format keeps its f16 scale(s): random bytes there could be NaN or infinite.
SCALE_BYTES = {
    "Q8_0": [(0, 2)],
    "Q4_0": [(0, 2)],
    "Q5_0": [(0, 2)],
    "Q4_K": [(0, 2), (2, 4)],
    "Q6_K": [(208, 210)],
}


def random_blocks(name: str, n: int = 64, seed: int = 0) -> np.ndarray:
    """Valid blocks of a format: random bytes (every bit pattern is a valid block) with finite scales."""
    rng = np.random.default_rng(seed)
    fmt = FORMATS[name]
    blocks = rng.integers(0, 256, size=(n, fmt.block_bytes), dtype=np.uint8)
    for start, end in SCALE_BYTES[name]:
        scale = rng.uniform(0.001, 0.02, size=(n, 1)).astype(np.float16)
        blocks[:, start:end] = scale.view(np.uint8)
    return blocks


def reference_dequantize(name: str, blocks: np.ndarray) -> np.ndarray:
    return dequantize(blocks, GGMLQuantizationType[name]).reshape(blocks.shape[0], -1)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_unpack_then_pack_gives_the_same_bytes(name):
    blocks = random_blocks(name)
    q, _step = FORMATS[name].unpack(blocks)
    assert q.min() >= FORMATS[name].q_min and q.max() <= FORMATS[name].q_max
    assert np.array_equal(FORMATS[name].pack(blocks, q), blocks)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_one_integer_up_is_one_step_up_in_gguf_pys_dequantizer(name):
    fmt = FORMATS[name]
    blocks = random_blocks(name, seed=1)
    q, step = fmt.unpack(blocks)
    up = np.minimum(q + 1, fmt.q_max)
    before = reference_dequantize(name, blocks)
    after = reference_dequantize(name, fmt.pack(blocks, up))
    moved = up != q
    assert moved.mean() > 0.8
    np.testing.assert_allclose((after - before)[moved], step[moved], rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(after[~moved], before[~moved])


@pytest.mark.parametrize("name", ["Q4_K", "Q6_K", "Q8_0"])
def test_stochastic_rounding_carries_a_fraction_of_a_step_on_average(name):
    fmt = FORMATS[name]
    blocks = random_blocks(name, n=400, seed=2)
    q, step = fmt.unpack(blocks)
    base = reference_dequantize(name, blocks)
    rng = np.random.default_rng(0)
    # A uniform update of 0.3 of a step: a round-to-nearest quantizer would keep every weight where it is.
    new_blocks, changed = round_onto_grid(blocks, base, base + 0.3 * step, fmt, rng)
    moves = fmt.unpack(new_blocks)[0] - q
    room = q < fmt.q_max
    assert set(np.unique(moves[room])) <= {0, 1}
    assert moves[room].mean() == pytest.approx(0.3, abs=0.02)
    assert changed == np.count_nonzero(moves)
    # The headers (scales, minimums) are the base's, byte for byte: only the integers moved.
    assert np.array_equal(fmt.pack(new_blocks, q), blocks)
    # No update, no change.
    same, changed = round_onto_grid(blocks, base, base, fmt, rng)
    assert changed == 0 and np.array_equal(same, blocks)


def test_a_small_update_that_the_quantizer_erases_survives_on_the_base_grid(tiny_gguf, tmp_path):
    """The bug this module fixes, on a real file: the trained weights are the base's Q8_0 weights plus 0.3
    of a step. llama.cpp's quantizer rounds them back to the base; the patched file keeps the update."""
    base, _ = run_job(quantize_gguf(tiny_gguf, tmp_path / "base.Q8_0.gguf", "Q8_0"))
    merged = tmp_path / "merged.F32.gguf"
    shutil.copy(tiny_gguf, merged)
    base_tensors = {t.name: t for t in GGUFReader(base).tensors}
    steps = {}
    writable = GGUFReader(merged, "r+")
    for tensor in writable.tensors:
        start = base_tensors[tensor.name]
        if start.tensor_type.name != "Q8_0":
            continue
        blocks = np.asarray(start.data).reshape(-1, FORMATS["Q8_0"].block_bytes)
        _q, step = FORMATS["Q8_0"].unpack(blocks)
        steps[tensor.name] = step.reshape(tensor.data.shape)
        tensor.data[...] = (
            reference_dequantize("Q8_0", blocks).reshape(tensor.data.shape) + 0.3 * steps[tensor.name]
        )
    writable.data.flush()
    assert steps, "the tiny model has Q8_0 tensors"

    requantized, _ = run_job(quantize_gguf(merged, tmp_path / "requantized.Q8_0.gguf", "Q8_0"))
    patched = tmp_path / "patched.Q8_0.gguf"
    shutil.copy(requantized, patched)
    report = patch_onto_base_grid(patched, merged, base, seed=0)
    assert report.tensors_moved == len(steps)
    assert 0.25 < report.integers_changed / report.integers_total < 0.35

    def mean_shift(path) -> float:
        tensors = {t.name: t for t in GGUFReader(path).tensors}
        shifts = []
        for name, step in steps.items():
            now = dequantize(tensors[name].data, tensors[name].tensor_type)
            start = dequantize(base_tensors[name].data, base_tensors[name].tensor_type)
            shifts.append(((now - start) / step).mean())
        return float(np.mean(shifts))

    assert abs(mean_shift(requantized)) < 0.1  # most of the update is gone
    assert mean_shift(patched) == pytest.approx(0.3, abs=0.03)  # and here it is
    # Same tensor types and size as the quantizer's file: any llama.cpp loads it.
    assert patched.stat().st_size == requantized.stat().st_size
    from tests.plugins.llama_oracle import safe_llama

    llm = safe_llama(str(patched), n_ctx=64, verbose=False)
    try:
        assert isinstance(
            llm.create_completion("The", max_tokens=4, temperature=0.0)["choices"][0]["text"], str
        )
    finally:
        llm.close()


def test_a_file_that_is_not_the_quantized_model_is_refused(tiny_gguf, tmp_path):
    base, _ = run_job(quantize_gguf(tiny_gguf, tmp_path / "base.Q8_0.gguf", "Q8_0"))
    other = tmp_path / "other.gguf"
    shutil.copy(base, other)
    import gguf

    writer = gguf.GGUFWriter(tmp_path / "empty.gguf", "llama")
    writer.add_tensor("unrelated", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    before = other.read_bytes()
    with pytest.raises(ValueError, match="has no tensor"):
        patch_onto_base_grid(other, tmp_path / "empty.gguf", base)
    assert other.read_bytes() == before  # refused before anything was written


def test_each_file_type_goes_onto_the_grid_of_the_nearest_gguf_of_that_type_in_the_lineage(memory_store):
    from desktop_dpo.core.export.pipeline import grid_model

    def add(name: str, kind: str, dtype: str, parent: int | None) -> int:
        return memory_store.add_model(
            name=name,
            path=f"/m/{name}",
            kind=kind,
            fingerprint=name,
            info={"dtype": dtype},
            parent_model_id=parent,
        )

    demo = add("demo", "gguf", "Q4_K_M", None)  # the GGUF the lineage started from
    round_1 = add("round-1", "gguf", "Q8_0", demo)  # the file the app went on with
    round_2 = memory_store.get_model(add("round-2", "gguf", "Q8_0", round_1))
    # Round 3's Q4_K_M goes onto the demo's grid (every round's update carried), its Q8_0 onto round 2's.
    assert grid_model(memory_store, round_2, "Q4_K_M").name == "demo"
    assert grid_model(memory_store, round_2, "Q8_0").name == "round-2"
    # No GGUF of that type in the lineage: the base itself (its tensors of a matching type, if any).
    assert grid_model(memory_store, round_2, "Q5_K_M").name == "round-2"
    folder = memory_store.get_model(add("folder", "hf", "BF16", None))
    assert grid_model(memory_store, folder, "Q4_K_M").name == "folder"

"""Quantizing, writing metadata into, and describing exported GGUF files (tiny model, llama.cpp's tools)."""

from __future__ import annotations

import json
from collections import namedtuple

import pytest

from desktop_dpo.core.errors import ExportError, JobCancelled
from desktop_dpo.core.export import gguf as gguf_export
from desktop_dpo.core.export.gguf import (
    QUANTIZATIONS,
    STOP_STRINGS_KEY,
    convert_hf_to_gguf,
    llama_cpp_command,
    modelfile_text,
    quantize_gguf,
    read_gguf_metadata,
)
from desktop_dpo.core.jobs import CancelToken, run_job
from desktop_dpo.core.llm.gguf_info import read_gguf_info
from desktop_dpo.core.llm.templates import DEFAULT_STOP_STRINGS, DEFAULT_TEMPLATE


def _greedy(path, prompt: str, n: int = 12) -> str:
    from tests.plugins.llama_oracle import safe_llama

    llm = safe_llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False, seed=0)
    try:
        out = llm.create_completion(prompt, max_tokens=n, temperature=0.0)
        return out["choices"][0]["text"]
    finally:
        llm.close()


@pytest.mark.parametrize("quantization", ["F16", "Q8_0", "Q4_K_M"])
def test_quantized_file_loads_in_llama_cpp_and_reports_its_type(tiny_gguf, tmp_path, quantization):
    out, events = run_job(quantize_gguf(tiny_gguf, tmp_path / f"tiny.{quantization}.gguf", quantization))
    assert out.is_file() and not list(tmp_path.glob(".*partial*"))
    info = read_gguf_info(out)
    assert info["file_type"] == quantization
    assert out.stat().st_size < tiny_gguf.stat().st_size  # smaller than the F32 source
    assert isinstance(_greedy(out, "The quick brown fox"), str)
    assert events[-1].message.startswith(f"Wrote {out.name}")


def test_f16_quantization_keeps_greedy_output(tiny_gguf, tmp_path):
    out, _ = run_job(quantize_gguf(tiny_gguf, tmp_path / "tiny.F16.gguf", "F16"))
    prompt = "Paris is the capital of"
    assert _greedy(out, prompt) == _greedy(tiny_gguf, prompt)


def test_metadata_written_with_the_conversion_survives_quantization(tiny_model_dir, tmp_path):
    provenance = {
        "desktop_dpo.base_model": "tiny-llama",
        "desktop_dpo.base_fingerprint": "abc123",
        "desktop_dpo.run_id": 7,
        "desktop_dpo.pairs": 64,
        "desktop_dpo.settings": json.dumps({"beta": 0.1, "lr": 5e-5}),
        "desktop_dpo.created": "2026-12-01T07:00:00Z",
        "desktop_dpo.uses_default_template": True,
        STOP_STRINGS_KEY: json.dumps(DEFAULT_STOP_STRINGS),
        "desktop_dpo.tags": ["dpo", "lora"],
        "general.name": "tiny, aligned",  # replaces the name the converter writes
    }
    tagged, _ = run_job(
        convert_hf_to_gguf(
            tiny_model_dir,
            tmp_path / "tagged.gguf",
            outtype="f16",
            metadata=provenance,
            chat_template=DEFAULT_TEMPLATE,
        )
    )
    quantized, _ = run_job(quantize_gguf(tagged, tmp_path / "tagged.Q8_0.gguf", "Q8_0"))
    for path in (tagged, quantized):
        meta = read_gguf_metadata(path)  # the gguf package's reader
        assert meta["tokenizer.chat_template"] == DEFAULT_TEMPLATE  # the model's own template replaced
        assert json.loads(meta[STOP_STRINGS_KEY]) == list(DEFAULT_STOP_STRINGS)
        assert meta["desktop_dpo.tags"] == ["dpo", "lora"]
        assert meta["desktop_dpo.run_id"] == 7 and meta["desktop_dpo.pairs"] == 64
        assert meta["desktop_dpo.uses_default_template"] is True
        assert json.loads(meta["desktop_dpo.settings"]) == {"beta": 0.1, "lr": 5e-5}
        assert meta["desktop_dpo.base_fingerprint"] == "abc123"
        assert meta["general.name"] == "tiny, aligned"
        assert meta["general.architecture"] == "llama"
    # The extra fields change nothing else: the file answers exactly like a plain conversion.
    plain, _ = run_job(convert_hf_to_gguf(tiny_model_dir, tmp_path / "plain.gguf", outtype="f16"))
    assert _greedy(tagged, "Water boils at") == _greedy(plain, "Water boils at")


def test_an_empty_list_cannot_go_into_a_header_and_is_refused_before_converting(tiny_model_dir, tmp_path):
    with pytest.raises(ExportError, match="empty list"):
        run_job(convert_hf_to_gguf(tiny_model_dir, tmp_path / "x.gguf", metadata={"desktop_dpo.tags": []}))
    assert list(tmp_path.iterdir()) == []


def test_unknown_quantization_is_refused(tiny_gguf, tmp_path):
    with pytest.raises(ExportError, match="Q4_K_M"):
        run_job(quantize_gguf(tiny_gguf, tmp_path / "x.gguf", "Q3_WHATEVER"))


def test_stop_during_quantization_keeps_nothing(tiny_gguf, tmp_path):
    cancel = CancelToken()
    job = quantize_gguf(tiny_gguf, tmp_path / "tiny.Q4_K_M.gguf", "Q4_K_M", cancel=cancel)
    next(job)
    cancel.cancel()
    with pytest.raises(JobCancelled):
        for _ in job:
            pass
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_refused_before_writing(monkeypatch, tiny_gguf, tmp_path):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(gguf_export.shutil, "disk_usage", lambda _p: usage(10**9, 10**9, 4096))
    with pytest.raises(ExportError, match="Not enough free disk space"):
        run_job(quantize_gguf(tiny_gguf, tmp_path / "q.gguf", "Q8_0"))
    assert list(tmp_path.iterdir()) == []


def test_modelfile_for_a_base_model_spells_out_the_layout_and_stops():
    text = modelfile_text(
        "aligned.Q4_K_M.gguf", uses_default_template=True, stop_strings=list(DEFAULT_STOP_STRINGS)
    )
    assert text.startswith("FROM ./aligned.Q4_K_M.gguf\n")
    assert 'TEMPLATE """' in text and "User: {{ .Content }}" in text
    assert 'PARAMETER stop "\\nUser:"' in text and 'PARAMETER stop "\\nAssistant:"' in text


def test_modelfile_for_a_model_with_its_own_template_lets_ollama_read_it():
    text = modelfile_text("chat.Q8_0.gguf", uses_default_template=False, stop_strings=[])
    assert "TEMPLATE" not in text and "PARAMETER stop" not in text


def test_llama_cpp_command_line_names_the_file_and_uses_the_stored_template():
    assert (
        llama_cpp_command("a.gguf", uses_default_template=False, stop_strings=[])
        == "llama-cli -m a.gguf -cnv --jinja"
    )
    base = llama_cpp_command("b.gguf", uses_default_template=True, stop_strings=["\nUser:"])
    assert "--jinja" not in base and '-r "User:"' in base


def test_every_offered_quantization_is_a_llama_cpp_file_type():
    import llama_cpp

    for name, (constant, _size) in QUANTIZATIONS.items():
        assert isinstance(getattr(llama_cpp, constant), int), name


def test_the_header_puts_bos_where_transformers_does(tiny_gguf, tmp_path):
    """llama.cpp adds BOS to a prompt exactly when the model's tokenizer does (what training sees), even when
    the tokenizer's config lost the flag, as one saved by transformers 5 does."""
    from tests.e2e.test_instruct_loop import CHATML
    from tests.plugins.tiny_model import build_tiny_model

    assert (
        read_gguf_metadata(tiny_gguf)["tokenizer.ggml.add_bos_token"] is True
    )  # "<s>" in front, as transformers
    folder = build_tiny_model(tmp_path / "no-bos", chat=CHATML)  # Qwen2.5-style: no BOS
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.pop("add_bos_token")
    config_file.write_text(json.dumps(config), encoding="utf-8")
    out, _events = run_job(convert_hf_to_gguf(folder, tmp_path / "no-bos.gguf", outtype="f32"))
    assert read_gguf_metadata(out)["tokenizer.ggml.add_bos_token"] is False

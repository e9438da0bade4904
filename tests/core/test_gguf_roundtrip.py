"""The tiny model converts to GGUF with llama.cpp's converter, loads in llama.cpp, and both sides agree."""

from __future__ import annotations

import numpy as np
import pytest

from desktop_dpo.core.errors import ExportError, JobCancelled
from desktop_dpo.core.export.gguf import convert_hf_to_gguf
from desktop_dpo.core.jobs import CancelToken, Progress, run_job

TEXTS = [
    "Hello world",
    " leading space",
    "Café, naïve, Zürich, 日本語 and an emoji 🙂",
    "tabs\tand\nnew lines  double  spaces",
]


@pytest.fixture(scope="module")
def llama(tiny_gguf):
    from tests.plugins.llama_oracle import safe_llama

    model = safe_llama(model_path=str(tiny_gguf), n_ctx=256, n_threads=1, verbose=False, logits_all=True)
    yield model
    model.close()


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def test_conversion_reports_progress_and_writes_a_gguf(tiny_model_dir, tmp_path):
    out = tmp_path / "nested" / "tiny-f16.gguf"
    path, events = run_job(convert_hf_to_gguf(tiny_model_dir, out, outtype="f16"))
    assert path == out and out.read_bytes()[:4] == b"GGUF"
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].fraction == 1.0
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny-f16.gguf"]  # no temp or log file left


@pytest.mark.parametrize("text", TEXTS)
def test_both_sides_tokenize_plain_text_identically(llama, hf_tokenizer, text):
    hf_ids = hf_tokenizer(text)["input_ids"]
    assert hf_ids[0] == hf_tokenizer.bos_token_id
    assert llama.tokenize(text.encode("utf-8"), add_bos=True, special=True) == hf_ids


def test_both_sides_tokenize_the_chat_template_identically(llama, hf_tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is Paris? 🙂"},
        {"role": "assistant", "content": " In France."},
        {"role": "user", "content": "And Zürich?"},
    ]
    rendered = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    hf_ids = hf_tokenizer(rendered, add_special_tokens=False)["input_ids"]
    llama_ids = llama.tokenize(rendered.encode("utf-8"), add_bos=False, special=True)
    assert llama_ids == hf_ids
    # The template's markers are single special tokens on both sides, not spelled out.
    for marker in ("<|user|>", "<|assistant|>", "<|end|>", "<|system|>"):
        marker_id = hf_tokenizer.convert_tokens_to_ids(marker)
        assert marker_id in hf_ids
        assert llama.tokenize(marker.encode(), add_bos=False, special=True) == [marker_id]
    # The chat template travelled into the GGUF.
    assert "<|assistant|>" in llama.metadata["tokenizer.chat_template"]


def test_llama_cpp_logits_match_transformers(llama, hf_tokenizer, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    ids = hf_tokenizer("The quick brown fox jumps over the lazy dog")["input_ids"]
    with torch.no_grad():
        hf_logits = model(torch.tensor([ids])).logits[0].numpy()
    llama.reset()
    llama.eval(ids)
    cpp_logits = np.array(llama.scores[: len(ids)])
    assert (hf_logits.argmax(-1) == cpp_logits.argmax(-1)).all()
    assert np.abs(hf_logits - cpp_logits).max() < 1e-2


def test_stop_during_conversion_leaves_nothing(tiny_model_dir, tmp_path):
    token = CancelToken()
    out = tmp_path / "stopped.gguf"
    job = convert_hf_to_gguf(tiny_model_dir, out, outtype="f16", cancel=token)
    next(job)  # the converter process has started
    token.cancel()
    with pytest.raises(JobCancelled):
        run_job(job)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_weights_is_refused_with_a_reason(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ExportError, match=r"no \.safetensors weights"):
        run_job(convert_hf_to_gguf(tmp_path, tmp_path / "x.gguf"))


def test_not_enough_disk_space_is_refused_before_writing(tiny_model_dir, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(10**9, 10**9, 1024))
    with pytest.raises(ExportError, match="Not enough free disk space"):
        run_job(convert_hf_to_gguf(tiny_model_dir, tmp_path / "full.gguf"))
    assert list(tmp_path.iterdir()) == []

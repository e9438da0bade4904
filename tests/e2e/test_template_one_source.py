"""One template per model, everywhere: the template chosen for a model in Models is the one sampling, chat,
training and the exported GGUF use, with the same stop strings, all from ``template_choice``.

The tiny model ships its own ``<|user|>``…``<|end|>`` template; the person picks ChatML for it. Every part of
the loop must then render ChatML, stop at ``<|im_end|>``, and the export must carry the template the run was
trained with even after the choice changes again.
"""

from __future__ import annotations

import json
from pathlib import Path

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.chat import chat_reply
from desktop_dpo.core.dpo import tokenizing
from desktop_dpo.core.dpo.checkpoint import TRAINED_TEMPLATE_FILE
from desktop_dpo.core.dpo.train import drive_training
from desktop_dpo.core.export.gguf import STOP_STRINGS_KEY, read_gguf_metadata
from desktop_dpo.core.export.pipeline import ExportSettings, export_run, persist_export
from desktop_dpo.core.jobs import CancelToken, run_job
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.llm.hf import HfEngine
from desktop_dpo.core.llm.template_choice import (
    KNOWN_TEMPLATES,
    TemplateChoice,
    chosen_template,
    set_template_choice,
    template_for,
)
from desktop_dpo.core.llm.templates import render_text, stop_strings
from desktop_dpo.core.models import register_model
from desktop_dpo.core.sampling import engine_key, gguf_copy_path, sample_pair
from desktop_dpo.core.store import Store
from tests.e2e.test_export_loop import CONFIG, TOPICS

CHATML = KNOWN_TEMPLATES["chatml"].text
MESSAGES = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Tell me about owls."}]
SETTINGS = SamplingSettings(max_tokens=6, temperature=0.8)


def test_the_chosen_template_is_used_by_sampling_chat_training_and_export(tiny_model_dir, app_home, tmp_path):
    store = Store.open(app_home.data_dir / "db.sqlite")
    pool = EnginePool()
    try:
        base = register_model(store, tiny_model_dir, name="tiny-base")
        assert "<|end|>" in template_for(base)  # its own template, until the person picks another
        set_template_choice(store, base.id, TemplateChoice("known", name="chatml"))
        base = store.get_model(base.id)
        assert template_for(base) == CHATML

        # Sampling: the engine renders ChatML and stops where ChatML ends an answer.
        (a, b), _events = run_job(
            sample_pair(pool, base, None, app_home, MESSAGES, SETTINGS, seeds=(1, 2), n_ctx=128)
        )
        key = engine_key(gguf_copy_path(base, app_home), 128, CHATML)
        assert pool.loaded() == [key]
        with pool.acquire(key, lambda: None) as engine:
            assert engine.chat_template == CHATML  # what the model's child renders with
            bos, eos = engine.bos_text, engine.eos_text
            prompt = render_text(MESSAGES, CHATML, bos, eos)
            tokens, stops = engine.prompt_tokens(MESSAGES)
            assert tokens[-3:] == engine.tokenize(prompt, add_bos=False)[-3:]
        assert a.prompt_tokens == len(tokens)
        assert prompt.startswith("<s><|im_start|>system\nBe kind.<|im_end|>\n") or prompt.startswith(
            "<|im_start|>system\nBe kind.<|im_end|>\n"
        )
        assert stops == stop_strings(CHATML, bos, eos) and stops[0] == "<|im_end|>"
        assert a.settings["stop"] == b.settings["stop"] == stops

        # transformers' engine (a folder llama.cpp's converter cannot read) renders it the same way.
        with HfEngine(tiny_model_dir, n_ctx=128, chat_template=chosen_template(base)) as hf:
            assert hf.render(MESSAGES) == (prompt, stops)

        # Chat: the same engine, the same template and stop strings.
        reply, _ = run_job(chat_reply(pool, base, app_home, MESSAGES, SETTINGS, seed=3))
        assert reply.settings["stop"] == stops
        assert {k.rsplit("|", 1)[1] for k in pool.loaded()} == {key.rsplit("|", 1)[1]}  # both with ChatML

        # Training: the prompt training renders is the text the engine rendered, character for character.
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir), local_files_only=True)
        assert tokenizing.render_prompt_text(MESSAGES, tokenizer, template_for(base)) == prompt
        for i, topic in enumerate(TOPICS[:8]):
            store.record_pair(
                messages=[{"role": "user", "content": f"Tell me about {topic}."}],
                text_a=f"Gladly! {topic} are lovely.",
                text_b=f"No. {topic} bore me.",
                verdict="a" if i % 2 == 0 else "b",
                model_a_id=base.id,
            )
        run_id = store.create_run(
            name="chatml",
            base_model_id=base.id,
            config=CONFIG.to_dict(),
            comparison_ids=[v.comparison.id for v in store.comparison_views()],
            checkpoint_dir=str(tmp_path / "run"),
        )
        drive_training(store, run_id, cancel=CancelToken())
        run = store.get_run(run_id)
        assert run.status == "completed"
        assert (Path(run.adapter_path) / TRAINED_TEMPLATE_FILE).read_text(encoding="utf-8") == CHATML

        # The person picks another template after training: the export still writes what the run trained on.
        set_template_choice(store, base.id, TemplateChoice("known", name="llama3"))
        settings = ExportSettings(quantizations=("F16",), destination=str(tmp_path / "out"), parity=False)
        (tmp_path / "out").mkdir()
        finished, _ = run_job(export_run(store, run_id, settings, tmp_path / "out"))
        meta = read_gguf_metadata(finished.files[0].path)
        assert meta["tokenizer.chat_template"] == CHATML
        assert json.loads(meta[STOP_STRINGS_KEY]) == stops
        modelfile = Path(f"{finished.files[0].path}.Modelfile").read_text(encoding="utf-8")
        assert 'PARAMETER stop "<|im_end|>"' in modelfile
        # The aligned model is used with that template too, with no choice of its own.
        (aligned_id,) = persist_export(store, finished, register_as="F16")
        aligned = store.get_model(aligned_id)
        assert template_for(aligned) == CHATML
        reply, _ = run_job(chat_reply(pool, aligned, app_home, MESSAGES, SETTINGS, seed=3))
        assert reply.settings["stop"] == stops
    finally:
        pool.close_all()
        store.close()

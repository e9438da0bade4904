"""``desktop-dpo template``: see and choose a model's chat template from a terminal, as the Models view does."""

from __future__ import annotations

from desktop_dpo import cli
from desktop_dpo.core.llm.template_choice import KNOWN_TEMPLATES, template_for, template_status
from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store
from tests.core.test_models import write_gguf
from tests.test_cli import _paths


def registered(home, path, name):
    paths = _paths(home).ensure()
    with Store.open(paths.db_path) as store:
        return register_model(store, path, name=name)


def stored(home, model_id):
    with Store.open(_paths(home).db_path) as store:
        return store.get_model(model_id)


def test_a_gguf_without_template_is_given_one_and_back(home, lock_down_calls, tmp_path, capsys):
    model = registered(home, write_gguf(tmp_path / "bare.gguf", name="Bare"), "bare")
    assert cli.main(["--home", str(home), "template", "bare"]) == 0
    out = capsys.readouterr().out
    assert "has no chat template" in out and f"desktop-dpo template {model.id} --use NAME" in out

    assert cli.main(["--home", str(home), "template", str(model.id), "--use", "chatml"]) == 0
    out = capsys.readouterr().out
    assert "ChatML (chosen)" in out and "ends an answer with '<|im_end|>'" in out
    assert "<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant" in out
    assert template_for(stored(home, model.id)) == KNOWN_TEMPLATES["chatml"].text

    assert cli.main(["--home", str(home), "template", "bare", "--own"]) == 0
    assert template_status(stored(home, model.id)).needs_choice


def test_an_edit_from_a_file_is_checked_before_it_is_stored(home, lock_down_calls, tmp_path, capsys):
    model = registered(home, write_gguf(tmp_path / "bare.gguf", name="Bare"), "bare")
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}<|turn|>{% endfor %}", encoding="utf-8")
    assert cli.main(["--home", str(home), "template", "bare", "--file", str(broken)]) == cli.EXIT_FAILED
    assert "leaves out the conversation's text" in capsys.readouterr().err
    assert template_status(stored(home, model.id)).needs_choice  # nothing stored
    good = tmp_path / "good.jinja"
    good.write_text("{% for m in messages %}### {{ m['content'] }}\n{% endfor %}### ", encoding="utf-8")
    assert cli.main(["--home", str(home), "template", "bare", "--file", str(good)]) == 0
    assert template_for(stored(home, model.id)) == good.read_text(encoding="utf-8")
    assert cli.main(["--home", str(home), "template", "nobody"]) == cli.EXIT_FAILED
    assert "No registered model is called 'nobody'" in capsys.readouterr().err

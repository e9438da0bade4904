"""Bad model files and chat templates: each is refused with a sentence the person can act on, and nothing
is registered or written. ``CASES`` feeds the catalogue table of bad inputs (what was done -> message)."""

from __future__ import annotations

import contextlib
import json
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desktop_dpo.core.cluster import ClusterError, import_adapter
from desktop_dpo.core.errors import DesktopDpoError, ExportError, ModelError
from desktop_dpo.core.export.merge import plan_merge
from desktop_dpo.core.llm.gguf_info import read_gguf_info
from desktop_dpo.core.llm.templates import ChatTemplateError, render_prompt
from desktop_dpo.core.models import register_model
from desktop_dpo.core.store import Store
from tests.core.test_models import write_gguf, write_hf_folder, write_safetensors

CASES: list[tuple[str, str]] = [
    (
        "Adds a GGUF whose metadata key claims to be 2^64-1 bytes long",
        "bad.gguf: the file's header is damaged: it gives a text 18,446,744,073,709,551,615 bytes long, more "
        "than the 8 left. Download or copy it again.",
    ),
    (
        "Adds a GGUF with an array nested 20,000 deep",
        "bad.gguf: the file's header is damaged: it nests arrays more than 8 deep. Download or copy it again.",
    ),
    (
        "Imports an adapter whose safetensors header claims 2^62 bytes",
        "The adapter in .../adapter is damaged: .../adapter_model.safetensors (... bytes) cannot be read whole "
        "(... header too large). It was probably cut short while being written or copied; copy or train it "
        "again. Nothing was imported.",
    ),
    (
        'Imports an adapter whose adapter_config.json has r: "four" (or r: 0, rank_pattern: "q_proj", '
        'lora_dropout: "x")',
        'The adapter\'s settings in .../adapter_config.json are damaged: r is "four", but it must be a whole '
        "number from 1 (the LoRA rank). Copy the adapter folder again from where it was trained.",
    ),
    (
        "Adds a model folder whose chat_template.jinja is not UTF-8",
        "m cannot be read: its chat_template.jinja is not UTF-8 text (byte 5 is not valid UTF-8). Save the "
        "template as UTF-8, or download or copy the model again.",
    ),
    (
        "Adds a model folder whose shard index points at ../../../../etc/passwd (or /etc/passwd)",
        "model.safetensors.index.json in m names a weight file outside the model folder "
        "('../../../../etc/passwd'). A model's files may only name files in its own folder; download the "
        "model again from a source you trust.",
    ),
    (
        "Chats with a model whose template runs two nested range(100000) loops",
        "The model's chat template was stopped after 1,000,000 steps: it loops far more than rendering a "
        "conversation needs. Choose another model, or remove the template so the plain User:/Assistant: "
        "layout is used.",
    ),
    (
        "Chats with a model whose template prints 'x' * 300000000",
        "The model's chat template was stopped: it builds more than 1,000,008 characters of text for this "
        "conversation. Choose another model, or remove the template so the plain User:/Assistant: layout "
        "is used.",
    ),
]

CONVERSATION = [{"role": "user", "content": "Hi"}]
_ABSURD_LENGTH = 2**64 - 1


# ---------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------


def _gguf_bytes(kv_count: int, tensor_count: int, body: bytes) -> bytes:
    """A GGUF v3 header (little-endian) followed by ``body``: the key/value section and tensor table."""
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count) + body


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _registered_nothing(store: Store) -> bool:
    return store.list_models() == []


@pytest.fixture
def store():
    s = Store.open(":memory:")
    yield s
    s.close()


# ---------------------------------------------------------------------------------------------------------
# GGUF header
# ---------------------------------------------------------------------------------------------------------


def test_adding_a_gguf_with_an_absurd_name_length_says_the_header_is_damaged(store, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_gguf_bytes(1, 0, struct.pack("<Q", _ABSURD_LENGTH) + b"general."))
    with pytest.raises(ModelError) as caught:
        register_model(store, bad)
    assert str(caught.value) == CASES[0][1]
    assert _registered_nothing(store)


def test_adding_a_gguf_with_an_absurd_tensor_name_length_says_the_header_is_damaged(store, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_gguf_bytes(0, 1, struct.pack("<Q", _ABSURD_LENGTH) + b"x" * 32))
    with pytest.raises(ModelError, match="the file's header is damaged: it gives a text"):
        register_model(store, bad)
    assert _registered_nothing(store)


def test_adding_a_gguf_with_an_array_nested_20000_deep_says_the_header_is_damaged(store, tmp_path):
    bad = tmp_path / "bad.gguf"
    nested = struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 20_000 + struct.pack("<IQ", 4, 0)
    bad.write_bytes(_gguf_bytes(1, 0, _gguf_string("general.nested") + nested))
    with pytest.raises(ModelError) as caught:
        register_model(store, bad)
    assert str(caught.value) == CASES[1][1]
    assert _registered_nothing(store)


def test_adding_a_gguf_with_an_array_longer_than_the_file_says_the_header_is_damaged(store, tmp_path):
    bad = tmp_path / "bad.gguf"
    array = struct.pack("<IIQ", 9, 10, _ABSURD_LENGTH)  # 2^64-1 uint64 values in a few bytes
    bad.write_bytes(_gguf_bytes(1, 0, _gguf_string("tokenizer.ggml.scores") + array))
    with pytest.raises(ModelError, match="an array of 18,446,744,073,709,551,615 items"):
        register_model(store, bad)
    assert _registered_nothing(store)


def test_adding_a_gguf_whose_tensor_has_billions_of_dimensions_says_the_header_is_damaged(store, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_gguf_bytes(0, 1, _gguf_string("w") + struct.pack("<I", 2**32 - 1) + b"\0" * 64))
    with pytest.raises(ModelError, match="a tensor has 4,294,967,295 dimensions"):
        register_model(store, bad)
    assert _registered_nothing(store)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(counts=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)), body=st.binary(max_size=512))
def test_reading_random_bytes_after_a_gguf_magic_raises_only_model_errors(tmp_path, counts, body):
    file = tmp_path / "fuzz.gguf"
    file.write_bytes(_gguf_bytes(counts[1], counts[0], body) + b"\0" * 8)
    with contextlib.suppress(ModelError):
        read_gguf_info(file)


@pytest.fixture(scope="module")
def valid_gguf(tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("gguf")
    return write_gguf(folder / "ok.gguf", chat_template="{{ messages }}", quantized=True).read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_reading_a_mutated_gguf_header_raises_only_model_errors(tmp_path, valid_gguf, data):
    raw = bytearray(valid_gguf)
    header_end = min(len(raw), 1024)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(8, header_end - 1))
        kind = data.draw(st.sampled_from(["byte", "ff", "00"]))
        width = data.draw(st.sampled_from([1, 4, 8]))
        fill = {"byte": bytes([data.draw(st.integers(0, 255))]) * width, "ff": b"\xff" * width}.get(
            kind, b"\0" * width
        )
        raw[position : position + width] = fill
    file = tmp_path / "mutated.gguf"
    file.write_bytes(bytes(raw[: data.draw(st.integers(24, len(raw)))]))
    with contextlib.suppress(ModelError):
        read_gguf_info(file)


# ---------------------------------------------------------------------------------------------------------
# Adapters
# ---------------------------------------------------------------------------------------------------------

_Q = "model.layers.0.self_attn.q_proj"


def _base_and_adapter(tmp_path: Path, config: dict | None = None) -> tuple[Path, Path]:
    base = write_hf_folder(tmp_path / "m", tensors={f"{_Q}.weight": ("BF16", [8, 8])})
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    settings = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], **(config or {})}
    (adapter / "adapter_config.json").write_text(json.dumps(settings))
    write_safetensors(
        adapter / "adapter_model.safetensors",
        {
            f"base_model.model.{_Q}.lora_A.weight": ("F32", [2, 8]),
            f"base_model.model.{_Q}.lora_B.weight": ("F32", [8, 2]),
        },
    )
    return base, adapter


@pytest.fixture
def home_store(app_home):
    s = Store.open(app_home.db_path)
    yield s
    s.close()


def _nothing_imported(store: Store, app_home) -> bool:
    runs_dir = app_home.runs_dir
    return store.list_runs() == [] and (not runs_dir.exists() or not any(runs_dir.iterdir()))


def test_a_well_formed_adapter_fits_the_hand_built_base(tmp_path):
    base, adapter = _base_and_adapter(tmp_path)
    assert set(plan_merge(base, adapter).updates) == {f"{_Q}.weight"}


def test_importing_an_adapter_with_a_2_62_header_length_says_the_weights_cannot_be_read(
    home_store, app_home, tmp_path
):
    base, adapter = _base_and_adapter(tmp_path)
    model = register_model(home_store, base)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(struct.pack("<Q", 2**62) + weights.read_bytes()[8:])
    with pytest.raises(ClusterError) as caught:
        import_adapter(home_store, app_home, adapter, model.id)
    message = str(caught.value)
    assert "adapter_model.safetensors" in message and "cannot be read whole" in message
    assert "header too large" in message and "Nothing was imported." in message
    assert _nothing_imported(home_store, app_home)


def test_importing_an_adapter_cut_short_says_it_is_incomplete(home_store, app_home, tmp_path):
    base, adapter = _base_and_adapter(tmp_path)
    model = register_model(home_store, base)
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-20])
    with pytest.raises(ClusterError, match=r"is damaged: .* cannot be read whole .*Nothing was imported\."):
        import_adapter(home_store, app_home, adapter, model.id)
    assert _nothing_imported(home_store, app_home)


@pytest.mark.parametrize(
    ("field", "value", "wanted"),
    [
        ("r", "four", "a whole number from 1"),
        ("r", 0, "a whole number from 1"),
        ("rank_pattern", "q_proj", "a mapping of module names to whole numbers from 1"),
        ("lora_dropout", "x", "a number from 0 up to (not including) 1"),
        ("lora_alpha", None, "a number above 0"),
        ("target_modules", 7, "a module name or a list of module names"),
    ],
)
def test_importing_an_adapter_with_a_nonsense_setting_names_the_field(
    home_store, app_home, tmp_path, field, value, wanted
):
    base, adapter = _base_and_adapter(tmp_path, {field: value})
    model = register_model(home_store, base)
    with pytest.raises(ClusterError) as caught:
        import_adapter(home_store, app_home, adapter, model.id)
    message = str(caught.value)
    assert f"are damaged: {field} is {json.dumps(value)}, but it must be {wanted}" in message
    assert "Copy the adapter folder again" in message
    assert _nothing_imported(home_store, app_home)


def test_exporting_with_an_adapter_whose_rank_is_four_in_words_names_the_field(tmp_path):
    base, adapter = _base_and_adapter(tmp_path, {"r": "four"})
    with pytest.raises(ExportError) as caught:
        plan_merge(base, adapter)
    assert str(caught.value) == (
        f'The adapter\'s settings in {adapter / "adapter_config.json"} are damaged: r is "four", but it must '
        "be a whole number from 1 (the LoRA rank). Copy the adapter folder again from where it was trained."
    )


# ---------------------------------------------------------------------------------------------------------
# Model folders
# ---------------------------------------------------------------------------------------------------------


def test_adding_a_model_whose_chat_template_is_not_utf8_says_so(store, tmp_path):
    folder = write_hf_folder(tmp_path / "m")
    (folder / "chat_template.jinja").write_bytes(b"{{ x \xff\xfe }}")
    with pytest.raises(ModelError) as caught:
        register_model(store, folder)
    assert str(caught.value) == CASES[4][1]
    assert _registered_nothing(store)


@pytest.mark.parametrize("target", ["../../../../etc/passwd", "/etc/passwd", "sub/../../outside.safetensors"])
def test_adding_a_model_whose_shard_index_points_outside_its_folder_is_refused(store, tmp_path, target):
    folder = write_hf_folder(tmp_path / "m")
    index = {"metadata": {}, "weight_map": {"embed.weight": "model.safetensors", "norm.weight": target}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError) as caught:
        register_model(store, folder)
    assert str(caught.value) == CASES[5][1].replace("'../../../../etc/passwd'", repr(target))
    assert _registered_nothing(store)


def test_merging_into_a_base_whose_shard_index_points_outside_its_folder_is_refused(tmp_path):
    base, adapter = _base_and_adapter(tmp_path)
    index = {"weight_map": {f"{_Q}.weight": "../../../../etc/passwd"}}
    (base / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ExportError, match="names a weight file outside the model folder"):
        plan_merge(base, adapter)


# ---------------------------------------------------------------------------------------------------------
# Chat templates
# ---------------------------------------------------------------------------------------------------------


def test_chatting_with_a_template_of_two_nested_100000_loops_stops_with_a_message():
    template = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(ChatTemplateError) as caught:
        render_prompt(CONVERSATION, template)
    assert time.monotonic() - started < 10
    assert str(caught.value) == CASES[6][1]


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x' * 300000000 }}",
        "{{ 300000000 * 'x' }}",
        "{{ 'x' | center(300000000) }}",
        "{{ 'x'.ljust(300000000) }}",
        "{% for i in range(100000) %}{{ 'a long line of template text' }}{% endfor %}",
        "{{ 7 ** 1000000000 }}",
    ],
)
def test_chatting_with_a_template_that_builds_huge_text_stops_with_a_message(template):
    with pytest.raises(ChatTemplateError) as caught:
        render_prompt(CONVERSATION, template)
    assert str(caught.value) == CASES[7][1]


def test_a_long_conversation_still_renders_beyond_the_minimum_output_budget():
    long = [{"role": "user", "content": "y" * 1_500_000}]
    text, _stops = render_prompt(
        long, "{% for m in messages %}{{ m['content'] }}{% endfor %}{{ range(3)|list }}"
    )
    assert len(text) == 1_500_000 + len("[0, 1, 2]")


_PIECES = st.sampled_from(
    [
        "{{ ",
        " }}",
        "{% for m in messages %}",
        "{% endfor %}",
        "{% if ",
        " %}",
        "{% endif %}",
        "{% set x = ",
        "range(",
        ")",
        "100000",
        "3",
        "'x'",
        " * ",
        " ** ",
        " ~ ",
        " + ",
        "m['content']",
        "messages",
        "|length",
        "|center(",
        "|join",
        "raise_exception('no')",
        "loop.index",
        "{% macro f() %}{{ f() }}{% endmacro %}",
        "f()",
        "text ",
        "{{",
        "}}",
    ]
)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=14))
def test_rendering_random_templates_raises_only_the_apps_errors(pieces):
    try:
        text, _stops = render_prompt(CONVERSATION, "".join(pieces))
    except DesktopDpoError:
        return
    assert isinstance(text, str)

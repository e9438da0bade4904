"""What every engine shares: streamed text, seeds, the room for an answer, the Engine protocol and EngineBase.

The three engines (llama.cpp in process, llama.cpp in a supervised child, transformers) are held to
:class:`~desktop_dpo.core.llm.generation.Engine` here, by signature and by the attributes an unloaded engine
has: a call written against the protocol (``sampling``, ``chat``, ``evaluate``) works on each of them. The
code they share is :class:`~desktop_dpo.core.llm.engine_base.EngineBase` and its helpers.
"""

from __future__ import annotations

import ast
import inspect
import random
import subprocess
import sys
import textwrap
import threading
import types
import typing
from pathlib import Path

import pytest

from desktop_dpo.config import SamplingSettings
from desktop_dpo.core.errors import DesktopDpoError, ModelError
from desktop_dpo.core.jobs import CancelToken
from desktop_dpo.core.llm.engine_base import (
    EngineBase,
    GenerationRequest,
    ResponseRun,
    ResponseStream,
    ResponseText,
    StopStringFilter,
    Utf8Stream,
    claim_engine,
    response_room,
)
from desktop_dpo.core.llm.generation import (
    LARGEST_SEED,
    MAX_SEED,
    Engine,
    GenerationResult,
    ResponseFinished,
    TokenEvent,
    check_seed,
    draw_seed,
    draw_seed_pair,
    pair_seeds,
    seed_source,
)
from desktop_dpo.core.llm.hf import HfEngine
from desktop_dpo.core.llm.llamacpp import LlamaCppEngine
from desktop_dpo.core.llm.supervised import SupervisedLlamaEngine
from desktop_dpo.core.llm.templates import turn_end_token
from tests.plugins.tiny_model import CHAT_TEMPLATE

# ---------------------------------------------------------------------------------------------------------
# Text assembly
# ---------------------------------------------------------------------------------------------------------


def test_utf8_characters_split_across_tokens_come_out_whole():
    text = "né € 😀!"
    data = text.encode("utf-8")
    stream = Utf8Stream()
    out = [stream.feed(data[i : i + 1]) for i in range(len(data))]  # one byte per "token"
    assert "".join(out) == text
    # While a character's bytes are incomplete nothing is shown, and never half a character.
    euro = data.index("€".encode())
    assert out[euro : euro + 3] == ["", "", "€"]
    assert all("\ufffd" not in piece for piece in out)


def test_invalid_bytes_become_a_replacement_mark_without_swallowing_good_text():
    stream = Utf8Stream()
    assert stream.feed(b"a\x80b") == "a\ufffdb"
    assert stream.feed(b"\xe2\x82") == "" and stream.has_partial
    assert stream.feed(b"\xac") == "€" and not stream.has_partial


def test_stop_string_spanning_tokens_is_cut_and_never_shown():
    stops = StopStringFilter(["\nUser:", "\nAssistant:"])
    shown = [stops.feed(piece) for piece in [" Hello", " there.\nUs", "er: and more"]]
    assert shown == [" Hello", " there.", ""]
    assert stops.stopped
    assert stops.feed("ignored") == ""


def test_text_that_only_looked_like_a_stop_string_is_released():
    stops = StopStringFilter(["\nUser:"])
    assert stops.feed("Hi\nU") == "Hi"  # "\nU" might begin "\nUser:"
    assert stops.feed("nder the sea") == "\nUnder the sea"
    assert stops.feed(" end\nUse") == " end"
    assert stops.flush() == "\nUse"  # the response ended another way: the held text is the person's
    assert not stops.stopped


def test_earliest_stop_string_wins():
    stops = StopStringFilter(["END", "\n"])
    assert stops.feed("one\ntwo END") == "one"


def test_response_text_with_stop_string_and_multibyte_characters():
    text = ResponseText(["€€"])
    data = "prix: 5€ puis €€ fin".encode()
    shown = [text.add(data[i : i + 2]) for i in range(0, len(data), 2)]
    assert "".join(shown) == "prix: 5€ puis "
    assert text.text == "prix: 5€ puis " and text.stopped


# ---------------------------------------------------------------------------------------------------------
# Seeds and room
# ---------------------------------------------------------------------------------------------------------


def test_a_pair_never_gets_the_same_seed_twice():
    draws = iter([7, 7, 7, 9])  # a source that repeats itself
    assert pair_seeds(None, lambda: next(draws)) == [7, 9]
    assert pair_seeds((3, 3), lambda: 1) == [3, 3]  # seeds the caller chose are kept as given
    with pytest.raises(ValueError, match="exactly two seeds"):
        pair_seeds((1, 2, 3), lambda: 1)


def test_seeded_draws_are_a_reproducible_series_of_column_sized_seeds():
    first = draw_seed_pair(random.Random(5))
    assert first == draw_seed_pair(random.Random(5))
    assert first[0] != first[1]
    assert draw_seed(random.Random(5)) == first[0]  # one series: the pair starts where a single draw does
    assert all(0 <= draw_seed() < MAX_SEED <= 2**31 - 1 for _ in range(50))


def test_a_seed_outside_the_samplers_range_is_refused():
    assert check_seed(LARGEST_SEED) == LARGEST_SEED
    assert check_seed(0) == 0
    for bad in (-1, LARGEST_SEED + 1):  # 0xFFFFFFFF would mean "random" to llama.cpp
        with pytest.raises(ValueError, match="seed must be between 0 and 4294967294"):
            check_seed(bad)


def test_the_answer_gets_the_room_the_prompt_leaves():
    assert response_room(n_prompt=10, n_ctx=100, max_tokens=50) == 50
    assert response_room(n_prompt=90, n_ctx=100, max_tokens=50) == 10
    with pytest.raises(ModelError, match="fills the model's context of 100"):
        response_room(n_prompt=100, n_ctx=100, max_tokens=50)
    with pytest.raises(DesktopDpoError, match="The prompt is empty"):
        response_room(n_prompt=0, n_ctx=100, max_tokens=50)
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        response_room(n_prompt=1, n_ctx=100, max_tokens=0)


# ---------------------------------------------------------------------------------------------------------
# The Engine protocol
# ---------------------------------------------------------------------------------------------------------

ENGINES = {
    LlamaCppEngine: lambda folder: LlamaCppEngine(folder / "model.gguf"),
    SupervisedLlamaEngine: lambda folder: SupervisedLlamaEngine(folder / "model.gguf"),
    HfEngine: lambda folder: HfEngine(folder),
}
# What typing.Protocol adds to a protocol class; everything else in its namespace is a member.
_PROTOCOL_MACHINERY = {"__init__", "__subclasshook__", "__parameters__", "__abstractmethods__"}


def protocol_methods(protocol: type) -> dict[str, object]:
    """The methods and properties a protocol declares (``__enter__``/``__exit__`` included)."""
    return {
        name: value
        for name, value in vars(protocol).items()
        if (callable(value) or isinstance(value, property))
        and (not name.startswith("_") or name in ("__enter__", "__exit__"))
        and name not in _PROTOCOL_MACHINERY
    }


def _accepts(hint: object, value: object) -> bool:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return isinstance(value, tuple(type(None) if a is None else a for a in allowed))


def _signature_problems(name: str, declared: object, implemented: object, cls: type) -> list[str]:
    if not callable(implemented):
        return [f"{name} is not a method"]
    want, have = inspect.signature(declared), inspect.signature(implemented)
    want_hints, have_hints = typing.get_type_hints(declared), typing.get_type_hints(implemented)
    problems = []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if [p for p, q in want.parameters.items() if q.kind in positional] != [
        p for p, q in have.parameters.items() if q.kind in positional
    ][: sum(q.kind in positional for q in want.parameters.values())]:
        problems.append(f"{name}: positional parameters in another order or missing")
    for param, spec in want.parameters.items():
        got = have.parameters.get(param)
        if got is None:
            problems.append(f"{name}: no parameter {param!r}")
            continue
        if got.kind != spec.kind:
            problems.append(f"{name}: {param!r} is {got.kind.description}, not {spec.kind.description}")
        if got.default != spec.default:
            problems.append(f"{name}: {param!r} defaults to {got.default!r}, not {spec.default!r}")
        if param != "self" and have_hints.get(param) != want_hints.get(param):
            problems.append(f"{name}: {param!r} is {have_hints.get(param)}, not {want_hints.get(param)}")
    for param, got in have.parameters.items():
        optional = got.default is not inspect.Parameter.empty or got.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )
        if param not in want.parameters and not optional:
            problems.append(f"{name}: extra parameter {param!r} without a default")
    wanted_return = cls if want_hints.get("return") is Engine else want_hints.get("return")
    if have_hints.get("return") != wanted_return:
        problems.append(f"{name}: returns {have_hints.get('return')}, not {wanted_return}")
    return problems


def engine_problems(cls: type, engine: object) -> list[str]:
    """How ``cls`` (and ``engine``, one of it, not loaded) differs from :class:`Engine`; [] = none."""
    problems = []
    for name, hint in typing.get_type_hints(Engine).items():
        if not hasattr(engine, name):
            problems.append(f"no attribute {name}")
        elif not _accepts(hint, getattr(engine, name)):
            problems.append(f"{name} is {getattr(engine, name)!r}, not {hint}")
    for name, declared in protocol_methods(Engine).items():
        implemented = inspect.getattr_static(cls, name, None)
        if isinstance(declared, property):
            if not isinstance(implemented, property):
                problems.append(f"{name} is not a property")
            elif typing.get_type_hints(implemented.fget).get("return") is not bool or getattr(engine, name):
                problems.append(f"{name} is not a bool that is False before loading")
            continue
        problems += _signature_problems(name, declared, getattr(cls, name, None), cls)
    return problems


def test_the_protocol_lists_what_the_app_calls():
    assert set(typing.get_type_hints(Engine)) == {"n_ctx", "chat_template", "bos_text", "eos_text"}
    assert set(protocol_methods(Engine)) == {
        "loaded",
        "load",
        "close",
        "__enter__",
        "__exit__",
        "draw_seed",
        "tokenize",
        "prompt_tokens",
        "generate",
        "generate_pair",
    }


def test_the_protocol_is_an_interface_and_engine_base_implements_its_shared_calls():
    for name, declared in protocol_methods(Engine).items():
        function = declared.fget if isinstance(declared, property) else declared
        (definition,) = ast.parse(textwrap.dedent(inspect.getsource(function))).body
        *docstring, last = definition.body
        assert len(docstring) <= 1, f"Engine.{name} has code"
        assert isinstance(last, ast.Expr) and isinstance(last.value, ast.Constant), f"Engine.{name} has code"
        assert last.value.value is Ellipsis, f"Engine.{name}'s body is not ..."
    for name in ("draw_seed", "generate", "generate_pair"):
        assert _signature_problems(name, getattr(Engine, name), getattr(EngineBase, name), EngineBase) == []
    assert all(issubclass(cls, EngineBase) for cls in ENGINES)


def test_the_shared_types_load_without_the_engines_shared_code():
    code = "import sys, desktop_dpo.core.llm.generation\nprint('desktop_dpo.core.llm.engine_base' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("cls", list(ENGINES), ids=lambda cls: cls.__name__)
def test_every_engine_has_the_engine_protocol(cls: type, tmp_path: Path):
    engine = ENGINES[cls](tmp_path)
    assert engine_problems(cls, engine) == []
    with engine as entered:  # an engine never loaded closes without complaint
        assert entered is engine


def test_an_engine_that_drifted_from_the_protocol_is_named_in_full(tmp_path: Path):
    class Drifted(LlamaCppEngine):
        def generate(self, prompt, settings=None, seed=None, stop=(), cancel=None):
            raise NotImplementedError

        def tokenize(self, text: str, *, add_bos: bool = True, parse_special: bool = False) -> list[int]:
            raise NotImplementedError

        def draw_seed(self, rng: random.Random) -> int:
            raise NotImplementedError

        prompt_tokens = None

    engine = Drifted(tmp_path / "model.gguf")
    del engine.bos_text
    engine.n_ctx = "4096"
    problems = engine_problems(Drifted, engine)
    assert "no attribute bos_text" in problems
    assert "n_ctx is '4096', not <class 'int'>" in problems
    assert "prompt_tokens is not a method" in problems
    assert "generate: 'seed' is positional or keyword, not keyword-only" in problems
    assert "generate: no parameter 'ignore_eos'" in problems
    assert "tokenize: 'add_bos' defaults to True, not None" in problems
    assert "tokenize: 'add_bos' is <class 'bool'>, not bool | None" in problems
    assert "draw_seed: extra parameter 'rng' without a default" in problems


# ---------------------------------------------------------------------------------------------------------
# What the engines share: generate / generate_pair on an engine's _run, and one job's bookkeeping
# ---------------------------------------------------------------------------------------------------------


class ScriptedEngine(EngineBase):
    """An engine whose model writes the same token pieces for every response: the shared part, alone."""

    n_ctx = 64
    chat_template = None
    bos_text = ""
    eos_text = ""

    def __init__(self, pieces: list[bytes], seed: int | None = None):
        self.pieces = pieces
        self._seed_source = seed_source(seed)
        self._busy = threading.Lock()

    def prompt_tokens(self, prompt: object) -> tuple[list[int], list[str]]:
        return [1, 2, 3], ["<end>"]

    def _run(self, request: GenerationRequest):
        claim_engine(self._busy)
        try:
            run = ResponseRun.begin(self, request)
            streams = [
                ResponseStream(index=k, seed=seed, text=ResponseText(run.stops))
                for k, seed in enumerate(request.seeds)
            ]
            run.prompt_seconds = 0.0
            live = list(streams)
            for piece in self.pieces:
                for stream in live:
                    stream.n_tokens += 1
                    stream.add(piece)
                    if stream.text.stopped:
                        stream.end("stop")
                    elif stream.n_tokens >= run.max_new:
                        stream.end("length")
                yield from run.events(live, 0.0)
                live = [stream for stream in live if not stream.finish_reason]
                if live and request.cancel.cancelled:
                    yield from run.cancel(live)
                    live = []
                if not live:
                    break
            for stream in live:  # the model ran out of pieces: an end token
                stream.end("stop")
            yield from run.events(live, 0.0)
            return [run.result(stream) for stream in streams]
        finally:
            self._busy.release()


def run_job(job) -> tuple[list[object], object]:
    events = []
    while True:
        try:
            events.append(next(job))
        except StopIteration as done:
            return events, done.value


def test_generate_streams_text_cut_at_the_templates_stop_string_and_records_how():
    engine = ScriptedEngine([b"Hel", b"lo \xe2\x82", b"\xac <e", b"nd> more"])
    events, result = run_job(engine.generate("Hi", seed=5, stop=["STOP"]))
    assert isinstance(result, GenerationResult)
    assert (result.text, result.finish_reason, result.seed) == ("Hello € ", "stop", 5)
    assert (result.prompt_tokens, result.completion_tokens) == (3, 4)
    assert result.settings == {**SamplingSettings().to_dict(), "stop": ["<end>", "STOP"]}
    texts = [e.text for e in events if isinstance(e, TokenEvent)]
    assert "".join(texts) == "Hello € " and "\ufffd" not in "".join(texts)
    assert events[-1] == ResponseFinished(0, result)


def test_generate_pair_draws_two_different_seeds_from_the_engines_series():
    pieces = [b"a", b"b", b"c"]
    events, (first, second) = run_job(ScriptedEngine(pieces, seed=7).generate_pair("Hi"))
    again = run_job(ScriptedEngine(pieces, seed=7).generate_pair("Hi"))[1]
    assert first.seed != second.seed
    assert (first.seed, second.seed) == (again[0].seed, again[1].seed)
    assert {e.seq for e in events} == {0, 1}
    assert [e.seq for e in events if isinstance(e, ResponseFinished)] == [0, 1]


def test_length_cancel_and_bad_seeds_end_a_job_as_every_engine_does():
    engine = ScriptedEngine([b"a", b"b", b"c", b"d"])
    settings = SamplingSettings(max_tokens=2)
    _, result = run_job(engine.generate("Hi", settings, seed=1, ignore_eos=True))
    assert (result.text, result.finish_reason, result.settings["ignore_eos"]) == ("ab", "length", True)

    cancel = CancelToken()
    job = engine.generate("Hi", seed=1, cancel=cancel)
    assert next(job) == TokenEvent(0, "a", 1)
    cancel.cancel()
    events, result = run_job(job)
    # Stopped at the next token boundary: the text so far is kept.
    assert (result.text, result.finish_reason, result.completion_tokens) == ("a", "cancelled", 1)
    assert events == [ResponseFinished(0, result)]

    with pytest.raises(ValueError, match="seed must be between"):
        next(engine.generate("Hi", seed=-1))


def test_an_engine_runs_one_job_at_a_time():
    engine = ScriptedEngine([b"a", b"b"])
    first = engine.generate("Hi", seed=1)
    next(first)
    with pytest.raises(DesktopDpoError, match="already writing"):
        next(engine.generate("Hi", seed=2))
    run_job(first)
    assert run_job(engine.generate("Hi", seed=2))[1].text == "ab"  # the lock is free again


def test_a_response_cancelled_during_its_prompt_counts_all_its_time_as_prompt_time():
    run = ResponseRun(start=10.0, tokens=[1, 2], stops=[], max_new=5, recorded={"stop": []})
    stream = ResponseStream(index=0, seed=3, text=ResponseText())
    assert list(run.cancel([stream])) == [ResponseFinished(0, run.result(stream))]
    result = run.result(stream)
    assert result.finish_reason == "cancelled" and result.prompt_seconds == result.seconds
    run.prompt_seconds = 1.0
    assert run.result(stream).prompt_seconds == 1.0


def test_the_templates_end_of_turn_marker_ends_an_answer_only_when_it_is_one_token():
    vocab = {"<|end|>": [42]}
    encoded: list[str] = []

    def encode(text: str) -> list[int]:
        encoded.append(text)
        return vocab.get(text, [7, 8])

    assert turn_end_token(CHAT_TEMPLATE, "<s>", "</s>", encode) == 42
    assert encoded == ["<|end|>"]
    vocab.clear()  # a tokenizer that spells the marker in several tokens
    assert turn_end_token(CHAT_TEMPLATE, "<s>", "</s>", encode) is None
    encoded.clear()
    assert turn_end_token(None, "<s>", "</s>", encode) is None  # the default layout ends on text
    assert encoded == []

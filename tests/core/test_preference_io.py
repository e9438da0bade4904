"""TRL preference JSONL in and out: all-or-nothing import naming every bad line, exact round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from desktop_dpo.core import preference_io
from desktop_dpo.core.dpo.data import pairs_from_comparisons
from desktop_dpo.core.errors import DuplicatePairsFound, ImportFormatError, ProtectedFileError
from desktop_dpo.core.preference_io import (
    ExportResult,
    PreferenceFileError,
    export_preferences,
    import_preferences,
)
from desktop_dpo.core.store import Store

SYSTEM = {"role": "system", "content": "Answer in one word."}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def write_lines(path: Path, lines: list[str | bytes], newline: bytes = b"\n") -> Path:
    path.write_bytes(
        newline.join(line if isinstance(line, bytes) else line.encode() for line in lines) + newline
    )
    return path


def dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False)


def pairs_in(store: Store) -> list[tuple[list[dict[str, str]], str, str]]:
    """What training would see: (prompt messages, chosen, rejected) for every usable pair."""
    return [(p.messages, p.chosen, p.rejected) for p in pairs_from_comparisons(store.comparison_views())]


# --------------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------------


def test_standard_file_imports_as_verdict_a_pairs(memory_store, tmp_path):
    path = write_lines(
        tmp_path / "standard.jsonl",
        [
            dumps({"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "score": 9}),
            "",
            "   ",
            dumps({"prompt": "Grass is", "chosen": " green.", "rejected": " blue."}),
        ],
        newline=b"\r\n",  # written on Windows
    )
    result = import_preferences(memory_store, path)
    assert (result.format, result.imported, result.blank_lines, result.identical_skipped) == (
        "standard",
        2,
        2,
        0,
    )
    views = memory_store.comparison_views()
    assert [v.comparison.id for v in views] == list(result.comparison_ids)
    assert [(v.messages, v.text_a, v.text_b) for v in views] == [
        ([user("The sky is")], " blue.", " green."),
        ([user("Grass is")], " green.", " blue."),
    ]
    for view in views:
        c = view.comparison
        assert (c.verdict, c.source, c.a_shown_left, c.edited_text) == ("a", "import", None, None)
        assert (view.model_a_id, view.model_b_id) == (None, None)
        assert memory_store.get_generation(c.generation_a_id).seed is None
    assert memory_store.count_usable_pairs() == 2


def test_conversational_file_imports_with_explicit_and_implicit_prompts(memory_store, tmp_path):
    history = [SYSTEM, user("Hi"), assistant("Hello."), user("Sky colour?")]
    path = write_lines(
        tmp_path / "chat.jsonl",
        [
            dumps(
                {
                    "prompt": [user("Sky colour?")],
                    "chosen": [assistant("Blue.")],
                    "rejected": [assistant("Red.")],
                }
            ),
            # TRL's implicit prompt: the shared leading messages are the prompt.
            dumps({"chosen": [*history, assistant("Blue.")], "rejected": [*history, assistant("Green.")]}),
            dumps(
                {
                    "prompt": history,
                    "chosen": [
                        {"role": "assistant", "content": "Azure.", "name": "bot"}
                    ],  # extra keys are fine
                    "rejected": [assistant("Grey.")],
                }
            ),
        ],
    )
    result = import_preferences(memory_store, path)
    assert (result.format, result.imported) == ("conversational", 3)
    assert pairs_in(memory_store) == [
        ([user("Sky colour?")], "Blue.", "Red."),
        (history, "Blue.", "Green."),
        (history, "Azure.", "Grey."),
    ]
    # One conversation is one prompt, however many pairs it has.
    assert len(memory_store.list_prompts()) == 2


def test_identical_pairs_are_skipped_and_counted(memory_store, tmp_path):
    path = write_lines(
        tmp_path / "same.jsonl",
        [
            dumps({"prompt": "p", "chosen": "same", "rejected": "same"}),
            dumps({"prompt": "p", "chosen": "better", "rejected": "worse"}),
        ],
    )
    result = import_preferences(memory_store, path)
    assert (result.imported, result.identical_skipped) == (1, 1)
    assert pairs_in(memory_store) == [([user("p")], "better", "worse")]


def standard_file(path: Path, pairs: list[tuple[str, str, str]]) -> Path:
    return write_lines(path, [dumps({"prompt": p, "chosen": c, "rejected": r}) for p, c, r in pairs])


THREE_PAIRS = [("Sky?", "Blue.", "Red."), ("Grass?", "Green.", "Blue."), ("Snow?", "White.", "Black.")]


def test_importing_the_same_file_twice_skips_every_pair_the_second_time(memory_store, tmp_path):
    path = standard_file(tmp_path / "prefs.jsonl", THREE_PAIRS)
    first = import_preferences(memory_store, path)
    assert (first.imported, first.duplicates_skipped) == (3, 0)

    second = import_preferences(memory_store, path)
    assert (second.imported, second.duplicates_skipped, second.comparison_ids) == (0, 3, ())
    assert memory_store.count_comparisons() == 3
    assert pairs_in(memory_store) == [([user(p)], c, r) for p, c, r in THREE_PAIRS]


def test_a_pair_repeated_within_the_file_is_imported_once(memory_store, tmp_path):
    path = standard_file(tmp_path / "repeats.jsonl", [THREE_PAIRS[0], THREE_PAIRS[1], THREE_PAIRS[0]])
    result = import_preferences(memory_store, path)
    assert (result.imported, result.duplicates_skipped) == (2, 1)
    assert pairs_in(memory_store) == [([user(p)], c, r) for p, c, r in THREE_PAIRS[:2]]


def test_only_an_exact_repeat_is_a_duplicate(memory_store, tmp_path):
    import_preferences(memory_store, standard_file(tmp_path / "first.jsonl", [("Sky?", "Blue.", "Red.")]))
    near_misses = [
        ("Sky?", "Blue.", "Red. "),  # one more space
        ("Sky?", "Red.", "Blue."),  # the other way round
        ("Sky ?", "Blue.", "Red."),  # another prompt
        ("sky?", "Blue.", "Red."),  # letter case counts
    ]
    result = import_preferences(memory_store, standard_file(tmp_path / "second.jsonl", near_misses))
    assert (result.imported, result.duplicates_skipped) == (4, 0)
    assert memory_store.count_comparisons() == 5


def test_a_standard_pair_and_the_same_pair_as_chat_messages_are_duplicates(memory_store, tmp_path):
    import_preferences(memory_store, standard_file(tmp_path / "standard.jsonl", [("Sky?", "Blue.", "Red.")]))
    chat = write_lines(
        tmp_path / "chat.jsonl",
        [dumps({"prompt": [user("Sky?")], "chosen": [assistant("Blue.")], "rejected": [assistant("Red.")]})],
    )
    result = import_preferences(memory_store, chat)
    assert (result.imported, result.duplicates_skipped) == (0, 1)


def test_pairs_picked_in_collect_count_as_already_in_the_data(memory_store, tmp_path):
    """A pick of B over A is the pair (B chosen, A rejected), whichever side the file names first."""
    memory_store.record_pair(messages=[user("Sky?")], text_a="Red.", text_b="Blue.", verdict="b")
    memory_store.record_pair(messages=[user("Grass?")], text_a="Green.", text_b="Blue.", verdict="tie")
    result = import_preferences(memory_store, standard_file(tmp_path / "prefs.jsonl", THREE_PAIRS))
    # A tie gives training no pair, so Grass? is new; Sky? is already there.
    assert (result.imported, result.duplicates_skipped) == (2, 1)


def test_a_deleted_pair_imported_again_comes_back(memory_store, tmp_path):
    path = standard_file(tmp_path / "prefs.jsonl", THREE_PAIRS[:1])
    (deleted,) = import_preferences(memory_store, path).comparison_ids
    memory_store.set_comparisons_deleted([deleted])
    result = import_preferences(memory_store, path)
    assert (result.imported, result.duplicates_skipped) == (1, 0)
    assert memory_store.count_comparisons() == 1  # the live one; the deleted one stays deleted


def test_import_anyway_saves_the_duplicates_too(memory_store, tmp_path):
    path = standard_file(tmp_path / "prefs.jsonl", THREE_PAIRS)
    import_preferences(memory_store, path)
    result = import_preferences(memory_store, path, duplicates="import")
    assert (result.imported, result.duplicates_skipped, result.duplicates_imported) == (3, 0, 3)
    assert memory_store.count_comparisons() == 6


def test_asking_about_duplicates_imports_nothing_and_says_how_many(store, tmp_path):
    import_preferences(store, standard_file(tmp_path / "old.jsonl", THREE_PAIRS[:2]))
    mixed = standard_file(tmp_path / "mixed.jsonl", THREE_PAIRS)
    with pytest.raises(DuplicatePairsFound) as raised:
        import_preferences(store, mixed, duplicates="ask")
    assert (raised.value.duplicates, raised.value.total) == (2, 3)
    assert "2 of 3 pairs" in str(raised.value) and "nothing was imported" in str(raised.value)
    assert store.count_comparisons() == 2  # the new pair was not written either: all or nothing

    assert import_preferences(store, mixed, duplicates="skip").imported == 1
    fresh = standard_file(tmp_path / "fresh.jsonl", [("Rain?", "Wet.", "Dry.")])
    assert import_preferences(store, fresh, duplicates="ask").imported == 1  # nothing to ask about
    assert store.count_comparisons() == 4


def test_a_file_with_bad_lines_imports_nothing_and_names_every_bad_line(store, tmp_path):
    good_standard = dumps({"prompt": "ok", "chosen": "yes", "rejected": "no"})
    lines: list[str | bytes] = [
        good_standard,  # 1
        '{"prompt": "x", "chosen": "y"',  # 2 invalid JSON
        dumps({"prompt": "x", "chosen": "y"}),  # 3 missing rejected
        dumps({"prompt": "x", "chosen": 5, "rejected": "z"}),  # 4 wrong type
        dumps({"prompt": "x", "chosen": "   ", "rejected": "z"}),  # 5 empty text
        "",  # 6 blank: fine
        dumps({"prompt": [user("x")], "chosen": [assistant("y")], "rejected": [assistant("z")]}),  # 7 mixed
        dumps({"prompt": "x", "chosen": "y", "rejected": ["z"]}),  # 8 wrong type inside a standard line
        "[1, 2]",  # 9 not an object
        b'{"prompt": "caf\xe9", "chosen": "y", "rejected": "z"}',  # 10 Latin-1, not UTF-8
        dumps({"chosen": "The sky is blue.", "rejected": "The sky is green."}),  # 11 implicit standard
        good_standard,  # 12
        dumps({"prompt": "", "chosen": "y", "rejected": "z"}),  # 13 empty prompt
    ]
    path = write_lines(tmp_path / "bad.jsonl", lines)
    before = store.table_counts()

    with pytest.raises(ImportFormatError) as caught:
        import_preferences(store, path)

    reasons = dict(caught.value.problems)
    assert sorted(reasons) == [2, 3, 4, 5, 7, 8, 9, 10, 11, 13]
    assert "invalid JSON" in reasons[2]
    assert 'missing key "rejected"' in reasons[3]
    assert '"chosen"' in reasons[4] and "a number" in reasons[4]
    assert '"chosen" is empty' in reasons[5]
    assert "mixed formats" in reasons[7] and "line 1 is standard" in reasons[7]
    assert '"rejected" must be a string' in reasons[8]
    assert "JSON object" in reasons[9]
    assert "UTF-8" in reasons[10]
    assert 'missing key "prompt"' in reasons[11]
    assert '"prompt" is empty' in reasons[13]
    # The message a person sees names every line and says nothing was imported.
    message = str(caught.value)
    assert message.startswith(f"Nothing was imported from {path}: 10 bad line(s)")
    for number in reasons:
        assert f"line {number}: " in message
    assert store.table_counts() == before
    with Store.open(store.path) as other:  # nothing reached the file either
        assert other.count_comparisons(include_deleted=True) == 0


def test_conversational_problems_are_named_per_line(memory_store, tmp_path):
    ok = {"prompt": [user("q")], "chosen": [assistant("a")], "rejected": [assistant("b")]}
    lines = [
        dumps(ok),  # 1
        dumps({**ok, "chosen": [{"role": "tool", "content": "a"}]}),  # 2 unknown role
        dumps({**ok, "rejected": [{"role": "assistant", "content": ["part"]}]}),  # 3 content not a string
        dumps({**ok, "chosen": [{"content": "a"}]}),  # 4 message without role
        dumps({**ok, "chosen": [assistant("a"), assistant("more")]}),  # 5 two responses
        dumps({**ok, "prompt": [user("q"), assistant("prefill")]}),  # 6 prompt ends with the assistant
        dumps({"chosen": [user("q"), assistant("a")], "rejected": [user("other q"), assistant("b")]}),  # 7
        dumps({"chosen": [assistant("a")], "rejected": [assistant("b")]}),  # 8 implicit without a prompt
        dumps({**ok, "chosen": []}),  # 9 empty list
        dumps({**ok, "rejected": "b"}),  # 10 string among messages
        dumps({**ok, "prompt": [user("  ")]}),  # 11 empty content
        dumps({**ok, "chosen": ["a"]}),  # 12 message not an object
    ]
    path = write_lines(tmp_path / "chat.jsonl", lines)
    with pytest.raises(ImportFormatError) as caught:
        import_preferences(memory_store, path)
    reasons = dict(caught.value.problems)
    assert sorted(reasons) == list(range(2, 13))
    assert "role 'tool'" in reasons[2]
    assert "content must be a string" in reasons[3]
    assert "missing 'role'" in reasons[4]
    assert "exactly one assistant message" in reasons[5]
    assert "must end with a user message" in reasons[6]
    assert "share every message but the last" in reasons[7]
    assert "prompt messages followed by one assistant response" in reasons[8]
    assert "empty list" in reasons[9]
    assert '"rejected" must be a list of messages' in reasons[10]
    assert "empty content" in reasons[11]
    assert "must be an object" in reasons[12]
    assert memory_store.count_comparisons(include_deleted=True) == 0


def test_a_failure_while_saving_rolls_the_whole_import_back(store, tmp_path, monkeypatch):
    path = write_lines(
        tmp_path / "ok.jsonl",
        [dumps({"prompt": f"p{i}", "chosen": "yes", "rejected": "no"}) for i in range(5)],
    )
    real_record_pair = store.record_pair
    calls = []

    def fail_on_the_fourth(**kwargs):
        calls.append(kwargs)
        if len(calls) == 4:
            raise OSError("disk unplugged")
        return real_record_pair(**kwargs)

    monkeypatch.setattr(store, "record_pair", fail_on_the_fourth)
    with pytest.raises(OSError, match="disk unplugged"):
        import_preferences(store, path)
    assert store.count_comparisons(include_deleted=True) == 0
    assert store.list_prompts() == []


def test_a_missing_file_gives_a_clear_error(memory_store, tmp_path):
    missing = tmp_path / "nowhere" / "prefs.jsonl"
    with pytest.raises(PreferenceFileError, match="does not exist") as caught:
        import_preferences(memory_store, missing)
    assert str(missing) in str(caught.value)
    with pytest.raises(PreferenceFileError, match="is a folder"):
        import_preferences(memory_store, tmp_path)
    empty = write_lines(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(PreferenceFileError, match="no preference pairs"):
        import_preferences(memory_store, empty)


def test_a_byte_order_mark_and_a_missing_final_newline_are_fine(memory_store, tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + dumps({"prompt": "p", "chosen": "c", "rejected": "r"}).encode())
    result = import_preferences(memory_store, path)
    assert (result.imported, result.blank_lines) == (1, 0)


# --------------------------------------------------------------------------------------------------
# Export and round trips
# --------------------------------------------------------------------------------------------------

EDGE_TEXTS = {
    "emoji": "Sure 👍🏽 — here: 🧑‍🚀🚀 done ✅",
    "rtl": "مرحبا بالعالم ‏(שלום עולם)‏ and English",
    "crlf": "line one\r\nline two\r\n\r\nline four\rold mac\n",
    "tabs": "\tindented\t\tcolumns\t",
    "spaces": "   leading and trailing   ",
    "separators": "para\u2028line\u2029next\x85nel \x0b\x0c end",
    "quotes": 'He said "hi" \\ and left {"not": "json"}',
    "long": ("A long answer, with ünïcödé and 表意文字. " * 6000)[:200_000],
}


@pytest.fixture
def collected(memory_store) -> Store:
    """A store as a person leaves it: picks both ways, an edit, a tie, a deleted pick, edge-case texts."""
    s = memory_store
    for name, text in EDGE_TEXTS.items():
        s.record_pair(
            messages=[user(f"Prompt {name}: {text}")], text_a=text, text_b=f"plain {name}", verdict="a"
        )
        s.record_pair(messages=[user(f"Reverse {name}")], text_a=f"plain {name}", text_b=text, verdict="b")
    # A model that answered nothing, rightly rejected.
    s.record_pair(messages=[user("Say something")], text_a="Something.", text_b="", verdict="a")
    s.record_pair(
        messages=[user("Edit me")],
        text_a="Blue, I think.",
        text_b="Red.",
        verdict="a",
        edited_text="Blue.",
        edited_side="a",
    )
    s.record_pair(messages=[user("Tie")], text_a="one", text_b="two", verdict="tie")
    s.record_pair(messages=[user("Bad")], text_a="one", text_b="two", verdict="both_bad")
    deleted = s.record_pair(messages=[user("Deleted")], text_a="one", text_b="two", verdict="a")
    s.set_comparisons_deleted([deleted])
    return s


def test_export_writes_usable_pairs_resolved_from_the_verdict(collected, tmp_path):
    path = tmp_path / "out.jsonl"
    result = export_preferences(collected, path, file_format="standard")
    assert isinstance(result, ExportResult)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
    assert result.written == len(rows) == 2 * len(EDGE_TEXTS) + 1 + 3  # the edit gives three pairs
    assert result.comparisons == 2 * len(EDGE_TEXTS) + 2
    assert result.skipped == ()
    assert rows[0] == {
        "prompt": f"Prompt emoji: {EDGE_TEXTS['emoji']}",
        "chosen": EDGE_TEXTS["emoji"],
        "rejected": "plain emoji",
    }
    assert rows[1] == {"prompt": "Reverse emoji", "chosen": EDGE_TEXTS["emoji"], "rejected": "plain emoji"}
    # The edit, as training sees it: the verdict, then the rewrite over the original it replaced and
    # over the other response (which the person already judged worse than the original).
    assert rows[-3:] == [
        {"prompt": "Edit me", "chosen": "Blue, I think.", "rejected": "Red."},
        {"prompt": "Edit me", "chosen": "Blue.", "rejected": "Blue, I think."},
        {"prompt": "Edit me", "chosen": "Blue.", "rejected": "Red."},
    ]
    assert {"prompt": "Say something", "chosen": "Something.", "rejected": ""} in rows
    prompts = {row["prompt"] for row in rows}
    assert not prompts & {"Tie", "Bad", "Deleted"}
    # One pair per line for every reader, including those that split at Unicode line separators.
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) == result.written
    assert "\u2028" not in text and "\x85" not in text and "\r" not in text


@pytest.mark.parametrize(
    ("file_format", "explicit_prompt"),
    [("standard", True), ("conversational", True), ("conversational", False)],
    ids=["standard", "conversational", "conversational-implicit-prompt"],
)
def test_export_then_import_round_trips_exactly(collected, tmp_path, file_format, explicit_prompt):
    first = tmp_path / "first.jsonl"
    export_preferences(collected, first, file_format=file_format, explicit_prompt=explicit_prompt)

    with Store.open(tmp_path / "elsewhere.sqlite") as elsewhere:
        result = import_preferences(elsewhere, first)
        assert result.format == file_format
        # Exactly the same pairs, character for character, in the same order.
        assert pairs_in(elsewhere) == pairs_in(collected)
        long_pair = next(p for p in pairs_in(elsewhere) if p[1] == EDGE_TEXTS["long"])
        assert len(long_pair[1]) == 200_000
        second = tmp_path / "second.jsonl"
        export_preferences(elsewhere, second, file_format=file_format, explicit_prompt=explicit_prompt)
    assert second.read_bytes() == first.read_bytes()


def test_multi_turn_prompts_round_trip_in_the_conversational_format_only(memory_store, tmp_path):
    history = [SYSTEM, user("Hi"), assistant("Hello 👋"), user("Colour?")]
    memory_store.record_pair(messages=history, text_a="Blue.", text_b="Red.", verdict="b")
    memory_store.record_pair(messages=[user("single")], text_a="x", text_b="y", verdict="a")

    conversational = tmp_path / "chat.jsonl"
    export_preferences(memory_store, conversational, file_format="conversational")
    first = json.loads(conversational.read_text(encoding="utf-8").split("\n")[0])
    assert first == {"prompt": history, "chosen": [assistant("Red.")], "rejected": [assistant("Blue.")]}
    other = Store.open(":memory:")
    try:
        import_preferences(other, conversational)
        assert pairs_in(other) == [(history, "Red.", "Blue."), ([user("single")], "x", "y")]
    finally:
        other.close()

    # The standard format holds one user prompt: the conversation is left out and said so.
    standard = tmp_path / "standard.jsonl"
    result = export_preferences(memory_store, standard, file_format="standard")
    assert result.written == 1
    ((comparison_id, reason),) = result.skipped
    assert comparison_id == memory_store.comparison_views()[0].comparison.id
    assert "conversational format" in reason
    assert json.loads(standard.read_text(encoding="utf-8")) == {
        "prompt": "single",
        "chosen": "x",
        "rejected": "y",
    }


@pytest.mark.parametrize("file_format", ["standard", "conversational"])
def test_a_pair_the_importer_would_refuse_is_not_exported_and_is_reported(
    memory_store, tmp_path, file_format
):
    """An empty response picked as the better one cannot be imported, so it is not exported either."""
    memory_store.record_pair(messages=[user("Quiet?")], text_a="Words.", text_b="   ", verdict="b")
    memory_store.record_pair(messages=[user("Fine")], text_a="yes", text_b="no", verdict="a")
    path = tmp_path / "out.jsonl"
    result = export_preferences(memory_store, path, file_format=file_format)
    assert result.written == 1
    ((comparison_id, reason),) = result.skipped
    assert comparison_id == memory_store.comparison_views()[0].comparison.id
    assert "empty" in reason and "chosen" in reason
    with Store.open(tmp_path / "other.sqlite") as other:
        assert import_preferences(other, path).imported == 1


def test_export_replaces_the_file_atomically(collected, tmp_path, monkeypatch):
    path = tmp_path / "prefs.jsonl"
    path.write_text("old content\n", encoding="utf-8")

    def crash(src, dst):
        raise OSError("power cut during rename")

    monkeypatch.setattr(preference_io.os, "replace", crash)
    with pytest.raises(PreferenceFileError, match="Cannot write"):
        export_preferences(collected, path)
    assert path.read_text(encoding="utf-8") == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefs.jsonl"]  # no temporary file left

    monkeypatch.undo()  # the rename works again
    result = export_preferences(collected, path)
    assert path.read_text(encoding="utf-8").count("\n") == result.written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prefs.jsonl"]


def test_exporting_then_importing_into_the_same_database_adds_nothing(collected, tmp_path):
    """Every pair training takes (verdicts and edits) is recognised when it comes back."""
    path = tmp_path / "all.jsonl"
    written = export_preferences(collected, path).written
    before = pairs_in(collected)
    result = import_preferences(collected, path)
    assert (result.imported, result.duplicates_skipped) == (0, written)
    assert pairs_in(collected) == before


# --------------------------------------------------------------------------------------------------
# Export targets: never the database or another file the app keeps
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def app_store(app_home):
    """The app's own database (in a private home) with one pair, as the CLI and the window open it."""
    with Store.open(app_home.db_path, backups_dir=app_home.backups_dir) as s:
        s.record_pair(messages=[user("Sky?")], text_a="Blue.", text_b="Red.", verdict="a")
    s = Store.open(app_home.db_path, backups_dir=app_home.backups_dir)
    yield s
    s.close()


def files_in(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_exporting_onto_the_database_is_refused_and_leaves_it_byte_identical(app_store, app_home, suffix):
    target = app_home.db_path.with_name(app_home.db_path.name + suffix)
    before = files_in(app_home.data_dir)
    with pytest.raises(ProtectedFileError, match=r"is the app's database; .*choose another file name"):
        export_preferences(app_store, target)
    assert files_in(app_home.data_dir) == before
    assert pairs_in(app_store) == [([user("Sky?")], "Blue.", "Red.")]


def test_exporting_through_a_link_to_the_database_is_refused(app_store, app_home, tmp_path):
    link = tmp_path / "prefs.jsonl"
    link.symlink_to(app_home.db_path)
    before = app_home.db_path.read_bytes()
    with pytest.raises(ProtectedFileError, match="app's database"):
        export_preferences(app_store, link)
    assert app_home.db_path.read_bytes() == before and link.is_symlink()


def test_exporting_onto_any_sqlite_file_is_refused_whatever_its_name(app_store, tmp_path):
    other = tmp_path / "notes.jsonl"  # a database, whatever the name says
    with Store.open(other) as elsewhere:
        elsewhere.record_pair(messages=[user("Q")], text_a="A", text_b="B", verdict="a")
    before = other.read_bytes()
    with pytest.raises(ProtectedFileError, match="is an SQLite database"):
        export_preferences(app_store, other)
    assert other.read_bytes() == before


def test_a_file_the_app_keeps_is_refused_but_a_new_file_in_its_folders_is_written(app_store, app_home):
    kept = app_home.models_dir / "tiny" / "config.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}", encoding="utf-8")
    log = app_home.log_file
    log.write_text("started\n", encoding="utf-8")
    for target, folder in ((kept, "data folder"), (log, "log folder"), (app_home.models_dir, "data folder")):
        with pytest.raises(ProtectedFileError, match=f"already exists in desktop-dpo's {folder}"):
            export_preferences(app_store, target)
    assert kept.read_text(encoding="utf-8") == "{}" and log.read_text(encoding="utf-8") == "started\n"

    new = app_home.exports_dir / "prefs.jsonl"
    assert export_preferences(app_store, new, file_format="standard").written == 1
    assert json.loads(new.read_text(encoding="utf-8")) == {
        "prompt": "Sky?",
        "chosen": "Blue.",
        "rejected": "Red.",
    }


def test_nothing_to_export_is_an_error_and_leaves_the_file_alone(memory_store, tmp_path):
    memory_store.record_pair(messages=[user("Tie")], text_a="one", text_b="two", verdict="tie")
    path = tmp_path / "prefs.jsonl"
    path.write_text("old\n", encoding="utf-8")
    with pytest.raises(PreferenceFileError, match="no usable pairs"):
        export_preferences(memory_store, path)
    assert path.read_text(encoding="utf-8") == "old\n"


def test_export_can_be_limited_to_chosen_comparisons(collected, tmp_path):
    ids = [v.comparison.id for v in collected.comparison_views()][:3]
    result = export_preferences(collected, tmp_path / "some.jsonl", comparison_ids=ids)
    assert (result.written, result.comparisons) == (3, 3)


def test_exported_files_load_in_trl(collected, tmp_path):
    """The interchange promise: TRL reads our files the way we meant them."""
    from datasets import Dataset
    from trl.data_utils import extract_prompt, is_conversational

    explicit, implicit = tmp_path / "explicit.jsonl", tmp_path / "implicit.jsonl"
    export_preferences(collected, explicit, file_format="conversational")
    export_preferences(collected, implicit, file_format="conversational", explicit_prompt=False)

    loaded = Dataset.from_json(str(explicit), cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.num_rows == len(pairs_in(collected))
    assert is_conversational(loaded[0])
    expected = [json.loads(line) for line in explicit.read_text(encoding="utf-8").splitlines()]
    assert [dict(row) for row in loaded] == expected

    # TRL's own reading of an implicit prompt gives back the explicit form.
    for line_implicit, row in zip(implicit.read_text(encoding="utf-8").splitlines(), expected, strict=True):
        assert extract_prompt(json.loads(line_implicit)) == row

"""Sizes and counts in words: the one spelling the CLI, the views and the core share."""

from __future__ import annotations

from desktop_dpo.core.wording import human_size, listed, plural


def test_sizes_read_as_a_file_manager_writes_them():
    assert [human_size(n) for n in (0, 512, 999, 1500, 45_300_000, 812_000, 1_600_000_000)] == [
        "0 B",
        "512 B",
        "999 B",
        "1.5 KB",
        "45.3 MB",
        "812 KB",
        "1.6 GB",
    ]
    assert human_size(2_500_000_000_000) == "2.5 TB"
    assert human_size(None) == "—"


def test_counts_take_the_plural_only_when_not_one():
    assert [plural(n, "pair") for n in (0, 1, 2)] == ["0 pairs", "1 pair", "2 pairs"]
    assert plural(3, "reply", "replies") == "3 replies"
    assert plural(1, "reply", "replies") == "1 reply"


def test_parts_are_listed_as_a_sentence_lists_them():
    assert [listed(parts) for parts in ([], ["a"], ["a", "b"], ["a", "b", "c"])] == [
        "",
        "a",
        "a and b",
        "a, b and c",
    ]

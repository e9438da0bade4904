"""The catalogue of bad inputs: each test in ``tests/test_bad_inputs.py`` says, with ``@case``, what the person
does and the message they see; ``docs/bad-inputs.md`` is generated from those decorators.

Regenerate the table after changing a case::

    python -m tests.bad_inputs_table          # writes docs/bad-inputs.md
    python -m tests.bad_inputs_table --check  # exit 1 when the file on disk is out of date

A case's message is written as the person sees it, with ``...`` for the parts that vary (a path, a size).
The test proves it: it passes the text the person would read to ``shows()``, which checks that every fixed
part of the message is there, in order. A test whose message case was never shown fails (see
``watch_cases``), so the table cannot promise a message the test does not check.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "docs" / "bad-inputs.md"
CATALOGUE_MODULE = "tests.test_bad_inputs"
WILDCARD = re.compile(r"\.\.\.|…")


@dataclass(frozen=True)
class Case:
    """One row of the catalogue: a thing a person does wrong, and what they see."""

    act: str  # what the person does, in their words ("data import of a UTF-16 file")
    message: str | None  # the text they read, "..." for variable parts; None when there is nothing to read
    observed: str | None  # what they notice instead of a text (a process that ends, a label), else None
    test: str  # the test function's name
    param: str | None  # the parametrize id this row belongs to; None: every parametrization of the test
    order: tuple[int, int]  # (line of the test, position among its decorators): the table's order

    @property
    def test_id(self) -> str:
        return f"{self.test}[{self.param}]" if self.param else self.test

    def matches(self, text: str, *, whole: bool = False) -> bool:
        """Whether ``text`` shows this case's message: its fixed parts, in order (all of ``text`` if whole),
        whatever the spacing."""
        assert self.message is not None
        pieces = WILDCARD.split(" ".join(self.message.split()))
        pattern = ".*?".join(re.escape(piece) for piece in pieces)
        found = re.fullmatch if whole else re.search
        # Line breaks and indents are layout (a CLI lists bad lines under its sentence), not words.
        return found(pattern, " ".join(text.split()), flags=re.DOTALL) is not None


@dataclass
class Catalogue:
    """The cases registered by ``@case``, and which ones the running test has shown so far."""

    cases: list[Case] = field(default_factory=list)
    controls: dict[str, str] = field(default_factory=dict)  # test name -> why it is not a case
    running: list[Case] = field(default_factory=list)
    shown: set[Case] = field(default_factory=set)

    def rows(self) -> list[Case]:
        return sorted(self.cases, key=lambda c: c.order)

    def of(self, test: str) -> list[Case]:
        return [c for c in self.cases if c.test == test]


CATALOGUE = Catalogue()


def case(
    act: str, message: str | None = None, *, observed: str | None = None, param: str | None = None
) -> Callable[[Callable], Callable]:
    """Register the decorated test as the catalogue's row for ``act``.

    Give ``message`` (what the person reads, ``...`` for variable parts; the test must ``shows()`` it), or
    ``observed`` when there is no text to read. ``param`` ties the row to one parametrize id. Stack several
    ``@case`` on one test for several acts; they appear in the table top to bottom.
    """
    if (message is None) == (observed is None):
        raise ValueError("give a case either the message the person reads or what they observe")

    def register(test: Callable) -> Callable:
        stacked = getattr(test, "_bad_input_cases", 0)
        test._bad_input_cases = stacked + 1  # decorators apply bottom-up: the top one comes first
        line = test.__code__.co_firstlineno
        CATALOGUE.cases.append(Case(act, message, observed, test.__name__, param, (line, -stacked)))
        return test

    return register


def not_a_case(why: str) -> Callable[[Callable], Callable]:
    """Mark a test of the catalogue module that is no row of the table (a control, a check of the table)."""

    def mark(test: Callable) -> Callable:
        CATALOGUE.controls[test.__name__] = why
        return test

    return mark


def shows(text: str, *, whole: bool = False) -> str:
    """Assert that ``text`` (what the person reads) is the message of one of the running test's cases.

    Returns ``text``. ``whole``: the message must be all of ``text``, not a part of it.
    """
    assert "Traceback" not in text, text
    expected = [c for c in CATALOGUE.running if c.message is not None]
    assert expected, "shows() was called by a test with no message case"
    matching = [c for c in expected if c.matches(text, whole=whole)]
    assert matching, (
        "The person sees:\n"
        + text
        + "\nnone of these cases matches:\n"
        + "\n".join(c.message or "" for c in expected)
    )
    CATALOGUE.shown.update(matching)
    return text


@pytest.fixture
def watch_cases(request) -> Iterator[None]:
    """Autouse in the catalogue module: every test is a case or a control, and shows each of its messages."""
    name = request.function.__name__
    callspec = getattr(request.node, "callspec", None)
    param = callspec.id if callspec is not None else None
    own = [c for c in CATALOGUE.of(name) if c.param in (None, param)]
    assert own or name in CATALOGUE.controls, f"{name} is neither a @case nor a @not_a_case"
    CATALOGUE.running, CATALOGUE.shown = own, set()
    failed_before = request.session.testsfailed
    try:
        yield
        if request.session.testsfailed > failed_before:
            return  # the test failed already; its own report says why
        unshown = [c for c in own if c.message is not None and c not in CATALOGUE.shown]
        assert not unshown, f"{request.node.name} never shows() the message of: " + "; ".join(
            c.act for c in unshown
        )
    finally:
        CATALOGUE.running, CATALOGUE.shown = [], set()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render() -> str:
    """The Markdown text of docs/bad-inputs.md, from the cases of the catalogue module."""
    importlib.import_module(CATALOGUE_MODULE)
    lines = [
        "# Bad inputs: what was done, and what the person sees",
        "",
        "Generated from the `@case` decorators in `tests/test_bad_inputs.py`; do not edit by hand. "
        "Regenerate with `python -m tests.bad_inputs_table`. `...` stands for the parts that vary (a path, "
        "a size); each test checks its message. A message in italics is something seen rather than read.",
        "",
        "| # | what the person does | what they see | test |",
        "|---|---|---|---|",
    ]
    for number, row in enumerate(CATALOGUE.rows(), start=1):
        seen = _cell(row.message) if row.message is not None else f"_{_cell(row.observed or '')}_"
        lines.append(f"| {number} | {_cell(row.act)} | {seen} | `{row.test_id}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/bad-inputs.md from the bad-inputs catalogue.")
    parser.add_argument("--check", action="store_true", help="only say whether the file is current")
    args = parser.parse_args(argv)
    # Run as a script this file is __main__; the catalogue module registers into tests.bad_inputs_table.
    text = importlib.import_module("tests.bad_inputs_table").render()
    if args.check:
        current = TABLE.is_file() and TABLE.read_text(encoding="utf-8") == text
        print(f"{TABLE} is {'current' if current else 'out of date: run python -m tests.bad_inputs_table'}")
        return 0 if current else 1
    TABLE.write_text(text, encoding="utf-8")
    print(f"Wrote {TABLE} ({text.count(chr(10)) - 6} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

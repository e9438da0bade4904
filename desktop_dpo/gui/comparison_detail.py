"""The Data view's detail panel: the selected comparison in full (the conversation with its system prompt and
earlier turns, both responses, the person's rewrite, model and sampling settings), with its verdict and note
editable. :class:`ComparisonDetail` emits what the person changed; the Data view writes it to the store.

A re-asked pair (``repeat_of``, core/reask.py) says so, whether it agreed with the first verdict, and that
its verdict never trains: Collect never told the person it was a repeat, so this is where they learn it."""

from __future__ import annotations

import html
from collections.abc import Sequence

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QLineEdit,
    QPlainTextEdit,
    QSizePolicy,
    QStackedWidget,
    QTextBrowser,
    QWidget,
)

from desktop_dpo.core.reask import agrees
from desktop_dpo.core.store import ComparisonRow, ComparisonView, GenerationRow
from desktop_dpo.core.wording import plural
from desktop_dpo.gui.comparison_table_model import (
    SOURCE_WORDS,
    format_date,
    verdict_choices,
    verdict_name,
    verdict_tip,
    winning_side,
)
from desktop_dpo.gui.theme import follow_scheme, text_colour
from desktop_dpo.gui.widgets import (
    STRETCH,
    FitsText,
    field_label,
    hbox,
    set_style_property,
    styled_label,
    text_label,
    vbox,
)

PROMPT_MAX_HEIGHT = 170  # pixels; a longer conversation scrolls in its box
ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
ROLE_COLOURS = {"system": "#b45309", "user": "#4f46e5", "assistant": "#0f766e"}  # amber, indigo, teal
SAMPLING_NAMES = (  # key in the stored settings -> how the detail panel names it
    ("temperature", "temperature"),
    ("top_p", "top-p"),
    ("top_k", "top-k"),
    ("min_p", "min-p"),
    ("repeat_penalty", "repeat penalty"),
    ("max_tokens", "max tokens"),
)


def describe_generation(
    generation: GenerationRow | None, model_name: str | None, *, full: bool = False
) -> str:
    """A line under a response: model, temperature, top-p, length and time, as far as known.

    ``full`` lists every stored sampling setting and the seed as well (the line's tooltip), one per line.
    """
    if generation is None:
        return ""
    settings = generation.sampling or {}
    parts: list[str] = [model_name] if model_name else []
    shown = SAMPLING_NAMES if full else SAMPLING_NAMES[:2]
    parts += [f"{label} {settings[key]}" for key, label in shown if key in settings]
    if full and generation.seed is not None:
        parts.append(f"seed {generation.seed}")
    if generation.completion_tokens is not None:
        length = plural(generation.completion_tokens, "token")
        parts.append(f"{length} in {generation.seconds:.1f} s" if generation.seconds is not None else length)
    if not parts:
        return "Model and sampling settings unknown"
    return "\n".join(parts) if full else " · ".join(parts)


def repeat_text(comparison: ComparisonRow, original: ComparisonRow | None) -> str:
    """What the detail panel says of a re-asked pair: which pair it repeats, whether the person chose the same
    answer both times, and that it never trains ("" for a comparison that is no repeat)."""
    if comparison.repeat_of is None:
        return ""
    first = f"#{comparison.repeat_of}"
    lines = [
        f"A re-asked pair: the answers of {first}, shown again with their sides swapped, without saying so."
    ]
    live = original if original is not None and not original.deleted else None
    agreement = agrees(live.verdict if live else None, comparison.verdict)
    if live is None:
        lines.append(f"The first verdict ({first}) was deleted: there is nothing to agree with.")
    else:
        side = winning_side(live.verdict, comparison.a_shown_left)  # on this pair's screen
        words = verdict_name(live.verdict, live.a_shown_left)
        then = f"you preferred the answer now on the {side}" if side else f"you said “{words}”"
        if agreement is None:
            lines.append(f"A skip neither agrees nor disagrees (the first time, {then}).")
        elif agreement:
            lines.append(f"It agrees with your first verdict: the first time too, {then}.")
        else:
            lines.append(f"It disagrees with your first verdict: the first time, {then}.")
    lines.append(
        "A repeat's verdict never trains (the first one does, once): it only measures how consistent your "
        "verdicts are." + (" Your rewrite here is new work, and trains." if comparison.edited_text else "")
    )
    return "\n".join(lines)


def user_turns(messages: Sequence[dict[str, str]]) -> int:
    """How many of the person's messages a prompt holds: the turn of the conversation the responses answer."""
    return sum(1 for message in messages if message["role"] == "user")


def prompt_html(messages: Sequence[dict[str, str]]) -> str:
    """The whole conversation before the responses, each message after its role (and, in a conversation,
    its turn), as rich text; the message the responses answer is marked."""
    in_conversation = user_turns(messages) > 1
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    blocks = []
    turn = 0
    for index, message in enumerate(messages):
        role = message["role"]
        name = ROLE_NAMES.get(role, role.capitalize())
        if role == "user":
            turn += 1
        if in_conversation and role in ("user", "assistant"):
            name += f" · turn {max(turn, 1)}"
        if index == last_user and in_conversation:
            name += " · answered below"
        colour = text_colour(ROLE_COLOURS.get(role, "#475569"))
        body = html.escape(message["content"]).replace("\n", "<br>")
        blocks.append(
            f'<p style="margin:0 0 6px 0"><span style="color:{colour};font-weight:600">{name}</span>'
            f"&nbsp;&nbsp;{body}</p>"
        )
    return "".join(blocks)


class PromptBrowser(FitsText, QTextBrowser):
    """The conversation before the responses (see :func:`prompt_html`): as tall as its text, up to
    ``max_height``, and shrinking first when the window is short (then it scrolls), so the responses keep
    their room."""

    def __init__(self, parent: QWidget | None = None, *, max_height: int = PROMPT_MAX_HEIGHT):
        super().__init__(parent)
        self.setOpenLinks(False)
        self.fit_height(40, max_height, floor=36, padding=4)
        self._messages: Sequence[dict[str, str]] = ()
        follow_scheme(self, lambda: self.show_messages(self._messages))

    def show_messages(self, messages: Sequence[dict[str, str]]) -> None:
        """Show ``messages``, fitted to their height and scrolled to the last one."""
        self._messages = messages
        self.setHtml(prompt_html(messages))
        self.fit_to_contents()
        self.show_end()

    def fit_to_contents(self) -> None:
        self.document().setTextWidth(max(self.viewport().width(), 200))
        super().fit_to_contents()

    def resizeEvent(self, event: QResizeEvent) -> None:  # Qt override
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self.fit_to_contents()  # a narrower box wraps the conversation onto more lines

    def show_end(self) -> None:
        """Scroll to the last message (the one the responses answer), now and once the box has its new
        height."""
        self._scroll_to_end()
        QTimer.singleShot(0, self._scroll_to_end)

    @Slot()
    def _scroll_to_end(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())


class _TextPane(QFrame):
    """A titled, read-only text: one response, or the person's rewrite of one."""

    def __init__(self, title: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("detailPane")
        self.title = styled_label(title, "paneTitle")
        self.badge = styled_label("", "paneBadge")
        self.badge.setVisible(False)
        self.meta = text_label("", "detailMeta", selectable=True, plain=False)
        self.text = QPlainTextEdit()
        self.text.setObjectName("paneText")
        self.text.setReadOnly(True)
        self.text.setMinimumHeight(44)
        # Whatever height is left, not a preferred one: the conversation above gets its room first.
        self.text.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Ignored)
        head = hbox(self.title, self.badge, STRETCH, spacing=8)
        vbox(head, self.meta, (self.text, 1), parent=self, margins=(10, 8, 10, 8), spacing=4)

    def show_text(
        self, text: str, *, badge: str = "", chosen: bool = False, meta: str = "", meta_tip: str = ""
    ) -> None:
        self.text.setPlainText(text)
        self.badge.setText(badge)
        self.badge.setVisible(bool(badge))
        self.meta.setText(meta)
        self.meta.setToolTip(meta_tip)
        self.meta.setVisible(bool(meta))
        set_style_property(self, "chosen", chosen)  # the #detailPane[chosen="true"] rule follows it


class ComparisonDetail(QFrame):
    """The selected comparison in full, with its verdict and note editable.

    Signals:
        verdict_chosen(int, str): the person chose a verdict for comparison ``id``.
        note_edited(int, str): the person finished editing the note of comparison ``id``.
    """

    verdict_chosen = Signal(int, str)
    note_edited = Signal(int, str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("card")
        self.comparison_id: int | None = None
        self._shown_note = ""

        self.placeholder = styled_label(
            "Select a comparison to read it in full, change its verdict or add a note.",
            "detailPlaceholder",
            wrap=True,
        )
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)

        self.title = styled_label("", "detailTitle")
        self.meta = text_label("", "detailMeta", selectable=True, plain=False)
        self.repeat_note = text_label("", "detailMeta", selectable=True)  # a re-asked pair (repeat_text)
        self.repeat_note.setVisible(False)
        self.prompt_text = PromptBrowser()
        self.prompt_text.setObjectName("promptText")
        # Keyed by generation; laid out in the order they were shown (see _place_panes).
        self.panes = {"a": _TextPane("Answer A"), "b": _TextPane("Answer B")}
        self.edit_pane = _TextPane("Your rewrite")
        for pane in (*self.panes.values(), self.edit_pane):
            pane.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Expanding)

        self.verdict_combo = QComboBox()
        self.verdict_combo.setObjectName("verdictCombo")
        self._fill_verdict_combo(None)
        self.verdict_combo.setToolTip("Change the verdict (saved at once)")
        self.verdict_combo.activated.connect(self._on_verdict_combo_activated)
        self.note_edit = QLineEdit()
        self.note_edit.setObjectName("noteEdit")
        self.note_edit.setPlaceholderText(
            "Add a note: why, what was wrong… (saved when you press Enter or leave)"
        )
        self.note_edit.editingFinished.connect(self._on_note_editing_finished)

        head = hbox(self.title, (self.meta, 1), spacing=10)
        responses = hbox((self.panes["a"], 1), (self.panes["b"], 1), (self.edit_pane, 1), spacing=10)
        self._responses = responses
        controls = hbox(
            field_label("Verdict"),
            self.verdict_combo,
            10,
            field_label("Note"),
            (self.note_edit, 1),
            spacing=8,
        )

        content = QWidget()
        vbox(
            head,
            self.repeat_note,
            self.prompt_text,
            (responses, 1),
            controls,
            parent=content,
            margins=(0, 0, 0, 0),
            spacing=6,
        )

        self.stack = QStackedWidget()
        self.stack.addWidget(self.placeholder)
        self.stack.addWidget(content)
        vbox(self.stack, parent=self, margins=(14, 10, 14, 10))

    def show_comparison(
        self,
        view: ComparisonView,
        generations: tuple[GenerationRow | None, GenerationRow | None],
        model_names: tuple[str | None, str | None],
        original: ComparisonRow | None = None,
    ) -> None:
        """Show ``view`` in full (a note still being typed for the previous one is saved first); ``original``:
        the comparison a repeat re-asks (None when it is gone, or ``view`` is no repeat)."""
        self.flush_note()
        comparison = view.comparison
        self.comparison_id = comparison.id
        self.title.setText(f"Comparison #{comparison.id}")
        facts = [format_date(comparison.created_at), SOURCE_WORDS.get(comparison.source, comparison.source)]
        if comparison.deleted:
            facts.append("deleted (not trained on)")
        turns = user_turns(view.messages)
        if turns > 1:
            facts.append(f"turn {turns} of a conversation, trained with the earlier turns as its prompt")
        self.meta.setText(" · ".join(facts))
        self.repeat_note.setText(repeat_text(comparison, original))
        self.repeat_note.setVisible(comparison.repeat_of is not None)
        self.prompt_text.show_messages(view.messages)
        names = self._place_panes(comparison.a_shown_left, comparison.source)

        verdict = comparison.verdict
        badges = {"a": "", "b": ""}
        if verdict in ("a", "b"):
            badges[verdict] = "✓ Better"
        elif verdict == "tie":
            badges = {"a": "Tie", "b": "Tie"}
        elif verdict == "both_bad":
            badges = {"a": "Bad", "b": "Bad"}
        texts = {"a": view.text_a, "b": view.text_b}
        for index, side in enumerate(("a", "b")):
            generation, name = generations[index], model_names[index]
            meta = describe_generation(generation, name)
            tip = describe_generation(generation, name, full=True)
            if comparison.source == "import" and generation is not None and not generation.sampling:
                role = "chosen" if side == "a" else "rejected"
                meta = tip = f"Imported as {role}: model and sampling settings unknown"
            self.panes[side].show_text(
                texts[side], badge=badges[side], chosen=verdict == side, meta=meta, meta_tip=tip
            )
        edited = comparison.edited_text is not None and comparison.edited_side in ("a", "b")
        self.edit_pane.setVisible(edited)
        if edited:
            side = comparison.edited_side
            assert side is not None
            name = names[side] if comparison.a_shown_left is None else f"the {names[side]}"
            self.edit_pane.title.setText(f"Your rewrite of {name}")
            self.edit_pane.show_text(
                comparison.edited_text or "",
                badge="✓ Chosen",
                meta=f"Trained as preferred over the original {names[side]}",
            )
            set_style_property(self.edit_pane.badge, "tone", "rewrite")

        self._fill_verdict_combo(comparison.a_shown_left, comparison.source)
        index = self.verdict_combo.findData(verdict)
        self.verdict_combo.setCurrentIndex(max(index, 0))
        self._shown_note = comparison.note or ""
        self.note_edit.setText(self._shown_note)
        self.stack.setCurrentIndex(1)

    def _place_panes(self, a_shown_left: bool | None, source: str) -> dict[str, str]:
        """Title the responses as the person saw them and lay them out in that order: left answer first.
        Returns how each generation is named in a sentence ("left answer", "answer A")."""
        if a_shown_left is None:
            order = ("a", "b")
            titles = {"a": "Answer A", "b": "Answer B"}
            names = {"a": "answer A", "b": "answer B"}
        else:
            order = ("a", "b") if a_shown_left else ("b", "a")
            titles = {order[0]: "Left answer", order[1]: "Right answer"}
            names = {order[0]: "left answer", order[1]: "right answer"}
        tip = verdict_tip(source, a_shown_left) or ""
        for position, side in enumerate(order):
            pane = self.panes[side]
            pane.title.setText(titles[side])
            pane.title.setToolTip(tip)
            if self._responses.indexOf(pane) != position:
                self._responses.removeWidget(pane)
                self._responses.insertWidget(position, pane, 1)
        return names

    def _fill_verdict_combo(self, a_shown_left: bool | None, source: str = "collect") -> None:
        """The verdicts in the words the person judged with: left and right when the pair was shown."""
        self.verdict_combo.clear()
        for words, verdict in verdict_choices(a_shown_left):
            self.verdict_combo.addItem(words, verdict)
            if verdict in ("a", "b") and (tip := verdict_tip(source, a_shown_left)):
                self.verdict_combo.setItemData(
                    self.verdict_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole
                )

    def _fit_prompt_height(self) -> None:
        self.prompt_text.fit_to_contents()

    def resizeEvent(self, event: QResizeEvent) -> None:  # Qt override
        super().resizeEvent(event)
        if self.comparison_id is not None:
            self._fit_prompt_height()  # a narrower panel wraps the conversation onto more lines

    def clear(self, message: str | None = None) -> None:
        """Show the placeholder (nothing selected, or several rows)."""
        self.flush_note()
        self.comparison_id = None
        self._shown_note = ""
        if message:
            self.placeholder.setText(message)
        self.stack.setCurrentIndex(0)

    def flush_note(self) -> None:
        """Report a note that was changed but not yet saved."""
        if self.comparison_id is not None and self.note_edit.text().strip() != self._shown_note.strip():
            self._shown_note = self.note_edit.text()
            self.note_edited.emit(self.comparison_id, self.note_edit.text().strip())

    @Slot(int)
    def _on_verdict_combo_activated(self, index: int) -> None:
        if self.comparison_id is not None:
            self.verdict_chosen.emit(self.comparison_id, self.verdict_combo.itemData(index))

    @Slot()
    def _on_note_editing_finished(self) -> None:
        self.flush_note()

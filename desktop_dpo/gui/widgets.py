"""The pieces every page is built from: the page itself, its header, cards, labels, buttons and model pickers.

Each view used to write these out by hand; they live here so that a page looks and behaves the same
wherever it is. Their looks come from ``resources/style.qss`` through the object names set here (``pageArea``,
``pageTitle``, ``pageSummary``, ``pagePill``, ``card``, ``cardSeparator``, ``fieldLabel``, ``modelCombo``); a page's own rules are scoped there by its ``page`` property.
The smaller parts are here too: :func:`vbox` and :func:`hbox` lay out a column or a row in one call,
:func:`text_label` is a sentence (a message, an error) that wraps, :func:`close_button` the ✕ of a card or a
banner, :func:`scroll_area` a frameless scroll area, :class:`FoldToggle` the arrow that opens a folded part,
:class:`FitsText` a text box as tall as its text.
Light: the first screen imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QSize, Qt, Slot
from PySide6.QtGui import QFontMetrics, QKeySequence, QPaintEvent, QShortcut
from PySide6.QtWidgets import (
    QBoxLayout,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLayout,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QStyle,
    QStyleOptionComboBox,
    QStylePainter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.core.store import ModelRow

NO_MODEL_YET = "No model yet: add one in Models"


def make_page(widget: QWidget, key: str) -> None:
    """Mark ``widget`` as the page of view ``key``: the page background, and the ``page`` property that the
    style sheet's rules for this view select on (``#pageArea[page="collect"] ...``)."""
    widget.setObjectName("pageArea")
    widget.setProperty("page", key)


def set_style_property(widget: QWidget, name: str, value: Any) -> None:
    """Set the dynamic property ``name`` that a style sheet rule selects on, and restyle ``widget`` when it
    changed (Qt does not re-read a style sheet by itself when a property changes)."""
    if widget.property(name) == value:
        return
    widget.setProperty(name, value)
    widget.style().unpolish(widget)
    widget.style().polish(widget)


def styled_label(text: str, name: str, *, wrap: bool = False, tooltip: str = "") -> QLabel:
    """A label styled by the object name ``name`` (``"fieldLabel"``, ``"pagePill"`` …)."""
    label = QLabel(text)
    label.setObjectName(name)
    label.setWordWrap(wrap)
    if tooltip:
        label.setToolTip(tooltip)
    return label


def field_label(text: str) -> QLabel:
    """The small bold label in front of a field ("Model", "Prompt" …)."""
    return styled_label(text, "fieldLabel")


def button(
    text: str,
    slot: Callable[..., Any] | None = None,
    *,
    tooltip: str = "",
    name: str = "secondaryButton",
) -> QPushButton:
    """A push button styled by ``name`` (``"primaryButton"`` for a page's main action, ``"secondaryButton"``
    for the others, ``"linkButton"`` …) that calls ``slot`` when clicked."""
    item = QPushButton(text)
    item.setObjectName(name)
    if tooltip:
        item.setToolTip(tooltip)
    if slot is not None:
        item.clicked.connect(slot)
    return item


def text_label(text: str, name: str, *, selectable: bool = False, plain: bool = True) -> QLabel:
    """A label for a sentence or more (a message, an error, a value), styled by ``name``: it wraps, shows
    ``text`` as written when ``plain`` (a ``<`` in a message or a path is never read as markup) and, when
    ``selectable``, lets the person select it to copy."""
    label = styled_label(text, name, wrap=True)
    if plain:
        label.setTextFormat(Qt.TextFormat.PlainText)
    if selectable:
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def close_button(tooltip: str, slot: Callable[..., Any]) -> QToolButton:
    """The flat ✕ at the corner of a card or a banner, calling ``slot`` when clicked."""
    item = QToolButton()
    item.setText("✕")
    item.setAutoRaise(True)
    item.setToolTip(tooltip)
    item.clicked.connect(slot)
    return item


def scroll_area(widget: QWidget, name: str, *, sideways: bool = True) -> QScrollArea:
    """A frameless scroll area styled by ``name`` around ``widget``, which it keeps as wide as itself;
    ``sideways=False``: never a horizontal scroll bar."""
    area = QScrollArea()
    area.setObjectName(name)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    if not sideways:
        area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setWidget(widget)
    return area


class _Stretch:
    """The type of :data:`STRETCH`."""


STRETCH = _Stretch()  # an item of vbox/hbox: the free room goes here
BoxItem = (
    QWidget | QLayout | int | _Stretch | tuple[QWidget | QLayout, int] | tuple[QWidget, int, Qt.AlignmentFlag]
)


def _box(
    box: QBoxLayout,
    items: Sequence[BoxItem],
    margins: tuple[int, int, int, int] | None,
    spacing: int | None,
) -> None:
    if margins is not None:
        box.setContentsMargins(*margins)
    if spacing is not None:
        box.setSpacing(spacing)
    for item in items:
        if isinstance(item, _Stretch):
            box.addStretch(1)
        elif isinstance(item, int):
            box.addSpacing(item)
        else:
            part, *rest = item if isinstance(item, tuple) else (item,)
            if isinstance(part, QLayout):
                box.addLayout(part, *rest)
            else:
                box.addWidget(part, *rest)


def vbox(
    *items: BoxItem,
    parent: QWidget | None = None,
    margins: tuple[int, int, int, int] | None = None,
    spacing: int | None = None,
) -> QVBoxLayout:
    """A column of ``items``, top to bottom, laid out on ``parent`` when given. An item is a widget or a
    layout, ``(item, stretch)`` or ``(widget, stretch, alignment)``, :data:`STRETCH` (the free room) or
    a number of pixels of space. ``margins`` (left, top, right, bottom) and ``spacing``: Qt's when None."""
    box = QVBoxLayout(parent) if parent is not None else QVBoxLayout()
    _box(box, items, margins, spacing)
    return box


def hbox(
    *items: BoxItem,
    parent: QWidget | None = None,
    margins: tuple[int, int, int, int] | None = None,
    spacing: int | None = None,
) -> QHBoxLayout:
    """A row of ``items``, left to right, laid out on ``parent`` when given (items as in :func:`vbox`)."""
    box = QHBoxLayout(parent) if parent is not None else QHBoxLayout()
    _box(box, items, margins, spacing)
    return box


def page_pill(tooltip: str) -> QLabel:
    """A rounded count in a page's header ("5 usable pairs"); its text is set later."""
    return styled_label("", "pagePill", tooltip=tooltip)


def title_block(title: str, summary: str) -> tuple[QLabel, QLabel]:
    """A page's title and its one-sentence summary (which wraps in a narrow window)."""
    return styled_label(title, "pageTitle"), styled_label(summary, "pageSummary", wrap=True)


class PageHeader(QVBoxLayout):
    """The top of a page: the title with ``actions`` (pills, buttons) at its right, and under both the
    page's one-sentence summary, across the page's whole width, so that a narrow window (1024 pixels) keeps it
    on a line or two instead of squeezing it into the gap the actions leave."""

    def __init__(self, title: str, summary: str, *actions: QWidget, spacing: int | None = None):
        super().__init__()
        self.setSpacing(2)
        self.row = QHBoxLayout()
        if spacing is not None:
            self.row.setSpacing(spacing)
        self.title, self.summary = title_block(title, summary)
        self.row.addWidget(self.title, 1, Qt.AlignmentFlag.AlignVCenter)
        self.addLayout(self.row)
        self.addWidget(self.summary)
        for widget in actions:
            self.add_action(widget)

    def add_action(self, widget: QWidget) -> None:
        """Put ``widget`` at the right end of the title's row."""
        self.row.addWidget(widget, 0, Qt.AlignmentFlag.AlignVCenter)


def card(
    margins: tuple[int, int, int, int] = (16, 14, 16, 12),
    spacing: int = 8,
    *,
    layout: type[QBoxLayout] = QVBoxLayout,
    name: str = "card",
) -> tuple[QFrame, QBoxLayout]:
    """A white rounded frame and its layout (``margins`` are left, top, right, bottom)."""
    frame = QFrame()
    frame.setObjectName(name)
    inner = layout(frame)
    inner.setContentsMargins(*margins)
    inner.setSpacing(spacing)
    return frame, inner


def card_separator() -> QFrame:
    """A thin horizontal line between two parts of a card."""
    line = QFrame()
    line.setObjectName("cardSeparator")
    line.setFrameShape(QFrame.Shape.HLine)
    return line


def standard_keys(key: QKeySequence.StandardKey, fallback: str) -> list[QKeySequence]:
    """Every key sequence this platform binds to ``key`` (Undo, Quit, …), or ``fallback`` where it binds none.

    Some platforms leave a standard key without a binding (Windows has no Quit key), and a shortcut built from
    it would be silently empty: ``fallback`` (e.g. "Ctrl+Q", which is ⌘Q on macOS) keeps it working there.
    """
    keys = [sequence for sequence in QKeySequence.keyBindings(key) if not sequence.isEmpty()]
    return keys or [QKeySequence(fallback)]


def view_shortcut(
    view: QWidget, keys: str | QKeySequence | Sequence[QKeySequence], slot: Callable[..., Any]
) -> QShortcut:
    """A keyboard shortcut that works anywhere in ``view`` (its editors included), and not while another
    view is on screen. ``keys`` is one key sequence or several (e.g. :func:`standard_keys`), all bound."""
    item = QShortcut(view)
    item.setKeys([QKeySequence(keys)] if isinstance(keys, str | QKeySequence) else list(keys))
    item.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
    item.activated.connect(slot)
    return item


class FoldToggle(QToolButton):
    """A checkable "▸ text" button that folds ``body`` away: checked, the body shows and the arrow points
    down. The body starts hidden."""

    def __init__(self, text: str, body: QWidget, *, name: str, tooltip: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName(name)
        self.setText(text)
        self.setCheckable(True)
        self.setArrowType(Qt.ArrowType.RightArrow)
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.setToolTip(tooltip)
        self.body = body
        body.setVisible(False)
        self.toggled.connect(self._on_toggled)

    @Slot(bool)
    def _on_toggled(self, shown: bool) -> None:
        self.body.setVisible(shown)
        self.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)


class FitsText:
    """Put in front of :class:`QTextEdit` (or a subclass) in a class's bases: the box asks for the height of
    its text, between two limits, and scrolls beyond them. Call :meth:`fit_height` once from ``__init__``,
    then :meth:`fit_to_contents` whenever the text or the width changed."""

    def fit_height(self, low: int, high: int, *, floor: int | None = None, padding: int = 2) -> None:
        """Between ``low`` and ``high`` pixels tall; shrinks to ``floor`` (``low`` by default) when the
        window is short. ``padding``: pixels added to the text's height and the frame's."""
        self._fit_limits = (low, high)
        self._fit_floor = low if floor is None else floor
        self._fit_padding = padding
        self._fitted = low
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)

    def fit_to_contents(self) -> None:
        """Take the height of the text (within the limits)."""
        frame = 2 * self.frameWidth() + self._fit_padding
        low, high = self._fit_limits
        fitted = int(min(max(self.document().size().height() + frame, low), high))
        if fitted != self._fitted:
            self._fitted = fitted
            self.updateGeometry()

    def sizeHint(self) -> QSize:  # Qt override
        return QSize(super().sizeHint().width(), self._fitted)

    def minimumSizeHint(self) -> QSize:  # Qt override
        return QSize(super().minimumSizeHint().width(), self._fit_floor)


def model_kind(model: ModelRow) -> str:
    """How a model's file is named in a picker: ``GGUF`` or ``Hugging Face``."""
    return "GGUF" if model.kind == "gguf" else "Hugging Face"


def describe_model(model: ModelRow) -> str:
    """A model in a picker: its name and kind."""
    return f"{model.name}  ·  {model_kind(model)}"


def _shared_start(text: str, other: str) -> int:
    """How many characters ``text`` and ``other`` share from their start."""
    return next(
        (i for i, (a, b) in enumerate(zip(text, other, strict=False)) if a != b), min(len(text), len(other))
    )


def elide_apart(text: str, others: Sequence[str], metrics: QFontMetrics, width: int) -> str:
    """``text`` shortened to ``width`` pixels so that it still reads differently from each of ``others``.

    Models are often named alike ("Gemma 3 270M …" and "Gemma 3 270M · aligned, run 3 …"): cutting the end
    would leave them the same. The start that ``text`` shares with the most alike of ``others`` is shortened
    instead ("Gemma 3…run 3 · Q4_K_M"); what comes after it is cut at its end only where even that is too wide.
    """
    if metrics.horizontalAdvance(text) <= width:
        return text
    shared = max((_shared_start(text, other) for other in others if other != text), default=0)
    cut = text.rfind(" ", 0, shared) + 1  # the start of the word where they part
    if cut > 0 and text[cut:].split(" ", 1)[0].strip(",·").isdigit():  # a number says more after its word
        cut = text.rfind(" ", 0, cut - 1) + 1  # "run 3", not "3"
    if cut == 0:  # differs from the first word on (or like no other): the middle is what can go
        return metrics.elidedText(text, Qt.TextElideMode.ElideMiddle, width)
    rest = text[cut:]
    # Some of the start stays, so the family reads ("Gemma…"), at most a third of the room when space is short.
    room = max(width - metrics.horizontalAdvance(rest), width // 3)
    head = metrics.elidedText(text[:cut].rstrip(), Qt.TextElideMode.ElideRight, room)
    head = head if head.endswith("…") else text[:cut]  # the whole start fits: only the rest is cut
    return head + metrics.elidedText(
        rest, Qt.TextElideMode.ElideRight, width - metrics.horizontalAdvance(head)
    )


class ModelCombo(QComboBox):
    """A picker of the registered models; the item data is the model id, the tooltip its full text and path.

    Where the chosen model's text is too long for the box, the part it shares with the other models is
    shortened, not its end (:func:`elide_apart`): an aligned model and its base stay told apart. The list
    that opens is as wide as its longest text (up to a limit) and shortens texts in the middle beyond that.

    Args:
        tooltip: what the chosen model is used for.
        min_length: how many characters the box is wide at least.
        describe: the text of a model's item (by default its name and kind).
    """

    POPUP_MAX_WIDTH = 640  # pixels: the open list grows with its texts up to this

    def __init__(
        self,
        tooltip: str,
        *,
        min_length: int = 28,
        describe: Callable[[ModelRow], str] = describe_model,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName("modelCombo")
        self.setMinimumContentsLength(min_length)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setToolTip(tooltip)
        self.view().setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self._describe = describe

    def fill(self, models: Sequence[ModelRow], wanted: int | None, *, placeholder: bool = True) -> None:
        """Show ``models`` and select the one with id ``wanted`` (else the first), without emitting
        ``currentIndexChanged``: the caller reads the choice itself. With no model, ``placeholder`` shows
        where to add one (its data is None)."""
        self.blockSignals(True)
        try:
            self.clear()
            for model in models:
                text = self._describe(model)
                self.addItem(text, model.id)
                self.setItemData(self.count() - 1, f"{text}\n{model.path}", Qt.ItemDataRole.ToolTipRole)
            if not models and placeholder:
                self.addItem(NO_MODEL_YET, None)
            index = self.findData(wanted) if wanted is not None else -1
            self.setCurrentIndex(max(index, 0))
        finally:
            self.blockSignals(False)
        view = self.view()
        view.setMinimumWidth(min(view.sizeHintForColumn(0) + 2 * view.frameWidth() + 8, self.POPUP_MAX_WIDTH))

    def model_id(self) -> int | None:
        """The id of the chosen model (None: no model)."""
        data = self.currentData()
        return int(data) if data is not None else None

    def chosen(self, models: Sequence[ModelRow]) -> ModelRow | None:
        """The chosen model among ``models`` (the list it was filled with)."""
        return next((m for m in models if m.id == self.currentData()), None)

    def shown_text(self) -> str:
        """The chosen item's text as the box shows it at its present width."""
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        return self._shown_text(option)

    def _shown_text(self, option: QStyleOptionComboBox) -> str:
        field = self.style().subControlRect(
            QStyle.ComplexControl.CC_ComboBox, option, QStyle.SubControl.SC_ComboBoxEditField, self
        )
        others = [self.itemText(i) for i in range(self.count()) if i != self.currentIndex()]
        # A few pixels less than the field: the style pads the label inside it.
        return elide_apart(option.currentText, others, self.fontMetrics(), max(field.width() - 4, 0))

    def paintEvent(self, _event: QPaintEvent) -> None:  # Qt override
        """QComboBox's own painting, with the text shortened by :func:`elide_apart`."""
        painter = QStylePainter(self)
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        option.currentText = self._shown_text(option)
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)

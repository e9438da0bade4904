"""Light and dark: the app's look follows the system's colour scheme, or the one chosen in View ▸ Appearance.

There is one style sheet, ``resources/style.qss``, written in the light scheme (Tailwind's slate greys and
indigo accent). The dark scheme is that sheet with every colour swapped for its dark counterpart, so a rule
added to the sheet is dark as soon as its colours are known here. A colour is swapped by the part it
plays: text (``color``, ``selection-color``) takes :data:`DARK_TEXT`, which keeps headings brightest and
notes dimmer as they were; a surface (backgrounds, borders, grid lines) takes :data:`DARK_FILL`, which
keeps cards above the page. Code that paints with a colour of its own (plots, the chat transcript, table
cells, syntax highlighting) names the light colour and asks :func:`text_colour` / :func:`fill_colour` for the
current one; it repaints when the scheme changes through :func:`follow_scheme`, and table cells coloured with
:func:`colour_item_text` are repainted by :func:`recolour_items`.

Fusion's palette (what the sheet does not style: spin boxes, check boxes, menus, tool tips, message
boxes) is set to match, and Qt's own colour-scheme hint is set to the scheme shown, so native parts of the
window (a title bar, a file dialog) agree where the platform allows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QSettings, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPalette

if TYPE_CHECKING:
    from PySide6.QtCore import QEvent
    from PySide6.QtWidgets import QTableWidget, QTableWidgetItem, QTreeWidget, QTreeWidgetItem, QWidget

from desktop_dpo.gui.resource_files import read_style_sheet

LIGHT, DARK = "light", "dark"
SCHEMES = (LIGHT, DARK)
SYSTEM = "system"  # follow the desktop's light/dark setting
CHOICES = (SYSTEM, LIGHT, DARK)
CHOICE_LABELS = {SYSTEM: "Match &System", LIGHT: "&Light", DARK: "&Dark"}
APPEARANCE_KEY = "view/appearance"  # in the window's settings file (window.ini)

# Text colours, light → dark: the order of emphasis is kept (headings brightest, notes dimmer, disabled
# dimmest), and the accents turn to their lighter shades, which read on a dark surface.
DARK_TEXT = {
    "#0f172a": "#f1f5f9",  # headings
    "#1e293b": "#e2e8f0",  # body text
    "#334155": "#cbd5e1",
    "#475569": "#aebbcc",
    "#64748b": "#94a3b8",  # notes
    "#94a3b8": "#64748b",  # disabled, placeholders
    "#cbd5e1": "#cbd5e1",  # the sidebar's items: the sidebar is dark in both schemes
    "#f1f5f9": "#f1f5f9",  # a hovered item in the sidebar
    "#f8fafc": "#f8fafc",  # on the sidebar and the command line: dark in both schemes
    "#ffffff": "#ffffff",  # on the accent
    "#eef2ff": "#7c86b5",  # on the accent, disabled
    "#1e1b4b": "#e0e7ff",  # selected rows
    "#3730a3": "#c7d2fe",  # indigo
    "#4338ca": "#a5b4fc",
    "#4f46e5": "#a5b4fc",
    "#7c3aed": "#c4b5fd",  # violet (template statements)
    "#0f766e": "#5eead4",  # teal
    "#0d9488": "#2dd4bf",  # teal: the SFT phase's curve
    "#047857": "#34d399",  # green: done, better
    "#065f46": "#6ee7b7",
    "#991b1b": "#fca5a5",  # red: errors
    "#b91c1c": "#f87171",
    "#92400e": "#fcd34d",  # amber: asks for an action
    "#b45309": "#fbbf24",
    "#d97706": "#f59e0b",
    "#9a3412": "#fdba74",  # orange
    "#ea580c": "#fb923c",
    "#1e3a8a": "#bfdbfe",  # blue: information
    "#e2e8f0": "#334155",  # a separator line (drawn in its frame's text colour)
}

# Surfaces and borders, light → dark: the page darkest, cards and editors a step above it, hover and
# pressed states another step up; tinted notes (amber, red, green, blue) become deep tints of their hue.
DARK_FILL = {
    "#f8fafc": "#0f172a",  # the page, alternate rows
    "#ffffff": "#1e293b",  # cards, editors, tables
    "#f1f5f9": "#273449",  # hover, muted pills, the status bar
    "#e2e8f0": "#334155",  # borders
    "#cbd5e1": "#475569",  # an editor's border
    "#b6c2d1": "#475569",
    "#94a3b8": "#64748b",
    "#1e293b": "#0b1120",  # the sidebar and the command line: darker than the page
    "#273449": "#1e293b",  # the sidebar's hover and selection
    "#334155": "#273449",
    "#0f172a": "#020617",
    "#eef2ff": "#262b5c",  # indigo tints
    "#e0e7ff": "#312e81",
    "#c7d2fe": "#3730a3",
    "#a5b4fc": "#272b4d",  # the accent, disabled
    "#818cf8": "#818cf8",  # focus, the selected view
    "#6366f1": "#818cf8",
    "#4f46e5": "#4f46e5",  # the accent keeps its white text
    "#4338ca": "#4338ca",
    "#fffbeb": "#2b2210",  # amber
    "#fef3c7": "#422006",
    "#fcd34d": "#92400e",
    "#fef2f2": "#3b1219",  # red
    "#fecaca": "#7f1d1d",
    "#ecfdf5": "#052e22",  # green
    "#a7f3d0": "#065f46",
    "#fff7ed": "#3a1d0a",  # orange
    "#fed7aa": "#9a3412",
    "#eff6ff": "#0f1d3d",  # blue
    "#bfdbfe": "#1e3a8a",
}

TEXT_PROPERTIES = frozenset({"color", "selection-color"})
_BLOCK = re.compile(r"\{([^{}]*)\}")
_DECLARATION = re.compile(r"([a-z-]+)(\s*:\s*)([^;]+)")
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}\b")


class Theme(QObject):
    """The scheme the app shows (:attr:`scheme`), and what the person chose (:attr:`choice`).

    One lives under the application (see :func:`current_theme`); :meth:`choose` switches it, and
    :attr:`changed` tells the widgets that paint their own colours.
    """

    changed = Signal(str)  # the scheme now shown: "light" or "dark"

    def __init__(self, app: QGuiApplication):
        super().__init__(app)
        self.setObjectName("appTheme")
        self._app = app
        self.choice = SYSTEM
        self.scheme = ""
        self._light_sheet = read_style_sheet()
        app.styleHints().colorSchemeChanged.connect(self._on_system_scheme_changed)

    def choose(self, choice: str) -> None:
        """Show ``choice`` ("system", "light" or "dark"); unknown choices follow the system."""
        self.choice = choice if choice in CHOICES else SYSTEM
        hints = self._app.styleHints()
        if self.choice == SYSTEM:
            hints.unsetColorScheme()  # so colorScheme() reports the desktop's, not an earlier choice
        else:
            hints.setColorScheme(Qt.ColorScheme.Dark if self.choice == DARK else Qt.ColorScheme.Light)
        self._show(self._wanted_scheme(), again=True)

    def _wanted_scheme(self) -> str:
        if self.choice != SYSTEM:
            return self.choice
        # An unknown scheme (no desktop setting, offscreen) is light.
        return DARK if self._app.styleHints().colorScheme() == Qt.ColorScheme.Dark else LIGHT

    def _show(self, scheme: str, *, again: bool = False) -> None:
        if scheme == self.scheme and not again:
            return
        self.scheme = scheme
        self._app.setPalette(palette(scheme))
        self._app.setStyleSheet(self._light_sheet if scheme == LIGHT else dark_style_sheet(self._light_sheet))
        self.changed.emit(scheme)

    def _on_system_scheme_changed(self, scheme: Qt.ColorScheme) -> None:
        """The desktop switched between light and dark (a choice of Light or Dark stays as it is)."""
        if self.choice == SYSTEM:
            self._show(DARK if scheme == Qt.ColorScheme.Dark else LIGHT)


def current_theme() -> Theme | None:
    """The application's theme, or None when the app was made without one (a test's bare application)."""
    app = QGuiApplication.instance()
    return app.findChild(Theme, "appTheme") if app is not None else None


def current_scheme() -> str:
    """The scheme shown now: "light" or "dark" (light when the app has no theme)."""
    theme = current_theme()
    return theme.scheme if theme is not None and theme.scheme else LIGHT


def install_theme(app: QGuiApplication, choice: str) -> Theme:
    """Give ``app`` its theme (once) and show ``choice``."""
    theme = current_theme() or Theme(app)
    theme.choose(choice)
    return theme


def saved_choice(settings_file: str) -> str:
    """The appearance saved in the window's settings file: "system" when none was chosen."""
    value = QSettings(settings_file, QSettings.Format.IniFormat).value(APPEARANCE_KEY, SYSTEM)
    return value if value in CHOICES else SYSTEM


def text_colour(light: str) -> str:
    """The text colour to paint for ``light`` (a colour of the light scheme) in the scheme shown now."""
    return DARK_TEXT.get(light.lower(), light) if current_scheme() == DARK else light


def fill_colour(light: str) -> str:
    """The surface colour to paint for ``light`` (a colour of the light scheme) in the scheme shown now."""
    return DARK_FILL.get(light.lower(), light) if current_scheme() == DARK else light


def follow_scheme(widget: QWidget, repaint: Callable[[], None]) -> None:
    """Call ``repaint`` whenever the scheme shown changes while ``widget`` lives (for colours painted in code).

    The theme sets a new application palette and style sheet with each scheme, and Qt tells every widget of
    both (a hidden widget hears of the palette when it is shown).
    """
    _SchemeFollower(widget, repaint)


class _SchemeFollower(QObject):
    """Watches one widget's palette changes for a change of scheme (a child of the widget: gone with it)."""

    def __init__(self, widget: QWidget, repaint: Callable[[], None]):
        from PySide6.QtCore import QEvent  # not at start-up: PySide builds the event types' enum on first use

        super().__init__(widget)
        self._scheme = current_scheme()
        self._repaint = repaint
        self._kinds = (
            QEvent.Type.StyleChange,
            QEvent.Type.ApplicationPaletteChange,
            QEvent.Type.PaletteChange,
        )
        widget.installEventFilter(self)

    def eventFilter(self, _watched: QObject, event: QEvent) -> bool:
        if event.type() in self._kinds and self._scheme != current_scheme():
            self._scheme = current_scheme()
            self._repaint()
        return False


# Where a cell keeps its text colour in the light scheme (see colour_item_text).
LIGHT_TEXT_ROLE = Qt.ItemDataRole.UserRole + 40


def colour_item_text(item: QTableWidgetItem | QTreeWidgetItem, light: str, column: int = 0) -> None:
    """Paint a table cell's (or a tree row's ``column``) text in ``light``'s colour for the scheme shown, and
    remember ``light`` so :func:`recolour_items` can repaint it in another scheme."""
    from PySide6.QtGui import QBrush
    from PySide6.QtWidgets import QTreeWidgetItem  # the first screen has no table: not at start-up

    brush = QBrush(QColor(text_colour(light)))
    if isinstance(item, QTreeWidgetItem):
        item.setData(column, LIGHT_TEXT_ROLE, light)
        item.setForeground(column, brush)
    else:
        item.setData(LIGHT_TEXT_ROLE, light)
        item.setForeground(brush)


def recolour_items(view: QTableWidget | QTreeWidget) -> None:
    """Repaint in the scheme shown every cell of ``view`` coloured with :func:`colour_item_text`."""
    from PySide6.QtWidgets import QTableWidget

    if isinstance(view, QTableWidget):
        cells = (view.item(r, c) for r in range(view.rowCount()) for c in range(view.columnCount()))
        for cell in cells:
            if cell is not None and cell.data(LIGHT_TEXT_ROLE):
                colour_item_text(cell, cell.data(LIGHT_TEXT_ROLE))
        return
    rows = [view.topLevelItem(i) for i in range(view.topLevelItemCount())]
    while rows:
        row = rows.pop()
        rows.extend(row.child(i) for i in range(row.childCount()))
        for column in range(view.columnCount()):
            if row.data(column, LIGHT_TEXT_ROLE):
                colour_item_text(row, row.data(column, LIGHT_TEXT_ROLE), column)


def dark_style_sheet(light_sheet: str) -> str:
    """``light_sheet`` with each colour swapped for its dark counterpart, by the part it plays in its rule."""

    def swap_declaration(match: re.Match[str]) -> str:
        name, colon, value = match.groups()
        table = DARK_TEXT if name in TEXT_PROPERTIES else DARK_FILL
        return name + colon + _COLOUR.sub(lambda c: table.get(c.group().lower(), c.group()), value)

    return _BLOCK.sub(
        lambda block: "{" + _DECLARATION.sub(swap_declaration, block.group(1)) + "}", light_sheet
    )


def unmapped_colours(light_sheet: str) -> list[str]:
    """Colours of ``light_sheet`` that have no dark counterpart for the part they play (should be none)."""
    missing = []
    for block in _BLOCK.finditer(light_sheet):
        for name, _colon, value in _DECLARATION.findall(block.group(1)):
            table = DARK_TEXT if name in TEXT_PROPERTIES else DARK_FILL
            missing += [f"{name}: {c}" for c in _COLOUR.findall(value) if c.lower() not in table]
    return sorted(set(missing))


def palette(scheme: str) -> QPalette:
    """Fusion's palette for ``scheme``, in the style sheet's colours (for what the sheet does not style)."""
    dark = scheme == DARK
    window, base, text = ("#0f172a", "#1e293b", "#e2e8f0") if dark else ("#f8fafc", "#ffffff", "#1e293b")
    muted, border = ("#64748b", "#475569") if dark else ("#94a3b8", "#cbd5e1")
    role = QPalette.ColorRole
    colours = {
        role.Window: window,
        role.WindowText: text,
        role.Base: base,
        role.AlternateBase: window,
        role.Text: text,
        role.Button: base,
        role.ButtonText: text,
        role.BrightText: "#ffffff",
        role.ToolTipBase: base,
        role.ToolTipText: text,
        role.PlaceholderText: muted,
        role.Highlight: "#4f46e5",
        role.HighlightedText: "#ffffff",
        role.Link: "#a5b4fc" if dark else "#4338ca",
        role.LinkVisited: "#c4b5fd" if dark else "#6d28d9",
        role.Light: "#334155" if dark else "#ffffff",
        role.Midlight: border,
        role.Mid: border,
        role.Dark: "#020617" if dark else "#94a3b8",
        role.Shadow: "#000000" if dark else "#64748b",
    }
    result = QPalette()
    for colour_role, colour in colours.items():
        result.setColor(colour_role, QColor(colour))
    disabled = QPalette.ColorGroup.Disabled
    for colour_role in (role.WindowText, role.Text, role.ButtonText):
        result.setColor(disabled, colour_role, QColor(muted))
    return result

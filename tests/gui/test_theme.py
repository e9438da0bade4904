"""Dark mode: the app follows the system's light/dark setting, View ▸ Appearance overrides it and is remembered,
text stays readable in both schemes, and what is painted in code (plots, the chat, table cells) follows."""

from __future__ import annotations

import re
from collections.abc import Generator
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from desktop_dpo.gui import theme
from desktop_dpo.gui.resource_files import read_style_sheet
from desktop_dpo.gui.theme import DARK, DARK_FILL, DARK_TEXT, LIGHT, current_scheme, install_theme

GUI_SOURCES = Path(theme.__file__).parent
RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")


def luminance(colour: str) -> float:
    """WCAG relative luminance of ``colour`` (#rrggbb)."""

    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    q = QColor(colour)
    return 0.2126 * channel(q.red()) + 0.7152 * channel(q.green()) + 0.0722 * channel(q.blue())


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two colours: 1 (the same) to 21 (black on white)."""
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def text_on_surface(sheet: str) -> list[tuple[str, str, str]]:
    """(selector, text colour, background) of each enabled rule that sets both, in ``sheet``."""
    pairs = []
    for selector, body in RULE.findall(re.sub(r"/\*.*?\*/", "", sheet, flags=re.S)):
        if ":disabled" in selector:
            continue  # greyed-out text is meant to recede
        text = re.search(r"(?<![-\w])color\s*:\s*(#[0-9a-fA-F]{6})", body)
        fill = re.search(r"background(?:-color)?\s*:\s*(#[0-9a-fA-F]{6})", body)
        if text and fill:
            pairs.append((" ".join(selector.split()), text.group(1), fill.group(1)))
    return pairs


@pytest.fixture
def themed(qapp) -> Generator[QApplication, None, None]:
    """The application with the real theme for this test; afterwards as bare as the other tests expect."""
    palette = QPalette(qapp.palette())
    yield qapp
    found = theme.current_theme()
    if found is not None:
        found.setParent(None)
        found.deleteLater()
    qapp.styleHints().unsetColorScheme()
    qapp.setStyleSheet("")
    qapp.setPalette(palette)


def test_every_colour_of_the_style_sheet_and_the_code_has_a_dark_counterpart():
    assert theme.unmapped_colours(read_style_sheet()) == []
    painted_in_code = {
        colour.lower()
        for path in GUI_SOURCES.glob("*.py")
        if path.name != "theme.py"
        for colour in re.findall(r"#[0-9a-fA-F]{6}\b", path.read_text(encoding="utf-8"))
    }
    assert painted_in_code, "the views paint some colours of their own"
    assert sorted(painted_in_code - DARK_TEXT.keys() - DARK_FILL.keys()) == []


@pytest.mark.parametrize("scheme", [LIGHT, DARK])
def test_text_is_readable_on_its_own_background_in_both_schemes(scheme):
    light = read_style_sheet()
    sheet = light if scheme == LIGHT else theme.dark_style_sheet(light)
    pairs = text_on_surface(sheet)
    assert len(pairs) > 20
    # WCAG AA for normal text, 4.5:1.
    unreadable = [f"{sel}: {text} on {fill} ({contrast(text, fill):.1f})" for sel, text, fill in pairs
                  if contrast(text, fill) < 4.5]  # fmt: skip
    assert unreadable == []


def test_dark_text_on_the_dark_page_and_cards_is_readable():
    """What the sheet gives no background of its own stands on the page or on a card."""
    page, card = DARK_FILL["#f8fafc"], DARK_FILL["#ffffff"]
    # Disabled text (#94a3b8 in light) is meant to recede; the sidebar's colours stand on the sidebar.
    body_texts = {"#0f172a", "#1e293b", "#334155", "#475569", "#64748b", "#991b1b", "#b91c1c", "#047857"}
    dim = {light: DARK_TEXT[light] for light in body_texts if min(contrast(DARK_TEXT[light], page),
           contrast(DARK_TEXT[light], card)) < 4.5}  # fmt: skip
    assert dim == {}


def test_the_dark_sheet_keeps_white_on_the_accent_and_darkens_the_surfaces():
    dark = re.sub(r"/\*.*?\*/", "", theme.dark_style_sheet(read_style_sheet()), flags=re.S)
    primary = next(b for s, b in RULE.findall(dark) if s.strip() == "QPushButton#primaryButton")
    assert "color: #ffffff" in primary and "background: #4f46e5" in primary
    page = next(b for s, b in RULE.findall(dark) if s.strip() == "QMainWindow, #pageArea")
    assert luminance(re.search(r"#[0-9a-f]{6}", page).group()) < 0.05


def test_match_system_follows_the_desktop_and_a_choice_stays(themed):
    found = install_theme(themed, "system")
    hints = themed.styleHints()
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)  # the desktop turns dark
    assert current_scheme() == DARK
    assert themed.palette().color(QPalette.ColorRole.Window).lightness() < 60
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
    assert current_scheme() == LIGHT
    found.choose(DARK)
    hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)  # the person's choice wins over the desktop
    assert current_scheme() == DARK


def page_is_dark(window) -> bool:
    image = window.grab().toImage()
    # A point of the page area, right of the sidebar and below the page's title.
    return QColor(image.pixel(image.width() - 20, image.height() // 2)).lightness() < 80


def test_view_menu_switches_to_dark_and_the_next_start_opens_dark(themed, make_window, app_home):
    install_theme(themed, "system")
    window = make_window()
    window.resize(1024, 640)
    assert not page_is_dark(window)
    assert window.appearance_actions["system"].isChecked()

    window.appearance_actions["dark"].trigger()
    assert current_scheme() == DARK
    assert window.appearance_actions["dark"].isChecked()
    assert not window.appearance_actions["system"].isChecked()
    assert page_is_dark(window)
    window.close()
    assert (
        QSettings(str(app_home.window_settings), QSettings.Format.IniFormat).value("view/appearance")
        == "dark"
    )

    # The next start reads the choice before its window exists: the first paint is dark.
    assert theme.saved_choice(str(app_home.window_settings)) == DARK
    window.appearance_actions["light"].trigger()
    assert not page_is_dark(window)
    assert theme.saved_choice(str(app_home.window_settings)) == LIGHT


def test_a_saved_choice_that_is_not_known_follows_the_system(tmp_path):
    settings = QSettings(str(tmp_path / "window.ini"), QSettings.Format.IniFormat)
    settings.setValue("view/appearance", "purple")
    settings.sync()
    assert theme.saved_choice(str(tmp_path / "window.ini")) == "system"
    assert theme.saved_choice(str(tmp_path / "missing.ini")) == "system"


def test_plots_follow_the_scheme(themed, qtbot):
    from desktop_dpo.gui.metrics_plots import HELDOUT_COLOUR, TRAIN_COLOUR, MetricsPlots

    install_theme(themed, LIGHT)
    plots = MetricsPlots()
    qtbot.addWidget(plots)
    plots.show()
    plots.add_train_point(1, {"loss": 0.69, "rewards/accuracies": 0.5, "rewards/margins": 0.0})
    widget, curve = plots.widgets["loss"], plots.train["loss"].item
    assert widget.backgroundBrush().color().name() == "#ffffff"
    assert curve.opts["pen"].color().name() == TRAIN_COLOUR

    install_theme(themed, DARK)
    qtbot.waitUntil(lambda: widget.backgroundBrush().color().lightness() < 60)
    assert curve.opts["pen"].color().name() == DARK_TEXT[TRAIN_COLOUR]
    assert plots.heldout["loss"].item.opts["pen"].color().name() == DARK_TEXT[HELDOUT_COLOUR]
    assert DARK_TEXT[TRAIN_COLOUR] in plots.legend.text()
    axis = widget.getPlotItem().getAxis("left")
    assert contrast(axis.textPen().color().name(), widget.backgroundBrush().color().name()) >= 4.5


def test_a_conversation_already_on_screen_is_repainted_in_the_new_scheme(themed, qtbot):
    from desktop_dpo.gui.chat_transcript import ChatTranscript

    install_theme(themed, LIGHT)
    transcript = ChatTranscript()
    qtbot.addWidget(transcript)
    transcript.show()
    transcript.add_message("user", "How do I brew tea?", "You")
    transcript.add_message("assistant", "Steep it for three minutes.", "Model", note="stopped early")

    def painted() -> dict[str, str]:
        colours, block = {}, transcript.document().begin()
        while block.isValid():
            for piece in block:
                colours[piece.fragment().text()] = piece.fragment().charFormat().foreground().color().name()
            block = block.next()
        return colours

    bubbles = [f.frameFormat().background().color() for f in transcript.document().rootFrame().childFrames()]
    assert all(b.lightness() > 200 for b in bubbles)
    install_theme(themed, DARK)
    colours = painted()
    assert QColor(colours["Steep it for three minutes."]).lightness() > 180  # light text…
    bubbles = [f.frameFormat().background().color() for f in transcript.document().rootFrame().childFrames()]
    assert all(b.lightness() < 80 for b in bubbles)  # …on dark bubbles
    assert colours["stopped early"] == DARK_TEXT["#b45309"]
    assert transcript.toPlainText().count("Steep it for three minutes.") == 1  # the words are untouched

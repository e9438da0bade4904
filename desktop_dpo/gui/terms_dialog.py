"""The Gemma terms of use (and the package's NOTICE), as shipped in the demo model package.

Shown offline: no link is followed. Clicking one inside the terms scrolls to it; clicking one to the web
shows its address, to copy into a browser if the person wants to.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QUrl, Slot
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.core.demo_model import DemoPackage
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.first_run import demo_notice_text, demo_terms_html


class TermsDialog(QDialog):
    """The Gemma terms in one tab, the package's NOTICE in another. Non-modal when opened with ``show()``."""

    def __init__(self, package: DemoPackage, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Gemma terms of use")
        self.resize(760, 620)

        intro = QLabel(
            "The demo model, Gemma 3 270M, is provided by Google under the Gemma Terms of Use. Using it, "
            "and sharing a model you train from it, is subject to these terms."
        )
        intro.setObjectName("termsIntro")
        intro.setWordWrap(True)

        self.terms_text = self._browser("termsText")
        try:
            self.terms_text.setHtml(demo_terms_html(package))
        except DesktopDpoError as exc:
            self.terms_text.setPlainText(str(exc))
        self.notice_text = self._browser("noticeText")
        self.notice_text.setMarkdown(demo_notice_text(package))

        self.tabs = QTabWidget()
        self.tabs.addTab(self.terms_text, "Gemma Terms of Use")
        self.tabs.addTab(self.notice_text, "Notice")

        self.link_note = QLabel()
        self.link_note.setObjectName("termsLink")
        self.link_note.setWordWrap(True)
        self.link_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.link_note.setVisible(False)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(18, 16, 18, 14)
        layout.setSpacing(10)
        layout.addWidget(intro)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.link_note)
        layout.addWidget(buttons)

    def _browser(self, name: str) -> QTextBrowser:
        browser = QTextBrowser()
        browser.setObjectName(name)
        # Offline: neither the web nor a "page" inside the app is ever opened; clicks are handled below.
        browser.setOpenExternalLinks(False)
        browser.setOpenLinks(False)
        browser.anchorClicked.connect(self._on_link_clicked)
        return browser

    @Slot(QUrl)
    def _on_link_clicked(self, url: QUrl) -> None:
        browser = self.sender()
        if url.scheme() == "" and url.hasFragment() and isinstance(browser, QTextBrowser):
            browser.scrollToAnchor(url.fragment())
            return
        self.link_note.setText(
            f"desktop-dpo works offline and opens no web pages. The link points to: {url.toString()}"
        )
        self.link_note.setVisible(True)

    def terms_plain_text(self) -> str:
        """The terms as shown, as plain text (tests and accessibility read it)."""
        return self.terms_text.toPlainText()


def open_terms_dialog(package: DemoPackage | None, parent: QWidget) -> TermsDialog | None:
    """Open the terms next to ``parent`` (non-modal; deleted when closed). None without a demo package."""
    if package is None:
        return None
    dialog = TermsDialog(package, parent)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.show()
    return dialog

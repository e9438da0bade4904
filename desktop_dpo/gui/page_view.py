"""The base of the main window's pages that work with the app's services.

Models, Train, Export, Storage and the model-work views (Collect, Evaluate, Chat) are given the same things
by the window: the GUI thread's store, the job registry, the app's folders and, where models are loaded for
generation, the engine pool. :class:`PageView` keeps them under the same names on every page and marks the
page for the style sheet, so each view's ``__init__`` holds only its own state.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLayout, QScrollArea, QVBoxLayout, QWidget

from desktop_dpo.config import AppPaths
from desktop_dpo.core.llm.engine_pool import EnginePool
from desktop_dpo.core.store import Store
from desktop_dpo.gui.view_messages import ViewMessages
from desktop_dpo.gui.widgets import make_page, scroll_area
from desktop_dpo.workers.job_worker import JobRegistry


class PageView(ViewMessages, QWidget):
    """A page of the main window that uses the app's services.

    Args:
        store: the GUI thread's database connection.
        registry: the job registry every job of the page starts through.
        paths: the app's folders.
        pool: the engine pool shared by the pages that load models (None where a page loads none).

    Subclasses set ``PAGE``, the page name the style sheet scopes their rules by (see ``widgets.make_page``).
    """

    PAGE = ""

    def __init__(
        self,
        *,
        store: Store,
        registry: JobRegistry,
        paths: AppPaths,
        pool: EnginePool | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        make_page(self, self.PAGE)
        self.store = store
        self.registry = registry
        self.paths = paths
        self.pool = pool
        self.page_scroll: QScrollArea | None = None  # see _page_column(scroll=True)

    def _page_column(self, header: QLayout, *parts: QWidget, scroll: bool = False) -> QVBoxLayout:
        """The page's column, inside the page's margins: ``header``, then ``parts`` one under the other. The
        view adds the rest below.

        ``scroll``: the column scrolls (up and down only) when the window is shorter than its minimum height,
        instead of squashing its editors and answers into slivers; with room to spare it fills the page as
        it would without.
        """
        host: QWidget = self
        if scroll:
            host = QWidget()
            host.setObjectName("pageScrollContent")
            outer = QVBoxLayout(self)
            outer.setContentsMargins(0, 0, 0, 0)
            self.page_scroll = scroll_area(host, "pageScroll", sideways=False)
            outer.addWidget(self.page_scroll)
        layout = QVBoxLayout(host)
        layout.setContentsMargins(24, 20, 24, 16)
        layout.setSpacing(10)
        layout.addLayout(header)
        for part in parts:
            layout.addWidget(part)
        return layout

    def _bring_into_view(self, widget: QWidget) -> None:
        """Scroll a scrolling page so that ``widget`` is on screen (nothing to do where the page fits), once
        the layout has taken in what the caller just showed or hid."""
        scroll = self.page_scroll
        if scroll is not None:
            QTimer.singleShot(0, scroll, lambda: scroll.ensureWidgetVisible(widget, 0, 0))

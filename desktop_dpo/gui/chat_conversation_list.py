"""The Chat view's side panel: the saved conversations, newest first, with New chat, Rename and Delete.

Each row is a conversation's title; its tooltip names the model and when it was last written to. A title
is edited in place (double-click, F2 or Rename) and saved as soon as the editor commits it; Delete asks
first. The panel writes renames and deletions to the store itself; which conversation is open, and whether
another may be opened, stays the view's: the panel says what the person asked for through its signals and
is told what to select.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QVBoxLayout,
    QWidget,
)

from desktop_dpo.core.chat import UNTITLED
from desktop_dpo.core.errors import DesktopDpoError
from desktop_dpo.core.store import Store
from desktop_dpo.gui.widgets import button, styled_label

RENAME_SHORTCUT = "F2"
WRITING_TOOLTIP = "Stop the reply first (Esc) to switch conversations"


def confirmed(parent: QWidget, title: str, question: str) -> bool:
    """Ask ``question`` with Yes and No (No is the default); True when the answer is Yes."""
    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, title, question, buttons, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class ConversationList(QFrame):
    """The saved conversations and the buttons that act on them.

    Args:
        store: the GUI thread's database connection.

    Signals:
        new_requested(): the person asked for a new chat.
        open_requested(int): the person selected a conversation (its id) in the list.
        delete_requested(int): the person asked to delete the selected conversation (its id).
        deleted(int): a conversation was deleted (its id); the list still shows it until refreshed.
        changed(): a conversation was renamed or deleted.
        failed(str): a rename or deletion failed: why, for the view's banner.
        notice(str): a line for the status bar.
    """

    new_requested = Signal()
    open_requested = Signal(object)
    delete_requested = Signal(object)
    deleted = Signal(object)
    changed = Signal()
    failed = Signal(str)
    notice = Signal(str)

    def __init__(self, store: Store, parent: QWidget | None = None):
        super().__init__(parent)
        self.store = store
        self.setObjectName("chatSidebarPanel")
        self.setFixedWidth(204)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 20, 12, 14)
        layout.setSpacing(8)
        layout.addWidget(styled_label("Conversations", "chatListTitle"))
        self.new_button = button(
            "New chat",
            self.new_requested,
            tooltip="Start a new conversation (it is saved with your first message)",
        )
        layout.addWidget(self.new_button)
        self.list_widget = QListWidget()
        self.list_widget.setObjectName("conversationList")
        self.list_widget.setFrameShape(QFrame.Shape.NoFrame)
        self.list_widget.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list_widget.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list_widget.setEditTriggers(
            QListWidget.EditTrigger.DoubleClicked | QListWidget.EditTrigger.EditKeyPressed
        )
        self.list_widget.currentItemChanged.connect(self._on_current_changed)
        self.list_widget.itemChanged.connect(self._on_item_changed)
        layout.addWidget(self.list_widget, 1)
        self.empty_label = styled_label("Your conversations appear here.", "chatListEmpty", wrap=True)
        layout.addWidget(self.empty_label)
        self.rename_button = button(
            "Rename",
            self.edit_selected,
            tooltip=f"Rename the selected conversation ({RENAME_SHORTCUT}, or double-click it)",
        )
        self.delete_button = button(
            "Delete…",
            self._on_delete_clicked,
            tooltip="Delete the selected conversation and its messages (asks first)",
        )
        actions = QHBoxLayout()
        actions.setSpacing(8)
        actions.addWidget(self.rename_button, 1)
        actions.addWidget(self.delete_button, 1)
        layout.addLayout(actions)

    # ---------------------------------------------------------------- what is shown

    def refresh(self, open_id: int | None) -> None:
        """Re-read the conversations (newest first) and select ``open_id``, the open one (None: none)."""
        rows = self.store.list_conversations()
        names = {m.id: m.name for m in self.store.list_models()}
        widget = self.list_widget
        widget.blockSignals(True)
        widget.clear()
        for row in rows:
            item = QListWidgetItem(row.title or UNTITLED)
            item.setData(Qt.ItemDataRole.UserRole, row.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            when = time.strftime("%d %b %Y, %H:%M", time.localtime(row.updated_at))
            model = names.get(row.model_id) if row.model_id is not None else None
            item.setToolTip(f"{row.title or UNTITLED}\n{model + ' · ' if model else ''}last message {when}")
            widget.addItem(item)
            if row.id == open_id:
                widget.setCurrentItem(item)
        if open_id is None:
            widget.setCurrentItem(None)
        widget.blockSignals(False)
        self.empty_label.setVisible(not rows)

    def select(self, conversation_id: int | None) -> None:
        """Select ``conversation_id`` (None: nothing) without a rebuild of the list and without asking to
        open it (this may run inside the list's own ``currentItemChanged``)."""
        self.list_widget.blockSignals(True)
        self.list_widget.setCurrentItem(self._item(conversation_id))
        self.list_widget.blockSignals(False)

    def selected(self) -> int | None:
        """The id of the selected conversation (None: none)."""
        item = self.list_widget.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def set_writing(self, writing: bool) -> None:
        """While a reply is being written, no conversation can be switched to, started, renamed or deleted."""
        self.list_widget.setEnabled(not writing)
        self.list_widget.setToolTip(WRITING_TOOLTIP if writing else "")
        self.new_button.setEnabled(not writing)
        has_selection = self.list_widget.currentItem() is not None
        self.rename_button.setEnabled(not writing and has_selection)
        self.delete_button.setEnabled(not writing and has_selection)

    def _item(self, conversation_id: int | None) -> QListWidgetItem | None:
        widget = self.list_widget
        for row in range(widget.count()):
            item = widget.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == conversation_id:
                return item
        return None

    def _set_item_title(self, conversation_id: int, title: str) -> None:
        item = self._item(conversation_id)
        if item is not None and item.text() != title:
            self.list_widget.blockSignals(True)
            item.setText(title)
            self.list_widget.blockSignals(False)

    # ---------------------------------------------------------------- renaming and deleting

    @Slot()
    def edit_selected(self) -> None:
        """Open the selected conversation's title for editing (Rename, F2), unless renaming is disabled."""
        item = self.list_widget.currentItem()
        if item is not None and self.rename_button.isEnabled():
            self.list_widget.editItem(item)

    def rename(self, conversation_id: int, title: str) -> bool:
        """Give a conversation a new title (an empty one is refused)."""
        title = " ".join(title.split())
        conversation = self.store.get_conversation(conversation_id)
        if conversation is None:
            return False
        if not title:
            self._set_item_title(conversation_id, conversation.title or UNTITLED)
            return False
        try:
            self.store.rename_conversation(conversation_id, title)
        except DesktopDpoError as exc:
            self.failed.emit(f"The conversation was not renamed: {exc}")
            self._set_item_title(conversation_id, conversation.title or UNTITLED)
            return False
        # In place (the order does not change): this may run inside the list's own itemChanged signal.
        self._set_item_title(conversation_id, title)
        self.changed.emit()
        return True

    def delete(self, conversation_id: int, *, confirm: bool = True) -> bool:
        """Delete a conversation and its messages, after asking (unless ``confirm`` is False)."""
        conversation = self.store.get_conversation(conversation_id)
        if conversation is None:
            return False
        title = conversation.title or UNTITLED
        if confirm:
            count = sum(1 for m in self.store.conversation_messages(conversation_id) if m.role != "system")
            question = (
                f"Delete “{title}” and its {count} message{'s' if count != 1 else ''}?"
                "\n\nThis cannot be undone."
            )
            if not confirmed(self, "Delete conversation", question):
                return False
        try:
            self.store.delete_conversation(conversation_id)
        except DesktopDpoError as exc:
            self.failed.emit(f"The conversation was not deleted: {exc}")
            return False
        self.deleted.emit(conversation_id)
        self.notice.emit(f"Deleted “{title}”.")
        self.changed.emit()
        return True

    # ---------------------------------------------------------------- the list's own signals

    @Slot(object, object)
    def _on_current_changed(self, current: QListWidgetItem | None, _previous: object) -> None:
        if current is not None:
            self.open_requested.emit(current.data(Qt.ItemDataRole.UserRole))

    @Slot(object)
    def _on_item_changed(self, item: QListWidgetItem) -> None:
        conversation_id = item.data(Qt.ItemDataRole.UserRole)
        conversation = self.store.get_conversation(conversation_id)
        if conversation is not None and item.text() != conversation.title:
            self.rename(conversation_id, item.text())

    @Slot()
    def _on_delete_clicked(self) -> None:
        conversation_id = self.selected()
        if conversation_id is not None:
            self.delete_requested.emit(conversation_id)

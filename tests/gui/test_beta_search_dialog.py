"""Find β (``gui/beta_search_dialog.py``): progress while it runs, results as a plot and a table, a
recommendation in words, and "Use β" puts that β on the Train view's form."""

from __future__ import annotations

import os

import pytest
from PySide6.QtCore import QPointF, QRectF, QSizeF
from PySide6.QtWidgets import QApplication

from desktop_dpo.core.dpo.beta_search import BetaMeasured, BetaResult, BetaSearchResult
from desktop_dpo.core.models.registration import register_model
from desktop_dpo.gui.beta_search_dialog import BetaSearchDialog, label_rects
from desktop_dpo.gui.train_settings_form import TrainSettingsForm
from tests.core.test_train import BASE, add_pairs

pytestmark = pytest.mark.usefixtures("app_style")
WAIT_MS = 180_000  # each β trains a few steps in a child process: slow on a shared 2-core machine
SCREENSHOT = os.environ.get("DESKTOP_DPO_FIND_BETA_SHOT", "")  # where to save the finished dialog, if set


def test_find_beta_shows_progress_results_and_a_recommendation_and_sets_the_form(
    qtbot, gui_store, registry, app_home, tiny_model_dir
):
    add_pairs(gui_store)
    model = register_model(gui_store, tiny_model_dir, name="tiny")
    ids = [v.comparison.id for v in gui_store.comparison_views()]
    form = TrainSettingsForm()
    qtbot.addWidget(form)
    form.set_settings(BASE)
    assert form.help_labels["beta"].text().startswith("How far the model may move from where it started")
    assert form.find_beta_button.text() == "Find β…"
    dialog = BetaSearchDialog(registry, app_home.db_path, model, ids, BASE, betas=(0.03, 0.3, 1.0), steps=6)
    dialog.beta_chosen.connect(form.set_beta)
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.use_button.isEnabled() and dialog.table.rowCount() == 0

    dialog.start_button.click()

    assert dialog.progress.isVisible() and dialog.stop_button.isEnabled()
    assert not dialog.start_button.isEnabled()
    qtbot.waitUntil(lambda: "β = 0.03: step" in dialog.status.text(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: dialog.table.rowCount() == 1, timeout=WAIT_MS)  # a row as each β is done
    qtbot.waitUntil(lambda: dialog.recommendation.isVisible(), timeout=WAIT_MS)

    assert not dialog.progress.isVisible() and not dialog.stop_button.isEnabled()
    assert dialog.status.text() == "Done: 3 short trainings, measured on 9 held-out pairs."
    cells = [[dialog.table.item(r, c).text() for c in range(3)] for r in range(3)]
    assert [row[0] for row in cells] == ["0.03", "0.3", "1  (recommended)"]
    assert all(row[1].endswith("%") and float(row[2]) > 0 for row in cells)
    assert dialog.recommendation.text().startswith("Use β = 1: it ranked 100% of the held-out pairs right")
    assert "moving the model least from where it started" in dialog.recommendation.text()
    assert len(dialog.points.data) == 3 and len(dialog.pick_point.data) == 1  # the plot, the pick ringed
    assert dialog.use_button.text() == "Use β = 1" and dialog.use_button.isEnabled()
    if SCREENSHOT:
        dialog.grab().save(SCREENSHOT)

    dialog.table.selectRow(1)  # the person may prefer another row
    assert dialog.use_button.text() == "Use β = 0.3"
    dialog.use_button.click()

    assert form.settings().beta == pytest.approx(0.3) and form.touched
    assert not dialog.isVisible()


def test_stop_keeps_what_was_measured_and_says_so(qtbot, gui_store, registry, app_home, tiny_model_dir):
    add_pairs(gui_store)
    model = register_model(gui_store, tiny_model_dir, name="tiny")
    ids = [v.comparison.id for v in gui_store.comparison_views()]
    dialog = BetaSearchDialog(registry, app_home.db_path, model, ids, BASE, betas=(0.1, 1.0), steps=400)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.start_button.click()
    qtbot.waitUntil(lambda: "step 2 of 400" in dialog.status.text(), timeout=WAIT_MS)

    dialog.stop_button.click()

    assert dialog.status.text() == "Stopping…"
    qtbot.waitUntil(lambda: dialog.start_button.isEnabled(), timeout=WAIT_MS)
    assert dialog.status.text() == "Stopped. Start again to measure every β."
    assert dialog.table.rowCount() == 0 and not dialog.use_button.isEnabled()


def test_label_rects_keep_every_label_inside_the_plot(qapp):
    area, size = QRectF(0, 0, 300, 200), QSizeF(40, 16)
    middle, bottom, corner = QPointF(150, 100), QPointF(150, 200), QPointF(0, 200)
    under, above, cornered = label_rects([middle, bottom, corner], [size] * 3, area, gap=9)
    assert under == QRectF(130, 109, 40, 16)  # under its point, centred
    assert above == QRectF(130, 200 - 9 - 16, 40, 16)  # on the bottom edge (0%): above it instead
    assert cornered == QRectF(0, 200 - 9 - 16, 40, 16)  # at the left edge too: moved in, not cut in half
    (squeezed,) = label_rects([QPointF(299, 5)], [size], QRectF(0, 0, 300, 20), gap=9)
    assert area.contains(squeezed) and squeezed.right() == 300  # no room above or under: kept inside


@pytest.mark.parametrize("size", [(680, 640), (300, 400)])  # as it opens, and as small as it gets
def test_labels_at_0_and_100_percent_stay_inside_the_plot(qtbot, gui_store, registry, app_home, size):
    model = gui_store.get_model(gui_store.add_model(name="m", path="/m", kind="hf", fingerprint="m"))
    dialog = BetaSearchDialog(registry, app_home.db_path, model, [1, 2], BASE, betas=(0.03, 0.1, 0.3, 1.0))
    qtbot.addWidget(dialog)
    dialog.resize(*size)
    dialog.show()
    results = [
        BetaResult(beta=0.03, accuracy=0.0, kl=0.40, loss=0.7, steps=16),  # bottom right
        BetaResult(beta=0.1, accuracy=0.0, kl=0.0, loss=0.7, steps=16),  # bottom left corner
        BetaResult(beta=0.3, accuracy=1.0, kl=0.12, loss=0.3, steps=16),
        BetaResult(beta=1.0, accuracy=1.0, kl=0.01, loss=0.2, steps=16),  # top left
    ]
    for done, result in enumerate(results, 1):
        dialog._on_search_event(BetaMeasured(result, done, len(results)))
    dialog._on_search_succeeded(BetaSearchResult(tuple(results), results[3], train_pairs=8, heldout_pairs=4))
    QApplication.processEvents()

    area, rects = dialog.label_layout()
    assert len(rects) == 4 and area.width() > 100
    assert QRectF(dialog.plot.rect()).contains(area)  # the plot area is on screen, not under the table
    assert dialog.plot.geometry().bottom() < dialog.table.geometry().top()
    inside = area.adjusted(-0.5, -0.5, 0.5, 0.5)  # within half a pixel (the placing maps to values and back)
    for label, rect in zip(dialog.point_labels, rects, strict=True):
        assert inside.contains(rect), (label.textItem.toPlainText(), rect, area)
        assert inside.contains(label.sceneBoundingRect()), label.textItem.toPlainText()  # drawn where placed
    # Each label still reads as its point's: within a label's height or so of it.
    box = dialog.plot.getPlotItem().getViewBox()
    for result, rect in zip(results, rects, strict=True):
        point = box.mapViewToScene(QPointF(result.kl, 100 * result.accuracy))
        assert abs(rect.center().y() - point.y()) <= rect.height() + 12
    if SCREENSHOT:
        dialog.grab().save(SCREENSHOT)

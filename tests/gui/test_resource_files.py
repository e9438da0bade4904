"""Resources (style sheet, icons) are found in a checkout and in the standalone app's bundle folder."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from desktop_dpo.gui.resource_files import read_style_sheet, resource_file, resource_icon, resources_dir

CHECKOUT_RESOURCES = Path(__file__).resolve().parents[2] / "resources"


@pytest.fixture
def bundle(tmp_path, monkeypatch) -> Path:
    """A PyInstaller-like bundle folder: ``sys.frozen`` set and ``sys._MEIPASS`` pointing at it."""
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    return tmp_path


def test_a_checkout_uses_its_resources_folder():
    assert resources_dir() == CHECKOUT_RESOURCES
    assert read_style_sheet() == (CHECKOUT_RESOURCES / "style.qss").read_text(encoding="utf-8")


def test_the_bundle_copy_wins_when_frozen(bundle, qapp):
    (bundle / "resources" / "icons").mkdir(parents=True)
    (bundle / "resources" / "style.qss").write_text("QLabel { color: #123456; }", encoding="utf-8")
    shutil.copy(CHECKOUT_RESOURCES / "desktop-dpo.svg", bundle / "resources" / "desktop-dpo.svg")
    shutil.copy(CHECKOUT_RESOURCES / "icons" / "train.svg", bundle / "resources" / "icons" / "train.svg")

    assert read_style_sheet() == "QLabel { color: #123456; }"
    assert resource_file("icons/train.svg") == bundle / "resources" / "icons" / "train.svg"
    assert not resource_icon("desktop-dpo.svg").isNull()


def test_a_bundle_without_resources_falls_back_to_the_other_places(bundle):
    # A bundle built without its resources/ still starts: the platform look or the checkout's copy.
    assert resources_dir() == CHECKOUT_RESOURCES
    assert resource_file("no-such-icon.svg") is None

